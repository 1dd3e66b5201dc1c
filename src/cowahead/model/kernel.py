"""The reference model: Linux's anonymous-memory fault path, plain and readable.

One ``Kernel`` replays events for all processes of a trace. The fault path
reads as in ``mm/memory.c``: ``handle_mm_fault`` dispatches to
``do_anonymous_page``, ``do_shared_fault``, ``do_read_fault``,
``do_cow_fault`` or ``do_wp_page``, and ``do_wp_page`` to
``wp_page_reuse`` or ``wp_page_copy``. After a COW copy on demand the
policy names more pages and ``cow_ahead`` breaks COW on them.

This model is the reference the fast engine is held equal to.
"""

from __future__ import annotations

from typing import Callable

from ..trace.events import Event, EventKind, VmaKind
from ..trace.trace import Trace
from .counters import Counters
from .fault import VmFault
from .memory import Ahead, Backing, Frame, FrameKind, Mm, Pte, Vma

ZERO_PFN = 0
PROGRESS_EVENTS = 1 << 16  # how often replay reports progress: a call per event would cost


class ModelBug(AssertionError):
    """A broken invariant of the model itself (never a user error)."""


def file_content(backing: Backing, offset: int) -> int:
    """What a private file holds at a page offset: distinct per file and page."""
    return (backing.ident << 32) | (offset + 1)


