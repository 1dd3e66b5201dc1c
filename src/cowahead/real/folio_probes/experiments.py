"""What this kernel does with THP and mTHP folios, measured: the experiments of issue 18.

Each experiment runs the C probe under one named THP configuration
(``cowahead.real.thp.CONFIGS``) and measures every step three ways: the
minor faults the probe's own loop took (getrusage), the folios of the
watched range in the parent and the child before and after (pagemap PFNs,
kpageflags, PMD mapping: ``cowahead.real.folios``), and the deltas of the
THP counters (/proc/vmstat ``thp_*``, the per-size ``stats/``). A PFN that
changed under a write is a copy; a write fault whose PFN stayed is a
reuse; a page that appears is a zero fill (or the zero page on a read).

The THP counters are global: another process's faults count in them too,
so they are reported as seen and the tests compare them with ``>=``.

Spurious faults: on this VM a 2 MiB mapping is cached by the TLB as 4 KiB
entries, so after the kernel makes a PMD writable in place (a whole-PMD
reuse, which flushes nothing) every 4 KiB piece still cached read-only
faults once more, and that fault changes nothing (measured: 3 to 316 extra
faults in one loop over the 2 MiB, the most after reading it first). So a
step that reuses a PMD writes one page alone, and the rest in a second step.

    .venv/bin/python -m cowahead.real.folio_probes.experiments [NAME ...] > facts.json

runs them (as root) and prints every step as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import CowaheadError
from ...trace.events import PAGE_SIZE
from ..folios import Folios, read_folios, smaps_range
from ..thp import counter_deltas, thp_config, thp_counters
from . import Probe

MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_COLLAPSE = 25
PR_SET_THP_DISABLE = 41
PR_GET_THP_DISABLE = 42
PR_THP_DISABLE_EXCEPT_ADVISED = 1 << 1  # Linux 6.18: PR_SET_THP_DISABLE's arg3 flag

PMD_PAGES = 512
PMD_SIZE = PMD_PAGES * PAGE_SIZE
KB64 = 16 * PAGE_SIZE


# ----- measuring a step ----------------------------------------------------------------------


@dataclass
class Change:
    """One process's watched range across a step."""
    before: Folios
    after: Folios

    @property
    def copied(self) -> np.ndarray:
        """Pages present before and after whose PFN changed: COW copies (or a collapse's copies)."""
        return self.before.present & self.after.present & (self.before.pfn != self.after.pfn)

    @property
    def appeared(self) -> np.ndarray:
        return ~self.before.present & self.after.present

    @property
    def dropped(self) -> np.ndarray:
        return self.before.present & ~self.after.present

    def to_dict(self) -> dict:
        return {"copied": int(self.copied.sum()), "appeared": int(self.appeared.sum()),
                "dropped": int(self.dropped.sum()), "after": self.after.summary()}


@dataclass
class Step:
    label: str
    reply: dict
    parent: Change
    child: Change | None
    counters: dict[str, int]
    smaps: dict[str, dict]

    @property
    def faults(self) -> int:
        return self.reply.get("minflt", 0)

    def to_dict(self) -> dict:
        out = {"step": self.label, "faults": self.faults, "reply": self.reply, "parent": self.parent.to_dict()}
        if self.child is not None:
            out["child"] = self.child.to_dict()
        out["counters"] = self.counters
        out["smaps"] = self.smaps
        return out


SMAPS_FIELDS = ("Rss", "Anonymous", "AnonHugePages")


@dataclass
class Run:
    """A probe, the range it watches, and the steps measured so far."""
    probe: Probe
    address: int = 0
    pages: int = 0
    steps: list[Step] = field(default_factory=list)

    def watch(self, address: int, pages: int) -> None:
        self.address, self.pages = address, pages

    def page(self, index: int) -> int:
        return self.address + index * PAGE_SIZE

    def folios(self, child: bool = False) -> Folios:
        return read_folios(self.probe.child_pid if child else self.probe.pid, self.address, self.pages)

    def step(self, label: str, action: Callable[[], dict | int | None]) -> Step:
        """Run ``action`` (a probe command) and measure it."""
        had_child = self.probe.child_pid is not None
        parent_before = self.folios()
        child_before = self.folios(child=True) if had_child else None
        counters_before = thp_counters()
        reply = action()
        counters = counter_deltas(counters_before, thp_counters())
        reply = reply if isinstance(reply, dict) else {"value": reply}
        has_child = self.probe.child_pid is not None
        child = None
        if has_child and child_before is not None:
            child = Change(child_before, self.folios(child=True))
        elif has_child:  # forked in this step: the child's range before is the parent's
            child = Change(parent_before, self.folios(child=True))
        smaps = {"parent": self._smaps(self.probe.pid)}
        if has_child:
            smaps["child"] = self._smaps(self.probe.child_pid)
        step = Step(label, reply, Change(parent_before, self.folios()), child, counters, smaps)
        self.steps.append(step)
        return step

    def _smaps(self, pid: int) -> dict:
        totals = smaps_range(pid, self.address, self.pages * PAGE_SIZE)
        return {k: totals.get(k, 0) for k in SMAPS_FIELDS}


@dataclass
class Experiment:
    name: str
    config: str
    knobs: dict
    steps: list[Step]
    facts: dict

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config, "knobs": self.knobs,
                "facts": self.facts, "steps": [s.to_dict() for s in self.steps]}


def _experiment(name: str, config: str, body: Callable[[Run], dict], **overrides) -> Experiment:
    with thp_config(config, **overrides) as knobs, Probe() as probe:
        run = Run(probe)
        facts = body(run)
    return Experiment(name, config, knobs, run.steps, facts)


def _pmd_mapped(f: Folios, first: int, pages: int) -> int:
    return int(f.pmd_mapped[first:first + pages].sum()) if f.pmd_mapped is not None else -1


