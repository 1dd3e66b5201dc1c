"""Page-for-page validation of the patched kernel against the model, the vmsplice check, and measurement.

One guest boot runs a whole plan (``inguest.py``): for each pattern, policy
and window, the child of a fork writes the generator's page stream in
``cow_workload`` and the /proc/vmstat deltas come back. The model replays the
same trace under the same policy; the counters line up as

| kernel (/proc/vmstat) | model (Counters)  |
| --------------------- | ----------------- |
| cow_fault_copy        | cow_copy          |
| cow_ahead_copy        | ahead_copies      |
| cow_ahead_reuse       | ahead_reuses      |
| cow_ahead_unused      | ahead_waste       |

Window 0 is ``none`` in the model. /proc/vmstat is global, so a stray fault
elsewhere in the guest would show; the workload snapshots inside the child
around nothing but its writes (and its munmap of the region) to keep that
out. Other guest processes still fault now and then (one run in twenty
showed a copy or two, or a few dozen, that the workload cannot have made:
reuses where it makes none). Noise only adds, so each setting runs
``REPEATS`` times and the comparison takes each counter's minimum; every
run's raw counters are kept in the result.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.costs import CostModel
from ..model.kernel import Kernel
from ..policies import parse_policy
from ..trace.events import PAGE_SHIFT, EventKind
from ..trace.generators import BASE, PARENT, TraceBuilder, generate
from ..trace.trace import Trace
from .guestprogs import INGUEST, INTEGRITY, compile_programs
from .vm import GuestResult, run_in_guest

WINDOWS = (0, 4, 16, 64)
POLICIES = ("fixed", "around", "adaptive")
PATTERNS = ("sequential", "random", "pingpong", "random2")
DEFAULT_PAGES = 2048  # four page tables of 512 PTEs: windows meet table ends
MODEL_FIELDS = {"cow_fault_copy": "cow_copy", "cow_ahead_copy": "ahead_copies",
                "cow_ahead_reuse": "ahead_reuses", "cow_ahead_unused": "ahead_waste"}
LEAK_SPLICED = 63
REPEATS = 3


def model_policy(policy: str, window: int) -> str:
    """The model's policy string for a kernel setting; window 0 is COW-ahead off."""
    return "none" if window == 0 else f"{policy}:{window}"


def child_stream(trace: Trace) -> list[int]:
    """The pages (from the region's start) the forked child writes, in order."""
    return [(e.address - BASE) >> PAGE_SHIFT for e in trace.events()
            if e.kind == EventKind.WRITE and e.pid == PARENT + 1]


