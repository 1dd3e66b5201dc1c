"""Large destination folios: COW-ahead that copies an aligned block of shared pages into one new large folio.

A kernel option, off by default (``FolioSettings.large_destinations``; issue 23). Without it every page a
COW fault copies, on demand or ahead, gets a 4 KiB folio of its own: an allocation, a charge, a copy, an
rmap and an LRU addition per page. With it, each block below is one folio: one of each for 2**k pages.
This is the rule the kernel patch follows, page for page.

**When.** At a COW fault that copies: ``do_wp_page`` on a present, write-protected PTE of a private VMA
whose page cannot be reused, not a copy from the zero page (a first write: no COW-ahead at all). The
policy's window W is asked for first, as without the option (the same pages: no window reads what the
faulting page's copy changes).

**Which pages.** The *span* is W plus the faulting page p. A page q *would be copied* when, at the fault,
before anything is copied: q lies in the VMA; its PTE is present and in a page table (not a PMD
mapping); it is write-protected; it does not map the zero page; and ``wp_can_reuse`` says no (a 4 KiB
page mapped or referenced more than once; a page of a large folio on kernels before 6.15, which never
reuse one by its counts; on 6.15+ a page of a large folio that is not this mm's alone). These are
exactly the pages the window copies without the option (``Kernel.break_cow_ahead``'s copies), and p.
Copying one page changes no other page's answer (it drops only this mm's mappings, and a page shared
with another mm stays shared while that mm maps it), so a kernel that asks each block's pages at the
block's turn, under its page-table lock, gets the same answers.
The kernel's ``cow_ahead_page`` skips more kinds (an uffd-wp, NUMA-hinting or KSM page, a page that is
not anonymous) that the model has none of: none of those would be copied either; and where it runs no
window at all (a VMA that is not anonymous, not writable, uffd-wp or soft-dirty tracked) there is no block
either, and the faulting page is copied into a 4 KiB page.

**Which order.** The orders are ``thp_vma_allowable_orders`` of the VMA below PMD order, as
``alloc_anon_folio`` takes them for a zero-fill fault (the ``hugepages-<size>kB/enabled`` knobs of 8 kB …
1 MiB, with ``inherit`` and ``madvise`` as there; never 2 MiB): none in a VMA that is not private
anonymous, that is VM_NOHUGEPAGE, or of a PR_SET_THP_DISABLE process. A *block* is 2**k naturally aligned
pages, k an allowed order, every one of them in the span and one that would be copied. Each page goes into
the largest block that holds it; aligned blocks nest, so that is one partition of the pages in blocks. A
block never holds a page outside the span (for ``fixed:16`` at an aligned p, the 16 pages p … p+15 are one
order-4 block under 64 kB mTHP; at p+1 no order-4 block fits), a page that would be reused, or a hole.

**What is done.** Each block, in this order: the block holding p first (if none, p is copied into a 4 KiB
page, as without the option), then the other blocks in address order, then the window's other pages one
by one as without the option (reused if exclusive, else copied into a 4 KiB page). For a block: one new
folio of order k is allocated; each page is copied into the folio's page at the same offset, the old
page's mapping dropped (as ``wp_page_copy`` drops it), and mapped writable by its PTE in this mm only.
p, where it is in a block, is mapped dirty (it is being written); the other pages of a block are mapped
clean and count as ahead copies (``ahead_copies``; written later: ``ahead_hits``; dropped unwritten:
``ahead_waste``), exactly as 4 KiB ahead copies.

**Counters.** ``cow_large_alloc``: +1 per block; ``cow_large_pages``: +2**k per block (p's included).
``cow_copy`` and ``cow_copy_pages`` count the fault and its one page, ``ahead_copies`` every page copied
ahead whatever its destination, ``ahead_batches`` and the batch histogram as without the option.

**What it leaves behind.** A PTE-mapped large anonymous folio, exclusive: every page mapped once, by this
mm alone (PageAnonExclusive in the kernel). Its pages are writable, so writes to them take no fault. A
later fork shares it as any PTE-mapped large folio (both sides write-protected); a COW fault on it then
copies, into large destinations again where a block qualifies; a write fault on a write-protected page of
it is reused by ``wp_can_reuse``'s rule for large folios: on 6.15+ while this mm alone maps it, before 6.15
never by its counts (the page is copied; 6.12 reuses a page still PageAnonExclusive, which fork clears and
which no event of the model leaves write-protected). A partial munmap or MADV_DONTNEED drops the mappings
of the pages in range; the folio stays allocated whole until its last mapping goes (the model keeps no
deferred-split queue; a kernel splits a partly mapped folio under memory pressure).

**Allocation failure.** The model allocates every folio it asks for (it models no memory limit). Where
the kernel's allocation or charge of a block's folio fails, it copies that block's pages into 4 KiB pages
as without the option: the same pages broken, the same counters but ``cow_large_*`` (and where a 4 KiB
allocation then fails too, the patch's rule for that applies as now: the window ends there). A kernel
check under memory pressure must count such fallbacks apart, as ``validate`` counts mTHP fallbacks.

**Policies.** Every policy with a window: ``fixed``, ``fixed-behind``, ``around``, ``adaptive``,
``folio``, ``ccow``, ``ccow-published`` and ``oracle`` (the 6.12 patch has fixed, around, adaptive and
folio). ``adaptive``'s window starts after p, so its span is p … p+size: a block holding p needs p aligned
(size 4: an order-2 block at p when p is a multiple of 4). ``folio``'s span is the source folio's pages
mapped here: a shared source folio of an allowed order is copied into one destination of its order, the
shape of Roberts's RFC "mm: Copy large folios for anonymous memory". Not ``none`` (its span is p alone, and
a block has two pages or more) and not ``thp-cow`` (its whole-THP copy at the PMD is one large destination
already, and its 4 KiB COW copies have no window).
"""

