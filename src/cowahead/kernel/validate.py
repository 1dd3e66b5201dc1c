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

Window 0 is ``none`` in the model.

Large folios (issue 19): every pattern is a *workload* (``Workload``): the
guest's THP knobs for the run (``THP_CONFIGS``), the parent's operations
before fork (writes, reads that map the zero page, MADV_DONTNEED,
MADV_HUGEPAGE / MADV_NOHUGEPAGE; ``cow_workload -s``) and the streams after
it. The model replays the same events under the same knobs and the guest's
kernel version (``GUEST_KERNEL``: 6.12, which copies a shared large folio's
pages one by one and never reuses them by counts), not the host's. Beside the
counters above, these are compared: ``pgreuse`` (reuse faults), the THP
counters ``thp_fault_alloc`` and ``thp_split_pmd`` over the writes and over
the setup, and the region's layout from pagemap and kpageflags (pages
present, in a large folio, mapping the zero page) in the parent at fork, in
the child after its writes and in the parent after its own.

/proc/vmstat is global, so a stray fault
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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..model.costs import CostModel
from ..model.folio import FolioSettings
from ..model.kernel import Kernel
from ..model.memory import Mm
from ..policies import parse_policy
from ..trace.events import HPAGE_PMD_ORDER, LARGE_DESTINATIONS_KEY, PAGE_SHIFT, PAGE_SIZE, Advice, EventKind
from ..trace.generators import BASE, PARENT, TraceBuilder, generate
from ..trace.trace import Trace
from .guestprogs import INGUEST, INTEGRITY, compile_programs
from .vm import POLICIES, GuestResult, run_in_guest

WINDOWS = (0, 4, 16, 64)
# The 4 KiB patterns (MADV_NOHUGEPAGE over the region, every page written before fork) and the ones with
# large folios, holes and zero pages (LARGE_PATTERNS).
PATTERNS_4K = ("sequential", "random", "pingpong", "random2")
DEFAULT_PAGES = 2048  # four page tables of 512 PTEs: windows meet table ends
MODEL_FIELDS = {"cow_fault_copy": "cow_copy", "cow_ahead_copy": "ahead_copies",
                "cow_ahead_reuse": "ahead_reuses", "cow_ahead_unused": "ahead_waste"}
LEAK_SPLICED = 63
REPEATS = 3


def model_policy(policy: str, window: int) -> str:
    """The model's policy string for a kernel setting; window 0 is COW-ahead off. The kernel's ``folio``
    takes its window from the folio: cow_ahead_pages only switches it on."""
    if window == 0:
        return "none"
    return "folio" if policy == "folio" else f"{policy}:{window}"


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


# ----- workloads with large folios, holes and zero pages ---------------------------------------------

GUEST_KERNEL = "6.12.117"  # the patched kernel's release: the model follows its rules (FolioSettings.kernel)
# The THP knobs a run sets in the guest (and restores after it). "4k" is the guest's default (THP always, as
# Debian; every mTHP size never) with MADV_NOHUGEPAGE over the region in the setup.
GUEST_THP = {"enabled": "always", "hugepages-2048kB/enabled": "inherit", "hugepages-64kB/enabled": "never"}
THP_CONFIGS = {
    "4k": GUEST_THP,
    "always": GUEST_THP,
    "madvise": {**GUEST_THP, "enabled": "madvise"},
    "mthp-64k": {**GUEST_THP, "hugepages-2048kB/enabled": "never", "hugepages-64kB/enabled": "always"},
    # 16 and 64 KiB mTHP (16 KiB where a 64 KiB folio does not fit), PMD THP never.
    "mthp-16-64": {**GUEST_THP, "hugepages-2048kB/enabled": "never", "hugepages-64kB/enabled": "always",
                   "hugepages-16kB/enabled": "always"},
}
# khugepaged stays asleep during a plan (a collapse in the middle of a run is not in the trace).
KHUGEPAGED_SLEEP_MS = 24 * 3600 * 1000
ADVICE = {"h": Advice.HUGEPAGE, "n": Advice.NOHUGEPAGE}


