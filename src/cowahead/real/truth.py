"""Ground truth from a measured run, and its page-for-page comparison with the model.

Per page at its first touch in a step, from pagemap before and after:

- not present before a write: a *zero_fill*; before a read: *zero_page*
  (the shared zero page is mapped: its PFN, known from a probe);
- present and its PFN changed: a COW *cow_copy* (from the zero page too);
- present, same PFN: a *reuse* if the PTE was write-protected, i.e. this
  process has not written the page since the fork that made it shared.
  Pagemap cannot show write protection (soft-dirty is not built into this
  kernel), so the minor-fault count of the step confirms it: faults minus
  zero-fills and copies must cover these reuse candidates, or the step is
  reported as unexplained. A few faults more than pagemap accounts for
  happen at a process's first steps (Python's own first-use allocations on
  COW-shared heap pages); they are counted as noise, not as page faults.

Every page faulted writable must then be exclusively mapped (pagemap bit
56). AHEAD steps (MADV_POPULATE_WRITE) are read the same way into
*ahead_copies* and *ahead_reuses*. The result is a fault log in the model's
own format, (event index, pid, page, kind), compared as a multiset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import linux
from .plan import Op
from .runner import OpRecord, ProcessRecord, RunResult

LogEntry = tuple[int, int, int, str]


@dataclass
class Truth:
    log: list[LogEntry]
    unexplained: list[str] = field(default_factory=list)  # steps whose fault counts disagree with pagemap
    minflt: int = 0           # minor faults measured inside the steps
    faults: int = 0           # faults pagemap accounts for
    noise: int = 0            # faults beyond those: Python's own heap inside a step (first-use allocations)


@dataclass
class Comparison:
    pattern: str
    policy: str
    model: Counter
    real: Counter
    mismatches: list[str]
    unexplained: list[str]
    integrity: list[str]
    minflt: int
    faults: int
    noise: int

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.unexplained or self.integrity)


def real_fault_log(result: RunResult, zero_pfn: int) -> Truth:
    truth = Truth([])
    for process in result.processes:
        _classify_process(process, result.plan.span_start, zero_pfn, truth)
    return truth


def _classify_process(process: ProcessRecord, span_start: int, zero_pfn: int, truth: Truth) -> None:
    written: set[int] = set()  # pages this process made writable since it was forked
    for op in process.ops:
        if op.op == Op.FORK.value:
            written.clear()  # fork write-protected every PTE of this process
            continue
        if op.before is None:
            raise ValueError("the run was not measured (measure=False)")
        kinds = _classify_op(op, written, zero_pfn)
        for page, index, kind in zip(op.pages.tolist(), op.indices.tolist(), kinds):
            if kind:
                truth.log.append((index, process.pid, page + span_start, kind))
        counted = sum(1 for k in kinds if k)
        truth.minflt += op.minflt
        truth.faults += counted
        truth.noise += max(0, op.minflt - counted)
        if op.minflt < counted:  # a reuse candidate did not fault: its PTE was writable already
            truth.unexplained.append(
                f"pid {process.pid} step {op.step} ({op.op}, {len(op.pages)} pages from +{int(op.pages[0])}): "
                f"{op.minflt} minor faults, pagemap accounts for {counted} "
                f"({Counter(k for k in kinds if k)})")
        shared = [page for page, kind, is_exclusive in zip(op.pages.tolist(), kinds, linux.exclusive(op.after))
                  if kind and kind != "zero_page" and not is_exclusive]
        if shared:  # a page this process just faulted writable must be mapped by it alone (bit 56)
            truth.unexplained.append(f"pid {process.pid} step {op.step}: pages {shared[:8]} faulted writable "
                                     "but pagemap does not show them exclusive")
        if op.op in (Op.WRITE.value, Op.AHEAD.value):
            written.update(op.pages.tolist())


def _classify_op(op: OpRecord, written: set[int], zero_pfn: int) -> list[str]:
    was_present = linux.present(op.before)
    is_present = linux.present(op.after)
    old, new = linux.pfns(op.before), linux.pfns(op.after)
    ahead = op.op == Op.AHEAD.value
    kinds = []
    for i, page in enumerate(op.pages.tolist()):
        if not is_present[i]:
            kinds.append("lost")  # never expected: the access did not map the page
        elif not was_present[i]:
            if op.op == Op.READ.value:
                kinds.append("zero_page" if new[i] == zero_pfn else "read_fill")
            else:
                kinds.append("ahead_zero_fill" if ahead else "zero_fill")
        elif old[i] != new[i]:
            kinds.append("ahead_copies" if ahead else "cow_copy")
        elif op.op != Op.READ.value and page not in written and old[i] != zero_pfn:
            kinds.append("ahead_reuses" if ahead else "reuse")
        else:
            kinds.append("")
    return kinds


def compare(result: RunResult, zero_pfn: int) -> Comparison:
    """The real run against the model, page for page."""
    plan = result.plan
    truth = real_fault_log(result, zero_pfn)
    model = Counter(plan.model_log)
    real = Counter(truth.log)
    mismatches = []
    by_page: dict[tuple[int, int, int], tuple[list[str], list[str]]] = {}
    for entry in (model - real):
        by_page.setdefault(entry[:3], ([], []))[0].append(entry[3])
    for entry in (real - model):
        by_page.setdefault(entry[:3], ([], []))[1].append(entry[3])
    for (index, pid, page), (expected, found) in sorted(by_page.items()):
        mismatches.append(f"event {index} pid {pid} page {page:#x}: model {'+'.join(expected) or 'no fault'}, "
                          f"kernel {'+'.join(found) or 'no fault'}")
    return Comparison(plan.pattern, plan.policy, Counter(k for *_, k in plan.model_log),
                      Counter(k for *_, k in truth.log), mismatches, truth.unexplained, result.integrity,
                      truth.minflt, truth.faults, truth.noise)