def _folio_pages(f: Folios, first: int, pages: int) -> list[int]:
    """The distinct folio sizes of a page range, zero pages left out."""
    sel = slice(first, first + pages)
    real = f.present[sel] & ~f.is_zero_page[sel]
    return sorted(set(f.folio_pages[sel][real].tolist()))


# ----- a. PMD THP and fork --------------------------------------------------------------------


def pmd_thp_fork(run: Run) -> dict:
    """Four 2 MiB THPs (T0..T3) in a MADV_HUGEPAGE region, fork, then writes in each order."""
    p = run.probe
    pmds = 4
    a = p.map(pmds * PMD_SIZE, PMD_SIZE)
    run.watch(a, pmds * PMD_PAGES)
    run.step("madvise(MADV_HUGEPAGE) the 8 MiB region", lambda: p.madvise(a, pmds * PMD_SIZE, MADV_HUGEPAGE))
    fill = run.step("parent writes every page of T0..T3", lambda: p.write(a, pmds * PMD_SIZE, 1))
    fork = run.step("fork", p.fork)
    T = [i * PMD_PAGES for i in range(pmds)]
    one = run.step("child writes page 5 of T0", lambda: p.write(run.page(T[0] + 5), PAGE_SIZE, 2, child=True))
    rest = run.step("child writes every page of T0", lambda: p.write(run.page(T[0]), PMD_SIZE, 3, child=True))
    reuse1 = run.step("parent writes page 0 of T0 (the child maps none of T0 now)",
                      lambda: p.write(run.page(T[0]), PAGE_SIZE, 4))
    reuse_rest = run.step("parent writes every page of T0", lambda: p.write(run.page(T[0]), PMD_SIZE, 4))
    # The reverse order: the parent writes first while the child still maps T1 by its PMD.
    p_first = run.step("parent writes every page of T1 (the child maps T1 by its PMD)",
                       lambda: p.write(run.page(T[1]), PMD_SIZE, 5))
    c_after = run.step("child writes page 0 of T1 (the parent copied all of T1)",
                       lambda: p.write(run.page(T[1]), PAGE_SIZE, 6, child=True))
    c_after_rest = run.step("child writes every page of T1", lambda: p.write(run.page(T[1]), PMD_SIZE, 6, child=True))
    # The child has copied one page of T2 and still maps 511 of its pages: the parent writes T2.
    c_one = run.step("child writes page 0 of T2", lambda: p.write(run.page(T[2]), PAGE_SIZE, 7, child=True))
    p_shared = run.step("parent writes every page of T2 (the child maps 511 of its pages by PTEs)",
                        lambda: p.write(run.page(T[2]), PMD_SIZE, 8))
    c_reuse = run.step("child writes every page of T2 (the parent copied all of T2)",
                       lambda: p.write(run.page(T[2]), PMD_SIZE, 9, child=True))
    gone = run.step("child exits", p.exit_child)
    solo = run.step("parent writes page 0 of T3 (never written since the fork; the child is gone)",
                    lambda: p.write(run.page(T[3]), PAGE_SIZE, 10))
    solo_rest = run.step("parent writes every page of T3", lambda: p.write(run.page(T[3]), PMD_SIZE, 10))

    return {
        "zero_fill_faults_per_2mib": fill.faults / pmds,
        "zero_fill_folio_sizes": fill.parent.after.folio_sizes(),
        "zero_fill_pmd_mapped_pages": _pmd_mapped(fill.parent.after, 0, run.pages),
        "fork_child_pmd_mapped_pages": _pmd_mapped(fork.child.after, 0, run.pages),
        "fork_child_exclusive_pages": int(fork.child.after.exclusive.sum()),
        "child_write_one_faults": one.faults,
        "child_write_one_child_copied": int(one.child.copied.sum()),
        "child_write_one_child_T0_pmd_mapped": _pmd_mapped(one.child.after, T[0], PMD_PAGES),
        "child_write_one_child_T1_pmd_mapped": _pmd_mapped(one.child.after, T[1], PMD_PAGES),
        "child_write_one_child_T0_folios": _folio_pages(one.child.after, T[0], PMD_PAGES),
        "child_write_one_child_unwritten_same_pfn_as_parent":
            int((one.child.after.pfn[T[0]:T[1]] == one.parent.after.pfn[T[0]:T[1]]).sum()),
        "child_write_one_parent_copied": int(one.parent.copied.sum()),
        "child_write_one_parent_T0_pmd_mapped": _pmd_mapped(one.parent.after, T[0], PMD_PAGES),
        "child_write_one_thp_split_pmd": one.counters.get("thp_split_pmd", 0),
        "child_write_one_thp_split_page": one.counters.get("thp_split_page", 0),
        "child_write_rest_faults": rest.faults,
        "child_write_rest_child_copied": int(rest.child.copied.sum()),
        "child_write_rest_child_T0_folios": _folio_pages(rest.child.after, T[0], PMD_PAGES),
        "parent_after_child_copied_all_faults": reuse1.faults,
        "parent_after_child_copied_all_copied": int(reuse1.parent.copied.sum()),
        "parent_after_child_copied_all_T0_pmd_mapped": _pmd_mapped(reuse1.parent.after, T[0], PMD_PAGES),
        "parent_after_child_copied_all_rest_faults": reuse_rest.faults,
        "parent_after_child_copied_all_rest_copied": int(reuse_rest.parent.copied.sum()),
        "parent_first_faults": p_first.faults,
        "parent_first_parent_copied": int(p_first.parent.copied.sum()),
        "parent_first_parent_T1_pmd_mapped": _pmd_mapped(p_first.parent.after, T[1], PMD_PAGES),
        "parent_first_child_T1_pmd_mapped": _pmd_mapped(p_first.child.after, T[1], PMD_PAGES),
        "parent_first_thp_split_pmd": p_first.counters.get("thp_split_pmd", 0),
        "child_after_parent_faults": c_after.faults,
        "child_after_parent_copied": int(c_after.child.copied.sum()),
        "child_after_parent_T1_pmd_mapped": _pmd_mapped(c_after.child.after, T[1], PMD_PAGES),
        "child_after_parent_rest_faults": c_after_rest.faults,
        "child_after_parent_rest_copied": int(c_after_rest.child.copied.sum()),
        "child_one_T2_faults": c_one.faults,
        "parent_while_child_maps_511_faults": p_shared.faults,
        "parent_while_child_maps_511_copied": int(p_shared.parent.copied.sum()),
        "parent_while_child_maps_511_T2_pmd_mapped": _pmd_mapped(p_shared.parent.after, T[2], PMD_PAGES),
        "child_ptes_after_parent_copied_faults": c_reuse.faults,
        "child_ptes_after_parent_copied_copied": int(c_reuse.child.copied.sum()),
        "child_exit_counters": gone.counters,
        "parent_alone_faults": solo.faults,
        "parent_alone_copied": int(solo.parent.copied.sum()),
        "parent_alone_T3_pmd_mapped": _pmd_mapped(solo.parent.after, T[3], PMD_PAGES),
        "parent_alone_rest_faults": solo_rest.faults,
        "parent_alone_rest_copied": int(solo_rest.parent.copied.sum()),
    }