@dataclass
class Workload:
    """One pattern as the guest runs it and the model replays it: the THP configuration, the parent's
    operations before fork (("w", p), ("r", p), ("d", p, n), ("h", p, n), ("n", p, n)), the streams."""
    name: str
    config: str
    setup: list[tuple]
    child: list[int]
    parent: list[int] | None
    pages: int
    # Issue 23: the kernel's vm.cow_ahead_large_destinations for the run, the model's
    # FolioSettings.large_destinations (the trace's LARGE_DESTINATIONS_KEY).
    large_destinations: bool = False

    @property
    def folios(self) -> FolioSettings:
        return replace(FolioSettings.from_thp(THP_CONFIGS[self.config], GUEST_KERNEL),
                       large_destinations=self.large_destinations)

    def setup_text(self) -> str:
        return "".join(" ".join(map(str, op)) + "\n" for op in self.setup)

    def trace(self) -> tuple[Trace, dict[str, int]]:
        """The model's events and the marks: how many events come before the fork, after the child's
        writes and after the parent's."""
        b = TraceBuilder()
        b.mmap(PARENT, self.pages)
        for op in self.setup:
            if op[0] == "w":
                b.write(PARENT, op[1])
            elif op[0] == "r":
                b.read(PARENT, op[1])
            elif op[0] == "d":
                b.add(PARENT, EventKind.DONTNEED, BASE + op[1] * PAGE_SIZE, op[2] * PAGE_SIZE)
            else:
                b.add(PARENT, EventKind.MADVISE, BASE + op[1] * PAGE_SIZE, op[2] * PAGE_SIZE, int(ADVICE[op[0]]))
        marks = {"fork": len(b.rows["pid"])}
        b.fork(PARENT, PARENT + 1)
        b.writes(PARENT + 1, self.child)
        marks["child"] = len(b.rows["pid"])
        b.writes(PARENT, self.parent or [])
        marks["parent"] = len(b.rows["pid"])
        b.exit(PARENT + 1)
        b.exit(PARENT)
        metadata = {"source": f"kernel-validate:{self.name}", "pattern": self.name, "pages": self.pages,
                    "thp": self.folios.as_thp(), "kernel": GUEST_KERNEL}
        if self.large_destinations:
            metadata[LARGE_DESTINATIONS_KEY] = True
        return b.trace(metadata), marks


def _writes(pages) -> list[tuple]:
    return [("w", int(p)) for p in pages]


