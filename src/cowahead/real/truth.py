"""Ground truth from a measured run, and its page-for-page comparison with the model.

A measured step (runner.py) holds, for the pages it touched in first-touch
order, pagemap before and after and whether a PMD mapped each one, and for
every page of its 2 MiB ranges whose mapping changed, the folio it maps
afterwards. Faults are read off it in the model's words, one entry per
fault with the pages it mapped, at the first page the step touched:

- pages that appeared together in one new folio (one head PFN) are *one*
  fault at the first touched page among them: a *zero_fill* of 1, 16 or
  512 pages when written; read, the 4 KiB zero page (one page) or the huge
  zero page (its 2 MiB: PMD-mapped by one fault) is a *zero_page*;
- pages mapped before whose PFN changed, grouped the same way by their new
  folio, are a *cow_copy*: one 4 KiB page, or 512 at once where a write
  to the huge zero page got a new THP (do_huge_zero_wp_pmd);
- a written page with the same PFN, not made writable since the last fork
  (pagemap cannot show write protection: soft-dirty is not built into this
  kernel, so the writes are tracked), is a *reuse*: of the whole 2 MiB
  when a PMD mapped it before and still does (do_huge_pmd_wp_page's reuse:
  one fault makes 512 pages writable), else of one page.

A fault makes writable every page it mapped: all of a new folio, the whole
PMD of a whole-PMD reuse. AHEAD steps (MADV_POPULATE_WRITE) are read the
same way into *ahead_copies* and *ahead_reuses*. A page whose mapping
changed though the step touched no page of its folio, or that went, is
reported as unexplained (a khugepaged collapse would look so).

The minor-fault count of the step must cover the faults pagemap accounts
for, or the step is unexplained. Counts beyond them are not page faults of
the workload: at a process's first steps Python's own first-use
allocations fault (*noise*); and after a whole-PMD reuse the kernel made
the PMD writable in place without flushing the TLB, so every 4 KiB TLB
entry this VM still holds read-only for that 2 MiB faults once more
(docs/folios-host.md, a′: 4–316 extra faults, no PFN changes, no split;
``huge_pmd_set_accessed`` has nothing to do). Those are counted as
*spurious*, apart from noise and never as faults: the model, like the
kernel's own accounting of the reuse, counts one fault.

Every page faulted writable must then be exclusively mapped (pagemap bit
56; for a PMD-mapped THP the kernel reports the head page's). The result
is a fault log in the model's own format, (event index, pid, page, kind),
with the pages of each fault, compared as a multiset; and at every fork,
exec and exit the folio of each page of the span (folio_map.py), model
against kernel.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import linux
from .folio_map import PageKind, compared_pages, describe_differences, differences
from .plan import Op, Plan
from .runner import OpRecord, ProcessRecord, RunResult

LogEntry = tuple[int, int, int, str]
HPAGE_PMD_NR = 512
SHOWN_PER_MAP = 4  # disagreeing page runs shown per folio map


@dataclass
class Truth:
    log: list[LogEntry]
    pages: dict[LogEntry, int] = field(default_factory=dict)  # pages each fault mapped
    unexplained: list[str] = field(default_factory=list)  # steps whose fault counts disagree with pagemap
    minflt: int = 0           # minor faults measured inside the steps
    faults: int = 0           # faults pagemap accounts for
    noise: int = 0            # faults beyond those: Python's own heap inside a step (first-use allocations)
    spurious: int = 0         # faults beyond those in 2 MiB this process reused whole: stale read-only TLB entries


@dataclass
class Comparison:
    pattern: str
    policy: str
    model: Counter            # faults by kind
    real: Counter
    mismatches: list[str]
    unexplained: list[str]
    integrity: list[str]
    minflt: int
    faults: int
    noise: int
    spurious: int = 0
    model_pages: Counter = field(default_factory=Counter)  # pages by fault kind
    real_pages: Counter = field(default_factory=Counter)
    faults_matched: int = 0   # fault entries (event, pid, page, kind, pages) on both sides
    faults_total: int = 0     # on either side
    folio_mismatches: list[str] = field(default_factory=list)
    folio_pages_matched: int = 0  # span pages whose folio agrees, summed over every fork, exec and exit
    folio_pages_total: int = 0
    config: str = ""          # the THP configuration the run was made under ("" : the knobs as found)
    kernel_counters: dict[str, int] = field(default_factory=dict)  # THP counters that moved during the run
    fallbacks: dict[str, int] = field(default_factory=dict)  # *fallback* counters that moved
    collapsed: int = 0        # khugepaged/pages_collapsed moved by this much during the run
    knobs_changed: list[str] = field(default_factory=list)  # THP knobs someone else changed during the run

    @property
    def problems(self) -> list[str]:
        return self.mismatches + self.folio_mismatches + self.unexplained + self.integrity

    @property
    def status(self) -> str:
        """``match``; else why not: ``knobs`` (another program changed a THP knob during the run),
        ``fallback`` (a large folio could not be allocated, which the model, allocating always, cannot
        follow), ``khugepaged`` (it collapsed pages meanwhile), ``mismatch``."""
        if not self.problems and not self.knobs_changed:
            return "match"
        if self.knobs_changed:
            return "knobs"
        if self.fallbacks:
            return "fallback"
        if self.collapsed:
            return "khugepaged"
        return "mismatch"

    @property
    def ok(self) -> bool:
        return self.status == "match"


def real_fault_log(result: RunResult, zero_pfn: int) -> Truth:
    truth = Truth([])
    for process in result.processes:
        _classify_process(process, result.plan, zero_pfn, truth)
    return truth


def _classify_process(process: ProcessRecord, plan: Plan, zero_pfn: int, truth: Truth) -> None:
    writable: set[int] = set()     # span offsets this process has mapped writable since it was forked
    reused_pmds: set[int] = set()  # its 2 MiB ranges reused whole since then (stale TLB entries)
    for op in process.ops:
        if op.op == Op.FORK.value:
            writable.clear()  # fork write-protected every PTE and PMD of this process
            reused_pmds.clear()
            continue
        if op.before is None:
            raise ValueError("the run was not measured (measure=False)")
        faults = _classify_op(op, process.pid, plan, writable, reused_pmds, zero_pfn, truth)
        counted = len(faults)
        truth.minflt += op.minflt
        truth.faults += counted
        excess = max(0, op.minflt - counted)
        if excess and any(int(p) // HPAGE_PMD_NR in reused_pmds for p in op.pages.tolist()):
            truth.spurious += excess
        else:
            truth.noise += excess
        if op.minflt < counted:  # a page classified as faulting did not fault: its PTE was writable already
            truth.unexplained.append(
                f"pid {process.pid} step {op.step} ({op.op}, {len(op.pages)} pages from +{int(op.pages[0])}): "
                f"{op.minflt} minor faults, pagemap accounts for {counted} "
                f"({Counter(k for _, k in faults)})")
        after = dict(zip(op.pages.tolist(), linux.exclusive(op.after).tolist()))
        shared = [page for page, kind in faults if kind != "zero_page" and not after[page]]
        if shared:  # a page this process just faulted writable must be mapped by it alone (bit 56)
            truth.unexplained.append(f"pid {process.pid} step {op.step}: pages {shared[:8]} faulted writable "
                                     "but pagemap does not show them exclusive")
        if op.op in (Op.WRITE.value, Op.AHEAD.value):
            writable.update(op.pages.tolist())


def _group_key(kind: int, head: int, page: int) -> tuple[int, int]:
    """Pages of one new mapping: a folio by its head PFN; the 4 KiB zero page page by page (one PFN behind
    every read); the huge zero page per 2 MiB (one compound page behind every PMD that maps it)."""
    if kind == PageKind.ZERO_PAGE:
        return kind, -1 - page
    if kind == PageKind.HUGE_ZERO_PAGE:
        return kind, -1 - page // HPAGE_PMD_NR
    return kind, head


def _classify_op(op: OpRecord, pid: int, plan: Plan, writable: set[int], reused_pmds: set[int],
                 zero_pfn: int, truth: Truth) -> list[tuple[int, str]]:
    """The faults of one step as (span offset, kind), appended to ``truth`` with their pages."""
    write = op.op != Op.READ.value
    ahead = op.op == Op.AHEAD.value
    changes = op.changes
    groups: dict[tuple[int, int], list[int]] = {}
    group_of: dict[int, tuple[int, int]] = {}
    for page, present, head, kind in zip(changes.pages.tolist(), changes.is_present.tolist(),
                                         changes.head.tolist(), changes.kind.tolist()):
        if present:
            key = _group_key(kind, head, page)
            groups.setdefault(key, []).append(page)
            group_of[page] = key
    was_present = dict(zip(op.pages.tolist(), linux.present(op.before).tolist()))
    is_present = dict(zip(op.pages.tolist(), linux.present(op.after).tolist()))
    pfn_after = dict(zip(op.pages.tolist(), linux.pfns(op.after).tolist()))
    pmd_kept = set()
    if op.pmd_before is not None:
        pmd_kept = {p for p, b, a in zip(op.pages.tolist(), op.pmd_before.tolist(), op.pmd_after.tolist()) if b and a}
    # MADV_POPULATE_WRITE walks its range in address order, whatever order the plan named the pages in.
    order = np.argsort(op.pages, kind="stable") if ahead else np.arange(len(op.pages))
    faults: list[tuple[int, str]] = []
    attributed: set[tuple[int, int]] = set()
    for page, index in zip(op.pages[order].tolist(), op.indices[order].tolist()):
        pages = 1
        if page in group_of:
            key = group_of[page]
            if key in attributed:
                continue  # mapped by an earlier fault of this step, with its folio
            attributed.add(key)
            pages = len(groups[key])
            if not was_present[page]:
                kind = "zero_page" if key[0] in (PageKind.ZERO_PAGE, PageKind.HUGE_ZERO_PAGE) else "zero_fill"
                kind = "ahead_zero_fill" if ahead else kind
            else:
                kind = ("ahead_copies" if ahead else "cow_copy") if write else "read_copy"
            if key[0] == PageKind.ANON:
                writable.update(groups[key])  # a new folio is mapped writable whole
        elif not is_present[page]:
            kind = "lost"  # never expected: the access did not map the page
        elif write and page not in writable and pfn_after[page] != zero_pfn:
            kind = "ahead_reuses" if ahead else "reuse"
            if page in pmd_kept:  # do_huge_pmd_wp_page reused the whole PMD in place
                pages = HPAGE_PMD_NR
                base = page // HPAGE_PMD_NR * HPAGE_PMD_NR
                writable.update(range(base, base + HPAGE_PMD_NR))
                reused_pmds.add(page // HPAGE_PMD_NR)
            else:
                writable.add(page)
        else:
            continue
        entry = (index, pid, page + plan.span_start, kind)
        truth.log.append(entry)
        truth.pages[entry] = pages
        faults.append((page, kind))
    unaccounted = [p for key, pages in groups.items() if key not in attributed for p in pages]
    went = changes.pages[~changes.is_present].tolist()
    if unaccounted or went:
        truth.unexplained.append(
            f"pid {pid} step {op.step} ({op.op}): pages changed that no access of the step explains "
            f"(a khugepaged collapse?): {len(unaccounted)} remapped from +{min(unaccounted, default=0)}, "
            f"{len(went)} gone")
    return faults


def _with_pages(log: list[LogEntry], pages: dict[LogEntry, int]) -> Counter:
    return Counter(entry + (pages.get(entry, 1),) for entry in log)


def _name(kind: str, pages: int) -> str:
    return f"{kind}×{pages}" if pages != 1 else kind


def compare(result: RunResult, zero_pfn: int) -> Comparison:
    """The real run against the model, page for page: faults (kind and pages) and folios."""
    plan = result.plan
    truth = real_fault_log(result, zero_pfn)
    model = _with_pages(plan.model_log, plan.model_pages)
    real = _with_pages(truth.log, truth.pages)
    mismatches = []
    by_page: dict[tuple[int, int, int], tuple[list[str], list[str]]] = {}
    for entry in (model - real):
        by_page.setdefault(entry[:3], ([], []))[0].append(_name(*entry[3:]))
    for entry in (real - model):
        by_page.setdefault(entry[:3], ([], []))[1].append(_name(*entry[3:]))
    for (index, pid, page), (expected, found) in sorted(by_page.items()):
        mismatches.append(f"event {index} pid {pid} page {page:#x}: model {'+'.join(expected) or 'no fault'}, "
                          f"kernel {'+'.join(found) or 'no fault'}")
    folio_lines, folio_matched, folio_total = _compare_folio_maps(result)
    return Comparison(
        plan.pattern, plan.policy, Counter(k for *_, k in plan.model_log), Counter(k for *_, k in truth.log),
        mismatches, truth.unexplained, result.integrity, truth.minflt, truth.faults, truth.noise, truth.spurious,
        model_pages=_pages_by_kind(model), real_pages=_pages_by_kind(real),
        faults_matched=sum((model & real).values()), faults_total=sum((model | real).values()),
        folio_mismatches=folio_lines, folio_pages_matched=folio_matched, folio_pages_total=folio_total)


def _pages_by_kind(entries: Counter) -> Counter:
    out: Counter = Counter()
    for (*_, kind, pages), n in entries.items():
        out[kind] += pages * n
    return out


def _compare_folio_maps(result: RunResult) -> tuple[list[str], int, int]:
    """Each process's folio map at its forks, execs and exits against the model's at the same steps."""
    plan = result.plan
    lines: list[str] = []
    matched = total = 0
    for process in result.processes:
        for step_index, kernel_map in process.folio_maps:
            step = plan.steps[step_index]
            if step.folios is None:
                continue
            wrong = differences(step.folios, kernel_map)
            compared = compared_pages(step.folios, kernel_map)
            total += compared
            matched += compared - len(wrong)
            if len(wrong):
                event = step.event if step.event >= 0 else "end"
                where = f"pid {process.pid} before its {step.op.value} (step {step_index}, event {event})"
                shown = describe_differences(step.folios, kernel_map, wrong, plan.span_start, SHOWN_PER_MAP)
                lines.extend(f"{where}: {line}" for line in shown)
                lines.append(f"{where}: {len(wrong)} of {compared} mapped pages disagree")
    return lines, matched, total