# ----- b. mTHP 64 KiB and fork ----------------------------------------------------------------


def mthp_64k_fork(run: Run) -> dict:
    """Eight 64 KiB folios F0..F7, fork, then which writes copy and which reuse."""
    p = run.probe
    n = 8
    a = p.map(n * KB64, PMD_SIZE)
    run.watch(a, n * 16)
    F = [i * 16 for i in range(n)]
    fill = run.step("parent writes every page of F0..F7", lambda: p.write(a, n * KB64, 1))
    run.step("fork", p.fork)
    c0 = run.step("child writes page 0 of F0", lambda: p.write(run.page(F[0]), PAGE_SIZE, 2, child=True))
    c1 = run.step("child writes every page of F1", lambda: p.write(run.page(F[1]), KB64, 3, child=True))
    p1 = run.step("parent writes every page of F1 (the child copied all of F1)",
                  lambda: p.write(run.page(F[1]), KB64, 4))
    p0 = run.step("parent writes every page of F0 (the child copied one page of F0)",
                  lambda: p.write(run.page(F[0]), KB64, 5))
    c2 = run.step("child writes pages 0-14 of F2", lambda: p.write(run.page(F[2]), 15 * PAGE_SIZE, 6, child=True))
    p2 = run.step("parent writes every page of F2 (the child still maps page 15 of F2)",
                  lambda: p.write(run.page(F[2]), KB64, 7))
    c2last = run.step("child writes page 15 of F2: the only page of F2 still mapped anywhere",
                      lambda: p.write(run.page(F[2] + 15), PAGE_SIZE, 8, child=True))
    # One page of a large folio left mapped, or two: the parent's copy of F3 and F4 after the child copied all.
    run.step("child writes every page of F3 and F4", lambda: p.write(run.page(F[3]), 2 * KB64, 9, child=True))
    run.step("parent drops pages 1-15 of F3", lambda: p.madvise(run.page(F[3] + 1), 15 * PAGE_SIZE, MADV_DONTNEED))
    run.step("parent drops pages 2-15 of F4", lambda: p.madvise(run.page(F[4] + 2), 14 * PAGE_SIZE, MADV_DONTNEED))
    p3 = run.step("parent writes page 0 of F3 (its only mapped page)", lambda: p.write(run.page(F[3]), PAGE_SIZE, 10))
    p4 = run.step("parent writes pages 0-1 of F4 (its two mapped pages)",
                  lambda: p.write(run.page(F[4]), 2 * PAGE_SIZE, 11))
    run.step("child exits", p.exit_child)
    p5 = run.step("parent writes every page of F5 (never written since the fork; the child is gone)",
                  lambda: p.write(run.page(F[5]), KB64, 12))
    return {
        "zero_fill_faults_per_64kib": fill.faults / n,
        "zero_fill_folio_sizes": fill.parent.after.folio_sizes(),
        "zero_fill_pmd_mapped_pages": _pmd_mapped(fill.parent.after, 0, run.pages),
        "zero_fill_64kB_anon_fault_alloc": fill.counters.get("64kB/anon_fault_alloc", 0),
        "child_write_one_faults": c0.faults,
        "child_write_one_copied": int(c0.child.copied.sum()),
        "child_write_one_new_folio_pages": _folio_pages(c0.child.after, F[0], 1),
        "child_write_one_parent_copied": int(c0.parent.copied.sum()),
        "child_write_one_child_F0_other_pages_same_folio":
            int((c0.child.after.head_pfn[F[0] + 1:F[1]] == c0.parent.after.head_pfn[F[0]]).sum()),
        "child_write_folio_faults": c1.faults,
        "child_write_folio_copied": int(c1.child.copied.sum()),
        "child_write_folio_new_folio_pages": _folio_pages(c1.child.after, F[1], 16),
        "parent_after_child_copied_all_faults": p1.faults,
        "parent_after_child_copied_all_copied": int(p1.parent.copied.sum()),
        "parent_after_child_copied_one_faults": p0.faults,
        "parent_after_child_copied_one_copied": int(p0.parent.copied.sum()),
        "parent_while_child_maps_one_faults": p2.faults,
        "parent_while_child_maps_one_copied": int(p2.parent.copied.sum()),
        "child_last_mapped_page_faults": c2last.faults,
        "child_last_mapped_page_copied": int(c2last.child.copied.sum()),
        "child_write_15_faults": c2.faults,
        "parent_one_page_left_faults": p3.faults,
        "parent_one_page_left_copied": int(p3.parent.copied.sum()),
        "parent_two_pages_left_faults": p4.faults,
        "parent_two_pages_left_copied": int(p4.parent.copied.sum()),
        "parent_alone_faults": p5.faults,
        "parent_alone_copied": int(p5.parent.copied.sum()),
    }