def large_workload(name: str, pages: int, seed: int) -> Workload:
    """The patterns with large folios, holes and zero pages (``pages`` ≥ 2048: four page tables)."""
    rng = np.random.default_rng(seed)
    every = list(range(pages))
    random_stream = [int(p) for p in rng.integers(0, pages, pages)]
    quarter = lambda: [int(p) for p in rng.integers(0, pages, pages // 4)]  # noqa: E731
    if name == "thp-sequential":  # four PMD THPs; each first write splits one, the rest is PTE-mapped
        return Workload(name, "always", _writes(every), every, None, pages)
    if name == "thp-random2":  # two-sided: the parent meets its own THPs split by its faults, shared still
        return Workload(name, "always", _writes(every), quarter(), quarter(), pages)
    if name == "thp-split":  # MADV_HUGEPAGE; a PTE-mapped THP with a hole, a zapped PMD (no page table), a VMA split
        setup = [("h", 0, pages)] + _writes(every) + [("d", 100, 1), ("d", 1024, 512), ("n", 1600, 16)]
        return Workload(name, "madvise", setup, random_stream, None, pages)
    if name == "holes-4k":  # 4 KiB: holes inside tables and a table that does not exist (pages 512-1023)
        written = [p for p in every if (p < 500 and not 300 <= p < 350) or (p >= 1024 and p % 5)]
        return Workload(name, "4k", [("n", 0, pages)] + _writes(written), random_stream, None, pages)
    if name == "zero":  # zero pages in windows (odd pages of 0-511), then the huge zero page, then a THP
        setup = [("n", 0, 1024)] + [("w" if p % 2 == 0 or p >= 512 else "r", p) for p in range(1024)]
        setup += [("r", 1024)] + _writes(range(1536, pages))
        return Workload(name, "always", setup, every, None, pages)
    if name == "mthp-sequential":  # 64 KiB mTHPs, PTE-mapped from the start
        return Workload(name, "mthp-64k", _writes(every), every, None, pages)
    if name == "mthp-holes":  # a partly zapped mTHP, zero pages, and an mTHP faulted among them
        setup = _writes(every) + [("d", 40, 3), ("d", 512, 512)] + [("r", p) for p in range(600, 616)]
        setup += [("w", 700)]
        return Workload(name, "mthp-64k", setup, random_stream, quarter(), pages)
    raise ValueError(f"no large-folio pattern {name!r}")


LARGE_PATTERNS = ("thp-sequential", "thp-random2", "thp-split", "holes-4k", "zero", "mthp-sequential", "mthp-holes")
# Issue 23, large destination folios: "ld-" + a pattern above, run with vm.cow_ahead_large_destinations=1
# (the model with large destinations), under 64 KiB mTHP ("ld-") or 16 and 64 KiB ("ld16-").
LD_PATTERNS = {"ld-mthp-sequential": ("mthp-sequential", "mthp-64k"), "ld-mthp-holes": ("mthp-holes", "mthp-64k"),
               "ld16-mthp-sequential": ("mthp-sequential", "mthp-16-64"),
               "ld16-mthp-holes": ("mthp-holes", "mthp-16-64")}
PATTERNS = PATTERNS_4K + LARGE_PATTERNS + tuple(LD_PATTERNS)


def workload(pattern: str, pages: int, seed: int) -> Workload:
    """Any pattern as a Workload: a 4 KiB one is MADV_NOHUGEPAGE over the region, then every page written."""
    if pattern in LD_PATTERNS:
        base, config = LD_PATTERNS[pattern]
        return replace(large_workload(base, pages, seed), name=pattern, config=config, large_destinations=True)
    if pattern in LARGE_PATTERNS:
        return large_workload(pattern, pages, seed)
    _, child, parent = workload_streams(pattern, pages, seed)
    return Workload(pattern, "4k", [("n", 0, pages)] + _writes(range(pages)), child, parent, pages)


def region_layout(kernel: Kernel, mm: Mm, pages: int) -> dict[str, int]:
    """What pagemap and kpageflags show of the region: pages present, in a large folio (not the huge zero
    page), mapping the zero page (4 KiB or huge)."""
    first = BASE >> PAGE_SHIFT
    present = large = zero = 0
    for page in range(first, first + pages):
        pte = mm.ptes.get(page)
        if pte is not None:
            frame = pte.frame
        else:
            pmd = mm.pmds.get(page >> HPAGE_PMD_ORDER)
            if pmd is None:
                continue
            frame = kernel.pmd_frame(pmd, page)
        present += 1
        if frame is kernel.zero_page:
            zero += 1
        elif frame.folio is not None:
            large += 1
    return {"present": present, "large": large, "zero": zero}


# Kernel key -> model Counters field, over the writes after fork ("during") and over the setup.
DURING_FIELDS = {"cow_fault_copy": "cow_copy", "cow_ahead_copy": "ahead_copies", "cow_ahead_reuse": "ahead_reuses",
                 "pgreuse": "reuse", "thp_fault_alloc": "thp_fault_alloc", "thp_split_pmd": "thp_split_pmd",
                 "cow_large_alloc": "cow_large_alloc", "cow_large_pages": "cow_large_pages"}
# Kernel counters kept per run beside the comparison: a large destination's allocation that failed (the model
# allocates every folio, so a run with one is not comparable and says so).
KERNEL_ONLY = ("cow_large_fallback",)
SETUP_FIELDS = {"thp_fault_alloc": "thp_fault_alloc", "thp_split_pmd": "thp_split_pmd"}
# Counters kept beside the comparison, not in it (none now). pgreuse was, while a guest run read one more
# than the model in 55 of 143 settings: the child's first now_ns() inside the snapshot wrote a stack page (a
# reuse fault, or a copy); fixed in cow_workload.c, pgreuse is compared again.
REPORTED_ONLY: tuple[str, ...] = ()
LAYOUTS = {"layout_fork": ("fork", PARENT), "layout_child": ("child", PARENT + 1), "layout_parent": ("parent", PARENT)}


def model_workload(w: Workload, policy: str) -> dict[str, int]:
    """The model's view of a workload run, keyed as ``workload_counters`` keys the kernel's."""
    trace, marks = w.trace()
    kernel = Kernel(parse_policy(policy), folios=w.folios)
    kernel.policy.prepare(trace)
    at: dict[str, dict] = {}
    layouts: dict[str, dict] = {}
    for index, event in enumerate(trace.events()):
        kernel.apply(event, index)
        for name, mark in marks.items():
            if mark == index + 1:
                at[name] = kernel.counters.as_dict()
        for key, (mark, pid) in LAYOUTS.items():
            if marks[mark] == index + 1:
                layouts[key] = region_layout(kernel, kernel.mm_of(pid), w.pages)
    for counters in at.values():
        # PGREUSE counts wp_page_reuse, a PTE's; do_huge_pmd_wp_page reuses a PMD without it. The model
        # counts both as reuse, a PMD's with 512 reuse pages: 511 more than a PTE's.
        counters["reuse"] -= (counters["reuse_pages"] - counters["reuse"]) // 511
    out = {key: at["parent"][field] - at["fork"][field] for key, field in DURING_FIELDS.items()}
    out.update({f"setup_{key}": at["fork"][field] for key, field in SETUP_FIELDS.items()})
    for key, layout in layouts.items():
        out.update({f"{key}_{k}": v for k, v in layout.items()})
    return out


def workload_counters(output: dict) -> dict[str, int]:
    """The guest's report of a ``-s`` run, flat: the writes' deltas, the setup's, the three layouts; a
    value of -1 (a counter this kernel lacks, a layout it could not read) is left out."""
    out = {key: output["during"].get(key, -1) for key in DURING_FIELDS}
    out.update({f"setup_{key}": output["setup"][key] for key in SETUP_FIELDS})
    for key in LAYOUTS:
        out.update({f"{key}_{k}": v for k, v in output[key].items()})
    return {k: v for k, v in out.items() if v != -1}


@dataclass
class Plan:
    runs: list[dict]
    traces: dict[str, Trace | Workload]


def workload_argv(work: Path, programs: dict[str, Path], w: Workload) -> list[str]:
    """``cow_workload -s SETUP PAGES CHILD [PARENT]`` for a Workload, its files written into ``work``."""
    setup = work / f"setup-{w.name}.txt"
    setup.write_text(w.setup_text())
    argv = [str(programs["cow_workload"]), "-s", str(setup), str(w.pages)]
    for who, stream in (("child", w.child), ("parent", w.parent)):
        if stream is not None:
            path = work / f"stream-{w.name}-{who}.txt"
            path.write_text("\n".join(map(str, stream)) + "\n")
            argv.append(str(path))
    return argv


def make_plan(work: Path, programs: dict[str, Path], patterns=PATTERNS, policies=POLICIES, windows=WINDOWS,
              pages: int = DEFAULT_PAGES, seed: int = 0, leak: bool = True, repeats: int = REPEATS) -> Plan:
    """Every pattern is run as a Workload (``cow_workload -s``) under its THP configuration."""
    runs, traces = [], {}
    for pattern in patterns:
        w = workload(pattern, pages, seed)
        traces[pattern] = w
        argv = workload_argv(work, programs, w)
        for policy in policies:
            for window in windows:
                if window == 0 and policy != policies[0]:
                    continue  # off is off, whatever the policy
                for repeat in range(repeats):
                    runs.append({"kind": "workload", "pattern": pattern, "policy": policy, "window": window,
                                 "repeat": repeat, "pages": pages, "argv": argv, "thp": THP_CONFIGS[w.config],
                                 "thp_config": w.config, "large_destinations": int(w.large_destinations)})
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
    settings = {"khugepaged_sleep_ms": KHUGEPAGED_SLEEP_MS} if any("thp" in r for r in plan.runs) else {}
    plan_file.write_text(json.dumps({"runs": plan.runs, "probe_policies": list(probe_policies or []), **settings}))
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
            w = traces[pattern]
            if isinstance(w, Workload):
                kernel_runs = [workload_counters(r["output"]) for r in done]
                model = model_workload(w, name)
                item["thp_config"] = w.config
                item["thp_set"] = done[0].get("thp_set")
                item["large_destinations"] = w.large_destinations
                item["kernel_only"] = {k: [r["output"]["during"].get(k, -1) for r in done] for k in KERNEL_ONLY}
            else:
                kernel_runs = [kernel_counters(r["output"]) for r in done]
                model = model_counters(w, name)
            item["kernel"] = {k: min(run[k] for run in kernel_runs) for k in kernel_runs[0]}
            item["kernel_runs"] = kernel_runs
            if isinstance(w, Workload):
                item["reported"] = {k: [item["kernel"].pop(k), model.pop(k)] for k in REPORTED_ONLY
                                    if k in item["kernel"]}
                for run in kernel_runs:
                    for k in REPORTED_ONLY:
                        run.pop(k, None)
            item["model"] = {k: v for k, v in model.items() if k in item["kernel"]}
            item["not_measured"] = sorted(set(model) - set(item["kernel"]))
            item["dmesg"] = [line for r in runs for line in r.get("dmesg", [])]
            item["differs"] = {k: [item["kernel"][k], item["model"][k]] for k in item["kernel"]
                               if item["kernel"][k] != item["model"].get(k)}
            knobs = [r.get("thp_set") for r in done if "thp" in r]
            item["thp_ok"] = all(k == done[0]["thp"] for k in knobs)  # the guest took the knobs
            item["match"] = item["kernel"] == item["model"] and not item["dmesg"] and item["thp_ok"]
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
                "kernel_instructions_per_cow_page": round(kernel / broken, 1) if broken else None,
                "large_destinations": row.get("large_destinations", 0),
                "cow_large_alloc": during.get("cow_large_alloc", -1)}
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
    (work / "rows.json").write_text(json.dumps(rows))  # the guest's raw rows, should the comparison fail
    return {"validation": compare(rows, plan.traces), "security": leak_rows(rows),
            "guest": guest_summary(rows, result)}


def guest_summary(rows: list[dict], result: GuestResult) -> dict:
    """The boot's status, its output's tails and every kernel-log problem it saw (boot, runs, after)."""
    dmesg = [line for r in rows for line in r.get("dmesg", [])] + result.dmesg_problems
    return {"returncode": result.returncode, "seconds": round(result.seconds, 1),
            "stderr_tail": result.stderr[-2000:], "stdout_tail": result.stdout[-1000:],
            "dmesg": dmesg, "dmesg_clean": not dmesg}


# (pattern, policy, windows): sequential under fixed (the batch's gain), random under adaptive and
# fixed:16 (what a policy costs where nothing is ahead to copy).
MEASURE_SETTINGS = (("sequential", "fixed", WINDOWS), ("random", "fixed", (0, 16)),
                    ("random", "adaptive", (16, 32, 64)))
# Issue 23: 64 KiB mTHP sources, large destinations off ("mthp-") and on ("ld-", window 0 the control
# under the same knobs): sequential under fixed, random writes (mthp-holes) under adaptive and fixed:16.
MEASURE_LARGE_SETTINGS = tuple((f"{ld}{pattern}", policy, windows) for ld in ("", "ld-")
                               for pattern, policy, windows in (("mthp-sequential", "fixed", (0, 16, 64, 512)),
                                                                ("mthp-holes", "fixed", (0, 16)),
                                                                ("mthp-holes", "adaptive", (16, 32, 64))))


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
        w = plan.traces[pattern]  # the Workload the guest runs: its setup, streams and THP knobs
        trace, _ = w.trace()
        for run in plan.runs:
            run["pages_written"] = len(set(w.child))
            model = Kernel(parse_policy(model_policy(policy, run["window"])), folios=w.folios)
            run["model_ahead_batches"] = model.replay(trace).as_dict()["ahead_batches"]
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
