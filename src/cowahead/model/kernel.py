"""The reference model: Linux's anonymous-memory fault path, plain and readable.

One ``Kernel`` replays events for all processes of a trace. The fault path
reads as in ``mm/memory.c``: ``handle_mm_fault`` dispatches to
``do_anonymous_page``, ``do_shared_fault``, ``do_read_fault``,
``do_cow_fault`` or ``do_wp_page``, and ``do_wp_page`` to
``wp_page_reuse`` or ``wp_page_copy``. At a COW copy on demand the
policy names more pages and ``cow_ahead`` breaks COW on them, after the
faulting page's copy; with large destinations (large_destination.py) aligned
blocks of them, the faulting page's among them, are copied into large folios
first. Large folios follow the trace's folio settings (folio.py); the PMD
paths are huge_memory.py's.

This model is the reference the fast engine is held equal to.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable, Sequence

from ..trace.events import HPAGE_PMD_ORDER, Advice, Event, EventKind, VmaKind
from ..trace.trace import Trace
from .counters import Counters, batch_bin
from .fault import VmFault
from .folio import Folio, FolioSettings
from .huge_memory import HPAGE_PMD_NR, HugeMemory, folio_base
from .large_destination import LargeDestinations
from .memory import Ahead, Backing, Frame, FrameKind, Mm, Pmd, Pte, Vma, pmd_index

ZERO_PFN = 0
PROGRESS_EVENTS = 1 << 16  # how often replay reports progress: a call per event would cost


class ModelBug(AssertionError):
    """A broken invariant of the model itself (never a user error)."""


def file_content(backing: Backing, offset: int) -> int:
    """What a private file holds at a page offset: distinct per file and page."""
    return (backing.ident << 32) | (offset + 1)


# The Counters field of a fault kind's pages (one fault, many pages, in a large folio).
PAGES_OF = {"zero_fill": "zero_fill_pages", "cow_copy": "cow_copy_pages", "reuse": "reuse_pages"}


class Kernel(HugeMemory, LargeDestinations):
    def __init__(self, policy, log_faults: bool = False, folios: FolioSettings | None = None) -> None:
        """``policy`` answers ``window(vmf)``, ``on_fork(mm)`` and ``prepare(trace)`` (cowahead.policies);
        ``folios``: the THP settings and kernel version (None: the trace's own, from its metadata)."""
        self.policy = policy
        self.folios = folios or FolioSettings()
        self._folios_given = folios is not None
        self.unplaced_collapses = 0  # khugepaged's collapses: a trace cannot say where they were
        self.counters = Counters()
        self.cow_batches: Counter[tuple[int, int]] = Counter()  # (ahead copies, ahead reuses) -> COW faults
        self.samples: list[Counters] = []  # the counters at each of replay's sample points
        # With log_faults, every fault and ahead action as (event index, pid, page, kind):
        # kind is a Counters field name (zero_fill, cow_copy, ...) or ahead_copies / ahead_reuses.
        self.fault_log: list[tuple[int, int, int, str]] | None = [] if log_faults else None
        self.processes: dict[int, Mm] = {}
        self.live: dict[int, Frame] = {}
        self.zero_page = Frame(ZERO_PFN, FrameKind.ZERO, 0)
        self._next_pfn = ZERO_PFN + 1
        self._next_backing = 1
        self._index = 0

    # ----- replay -----------------------------------------------------------------

    def replay(self, trace: Trace, reads: list[int] | None = None,
               progress: Callable[[int], None] = lambda events: None, sample_points: Sequence[int] = ()) -> Counters:
        """Run every event; if ``reads`` is a list, append each value read to it. ``progress`` hears
        how many events were run, every PROGRESS_EVENTS and at the end. After as many events as each of
        ``sample_points`` (ascending) the counters are kept in ``samples``: memory over time."""
        self.policy.prepare(trace)
        if not self._folios_given:
            self.folios = FolioSettings.from_metadata(trace.metadata)
        points = iter(p for p in sample_points if p > 0)
        point = next(points, None)
        for index, event in enumerate(trace.events()):
            self.apply(event, index, reads)
            while point == index + 1:
                self.samples.append(replace(self.counters))
                point = next(points, None)
            if (index + 1) % PROGRESS_EVENTS == 0:
                progress(PROGRESS_EVENTS)
        progress(len(trace) % PROGRESS_EVENTS)
        return self.finish()

    def apply(self, event: Event, index: int, reads: list[int] | None = None) -> None:
        self._index = index
        self.counters.events += 1
        kind = event.kind
        if kind == EventKind.FORK:
            self.fork(event.pid, event.arg)
        elif kind == EventKind.EXEC:
            self.exec(event.pid)
        elif kind == EventKind.EXIT:
            self.exit(event.pid)
        elif kind == EventKind.MMAP:
            self.mmap(event.pid, event.pages(), VmaKind(event.arg))
        elif kind == EventKind.MUNMAP:
            self.munmap(event.pid, event.pages())
        elif kind == EventKind.DONTNEED:
            self.madvise_dontneed(event.pid, event.pages())
        elif kind == EventKind.READ:
            for page in event.pages():
                value = self.access(event.pid, page, write=False)
                if reads is not None:
                    reads.append(value)
        elif kind == EventKind.WRITE:
            for page in event.pages():
                self.access(event.pid, page, write=True, value=event.arg)
        elif kind == EventKind.MADVISE:
            self.madvise(event.pid, event.pages(), event.arg)
        elif kind == EventKind.THP_DISABLE:
            self.mm_of(event.pid).thp_disabled = bool(event.arg)  # prctl(PR_SET_THP_DISABLE)
        elif kind == EventKind.COLLAPSE:
            self.unplaced_collapses += 1

    def finish(self) -> Counters:
        """End of trace: ahead copies still unwritten count as waste."""
        c = self.counters
        c.extra_pages_final = c.extra_pages
        c.ahead_waste += c.extra_pages
        return c

    # ----- processes ----------------------------------------------------------------

    def mm_of(self, pid: int) -> Mm:
        mm = self.processes.get(pid)
        if mm is None:
            mm = self.processes[pid] = Mm()
        return mm

    def fork(self, parent_pid: int, child_pid: int) -> None:
        """dup_mmap: copy VMAs; private pages become shared and write-protected."""
        parent = self.mm_of(parent_pid)
        if child_pid in self.processes:
            self.exit(child_pid)  # the pid was reused without an exit event
        self.policy.on_fork(parent)
        parent.has_forked = True
        child = self.processes[child_pid] = Mm()
        child.thp_disabled = parent.thp_disabled
        for vma in parent.vmas:
            child.insert_vma(self._copy_vma(vma))
            if vma.is_private and vma.anon_vma:
                self._copy_page_range(parent, child, vma)

    def _copy_vma(self, vma: Vma) -> Vma:
        if vma.backing is not None:
            vma.backing.users += 1
        return replace(vma, policy_state=None)

    def _copy_page_range(self, parent: Mm, child: Mm, vma: Vma) -> None:
        """copy_page_range: PMDs by copy_huge_pmd; a page table wherever the parent has one (copy_pte_range
        allocates it even if it holds no PTE); private pages shared and write-protected."""
        for index in range(pmd_index(vma.start), pmd_index(vma.end - 1) + 1):
            if index in parent.pmds:
                self.copy_huge_pmd(parent, child, index)
            elif index in parent.page_tables:
                child.page_tables.add(index)
        for page in parent.ptes_in(vma.start, vma.end):
            pte = parent.ptes[page]
            self._settle_ahead(pte)
            pte.ahead = Ahead.NONE
            pte.writable = False
            pte.frame.mapcount += 1
            if pte.frame.folio is not None:
                pte.frame.folio.add_mappings(child, 1)
            elif pte.frame is not self.zero_page:
                pte.frame.refcount += 1
            child.ptes[page] = Pte(pte.frame, writable=False, dirty=pte.dirty)

    def exec(self, pid: int) -> None:
        old = self.mm_of(pid)
        self.exit_mmap(old)
        new = self.processes[pid] = Mm()
        new.thp_disabled = old.thp_disabled  # PR_SET_THP_DISABLE survives execve

    def exit(self, pid: int) -> None:
        mm = self.processes.pop(pid, None)
        if mm is not None:
            self.exit_mmap(mm)

    def exit_mmap(self, mm: Mm) -> None:
        for vma in list(mm.vmas):
            self._unmap_vma_range(mm, vma, vma.start, vma.end)
        mm.page_tables.clear()

    # ----- mappings ---------------------------------------------------------------------

    def mmap(self, pid: int, pages: range, kind: VmaKind) -> None:
        """MAP_FIXED semantics: whatever was mapped in the range goes first."""
        mm = self.mm_of(pid)
        self.munmap(pid, pages)
        backing = None
        if kind != VmaKind.PRIVATE_ANON:
            backing = Backing(self._next_backing, kind, users=1)
            self._next_backing += 1
        mm.insert_vma(Vma(pages.start, pages.stop, kind, 0, backing))

    def munmap(self, pid: int, pages: range) -> None:
        mm = self.mm_of(pid)
        for vma in mm.vmas_overlapping(pages.start, pages.stop):
            self._unmap_vma_range(mm, vma, max(vma.start, pages.start), min(vma.end, pages.stop))
        self.free_pgtables(mm, pages.start, pages.stop)

    def free_pgtables(self, mm: Mm, start: int, end: int) -> None:
        """free_pgd_range: the page tables of [start, end) that no VMA shares any more go."""
        for index in range(pmd_index(start), pmd_index(max(end, start + 1) - 1) + 1):
            if not mm.vmas_overlapping(index << HPAGE_PMD_ORDER, (index + 1) << HPAGE_PMD_ORDER):
                mm.page_tables.discard(index)

    def _unmap_vma_range(self, mm: Mm, vma: Vma, start: int, end: int) -> None:
        """Zap [start, end) of ``vma`` and split off what remains on either side."""
        self.zap_range(mm, start, end)
        mm.vmas.remove(vma)
        for part in self._remains(vma, start, end):
            mm.insert_vma(part)
            self._add_user(vma.backing)
        self._drop_user(vma.backing)

    @staticmethod
    def _remains(vma: Vma, start: int, end: int) -> list[Vma]:
        """What is left of ``vma`` on either side of [start, end), each keeping its flags and state."""
        parts = []
        if vma.start < start:
            parts.append(replace(vma, end=start))
        if end < vma.end:
            parts.append(replace(vma, start=end, pgoff=vma.backing_offset(end)))
        return parts

    def madvise_dontneed(self, pid: int, pages: range) -> None:
        """Zap the range; on 6.14+ a page table the zap emptied whole is freed (CONFIG_PT_RECLAIM), so a
        later fault there may map a PMD THP again."""
        mm = self.mm_of(pid)
        for vma in mm.vmas_overlapping(pages.start, pages.stop):
            start, end = max(vma.start, pages.start), min(vma.end, pages.stop)
            self.zap_range(mm, start, end)
            if self.folios.reclaims_page_tables:
                for index in range(pmd_index(start + HPAGE_PMD_NR - 1), pmd_index(end)):
                    mm.page_tables.discard(index)

    def madvise(self, pid: int, pages: range, advice: int) -> None:
        """MADV_HUGEPAGE / MADV_NOHUGEPAGE set VM_HUGEPAGE / VM_NOHUGEPAGE on the range, splitting VMAs at
        its ends; MADV_COLLAPSE makes THPs of it (huge_memory.py); other advice changes nothing here."""
        if advice == Advice.COLLAPSE:
            return self.madvise_collapse(self.mm_of(pid), pages.start, pages.stop)
        if advice not in (Advice.HUGEPAGE, Advice.NOHUGEPAGE):
            return
        mm = self.mm_of(pid)
        for boundary in (pages.start, pages.stop):  # vma_adjust_trans_huge: no PMD may straddle two VMAs
            if boundary % HPAGE_PMD_NR and pmd_index(boundary) in mm.pmds:
                self.split_huge_pmd(mm, pmd_index(boundary))
        for vma in mm.vmas_overlapping(pages.start, pages.stop):
            start, end = max(vma.start, pages.start), min(vma.end, pages.stop)
            mm.vmas.remove(vma)
            for part in self._remains(vma, start, end):
                mm.insert_vma(part)
                self._add_user(vma.backing)
            mm.insert_vma(replace(vma, start=start, end=end, pgoff=vma.backing_offset(start),
                                  hugepage=advice == Advice.HUGEPAGE, nohugepage=advice == Advice.NOHUGEPAGE))

    def zap_range(self, mm: Mm, start: int, end: int) -> None:
        """unmap_page_range: PMDs first (split where the range cuts one), then the PTEs."""
        self.zap_pmd_range(mm, start, end)
        self.zap_pte_range(mm, start, end)

    def zap_pte_range(self, mm: Mm, start: int, end: int) -> None:
        for page in mm.ptes_in(start, end):
            pte = mm.ptes.pop(page)
            self._settle_ahead(pte)
            self._put_frame(pte.frame, unmap=True, mm=mm)

    @staticmethod
    def _add_user(backing: Backing | None) -> None:
        if backing is not None:
            backing.users += 1

    def _drop_user(self, backing: Backing | None) -> None:
        if backing is None:
            return
        backing.users -= 1
        if backing.users == 0:
            for frame in backing.pages.values():
                self._put_frame(frame, unmap=False)
            backing.pages.clear()

    # ----- frames -----------------------------------------------------------------------

    def _alloc_frame(self, kind: FrameKind, content: int) -> Frame:
        frame = Frame(self._next_pfn, kind, content)
        self._next_pfn += 1
        self.live[frame.pfn] = frame
        c = self.counters
        c.resident += 1
        c.resident_peak = max(c.resident_peak, c.resident)
        return frame

    def _map_frame(self, mm: Mm, page: int, frame: Frame, writable: bool) -> Pte:
        if frame.folio is not None:
            frame.mapcount += 1
            frame.folio.add_mappings(mm, 1)
        elif frame is not self.zero_page:
            frame.mapcount += 1
            frame.refcount += 1
        mm.page_tables.add(pmd_index(page))
        pte = mm.ptes[page] = Pte(frame, writable=writable, dirty=writable)
        return pte

    def _put_frame(self, frame: Frame, unmap: bool, mm: Mm | None = None) -> None:
        if frame is self.zero_page:
            return
        if frame.folio is not None:
            frame.mapcount -= 1
            return self._put_folio_mappings(frame.folio, mm, 1)
        if unmap:
            frame.mapcount -= 1
        frame.refcount -= 1
        if frame.refcount == 0:
            self._free_frame(frame)

    def _put_folio_mappings(self, folio: Folio, mm: Mm | None, n: int) -> None:
        """A large folio is freed whole when its last mapping goes (no deferred split: no memory pressure)."""
        folio.remove_mappings(mm, n)
        if folio.refcount == 0:
            for frame in folio.frames:
                self._free_frame(frame)

    def _free_frame(self, frame: Frame) -> None:
        del self.live[frame.pfn]
        self.counters.resident -= 1

    def _settle_ahead(self, pte: Pte) -> None:
        """An ahead copy leaving its PTE unwritten was waste."""
        if pte.ahead == Ahead.PENDING:
            self.counters.ahead_waste += 1
            self.counters.extra_pages -= 1

    # ----- the fault path -------------------------------------------------------------------

    def access(self, pid: int, page: int, write: bool, value: int = 0) -> int:
        """A load or store by ``pid`` at ``page``: fault if needed, then do it."""
        mm = self.mm_of(pid)
        vma = mm.find_vma(page)
        if vma is None:
            self.counters.outside_vma += 1
            return 0
        entry, frame = self._mapping(mm, page)
        if entry is None or (write and not entry.writable):
            vmf = VmFault(pid, mm, vma, page, write, self._index, mm.ptes.get(page),
                          entry if isinstance(entry, Pmd) else None)
            self.handle_mm_fault(vmf)
            self._log(pid, page, vmf.outcome)
            entry, frame = self._mapping(mm, page)
        if write:
            self._store(entry, frame, value)
        return frame.content

    def _mapping(self, mm: Mm, page: int) -> tuple[Pte | Pmd | None, Frame | None]:
        """What maps ``page``: its PTE, else the PMD over its 2 MiB; and the frame there."""
        pte = mm.ptes.get(page)
        if pte is not None:
            return pte, pte.frame
        pmd = mm.pmds.get(pmd_index(page))
        if pmd is not None:
            return pmd, self.pmd_frame(pmd, page)
        return None, None

    def _store(self, entry: Pte | Pmd, frame: Frame, value: int) -> None:
        if isinstance(entry, Pte) and entry.ahead == Ahead.PENDING:
            self.counters.ahead_hits += 1
            self.counters.extra_pages -= 1
            entry.ahead = Ahead.HIT
        entry.dirty = True
        frame.content = value

    def _count(self, vmf: VmFault, kind: str, pages: int = 1) -> None:
        """Bump the named counter (PGFAULT's kinds) and its pages; record it as the fault's outcome."""
        c = self.counters
        setattr(c, kind, getattr(c, kind) + 1)
        if kind in PAGES_OF:
            setattr(c, PAGES_OF[kind], getattr(c, PAGES_OF[kind]) + pages)
        vmf.outcome = kind

    def _log(self, pid: int, page: int, kind: str) -> None:
        if self.fault_log is not None:
            self.fault_log.append((self._index, pid, page, kind))

    def handle_mm_fault(self, vmf: VmFault) -> None:
        """Dispatch on the PMD, the PTE and the VMA, as __handle_mm_fault and handle_pte_fault do; the
        handler leaves the PTE (or PMD) the access goes through mapped."""
        if vmf.pmd is not None:  # a write to a write-protected PMD
            if self.do_huge_pmd_wp_page(vmf):
                return
            vmf.pmd, vmf.pte = None, vmf.mm.ptes[vmf.page]  # split: the PTE level copies
        if vmf.pte is not None:
            return self.do_wp_page(vmf)
        kind = vmf.vma.kind
        if kind == VmaKind.PRIVATE_ANON:
            if (pmd_index(vmf.page) not in vmf.mm.page_tables
                    and HPAGE_PMD_ORDER in self.thp_vma_allowable_orders(vmf.mm, vmf.vma)
                    and self.do_huge_pmd_anonymous_page(vmf)):
                return
            return self.do_anonymous_page(vmf)
        if kind == VmaKind.SHARED_ANON:
            return self.do_shared_fault(vmf)
        if vmf.write:
            return self.do_cow_fault(vmf)
        return self.do_read_fault(vmf)

    def do_anonymous_page(self, vmf: VmFault) -> None:
        """A read maps the 4 KiB zero page; a write a new zeroed folio (alloc_anon_folio's order), every
        page of it mapped writable at once."""
        if not vmf.write:
            self._count(vmf, "zero_page")
            vmf.pte = self._map_frame(vmf.mm, vmf.page, self.zero_page, writable=False)
            return
        vmf.vma.anon_vma = True
        order = self.alloc_anon_folio_order(vmf)
        if order == 0:
            self._count(vmf, "zero_fill")
            vmf.pte = self._map_frame(vmf.mm, vmf.page, self._alloc_frame(FrameKind.ANON, 0), writable=True)
            return
        self._count(vmf, "zero_fill", 1 << order)
        self.counters.mthp_fault_alloc += 1
        folio = self.alloc_folio(order, [0] * (1 << order))
        base = folio_base(vmf.page, order)
        for i, frame in enumerate(folio.frames):
            self._map_frame(vmf.mm, base + i, frame, writable=True)
        vmf.pte = vmf.mm.ptes[vmf.page]

    def do_shared_fault(self, vmf: VmFault) -> None:
        """A shmem page: allocated zeroed on first touch by anyone, else just mapped."""
        backing = vmf.vma.backing
        offset = vmf.vma.backing_offset(vmf.page)
        frame = backing.pages.get(offset)
        if frame is None:
            frame = backing.pages[offset] = self._alloc_frame(FrameKind.SHMEM, 0)
            frame.refcount += 1  # the shmem object's own reference
            self._count(vmf, "zero_fill")
        else:
            self._count(vmf, "map")
        vmf.pte = self._map_frame(vmf.mm, vmf.page, frame, writable=vmf.write)

    def _page_cache_frame(self, vma: Vma, page: int) -> Frame:
        offset = vma.backing_offset(page)
        frame = vma.backing.pages.get(offset)
        if frame is None:
            frame = vma.backing.pages[offset] = self._alloc_frame(FrameKind.FILE, file_content(vma.backing, offset))
            frame.refcount += 1  # the page cache's own reference
        return frame

    def do_read_fault(self, vmf: VmFault) -> None:
        self._count(vmf, "map")
        vmf.pte = self._map_frame(vmf.mm, vmf.page, self._page_cache_frame(vmf.vma, vmf.page), writable=False)

    def do_cow_fault(self, vmf: VmFault) -> None:
        """Write to an unmapped page of a private file: copy the page-cache page."""
        self._count(vmf, "cow_copy")
        self.cow_batches[0, 0] += 1
        vmf.vma.anon_vma = True
        source = self._page_cache_frame(vmf.vma, vmf.page)
        vmf.pte = self._map_frame(vmf.mm, vmf.page, self._alloc_frame(FrameKind.ANON, source.content), writable=True)

    def do_wp_page(self, vmf: VmFault) -> None:
        if not vmf.vma.is_private:
            self._count(vmf, "reuse")  # wp_page_shared: a shared mapping never copies
            return self.wp_page_reuse(vmf)
        if self.wp_can_reuse(vmf.mm, vmf.pte.frame):
            self._count(vmf, "reuse")
            return self.wp_page_reuse(vmf)
        self._count(vmf, "cow_copy")
        vmf.folio = vmf.pte.frame.folio
        c = self.counters
        copies, reuses = c.ahead_copies, c.ahead_reuses
        if vmf.pte.frame is self.zero_page:  # a first write to a read page, not a broken share: no COW-ahead
            vmf.pte = self.wp_page_copy(vmf.mm, vmf.vma, vmf.page, vmf.pte)
        else:
            # The window before the copy, so that the faulting page may go into a large destination with it
            # (no window reads what that copy changes: the same pages as asked after it).
            window = list(self.policy.window(vmf))
            blocks = self.large_destination_blocks(vmf, window)
            self.wp_page_copy_with_blocks(vmf, blocks)
            self.cow_ahead(vmf, window)
            if c.ahead_copies + c.ahead_reuses > copies + reuses:
                c.ahead_batches += 1
        self.cow_batches[batch_bin(c.ahead_copies - copies), batch_bin(c.ahead_reuses - reuses)] += 1

    def wp_can_reuse(self, mm: Mm, frame: Frame) -> bool:
        """wp_can_reuse_anon_folio. A 4 KiB page: exclusive. A page of a large folio: only on kernels that
        reuse PTE-mapped large folios (6.15+), and only while every mapping of the folio is this mm's;
        before, never (the page is copied, so that the large folio goes sooner)."""
        if frame.folio is None:
            return frame.is_exclusive()
        return self.folios.reuses_large_folios and frame.folio.exclusive_to(mm)

    @staticmethod
    def wp_page_reuse(vmf: VmFault) -> None:
        vmf.pte.writable = True

    def wp_page_copy(self, mm: Mm, vma: Vma, page: int, pte: Pte) -> Pte:
        """Copy the old frame into a new exclusive one and map it writable."""
        old = pte.frame
        new = self._alloc_frame(FrameKind.ANON, old.content)
        vma.anon_vma = True
        self._put_frame(old, unmap=True, mm=mm)
        return self._map_frame(mm, page, new, writable=True)

    # ----- COW-ahead ------------------------------------------------------------------------

    def wp_page_copy_with_blocks(self, vmf: VmFault, blocks: list[tuple[int, int]]) -> None:
        """The faulting page's copy: into the large destination of its block if it is in one (and the other
        blocks' after it, in address order), else into a 4 KiB page as wp_page_copy."""
        own = [block for block in blocks if block[0] <= vmf.page < block[0] + (1 << block[1])]
        if own:
            self.copy_to_large_folio(vmf, *own[0])
        else:
            self.wp_page_copy(vmf.mm, vmf.vma, vmf.page, vmf.pte)
        for block in blocks:
            if block not in own:
                self.copy_to_large_folio(vmf, *block)
        vmf.pte = vmf.mm.ptes[vmf.page]

    def cow_ahead(self, vmf: VmFault, window: list[int]) -> None:
        """Break COW on the window's pages that no block took; each passes the faulting page's exclusivity
        check. (A page a block took is writable now: break_cow_ahead skips it.)"""
        for ahead in window:
            self.break_cow_ahead(vmf.pid, vmf.mm, vmf.vma, ahead)

    def breakable_pte(self, mm: Mm, vma: Vma, page: int) -> Pte | None:
        """The PTE of a page COW-ahead may break: present, write-protected, private and not the zero page
        (never written, so nothing to break; a copy would grow the process by a page it may never write:
        the 6.12 patch's cow_ahead_page skips it too). A page under a PMD has no PTE here: None, and the
        window goes on (the patch skips a missing or huge page table and goes on with the next)."""
        pte = mm.ptes.get(page)
        if page not in vma or pte is None or not vma.is_private or pte.writable or pte.frame is self.zero_page:
            return None
        return pte

    def break_cow_ahead(self, pid: int, mm: Mm, vma: Vma, page: int) -> int:
        """One page of a batch: skipped unless breakable, reused if exclusive, else copied into a 4 KiB page."""
        pte = self.breakable_pte(mm, vma, page)
        if pte is None:
            return 0
        c = self.counters
        if self.wp_can_reuse(mm, pte.frame):
            pte.writable = True
            c.ahead_reuses += 1
            self._log(pid, page, "ahead_reuses")
            return 1
        new = self.wp_page_copy(mm, vma, page, pte)
        new.dirty = False  # so the next fault can tell whether it was written
        new.ahead = Ahead.PENDING
        c.ahead_copies += 1
        c.extra_pages += 1
        c.extra_pages_peak = max(c.extra_pages_peak, c.extra_pages)
        self._log(pid, page, "ahead_copies")
        return 1

    # ----- invariants -------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Map and ref counts equal the PTEs, PMDs and objects that point at each frame and folio."""
        maps: dict[int, int] = {}
        folio_maps: dict[int, list] = {}  # id(folio) -> [folio, PTE mappings, PMD mappings]
        for mm in self.processes.values():
            for pte in mm.ptes.values():
                if pte.frame is self.zero_page:
                    if pte.writable:
                        raise ModelBug("the zero page is mapped writable")
                    continue
                maps[pte.frame.pfn] = maps.get(pte.frame.pfn, 0) + 1
                if pte.frame.folio is not None:
                    folio_maps.setdefault(id(pte.frame.folio), [pte.frame.folio, 0, 0])[1] += 1
            for index, pmd in mm.pmds.items():
                if index in mm.page_tables:
                    raise ModelBug(f"2 MiB {index} has both a PMD mapping and a page table")
                if pmd.folio is None:
                    if pmd.writable:
                        raise ModelBug("the huge zero page is mapped writable")
                    continue
                folio_maps.setdefault(id(pmd.folio), [pmd.folio, 0, 0])[2] += 1
                if pmd.writable and pmd.folio.refcount != 1:
                    raise ModelBug(f"2 MiB {index}: a shared THP is mapped writable")
        held = {f.pfn for mm in self.processes.values() for v in mm.vmas if v.backing
                for f in v.backing.pages.values()}
        for pfn, frame in self.live.items():
            if frame.mapcount != maps.get(pfn, 0):
                raise ModelBug(f"pfn {pfn}: mapcount {frame.mapcount}, {maps.get(pfn, 0)} PTEs map it")
            if frame.folio is not None:
                if frame.refcount or id(frame.folio) not in folio_maps:
                    raise ModelBug(f"pfn {pfn}: a large folio's page with its own references, or unmapped")
            elif frame.refcount != frame.mapcount + (pfn in held):
                raise ModelBug(f"pfn {pfn}: refcount {frame.refcount} != mapcount + object reference")
        for folio, ptes, pmds in folio_maps.values():
            if (folio.refcount, folio.large_mapcount, folio.entire_mapcount) != (ptes + pmds, ptes + pmds, pmds):
                raise ModelBug(f"folio of order {folio.order}: refcount {folio.refcount}, large mapcount "
                               f"{folio.large_mapcount}, entire {folio.entire_mapcount}; mapped by {ptes} PTEs "
                               f"and {pmds} PMDs")
        if set(maps) - set(self.live):
            raise ModelBug(f"PTEs map freed frames {sorted(set(maps) - set(self.live))[:5]}")
        for mm in self.processes.values():
            for page, pte in mm.ptes.items():
                vma = mm.find_vma(page)
                if vma is None:
                    raise ModelBug(f"page {page} is mapped outside every VMA")
                if vma.is_private and pte.writable and pte.frame.mapcount != 1:
                    raise ModelBug(f"page {page}: a shared frame is writable in a private mapping")
                if pmd_index(page) not in mm.page_tables:
                    raise ModelBug(f"page {page} has a PTE but no page table")
