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

from ..model.kernel import Kernel
from ..policies import parse_policy
from ..trace.events import PAGE_SHIFT, EventKind
from ..trace.generators import BASE, PARENT, TraceBuilder, generate
from ..trace.trace import Trace
from .guestprogs import INGUEST, INTEGRITY, compile_programs
from .vm import GuestResult, run_in_guest
from .vmstat import COW_COUNTERS

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
    """The workload's deltas as the model's view: copies and reuses over the writes, unused at munmap."""
    during, unmap = output["during"], output["unmap"]
    return {"cow_fault_copy": during["cow_fault_copy"], "cow_ahead_copy": during["cow_ahead_copy"],
            "cow_ahead_reuse": during["cow_ahead_reuse"], "cow_ahead_unused": unmap["cow_ahead_unused"]}


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


def run_plan(kernel: Path, plan: Plan, work: Path, icount: bool = False, cpus: int = 1) -> tuple[list[dict], GuestResult]:
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps({"runs": plan.runs}))
    result = run_in_guest(kernel, [sys.executable, str(INGUEST), str(plan_file)], icount=icount, cpus=cpus,
                          memory="2G")
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
            item["model"] = model_counters(traces[pattern], name)
            item["match"] = item["kernel"] == item["model"]
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
                    "read_bytes": output.get("read_bytes"),
                    "safe": row.get("returncode") == 0 and output.get("leaked_bytes") == 0})
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
        out.append({"pattern": row["pattern"], "policy": row["policy"], "window": row["window"],
                    "pages": row["pages"], "child_instructions": output["child_ns"],
                    "user_instructions": output["rewrite_ns"], "cow_broken_pages": broken,
                    "faults": during["pgfault"], "cow_fault_copy": during["cow_fault_copy"],
                    "kernel_instructions_per_cow_page": round(kernel / broken, 1) if broken else None})
    return out


def validate(kernel: Path, work: Path | None = None, **plan_args) -> dict:
    """Build the guest programs, run the plan in one boot, compare with the model; a JSON-ready dict."""
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-kernel-"))
    programs = compile_programs(work / "bin")
    plan = make_plan(work, programs, **plan_args)
    rows, result = run_plan(kernel, plan, work)
    return {"validation": compare(rows, plan.traces), "security": leak_rows(rows),
            "guest": {"returncode": result.returncode, "seconds": round(result.seconds, 1),
                      "stderr_tail": result.stderr[-2000:]}}


def measure(kernel: Path, work: Path | None = None, pages: int = DEFAULT_PAGES, windows=WINDOWS) -> dict:
    """Sequential writes under -icount shift=0, fixed policy: instructions per COW-broken page."""
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-measure-"))
    programs = compile_programs(work / "bin")
    plan = make_plan(work, programs, patterns=("sequential",), policies=("fixed",), windows=windows, pages=pages,
                     leak=False, repeats=1)  # icount makes a run deterministic
    rows, result = run_plan(kernel, plan, work, icount=True)
    return {"measurement": measure_rows(rows), "icount": "shift=0",
            "guest": {"returncode": result.returncode, "seconds": round(result.seconds, 1),
                      "stderr_tail": result.stderr[-2000:]}}


def integrity(kernel: Path, work: Path | None = None, policies=POLICIES, windows=(0, 16, 64, 512)) -> dict:
    """cow_integrity.py under every policy and window, on two vCPUs (real cross-CPU TLB flushes)."""
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-integrity-"))
    runs = [{"kind": "integrity", "policy": policy, "window": window,
             "argv": [sys.executable, str(INTEGRITY)]} for policy in policies for window in windows]
    rows, result = run_plan(kernel, Plan(runs, {}), work, cpus=2)
    out = [{"policy": r["policy"], "window": r["window"], "returncode": r.get("returncode"),
            "bad_rounds": r.get("output", {}).get("bad_rounds"), "error": r.get("error"),
            "ok": r.get("returncode") == 0 and r.get("output", {}).get("bad_rounds") == 0} for r in rows]
    return {"integrity": out, "guest": {"returncode": result.returncode, "seconds": round(result.seconds, 1),
                                        "stderr_tail": result.stderr[-2000:]}}
