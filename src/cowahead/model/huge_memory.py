"""The PMD paths of the fault path, as in mm/huge_memory.c: a THP mapped whole by one PMD.

``Kernel`` (kernel.py) takes these from ``HugeMemory``: the fault on an
empty 2 MiB (``do_huge_pmd_anonymous_page``), the write fault on a
write-protected PMD (``do_huge_pmd_wp_page``), the PMD split
(``__split_huge_pmd``), its zap and its copy at fork. Since Linux 5.8
(3917c80280c9) a COW fault on a shared THP splits the PMD and copies one
4 KiB page at the PTE level; only an exclusive THP is reused whole.
"""

from __future__ import annotations

from ..trace.events import HPAGE_PMD_ORDER, VmaKind
from .fault import VmFault
from .folio import Folio
from .memory import Frame, FrameKind, Mm, Pmd, Pte, Vma, pmd_index

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER


def folio_base(page: int, order: int) -> int:
    """The first page of the naturally aligned 2**order pages holding ``page``."""
    return page & ~((1 << order) - 1)


def thp_vma_suitable_order(vma: Vma, page: int, order: int) -> bool:
    """Does the aligned 2**order range around ``page`` lie inside the VMA?"""
    base = folio_base(page, order)
    return vma.start <= base and base + (1 << order) <= vma.end