# ----- c. the huge zero page ------------------------------------------------------------------


def huge_zero_page(run: Run) -> dict:
    """Read a MADV_HUGEPAGE 2 MiB, then write it (THP madvise; use_zero_page as configured)."""
    p = run.probe
    a = p.map(2 * PMD_SIZE, PMD_SIZE)
    run.watch(a, 2 * PMD_PAGES)
    run.step("madvise(MADV_HUGEPAGE)", lambda: p.madvise(a, 2 * PMD_SIZE, MADV_HUGEPAGE))
    read = run.step("read every page of H0", lambda: p.read(a, PMD_SIZE))
    write = run.step("write page 7 of H0", lambda: p.write(run.page(7), PAGE_SIZE, 1))
    write_rest = run.step("write every page of H0", lambda: p.write(a, PMD_SIZE, 1))
    read1 = run.step("read page 0 of H1", lambda: p.read(run.page(PMD_PAGES), PAGE_SIZE))
    fork = run.step("fork", p.fork)
    child_w = run.step("child writes page 0 of H1 (both map the huge zero page)",
                       lambda: p.write(run.page(PMD_PAGES), PAGE_SIZE, 2, child=True))
    h0 = slice(0, PMD_PAGES)
    return {
        "read_faults": read.faults,
        "read_maps_huge_zero_page": int(read.parent.after.is_huge_zero_page[h0].sum()),
        "read_pmd_mapped": _pmd_mapped(read.parent.after, 0, PMD_PAGES),
        "read_distinct_pfns": len(set(read.parent.after.pfn[h0].tolist())),
        "read_thp_fault_alloc": read.counters.get("thp_fault_alloc", 0),
        "read_folio_sizes": read.parent.after.folio_sizes(),
        "write_faults": write.faults,
        "write_appeared_or_copied": int((write.parent.copied | write.parent.appeared)[h0].sum()),
        "write_folio_pages": _folio_pages(write.parent.after, 0, PMD_PAGES),
        "write_pmd_mapped": _pmd_mapped(write.parent.after, 0, PMD_PAGES),
        "write_thp_fault_alloc": write.counters.get("thp_fault_alloc", 0),
        "write_thp_split_pmd": write.counters.get("thp_split_pmd", 0),
        "write_rest_faults": write_rest.faults,
        "read_one_page_faults": read1.faults,
        "read_one_page_maps_huge_zero_page": int(read1.parent.after.is_huge_zero_page[PMD_PAGES:].sum()),
        "fork_child_huge_zero_pages": int(fork.child.after.is_huge_zero_page.sum()),
        "child_write_faults": child_w.faults,
        "child_write_child_folio_pages": _folio_pages(child_w.child.after, PMD_PAGES, PMD_PAGES),
        "child_write_child_pmd_mapped": _pmd_mapped(child_w.child.after, PMD_PAGES, PMD_PAGES),
        "child_write_parent_huge_zero_pages": int(child_w.parent.after.is_huge_zero_page.sum()),
        "child_write_thp_fault_alloc": child_w.counters.get("thp_fault_alloc", 0),
    }


def zero_page_under_mthp(run: Run) -> dict:
    """mTHP 64 KiB always: a read maps the 4 KiB zero page; a write after it copies 4 KiB."""
    p = run.probe
    a = p.map(2 * KB64, KB64)
    run.watch(a, 32)
    read = run.step("read every page of F0", lambda: p.read(a, KB64))
    write = run.step("write every page of F0", lambda: p.write(a, KB64, 1))
    write2 = run.step("write every page of F1 (never read)", lambda: p.write(run.page(16), KB64, 1))
    return {
        "read_faults": read.faults,
        "read_zero_pages": int((read.parent.after.is_zero_page & ~read.parent.after.is_huge_zero_page).sum()),
        "write_after_read_faults": write.faults,
        "write_after_read_copied": int(write.parent.copied.sum()),
        "write_after_read_folio_pages": _folio_pages(write.parent.after, 0, 16),
        "write_never_read_faults": write2.faults,
        "write_never_read_folio_pages": _folio_pages(write2.parent.after, 16, 16),
    }


# ----- d. MADV_DONTNEED inside a PMD THP ------------------------------------------------------