def two_sided(pattern: str, pages: int, seed: int) -> tuple[Trace, list[int], list[int]]:
    """Patterns where the parent writes too, after the child, while the child still maps the region.

    The parent then meets pages the child already copied away (exclusive but write-protected):
    reuse faults, and COW-ahead reuses in windows after a copy. ``pingpong``: the child writes
    pages 1, 9, 17, …, the parent 0, 8, 16, …; ``random2``: each writes a random quarter.
    """
    rng = np.random.default_rng(seed)
    if pattern == "pingpong":
        child, parent = list(range(1, pages, 8)), list(range(0, pages, 8))
    else:
        child = [int(p) for p in rng.integers(0, pages, pages // 4)]
        parent = [int(p) for p in rng.integers(0, pages, pages // 4)]
    b = TraceBuilder()
    b.mmap(PARENT, pages)
    b.writes(PARENT, range(pages))
    b.fork(PARENT, PARENT + 1)
    b.writes(PARENT + 1, child)
    b.writes(PARENT, parent)
    b.exit(PARENT + 1)
    b.exit(PARENT)
    return b.trace({"source": f"kernel-validate:{pattern}", "pattern": pattern, "pages": pages, "seed": seed}), \
        child, parent


def workload_streams(pattern: str, pages: int, seed: int) -> tuple[Trace, list[int], list[int] | None]:
    """The trace the model replays and the page streams the guest child (and parent) write."""
    if pattern in ("pingpong", "random2"):
        return two_sided(pattern, pages, seed)
    trace = generate(pattern, pages=pages, seed=seed)
    return trace, child_stream(trace), None


def model_counters(trace: Trace, policy: str) -> dict[str, int]:
    counters = Kernel(parse_policy(policy)).replay(trace).as_dict()
    return {kernel: counters[model] for kernel, model in MODEL_FIELDS.items()}


def kernel_counters(output: dict) -> dict[str, int]:
    """The workload's deltas as the model's view: copies and reuses over the writes, unused at munmap.

    A counter the kernel does not have reads -1 in the workload and is left out: the 6.12 patch has
    no cow_ahead_unused (it counted at unmap with a page flag, which issue 19 removed).
    """
    during, unmap = output["during"], output["unmap"]
    counters = {"cow_fault_copy": during["cow_fault_copy"], "cow_ahead_copy": during["cow_ahead_copy"],
                "cow_ahead_reuse": during["cow_ahead_reuse"], "cow_ahead_unused": unmap["cow_ahead_unused"]}
    return {k: v for k, v in counters.items() if v != -1}


@dataclass
class Plan:
    runs: list[dict]
    traces: dict[str, Trace]


def make_plan(work: Path, programs: dict[str, Path], patterns=PATTERNS, policies=POLICIES, windows=WINDOWS,
              pages: int = DEFAULT_PAGES, seed: int = 0, leak: bool = True, repeats: int = REPEATS) -> Plan:
    runs, traces = [], {}
    for pattern in patterns:
        trace, child, parent = workload_streams(pattern, pages, seed)
        traces[pattern] = trace
        argv = [str(programs["cow_workload"]), str(pages)]
        for who, stream in (("child", child), ("parent", parent)):
            if stream is not None:
                path = work / f"stream-{pattern}-{who}.txt"
                path.write_text("\n".join(map(str, stream)) + "\n")
                argv.append(str(path))
        for policy in policies:
            for window in windows:
                if window == 0 and policy != policies[0]:
                    continue  # off is off, whatever the policy
                for repeat in range(repeats):
                    runs.append({"kind": "workload", "pattern": pattern, "policy": policy, "window": window,
                                 "repeat": repeat, "pages": pages, "argv": argv})
    if leak:
        for policy in policies:
            for window in windows:
                runs.append({"kind": "leak", "policy": policy, "window": window, "spliced": LEAK_SPLICED,
                             "argv": [str(programs["vmsplice_leak"]), str(LEAK_SPLICED)]})
    return Plan(runs, traces)


PLAN_TIMEOUT_S = 3 * 3600  # one boot runs a whole plan; a debug kernel under TCG is slow


def run_plan(kernel: Path, plan: Plan, work: Path, icount: bool = False, cpus: int = 1,
             timeout: float = PLAN_TIMEOUT_S, probe_policies=None) -> tuple[list[dict], GuestResult]:
    """One boot runs the plan; ``probe_policies``: the guest first finds which of them the kernel takes and
    runs nothing under one it does not (the row says so)."""
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps({"runs": plan.runs, "probe_policies": list(probe_policies or [])}))
    result = run_in_guest(kernel, [sys.executable, str(INGUEST), str(plan_file)], icount=icount, cpus=cpus,
                          memory="2G", timeout=timeout)
    rows = [json.loads(line[len("RESULT "):]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return rows, result


def compare(rows: list[dict], traces: dict[str, Trace]) -> list[dict]:
    """One row per setting: the kernel's counters (minimum over repeats), the model's, and whether they agree."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["kind"] == "workload":
            groups.setdefault((row["pattern"], row["policy"], row["window"]), []).append(row)
    out = []
    for (pattern, policy, window), runs in groups.items():
        name = model_policy(policy, window)
        item = {"pattern": pattern, "policy": policy, "window": window, "model_policy": name}
        done = [r for r in runs if "output" in r]
        if not done:
            item.update(error=runs[0].get("error") or runs[0].get("stderr", "no output"), match=False)
        else:
            kernel_runs = [kernel_counters(r["output"]) for r in done]
            item["kernel"] = {k: min(run[k] for run in kernel_runs) for k in kernel_runs[0]}
            item["kernel_runs"] = kernel_runs
            model = model_counters(traces[pattern], name)
            item["model"] = {k: v for k, v in model.items() if k in item["kernel"]}
            item["not_measured"] = sorted(set(model) - set(item["kernel"]))
            item["dmesg"] = [line for r in runs for line in r.get("dmesg", [])]
            item["match"] = item["kernel"] == item["model"] and not item["dmesg"]
            item["child_ns"] = [r["output"]["child_ns"] for r in done]
        out.append(item)
    return out


def leak_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if row["kind"] != "leak":
            continue
        output = row.get("output", {})
        out.append({"policy": row["policy"], "window": row["window"], "spliced_pages": row["spliced"],
                    "returncode": row.get("returncode"), "leaked_bytes": output.get("leaked_bytes"),
                    "read_bytes": output.get("read_bytes"), "dmesg": row.get("dmesg", []),
                    "safe": row.get("returncode") == 0 and output.get("leaked_bytes") == 0
                    and not row.get("dmesg")})
    return out


def measure_rows(rows: list[dict]) -> list[dict]:
    """Instructions (virtual ns under -icount shift=0) per COW-broken page.

    The child's writes take ``child_ns``; the same writes repeated, now without faults, take
    ``rewrite_ns``: the difference is what the faults cost, almost all of it in the kernel
    (trap entry and exit included).
    """
    out = []
    for row in rows:
        if row["kind"] != "workload" or "output" not in row:
            continue
        output, during = row["output"], row["output"]["during"]
        broken = during["cow_fault_copy"] + during["cow_ahead_copy"] + during["cow_ahead_reuse"]
        kernel = output["child_ns"] - output["rewrite_ns"]
        item = {"pattern": row["pattern"], "policy": row["policy"], "window": row["window"],
                "pages": row["pages"], "child_instructions": output["child_ns"],
                "user_instructions": output["rewrite_ns"], "cow_broken_pages": broken,
                "faults": during["pgfault"], "cow_fault_copy": during["cow_fault_copy"],
                "kernel_instructions_per_cow_page": round(kernel / broken, 1) if broken else None}
        written = row.get("pages_written")
        if written:
            # Distinct pages the child writes: what it needed broken. Ahead copies it never writes
            # count in cow_broken_pages (and so lower the per-broken-page figure) but are waste.
            item["pages_written"] = written
            item["cow_ahead_copy"] = during["cow_ahead_copy"]
            item["kernel_instructions_per_written_page"] = round(kernel / written, 1)
        if "model_ahead_batches" in row:
            item["model_ahead_batches"] = row["model_ahead_batches"]
        out.append(item)
    return out


# Kernel instructions per COW fault outside handle_mm_fault (trap entry/exit with PTI, do_user_addr_fault,
# mmap lock, VMA lookup): ftrace under icount, benchmarks/results/kernel-ftrace-2026-11-27.json (6522 − 5906).
TRAP_INSTRUCTIONS = 616


def predicted_times(rows: list[dict], costs=None, trap_instructions: float = TRAP_INSTRUCTIONS) -> dict:
    """Predicted µs per written page on the host: guest event counts weighted by the host calibration.

    trap_us = cow_fault_us − ahead_copy_us (a one-page COW fault minus the per-page part of batched
    MADV_POPULATE_WRITE: what the trap and per-fault entry cost on real hardware, 2.515 − 2.050);
    work_us = ahead_copy_us (per page of batched population). For a row of a pattern with a window-0
    row W0:

        predicted_us_per_page = faults / pages_written × trap_us
                                + (ipp / ipp(W0)) × work_us

    with ipp the kernel instructions per written page under -icount: the in-kernel batch's per-page
    work is scaled by what the guest counted, not by the user-space fit (whose per-call part,
    ahead_call_us, is a syscall's and already inside the instruction count here).
    ``predicted_us_per_page_trap_excluded`` takes the trap's own instructions (``trap_instructions`` per
    fault) out of ``ipp`` first, since trap_us already pays for them. ``model_us_per_page``
    is the cost model as it stands (cow_copy × cow_fault_us + ahead copies × ahead_copy_us + batches
    × ahead_call_us, batches from the model's replay of the same trace), for contrast.
    """
    costs = costs or CostModel()
    trap_us, work_us = costs.cow_fault_us - costs.ahead_copy_us, costs.ahead_copy_us
    base = {r["pattern"]: r for r in rows if r["window"] == 0}
    out = []
    for r in rows:
        w0 = base.get(r["pattern"])
        written = r.get("pages_written") or r["cow_broken_pages"]
        ipp = r.get("kernel_instructions_per_written_page") or r["kernel_instructions_per_cow_page"]
        ipp0 = (w0.get("kernel_instructions_per_written_page") or w0["kernel_instructions_per_cow_page"]) if w0 else None
        if not (written and ipp and ipp0):
            continue
        faults_pp = r["faults"] / written
        predicted = faults_pp * trap_us + ipp / ipp0 * work_us
        faults0 = w0["faults"] / (w0.get("pages_written") or w0["cow_broken_pages"])
        excluded = faults_pp * trap_us + ((ipp - faults_pp * trap_instructions)
                                          / (ipp0 - faults0 * trap_instructions)) * work_us
        ahead = r.get("cow_ahead_copy", r["cow_broken_pages"] - r["cow_fault_copy"])
        batches = r.get("model_ahead_batches", r["cow_fault_copy"] if r["window"] else 0)
        model = (r["cow_fault_copy"] * costs.cow_fault_us + ahead * costs.ahead_copy_us
                 + batches * costs.ahead_call_us) / written
        out.append({"pattern": r["pattern"], "policy": r["policy"], "window": r["window"],
                    "faults_per_page": round(faults_pp, 4), "instructions_ratio": round(ipp / ipp0, 4),
                    "predicted_us_per_page": round(predicted, 3),
                    "predicted_us_per_page_trap_excluded": round(excluded, 3),
                    "model_us_per_page": round(model, 3)})
    for item in out:
        w0 = next(i for i in out if i["pattern"] == item["pattern"] and i["window"] == 0)
        item["vs_window_0"] = round(item["predicted_us_per_page"] / w0["predicted_us_per_page"] - 1, 4)
        item["trap_excluded_vs_window_0"] = round(item["predicted_us_per_page_trap_excluded"]
                                                  / w0["predicted_us_per_page_trap_excluded"] - 1, 4)
    return {"formula": "faults/pages_written * trap_us + (ipp/ipp_window0) * work_us",
            "formula_trap_excluded": "faults/pages_written * trap_us + ((ipp - faults/pages_written * "
                                     "trap_instructions) / (same at window 0)) * work_us",
            "trap_instructions": trap_instructions, "trap_us": round(trap_us, 3), "work_us": round(work_us, 3), "costs_source": costs.source,
            "rows": out}


def validate(kernel: Path, work: Path | None = None, **plan_args) -> dict:
    """Build the guest programs, run the plan in one boot, compare with the model; a JSON-ready dict."""
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-kernel-"))
    programs = compile_programs(work / "bin")
    plan = make_plan(work, programs, **plan_args)
    rows, result = run_plan(kernel, plan, work)
    return {"validation": compare(rows, plan.traces), "security": leak_rows(rows),
            "guest": guest_summary(rows, result)}


def guest_summary(rows: list[dict], result: GuestResult) -> dict:
    """The boot's status, its stderr's tail and every kernel-log problem it saw (boot, runs, after)."""
    dmesg = [line for r in rows for line in r.get("dmesg", [])] + result.dmesg_problems
    return {"returncode": result.returncode, "seconds": round(result.seconds, 1),
            "stderr_tail": result.stderr[-2000:], "dmesg": dmesg, "dmesg_clean": not dmesg}


# (pattern, policy, windows): sequential under fixed (the batch's gain), random under adaptive and
# fixed:16 (what a policy costs where nothing is ahead to copy).
MEASURE_SETTINGS = (("sequential", "fixed", WINDOWS), ("random", "fixed", (0, 16)),
                    ("random", "adaptive", (16, 32, 64)))


def measure(kernel: Path, work: Path | None = None, pages: int = DEFAULT_PAGES, windows=WINDOWS,
            settings=None, costs=None) -> dict:
    """Instructions per COW-broken (and per written) page under -icount shift=0, and predicted µs per page."""
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-measure-"))
    programs = compile_programs(work / "bin")
    if settings is None:
        settings = tuple((p, pol, windows if p == "sequential" else w) for p, pol, w in MEASURE_SETTINGS)
    runs = []
    for pattern, policy, wins in settings:
        plan = make_plan(work, programs, patterns=(pattern,), policies=(policy,), windows=wins, pages=pages,
                         leak=False, repeats=1)  # icount makes a run deterministic
        trace, stream, _ = workload_streams(pattern, pages, 0)
        for run in plan.runs:
            run["pages_written"] = len(set(stream))
            run["model_ahead_batches"] = Kernel(parse_policy(model_policy(policy, run["window"]))).replay(
                trace).as_dict()["ahead_batches"]
        runs += plan.runs
    rows, result = run_plan(kernel, Plan(runs, {}), work, icount=True)
    measured = measure_rows(rows)
    return {"measurement": measured, "icount": "shift=0", "predicted": predicted_times(measured, costs),
            "guest": guest_summary(rows, result)}


def integrity(kernel: Path, work: Path | None = None, policies=POLICIES, windows=(0, 16, 64, 512)) -> dict:
    """cow_integrity.py under every policy and window, on two vCPUs (real cross-CPU TLB flushes)."""
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-integrity-"))
    runs = [{"kind": "integrity", "policy": policy, "window": window,
             "argv": [sys.executable, str(INTEGRITY)]} for policy in policies for window in windows]
    rows, result = run_plan(kernel, Plan(runs, {}), work, cpus=2)
    out = [{"policy": r["policy"], "window": r["window"], "returncode": r.get("returncode"),
            "bad_rounds": r.get("output", {}).get("bad_rounds"), "error": r.get("error"), "dmesg": r.get("dmesg", []),
            "ok": r.get("returncode") == 0 and r.get("output", {}).get("bad_rounds") == 0 and not r.get("dmesg")}
           for r in rows if r.get("kind") == "integrity"]
    return {"integrity": out, "guest": guest_summary(rows, result)}