class HugeMemory:
    """The PMD half of the fault path; ``Kernel`` supplies counters, frames and the folio settings."""

    # ----- which folio a fault may allocate ------------------------------------------------

    def thp_vma_allowable_orders(self, mm: Mm, vma: Vma) -> list[int]:
        """The folio orders (highest first) the settings allow in ``vma``: none in a shared mapping (shmem
        keeps its own knobs, not modelled: 4 KiB), a VM_NOHUGEPAGE VMA or a MMF_DISABLE_THP process."""
        if vma.kind != VmaKind.PRIVATE_ANON or vma.nohugepage or mm.thp_disabled:
            return []
        return self.folios.anon_orders(vma.hugepage)

    def alloc_anon_folio_order(self, vmf: VmFault) -> int:
        """alloc_anon_folio: the highest allowed order below PMD's whose aligned range fits the VMA and
        whose PTEs are all none; 0 (a 4 KiB page) if none does."""
        for order in self.thp_vma_allowable_orders(vmf.mm, vmf.vma):
            if order >= HPAGE_PMD_ORDER or not thp_vma_suitable_order(vmf.vma, vmf.page, order):
                continue
            base = folio_base(vmf.page, order)
            if not any(page in vmf.mm.ptes for page in range(base, base + (1 << order))):
                return order
        return 0

    def alloc_folio(self, order: int, contents: list[int]) -> Folio:
        """A new anonymous folio of 2**order frames (each resident from now until the folio is freed)."""
        folio = Folio(order)
        for content in contents:
            frame = self._alloc_frame(FrameKind.ANON, content)
            frame.folio = folio
            folio.frames.append(frame)
        return folio

    # ----- faults -------------------------------------------------------------------------------

    def do_huge_pmd_anonymous_page(self, vmf: VmFault) -> bool:
        """A fault in an empty 2 MiB (no page table) where PMD THP is allowed; False: fall back to PTEs."""
        if not thp_vma_suitable_order(vmf.vma, vmf.page, HPAGE_PMD_ORDER):
            return False
        vmf.vma.anon_vma = True  # vmf_anon_prepare, before the zero-page choice
        index = pmd_index(vmf.page)
        if not vmf.write and self.folios.use_zero_page:
            self._count(vmf, "zero_page")
            self.counters.huge_zero_page += 1
            vmf.mm.pmds[index] = Pmd(None, writable=False)
            return True
        self._count(vmf, "zero_fill", HPAGE_PMD_NR)
        self.counters.thp_fault_alloc += 1
        self._map_pmd(vmf.mm, index, self.alloc_folio(HPAGE_PMD_ORDER, [0] * HPAGE_PMD_NR))
        return True

    def do_huge_pmd_wp_page(self, vmf: VmFault) -> bool:
        """A write to a write-protected PMD. The huge zero page: a new THP (6.13+), else split. A THP
        mapped by this PMD alone: reused whole. Else split the PMD; False: the PTE level copies."""
        index = pmd_index(vmf.page)
        pmd = vmf.mm.pmds[index]
        if pmd.folio is None:
            if self.folios.huge_zero_write_allocates:  # do_huge_zero_wp_pmd
                self._count(vmf, "cow_copy", HPAGE_PMD_NR)
                self.counters.thp_fault_alloc += 1
                del vmf.mm.pmds[index]
                self._map_pmd(vmf.mm, index, self.alloc_folio(HPAGE_PMD_ORDER, [0] * HPAGE_PMD_NR))
                return True
        elif pmd.folio.refcount == 1:
            self._count(vmf, "reuse", HPAGE_PMD_NR)
            pmd.writable = True
            return True
        elif self.policy.copies_whole_thp:  # Linux <= 5.7 (policies/thp_cow.py)
            self._count(vmf, "cow_copy", HPAGE_PMD_NR)
            self.counters.thp_fault_alloc += 1
            new = self.alloc_folio(HPAGE_PMD_ORDER, [frame.content for frame in pmd.folio.frames])
            self.zap_huge_pmd(vmf.mm, index)
            self._map_pmd(vmf.mm, index, new)
            return True
        self.split_huge_pmd(vmf.mm, index)
        return False

    # ----- the PMD's life ----------------------------------------------------------------------

    def _map_pmd(self, mm: Mm, index: int, folio: Folio) -> None:
        folio.add_mappings(mm, 1)
        folio.entire_mapcount += 1
        mm.pmds[index] = Pmd(folio, writable=True, dirty=True)

    def split_huge_pmd(self, mm: Mm, index: int) -> None:
        """__split_huge_pmd: a page table of 512 PTEs with the PMD's protection and dirty bit; the PMD's one
        mapping becomes 512 (the huge zero page's become the 4 KiB zero page's)."""
        pmd = mm.pmds.pop(index)
        base = index << HPAGE_PMD_ORDER
        mm.page_tables.add(index)
        self.counters.thp_split_pmd += 1
        if pmd.folio is None:
            for i in range(HPAGE_PMD_NR):
                mm.ptes[base + i] = Pte(self.zero_page, writable=False)
            return
        folio = pmd.folio
        folio.entire_mapcount -= 1
        folio.add_mappings(mm, HPAGE_PMD_NR - 1)
        for i, frame in enumerate(folio.frames):
            frame.mapcount += 1
            mm.ptes[base + i] = Pte(frame, writable=pmd.writable, dirty=pmd.dirty)

    def zap_huge_pmd(self, mm: Mm, index: int) -> None:
        pmd = mm.pmds.pop(index)
        if pmd.folio is not None:
            pmd.folio.entire_mapcount -= 1
            self._put_folio_mappings(pmd.folio, mm, 1)

    def zap_pmd_range(self, mm: Mm, start: int, end: int) -> None:
        """The PMDs in [start, end): zapped whole where the range covers them, else split (the PTE zap
        then takes the part in range; the folio stays allocated while any page is mapped)."""
        for index in [i for i in mm.pmds if i << HPAGE_PMD_ORDER < end and start < (i + 1) << HPAGE_PMD_ORDER]:
            if start <= index << HPAGE_PMD_ORDER and (index + 1) << HPAGE_PMD_ORDER <= end:
                self.zap_huge_pmd(mm, index)
            else:
                self.split_huge_pmd(mm, index)

    def copy_huge_pmd(self, parent: Mm, child: Mm, index: int) -> None:
        """fork: the THP shared by both PMDs, each write-protected; the huge zero page copied as it is."""
        pmd = parent.pmds[index]
        pmd.writable = False
        child.pmds[index] = Pmd(pmd.folio, writable=False, dirty=pmd.dirty)
        if pmd.folio is not None:
            pmd.folio.add_mappings(child, 1)
            pmd.folio.entire_mapcount += 1

    def madvise_collapse(self, mm: Mm, start: int, end: int) -> None:
        """MADV_COLLAPSE (madvise_collapse → collapse_huge_page): each aligned 2 MiB of [start, end) inside one
        private anonymous VMA that may have THPs (whatever the sysfs knobs say) and holds a present page is
        copied into a new THP, mapped writable by one PMD in this process only. No fault; the old pages lose
        this process's mappings (a forked child keeps its own); absent and zero pages become zeros."""
        for index in range(pmd_index(start + HPAGE_PMD_NR - 1), pmd_index(end)):
            base = index << HPAGE_PMD_ORDER
            vma = mm.find_vma(base)
            if (vma is None or base + HPAGE_PMD_NR > vma.end or vma.kind != VmaKind.PRIVATE_ANON or vma.nohugepage
                    or mm.thp_disabled or index in mm.pmds):
                continue
            old = [mm.ptes.get(page) for page in range(base, base + HPAGE_PMD_NR)]
            if not any(pte is not None and pte.frame is not self.zero_page for pte in old):
                continue  # nothing to collapse: no page table, or only none and zero-page PTEs
            folio = self.alloc_folio(HPAGE_PMD_ORDER, [0 if pte is None else pte.frame.content for pte in old])
            self.zap_pte_range(mm, base, base + HPAGE_PMD_NR)
            mm.page_tables.discard(index)
            self._map_pmd(mm, index, folio)
            vma.anon_vma = True
            self.counters.thp_collapse_alloc += 1

    def pmd_frame(self, pmd: Pmd, page: int) -> Frame:
        """The frame a PMD maps at ``page``."""
        if pmd.folio is None:
            return self.zero_page
        return pmd.folio.frames[page - folio_base(page, HPAGE_PMD_ORDER)]