def dontneed_in_thp(run: Run) -> dict:
    p = run.probe
    n = 4
    a = p.map(n * PMD_SIZE, PMD_SIZE)
    run.watch(a, n * PMD_PAGES)
    T = [i * PMD_PAGES for i in range(n)]
    run.step("madvise(MADV_HUGEPAGE)", lambda: p.madvise(a, n * PMD_SIZE, MADV_HUGEPAGE))
    run.step("write every page of T0..T3", lambda: p.write(a, n * PMD_SIZE, 1))
    one = run.step("MADV_DONTNEED page 7 of T0", lambda: p.madvise(run.page(T[0] + 7), PAGE_SIZE, MADV_DONTNEED))
    refill = run.step("write page 7 of T0", lambda: p.write(run.page(T[0] + 7), PAGE_SIZE, 2))
    other = run.step("MADV_DONTNEED page 9 of T0, then write it",
                     lambda: (p.madvise(run.page(T[0] + 9), PAGE_SIZE, MADV_DONTNEED),
                              p.write(run.page(T[0] + 9), PAGE_SIZE, 2))[1])
    whole = run.step("MADV_DONTNEED all of T1", lambda: p.madvise(run.page(T[1]), PMD_SIZE, MADV_DONTNEED))
    whole_w = run.step("write page 0 of T1", lambda: p.write(run.page(T[1]), PAGE_SIZE, 3))
    half = run.step("MADV_DONTNEED pages 0-255 of T2", lambda: p.madvise(run.page(T[2]), PMD_SIZE // 2, MADV_DONTNEED))
    half_w = run.step("write pages 0-255 of T2", lambda: p.write(run.page(T[2]), PMD_SIZE // 2, 4))
    run.step("MADV_DONTNEED pages 0-255 of T3", lambda: p.madvise(run.page(T[3]), PMD_SIZE // 2, MADV_DONTNEED))
    empty = run.step("MADV_DONTNEED pages 256-511 of T3 (now every PTE of T3 is none, the page table stays)",
                     lambda: p.madvise(run.page(T[3] + 256), PMD_SIZE // 2, MADV_DONTNEED))
    empty_w = run.step("write page 0 of T3", lambda: p.write(run.page(T[3]), PAGE_SIZE, 5))
    # CONFIG_PT_RECLAIM (6.14+): one MADV_DONTNEED over a whole 2 MiB frees a page table left empty.
    reclaim = run.step("MADV_DONTNEED all of T3 in one call", lambda: p.madvise(run.page(T[3]), PMD_SIZE, MADV_DONTNEED))
    reclaim_w = run.step("write page 0 of T3 again", lambda: p.write(run.page(T[3]), PAGE_SIZE, 6))
    mixed = run.step("MADV_DONTNEED all of T2 in one call (256 small pages, 256 of the old THP)",
                     lambda: p.madvise(run.page(T[2]), PMD_SIZE, MADV_DONTNEED))
    mixed_w = run.step("write page 0 of T2", lambda: p.write(run.page(T[2]), PAGE_SIZE, 7))
    t0 = slice(T[0], T[1])
    others = np.ones(PMD_PAGES, dtype=bool)
    others[7] = False
    return {
        "one_page_faults": one.faults,
        "one_page_dropped": int(one.parent.dropped.sum()),
        "one_page_T0_pmd_mapped": _pmd_mapped(one.parent.after, T[0], PMD_PAGES),
        "one_page_rest_same_pfn": int((one.parent.before.pfn[t0] == one.parent.after.pfn[t0])[others].sum()),
        "one_page_rest_folio_pages": _folio_pages(one.parent.after, T[0], PMD_PAGES),
        "one_page_counters": one.counters,
        "one_page_smaps": one.smaps["parent"],
        "refill_faults": refill.faults,
        "refill_folio_pages": _folio_pages(refill.parent.after, T[0] + 7, 1),
        "refill_same_pfn_as_before": bool(refill.parent.after.pfn[T[0] + 7] == one.parent.before.pfn[T[0] + 7]),
        "other_faults": other.faults,
        "other_folio_pages": _folio_pages(other.parent.after, T[0] + 9, 1),
        "whole_dropped": int(whole.parent.dropped.sum()),
        "whole_counters": whole.counters,
        "whole_smaps": whole.smaps["parent"],
        "whole_write_faults": whole_w.faults,
        "whole_write_appeared": int(whole_w.parent.appeared.sum()),
        "whole_write_folio_pages": _folio_pages(whole_w.parent.after, T[1], PMD_PAGES),
        "whole_write_pmd_mapped": _pmd_mapped(whole_w.parent.after, T[1], PMD_PAGES),
        "half_dropped": int(half.parent.dropped.sum()),
        "half_write_faults": half_w.faults,
        "half_write_folio_pages": _folio_pages(half_w.parent.after, T[2], PMD_PAGES // 2),
        "half_untouched_folio_pages": _folio_pages(half_w.parent.after, T[2] + 256, PMD_PAGES // 2),
        "empty_table_present": int(empty.parent.after.present[T[3]:].sum()),
        "empty_table_write_faults": empty_w.faults,
        "empty_table_write_appeared": int(empty_w.parent.appeared.sum()),
        "empty_table_write_folio_pages": _folio_pages(empty_w.parent.after, T[3], PMD_PAGES),
        "empty_table_write_thp_fault_alloc": empty_w.counters.get("thp_fault_alloc", 0),
        "reclaim_dropped": int(reclaim.parent.dropped.sum()),
        "reclaim_write_faults": reclaim_w.faults,
        "reclaim_write_folio_pages": _folio_pages(reclaim_w.parent.after, T[3], PMD_PAGES),
        "reclaim_write_pmd_mapped": _pmd_mapped(reclaim_w.parent.after, T[3], PMD_PAGES),
        "mixed_dropped": int(mixed.parent.dropped.sum()),
        "mixed_counters": mixed.counters,
        "mixed_write_faults": mixed_w.faults,
        "mixed_write_folio_pages": _folio_pages(mixed_w.parent.after, T[2], PMD_PAGES),
        "mixed_write_pmd_mapped": _pmd_mapped(mixed_w.parent.after, T[2], PMD_PAGES),
    }


# ----- e. which mTHP order ---------------------------------------------------------------------


def mthp_order_choice(run: Run) -> dict:
    """16 KiB and 64 KiB always: a present PTE in the 64 KiB range, a small VMA, an unaligned VMA."""
    p = run.probe
    a = p.map(4 * KB64, PMD_SIZE)
    run.watch(a, 64)
    with thp_config(mthp={"16kB": "never", "64kB": "never"}):
        pre = run.step("with mTHP off: write page 3 (a 4 KiB page)", lambda: p.write(run.page(3), PAGE_SIZE, 1))
    w0 = run.step("write page 0 (the 16 KiB range 0-3 holds page 3)", lambda: p.write(run.page(0), PAGE_SIZE, 2))
    w8 = run.step("write page 8 (range 8-11 is empty, the 64 KiB range 0-15 is not)",
                  lambda: p.write(run.page(8), PAGE_SIZE, 3))
    w16 = run.step("write page 16 (the 64 KiB range 16-31 is empty)", lambda: p.write(run.page(16), PAGE_SIZE, 4))
    result = {
        "pre_folio_pages": _folio_pages(pre.parent.after, 3, 1),
        "with_pte_in_16k_range_faults": w0.faults,
        "with_pte_in_16k_range_appeared": int(w0.parent.appeared.sum()),
        "with_pte_in_16k_range_folio_pages": _folio_pages(w0.parent.after, 0, 1),
        "with_pte_in_64k_range_appeared": int(w8.parent.appeared.sum()),
        "with_pte_in_64k_range_folio_pages": _folio_pages(w8.parent.after, 8, 1),
        "with_pte_in_64k_range_counters": w8.counters,
        "empty_64k_range_appeared": int(w16.parent.appeared.sum()),
        "empty_64k_range_folio_pages": _folio_pages(w16.parent.after, 16, 1),
    }
    # A VMA of 32 KiB, 64 KiB aligned: no 64 KiB folio fits in it.
    small = p.map(8 * PAGE_SIZE, KB64)
    run.watch(small, 8)
    s = run.step("write every page of a 32 KiB VMA", lambda: p.write(small, 8 * PAGE_SIZE, 1))
    result["small_vma_faults"] = s.faults
    result["small_vma_folio_pages"] = _folio_pages(s.parent.after, 0, 8)
    # A VMA of 128 KiB starting 16 KiB past a 64 KiB boundary: one aligned 64 KiB fits, at its page 12.
    odd = p.map(32 * PAGE_SIZE, KB64, 4 * PAGE_SIZE)
    run.watch(odd, 32)
    o = run.step("write every page of a 128 KiB VMA that starts 16 KiB past a 64 KiB boundary",
                 lambda: p.write(odd, 32 * PAGE_SIZE, 1))
    result["unaligned_vma_faults"] = o.faults
    result["unaligned_vma_folio_pages_by_page"] = o.parent.after.folio_pages.tolist()
    return result


def mthp_mixed(run: Run) -> dict:
    """16 KiB + 64 KiB + 2 MiB always: which size a fault gets, by the room the VMA has."""
    p = run.probe
    big = p.map(PMD_SIZE, PMD_SIZE)
    run.watch(big, PMD_PAGES)
    b = run.step("write every page of a 2 MiB-aligned 2 MiB VMA (no madvise)", lambda: p.write(big, PMD_SIZE, 1))
    mid = p.map(PMD_SIZE // 2, PMD_SIZE)
    run.watch(mid, PMD_PAGES // 2)
    m = run.step("write every page of a 1 MiB VMA", lambda: p.write(mid, PMD_SIZE // 2, 1))
    odd = p.map(PMD_SIZE, PMD_SIZE, 8 * PAGE_SIZE)
    run.watch(odd, PMD_PAGES)
    o = run.step("write every page of a 2 MiB VMA starting 32 KiB past a 2 MiB boundary",
                 lambda: p.write(odd, PMD_SIZE, 1))
    return {
        "aligned_2m_faults": b.faults,
        "aligned_2m_folio_sizes": b.parent.after.folio_sizes(),
        "aligned_2m_pmd_mapped": _pmd_mapped(b.parent.after, 0, PMD_PAGES),
        "one_mib_faults": m.faults,
        "one_mib_folio_sizes": m.parent.after.folio_sizes(),
        "unaligned_2m_faults": o.faults,
        "unaligned_2m_folio_sizes": o.parent.after.folio_sizes(),
        "counters": {"aligned_2m": b.counters, "one_mib": m.counters, "unaligned_2m": o.counters},
    }


# ----- f. prctl, MADV_NOHUGEPAGE, MADV_COLLAPSE ----------------------------------------------------


def thp_disable_prctl(run: Run) -> dict:
    """THP always; PR_SET_THP_DISABLE in the parent, then fork, then exec in the child."""
    p = run.probe
    result = {"set": p.prctl(PR_SET_THP_DISABLE, 1)["ret"], "get": p.prctl(PR_GET_THP_DISABLE, 0)["ret"]}
    a = p.map(2 * PMD_SIZE, PMD_SIZE)
    run.watch(a, 2 * PMD_PAGES)
    w = run.step("parent (THP disabled) writes T0", lambda: p.write(a, PMD_SIZE, 1))
    result["parent_faults"] = w.faults
    result["parent_folio_sizes"] = w.parent.after.folio_sizes()
    run.step("fork", p.fork)
    result["child_get"] = p.prctl(PR_GET_THP_DISABLE, 0, child=True)["ret"]
    cw = run.step("child writes T1", lambda: p.write(run.page(PMD_PAGES), PMD_SIZE, 2, child=True))
    result["child_faults"] = cw.faults
    result["child_folio_sizes_T1"] = _folio_pages(cw.child.after, PMD_PAGES, PMD_PAGES)
    result["child_after_exec_thp_disable"] = p.exec(child=True)["thp_disable"]
    addr = p.map(PMD_SIZE, PMD_SIZE, child=True)
    reply = p.write(addr, PMD_SIZE, 1, child=True)
    result["exec_child_faults"] = reply["minflt"]
    result["exec_child_folio_sizes"] = read_folios(p.child_pid, addr, PMD_PAGES).folio_sizes()
    p.exit_child()
    result["clear"] = p.prctl(PR_SET_THP_DISABLE, 0)["ret"]
    b = p.map(PMD_SIZE, PMD_SIZE)
    reply = p.write(b, PMD_SIZE, 1)
    result["after_clear_faults"] = reply["minflt"]
    result["after_clear_folio_sizes"] = read_folios(p.pid, b, PMD_PAGES).folio_sizes()
    return result


def thp_disable_except_advised(run: Run) -> dict:
    """PR_SET_THP_DISABLE with PR_THP_DISABLE_EXCEPT_ADVISED (new in 6.18): THP only where MADV_HUGEPAGE asks."""
    p = run.probe
    reply = p.prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED)
    result: dict = {"set": reply}
    if reply["ret"] != 0:
        return result
    a = p.map(2 * PMD_SIZE, PMD_SIZE)
    run.watch(a, 2 * PMD_PAGES)
    run.step("madvise(MADV_HUGEPAGE) T1 only", lambda: p.madvise(run.page(PMD_PAGES), PMD_SIZE, MADV_HUGEPAGE))
    w0 = run.step("write T0 (not advised)", lambda: p.write(a, PMD_SIZE, 1))
    w1 = run.step("write T1 (MADV_HUGEPAGE)", lambda: p.write(run.page(PMD_PAGES), PMD_SIZE, 1))
    result.update({"get": p.prctl(PR_GET_THP_DISABLE, 0)["ret"],
                   "unadvised_faults": w0.faults,
                   "unadvised_folio_sizes": _folio_pages(w0.parent.after, 0, PMD_PAGES),
                   "advised_faults": w1.faults,
                   "advised_folio_sizes": _folio_pages(w1.parent.after, PMD_PAGES, PMD_PAGES)})
    return result


def nohugepage(run: Run) -> dict:
    """THP always; MADV_NOHUGEPAGE on one 2 MiB, nothing on the other."""
    p = run.probe
    a = p.map(2 * PMD_SIZE, PMD_SIZE)
    run.watch(a, 2 * PMD_PAGES)
    run.step("madvise(MADV_NOHUGEPAGE) T0", lambda: p.madvise(a, PMD_SIZE, MADV_NOHUGEPAGE))
    w0 = run.step("write T0", lambda: p.write(a, PMD_SIZE, 1))
    w1 = run.step("write T1 (no madvise)", lambda: p.write(run.page(PMD_PAGES), PMD_SIZE, 1))
    return {"nohugepage_faults": w0.faults, "nohugepage_folio_sizes": _folio_pages(w0.parent.after, 0, PMD_PAGES),
            "plain_faults": w1.faults, "plain_folio_sizes": _folio_pages(w1.parent.after, PMD_PAGES, PMD_PAGES)}


def collapse(run: Run) -> dict:
    """THP madvise, no MADV_HUGEPAGE: 4 KiB pages, then MADV_COLLAPSE; alone, then shared with a child."""
    p = run.probe
    a = p.map(2 * PMD_SIZE, PMD_SIZE)
    run.watch(a, 2 * PMD_PAGES)
    w = run.step("write every page of T0 and T1 (4 KiB pages)", lambda: p.write(a, 2 * PMD_SIZE, 1))
    c = run.step("MADV_COLLAPSE T0", lambda: p.madvise(a, PMD_SIZE, MADV_COLLAPSE))
    after = run.step("write every page of T0 again", lambda: p.write(a, PMD_SIZE, 2))
    run.step("fork", p.fork)
    t1 = PMD_PAGES
    cs = run.step("parent: MADV_COLLAPSE T1 (every page shared with the child)",
                  lambda: p.madvise(run.page(t1), PMD_SIZE, MADV_COLLAPSE))
    pw = run.step("parent writes every page of T1", lambda: p.write(run.page(t1), PMD_SIZE, 3))
    cw = run.step("child writes every page of T1", lambda: p.write(run.page(t1), PMD_SIZE, 4, child=True))
    return {
        "before_folio_sizes": _folio_pages(w.parent.after, 0, PMD_PAGES),
        "collapse_reply": c.reply,
        "collapse_copied": int(c.parent.copied.sum()),
        "collapse_folio_pages": _folio_pages(c.parent.after, 0, PMD_PAGES),
        "collapse_pmd_mapped": _pmd_mapped(c.parent.after, 0, PMD_PAGES),
        "collapse_counters": c.counters,
        "write_after_faults": after.faults,
        "shared_collapse_reply": cs.reply,
        "shared_collapse_parent_copied": int(cs.parent.copied.sum()),
        "shared_collapse_parent_folio_pages": _folio_pages(cs.parent.after, t1, PMD_PAGES),
        "shared_collapse_parent_pmd_mapped": _pmd_mapped(cs.parent.after, t1, PMD_PAGES),
        "shared_collapse_child_copied": int(cs.child.copied.sum()),
        "shared_collapse_counters": cs.counters,
        "parent_write_faults": pw.faults,
        "parent_write_copied": int(pw.parent.copied.sum()),
        "child_write_faults": cw.faults,
        "child_write_copied": int(cw.child.copied.sum()),
    }


# ----- what pagemap's bits show, and spurious faults --------------------------------------------------


def exclusive_bit(run: Run) -> dict:
    """Pagemap bit 56 after the child copied one page: per page (PTE-mapped), or the head's (PMD-mapped)."""
    p = run.probe
    a = p.map(2 * PMD_SIZE, PMD_SIZE)
    run.watch(a, 2 * PMD_PAGES)
    p.madvise(a, 2 * PMD_SIZE, MADV_HUGEPAGE)
    run.step("write T0 and T1", lambda: p.write(a, 2 * PMD_SIZE, 1))
    run.step("fork", p.fork)
    c5 = run.step("child writes page 5 of T0", lambda: p.write(run.page(5), PAGE_SIZE, 2, child=True))
    c0 = run.step("child writes page 0 of T1 (T1's head page)",
                  lambda: p.write(run.page(PMD_PAGES), PAGE_SIZE, 2, child=True))
    t0, t1 = slice(0, PMD_PAGES), slice(PMD_PAGES, 2 * PMD_PAGES)
    return {
        "page5_parent_T0_exclusive": int(c5.parent.after.exclusive[t0].sum()),
        "page5_parent_T0_pmd_mapped": _pmd_mapped(c5.parent.after, 0, PMD_PAGES),
        "page5_child_T0_exclusive_pages": np.flatnonzero(c5.child.after.exclusive[t0]).tolist(),
        "head_parent_T1_exclusive": int(c0.parent.after.exclusive[t1].sum()),
        "head_child_T1_exclusive_pages": np.flatnonzero(c0.child.after.exclusive[t1]).tolist(),
    }


def exclusive_bit_mthp(run: Run) -> dict:
    p = run.probe
    a = p.map(KB64, KB64)
    run.watch(a, 16)
    run.step("write F0", lambda: p.write(a, KB64, 1))
    run.step("fork", p.fork)
    c5 = run.step("child writes page 5 of F0", lambda: p.write(run.page(5), PAGE_SIZE, 2, child=True))
    return {"parent_exclusive_pages": np.flatnonzero(c5.parent.after.exclusive).tolist(),
            "child_exclusive_pages": np.flatnonzero(c5.child.after.exclusive).tolist()}


def spurious_pmd_reuse(run: Run) -> dict:
    """Fork, the child exits, the parent reads its THP (TLB entries read-only), then writes it."""
    p = run.probe
    a = p.map(PMD_SIZE, PMD_SIZE)
    run.watch(a, PMD_PAGES)
    p.madvise(a, PMD_SIZE, MADV_HUGEPAGE)
    run.step("write T0", lambda: p.write(a, PMD_SIZE, 1))
    run.step("fork", p.fork)
    run.step("child exits", p.exit_child)
    r = run.step("read every page of T0", lambda: p.read(a, PMD_SIZE))
    w = run.step("write every page of T0 in one loop", lambda: p.write(a, PMD_SIZE, 2))
    return {"read_faults": r.faults, "write_faults": w.faults, "write_copied": int(w.parent.copied.sum()),
            "write_pmd_mapped": _pmd_mapped(w.parent.after, 0, PMD_PAGES),
            "write_thp_split_pmd": w.counters.get("thp_split_pmd", 0)}


# ----- g. allocation fallback --------------------------------------------------------------------


MEMCG_V1 = Path("/sys/fs/cgroup/memory")


def _limited_memcg(probe: Probe, limit: int) -> Path:
    """A memory cgroup (v1) of its own for the probe, at the top of the hierarchy, charged from zero.

    Outside the cgroup of whatever runs us, so that nothing of it changes;
    removed by ``charge_fallback`` once the probe has exited. A fresh
    cgroup has no per-CPU charge stock, so its first charge meets the limit.
    """
    if not (MEMCG_V1 / "memory.limit_in_bytes").exists():
        raise CowaheadError("no cgroup v1 memory controller at /sys/fs/cgroup/memory: cannot force a charge "
                            "failure")
    group = MEMCG_V1 / f"cowahead-fallback-{os.getpid()}-{probe.pid}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit))
    (group / "cgroup.procs").write_text(str(probe.pid))  # v1 does not move the charges it already has
    return group


def charge_fallback(run: Run) -> dict:
    """Large folios the memory cgroup cannot charge: which size the fault gets, which counters move.

    mTHP 64 KiB always, THP madvise. Under a 1 MiB limit a 2 MiB THP can
    never be charged; under 48 KiB (a second probe) a 64 KiB folio cannot.
    """
    result: dict = {}
    for limit, length, align, advice, pages in ((1 << 20, PMD_SIZE, PMD_SIZE, MADV_HUGEPAGE, 16),
                                                (48 << 10, KB64, KB64, 0, 1)):
        probe = run.probe if limit == 1 << 20 else Probe()
        group = _limited_memcg(probe, limit)
        try:
            part = Run(probe)
            a = probe.map(length, align)
            part.watch(a, 16)
            if advice:
                probe.madvise(a, length, advice)
            label = "thp" if advice else "mthp"
            label_text = (f"limit {limit >> 10} KiB: write pages 0-{pages - 1} of a {length >> 10} KiB VMA"
                          + (" (MADV_HUGEPAGE)" if advice else ""))
            w = part.step(label_text, lambda probe=probe, a=a, pages=pages: probe.write(a, pages * PAGE_SIZE, 1))
            run.steps.extend(part.steps)
            result.update({f"{label}_faults": w.faults, f"{label}_folio_pages": _folio_pages(w.parent.after, 0, 16),
                           f"{label}_appeared": int(w.parent.appeared.sum()), f"{label}_counters": w.counters})
        finally:
            probe.close()
            group.rmdir()
    return result


# ----- the table of experiments -----------------------------------------------------------------


EXPERIMENTS: dict[str, tuple[str, Callable[[Run], dict], dict]] = {
    "pmd-thp-fork": ("madvise", pmd_thp_fork, {}),
    "mthp-64k-fork": ("mthp-64k", mthp_64k_fork, {}),
    "huge-zero-page": ("madvise", huge_zero_page, {"use_zero_page": 1}),
    "huge-zero-page-off": ("madvise", huge_zero_page, {"use_zero_page": 0}),
    "zero-page-mthp": ("mthp-64k", zero_page_under_mthp, {}),
    "dontneed-in-thp": ("madvise", dontneed_in_thp, {}),
    "mthp-order-choice": ("mthp-64k", mthp_order_choice, {"mthp": {"16kB": "always"}}),
    "mthp-mixed": ("mthp-mixed", mthp_mixed, {}),
    "thp-disable-prctl": ("always", thp_disable_prctl, {}),
    "thp-disable-except-advised": ("always", thp_disable_except_advised, {}),
    "nohugepage": ("always", nohugepage, {}),
    "collapse": ("madvise", collapse, {}),
    "charge-fallback": ("mthp-64k", charge_fallback, {}),
    "exclusive-bit": ("madvise", exclusive_bit, {}),
    "exclusive-bit-mthp": ("mthp-64k", exclusive_bit_mthp, {}),
    "spurious-pmd-reuse": ("madvise", spurious_pmd_reuse, {}),
}


def run_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise CowaheadError(f"no folio experiment {name!r}; there are {', '.join(EXPERIMENTS)}")
    config, body, overrides = EXPERIMENTS[name]
    return _experiment(name, config, body, **overrides)


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("cowahead: error: the folio experiments need root (pagemap PFNs, kpageflags, THP knobs)",
              file=sys.stderr)
        return 2
    names = argv or list(EXPERIMENTS)
    out = {"kernel": os.uname().release, "experiments": [run_experiment(n).to_dict() for n in names]}
    json.dump(out, sys.stdout, indent=1, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