from __future__ import annotations

from typing import Iterable

from ..trace.events import HPAGE_PMD_ORDER
from .fault import VmFault
from .huge_memory import folio_base
from .memory import Ahead, Mm, Vma


class LargeDestinations:
    """The large-destination half of the COW fault path; ``Kernel`` supplies frames, folios and counters."""

    def large_destination_orders(self, mm: Mm, vma: Vma) -> list[int]:
        """The orders a block may have here, highest first: none unless the option is on."""
        if not self.folios.large_destinations:
            return []
        return [order for order in self.thp_vma_allowable_orders(mm, vma) if order < HPAGE_PMD_ORDER]

    def would_copy(self, mm: Mm, vma: Vma, page: int) -> bool:
        """Would breaking COW on ``page`` copy it (not skip it, not reuse it)?"""
        pte = self.breakable_pte(mm, vma, page)
        return pte is not None and not self.wp_can_reuse(mm, pte.frame)

    def large_destination_blocks(self, vmf: VmFault, window: Iterable[int]) -> list[tuple[int, int]]:
        """The blocks (first page, order) of the fault's span, in address order: each page that would be
        copied in the largest aligned block of an allowed order whose pages all would be."""
        orders = self.large_destination_orders(vmf.mm, vmf.vma)
        if not orders:
            return []
        copied = {q for q in {*window, vmf.page} if self.would_copy(vmf.mm, vmf.vma, q)}
        blocks, taken = [], set()
        for order in orders:
            for base in sorted({folio_base(q, order) for q in copied - taken}):
                block = range(base, base + (1 << order))
                if all(q in copied and q not in taken for q in block):
                    blocks.append((base, order))
                    taken.update(block)
        return sorted(blocks)

    def copy_to_large_folio(self, vmf: VmFault, base: int, order: int) -> int:
        """One block into one new folio of ``order``, mapped writable in this mm alone; the faulting page
        dirty, the others clean and copied ahead. How many were copied ahead."""
        mm, c = vmf.mm, self.counters
        old = [mm.ptes[q] for q in range(base, base + (1 << order))]
        folio = self.alloc_folio(order, [pte.frame.content for pte in old])
        vmf.vma.anon_vma = True
        c.cow_large_alloc += 1
        c.cow_large_pages += 1 << order
        ahead = 0
        for q, pte, frame in zip(range(base, base + (1 << order)), old, folio.frames):
            self._put_frame(pte.frame, unmap=True, mm=mm)
            new = self._map_frame(mm, q, frame, writable=True)
            if q == vmf.page:
                continue
            new.dirty = False  # so the next fault can tell whether it was written
            new.ahead = Ahead.PENDING
            ahead += 1
            self._log(vmf.pid, q, "ahead_copies")
        c.ahead_copies += ahead
        c.extra_pages += ahead
        c.extra_pages_peak = max(c.extra_pages_peak, c.extra_pages)
        return ahead