class Kernel:
    def __init__(self, policy, log_faults: bool = False) -> None:
        """``policy`` answers ``window(vmf)``, ``on_fork(mm)`` and ``prepare(trace)`` (cowahead.policies)."""
        self.policy = policy
        self.counters = Counters()
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
               progress: Callable[[int], None] = lambda events: None) -> Counters:
        """Run every event; if ``reads`` is a list, append each value read to it. ``progress`` hears
        how many events were run, every PROGRESS_EVENTS and at the end."""
        self.policy.prepare(trace)
        for index, event in enumerate(trace.events()):
            self.apply(event, index, reads)
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
        for vma in parent.vmas:
            child.insert_vma(self._copy_vma(vma))
            if vma.is_private and vma.anon_vma:
                self._copy_pte_range(parent, child, vma)

    def _copy_vma(self, vma: Vma) -> Vma:
        if vma.backing is not None:
            vma.backing.users += 1
        return Vma(vma.start, vma.end, vma.kind, vma.pgoff, vma.backing, vma.anon_vma)

    def _copy_pte_range(self, parent: Mm, child: Mm, vma: Vma) -> None:
        for page in parent.ptes_in(vma.start, vma.end):
            pte = parent.ptes[page]
            self._settle_ahead(pte)
            pte.ahead = Ahead.NONE
            pte.writable = False
            pte.frame.mapcount += 1
            pte.frame.refcount += 1
            child.ptes[page] = Pte(pte.frame, writable=False, dirty=pte.dirty)

    def exec(self, pid: int) -> None:
        self.exit_mmap(self.mm_of(pid))
        self.processes[pid] = Mm()

    def exit(self, pid: int) -> None:
        mm = self.processes.pop(pid, None)
        if mm is not None:
            self.exit_mmap(mm)

    def exit_mmap(self, mm: Mm) -> None:
        for vma in list(mm.vmas):
            self._unmap_vma_range(mm, vma, vma.start, vma.end)

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

    def _unmap_vma_range(self, mm: Mm, vma: Vma, start: int, end: int) -> None:
        """Zap [start, end) of ``vma`` and split off what remains on either side."""
        self.zap_pte_range(mm, start, end)
        mm.vmas.remove(vma)
        if vma.start < start:
            mm.insert_vma(Vma(vma.start, start, vma.kind, vma.pgoff, vma.backing, vma.anon_vma, vma.policy_state))
            self._add_user(vma.backing)
        if end < vma.end:
            mm.insert_vma(Vma(end, vma.end, vma.kind, vma.backing_offset(end), vma.backing, vma.anon_vma,
                              vma.policy_state))
            self._add_user(vma.backing)
        self._drop_user(vma.backing)

    def madvise_dontneed(self, pid: int, pages: range) -> None:
        mm = self.mm_of(pid)
        for vma in mm.vmas_overlapping(pages.start, pages.stop):
            self.zap_pte_range(mm, max(vma.start, pages.start), min(vma.end, pages.stop))

    def zap_pte_range(self, mm: Mm, start: int, end: int) -> None:
        for page in mm.ptes_in(start, end):
            pte = mm.ptes.pop(page)
            self._settle_ahead(pte)
            self._put_frame(pte.frame, unmap=True)

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
        if frame is not self.zero_page:
            frame.mapcount += 1
            frame.refcount += 1
        pte = mm.ptes[page] = Pte(frame, writable=writable, dirty=writable)
        return pte

    def _put_frame(self, frame: Frame, unmap: bool) -> None:
        if frame is self.zero_page:
            return
        if unmap:
            frame.mapcount -= 1
        frame.refcount -= 1
        if frame.refcount == 0:
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
        pte = mm.ptes.get(page)
        if pte is None or (write and not pte.writable):
            vmf = VmFault(pid, mm, vma, page, write, self._index, pte)
            self.handle_mm_fault(vmf)
            self._log(pid, page, vmf.outcome)
            pte = vmf.pte
        if write:
            self._store(pte, value)
        return pte.frame.content

    def _store(self, pte: Pte, value: int) -> None:
        if pte.ahead == Ahead.PENDING:
            self.counters.ahead_hits += 1
            self.counters.extra_pages -= 1
            pte.ahead = Ahead.HIT
        pte.dirty = True
        pte.frame.content = value

    def _count(self, vmf: VmFault, kind: str) -> None:
        """Bump the named counter (PGFAULT's kinds) and record it as the fault's outcome."""
        setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        vmf.outcome = kind

    def _log(self, pid: int, page: int, kind: str) -> None:
        if self.fault_log is not None:
            self.fault_log.append((self._index, pid, page, kind))

    def handle_mm_fault(self, vmf: VmFault) -> None:
        """Dispatch on the PTE and the VMA; the handler leaves the PTE to access through in ``vmf.pte``."""
        if vmf.pte is not None:
            return self.do_wp_page(vmf)
        kind = vmf.vma.kind
        if kind == VmaKind.PRIVATE_ANON:
            return self.do_anonymous_page(vmf)
        if kind == VmaKind.SHARED_ANON:
            return self.do_shared_fault(vmf)
        if vmf.write:
            return self.do_cow_fault(vmf)
        return self.do_read_fault(vmf)

    def do_anonymous_page(self, vmf: VmFault) -> None:
        if not vmf.write:
            self._count(vmf, "zero_page")
            vmf.pte = self._map_frame(vmf.mm, vmf.page, self.zero_page, writable=False)
            return
        self._count(vmf, "zero_fill")
        vmf.vma.anon_vma = True
        vmf.pte = self._map_frame(vmf.mm, vmf.page, self._alloc_frame(FrameKind.ANON, 0), writable=True)

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
        vmf.vma.anon_vma = True
        source = self._page_cache_frame(vmf.vma, vmf.page)
        vmf.pte = self._map_frame(vmf.mm, vmf.page, self._alloc_frame(FrameKind.ANON, source.content), writable=True)

    def do_wp_page(self, vmf: VmFault) -> None:
        if not vmf.vma.is_private:
            self._count(vmf, "reuse")  # wp_page_shared: a shared mapping never copies
            return self.wp_page_reuse(vmf)
        if self.wp_can_reuse(vmf.pte.frame):
            self._count(vmf, "reuse")
            return self.wp_page_reuse(vmf)
        self._count(vmf, "cow_copy")
        vmf.pte = self.wp_page_copy(vmf.mm, vmf.vma, vmf.page, vmf.pte)
        self.cow_ahead(vmf)

    @staticmethod
    def wp_can_reuse(frame: Frame) -> bool:
        return frame.is_exclusive()

    @staticmethod
    def wp_page_reuse(vmf: VmFault) -> None:
        vmf.pte.writable = True

    def wp_page_copy(self, mm: Mm, vma: Vma, page: int, pte: Pte) -> Pte:
        """Copy the old frame into a new exclusive one and map it writable."""
        old = pte.frame
        new = self._alloc_frame(FrameKind.ANON, old.content)
        vma.anon_vma = True
        self._put_frame(old, unmap=True)
        return self._map_frame(mm, page, new, writable=True)

    # ----- COW-ahead ------------------------------------------------------------------------

    def cow_ahead(self, vmf: VmFault) -> None:
        """Break COW on the policy's window; each page passes the same exclusivity check."""
        done = 0
        for ahead in self.policy.window(vmf):
            done += self.break_cow_ahead(vmf.pid, vmf.mm, vmf.vma, ahead)
        if done:
            self.counters.ahead_batches += 1

    def break_cow_ahead(self, pid: int, mm: Mm, vma: Vma, page: int) -> int:
        """One page of a batch: skipped unless present, write-protected and private."""
        if page not in vma or page not in mm.ptes or not vma.is_private:
            return 0
        pte = mm.ptes[page]
        if pte.writable:
            return 0
        c = self.counters
        if self.wp_can_reuse(pte.frame):
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
        """Map and ref counts equal the PTEs and objects that point at each frame."""
        maps: dict[int, int] = {}
        for mm in self.processes.values():
            for pte in mm.ptes.values():
                if pte.frame is self.zero_page:
                    if pte.writable:
                        raise ModelBug("the zero page is mapped writable")
                    continue
                maps[pte.frame.pfn] = maps.get(pte.frame.pfn, 0) + 1
        held = {f.pfn for mm in self.processes.values() for v in mm.vmas if v.backing
                for f in v.backing.pages.values()}
        for pfn, frame in self.live.items():
            if frame.mapcount != maps.get(pfn, 0):
                raise ModelBug(f"pfn {pfn}: mapcount {frame.mapcount}, {maps.get(pfn, 0)} PTEs map it")
            if frame.refcount != frame.mapcount + (pfn in held):
                raise ModelBug(f"pfn {pfn}: refcount {frame.refcount} != mapcount + object reference")
        if set(maps) - set(self.live):
            raise ModelBug(f"PTEs map freed frames {sorted(set(maps) - set(self.live))[:5]}")
        for mm in self.processes.values():
            for page, pte in mm.ptes.items():
                vma = mm.find_vma(page)
                if vma is None:
                    raise ModelBug(f"page {page} is mapped outside every VMA")
                if vma.is_private and pte.writable and pte.frame.mapcount != 1:
                    raise ModelBug(f"page {page}: a shared frame is writable in a private mapping")
