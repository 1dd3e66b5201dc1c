"""The PMD paths and the choice of a folio at a fault: model/huge_memory.py on arrays.

Only a state with ``large`` set (large folios possible in its trace) comes here; see layout.py for how
folios and PMDs are held. In short, per (address space, 2 MiB block) ``pmds[slot, block]`` says whether a
page table is installed (``BLK_TABLE``) or a PMD maps the block (``BLK_PMD``); a PMD's 512 PTEs are kept
filled in with the THP's head frame (or the zero page's, for the huge zero page) and the PMD's
protection, so that a read or a write through a writable PMD is a hit in the hot loop like any other,
and only a write to a write-protected one faults here. Splitting a PMD therefore touches no PTE: its
PTEs already say what ``__split_huge_pmd`` would write. Each function mirrors the model's of the same
name and counts what it counts.
"""

from __future__ import annotations

import numpy as np

from .layout import (BLK_PMD, BLK_TABLE, C_COW_COPY, C_COW_COPY_PAGES, C_HUGE_ZERO_PAGE, C_REUSE, C_REUSE_PAGES,
                     C_THP_COLLAPSE_ALLOC, C_THP_FAULT_ALLOC, C_THP_SPLIT_PMD, C_ZERO_FILL, C_ZERO_FILL_PAGES,
                     C_ZERO_PAGE, DIRTY, FRAME_SHIFT, F_ENTIRE, F_REF, HPAGE_PMD_NR, HPAGE_PMD_ORDER, PP_KIND,
                     PRESENT, PRIVATE_ANON, S_THP_DISABLED, TH_ORDERS, TH_ORDERS_HUGEPAGE, TH_ZERO_PAGE,
                     TH_ZERO_WRITE_ALLOC,
                     VM_HUGEPAGE, VM_NOHUGEPAGE, V_ANON, V_DHI, V_DLO, V_HUGE, V_KIND, WRITABLE, ZERO_FRAME,
                     dense_index, frame_of, jit, jit_inline)
from .mm import alloc_folio, find_vma, folio_add, folio_put, page_of, zap_pte_range_large
from .windows import POL_THP_COW


# ----- which folio a fault may allocate ------------------------------------------------


@jit_inline
def thp_vma_allowable_orders(st, s, v):
    """The folio orders the settings allow in VMA ``v`` as a bit mask: none in a shared mapping, a
    VM_NOHUGEPAGE VMA or a PR_SET_THP_DISABLE process."""
    if st.vmas[v, V_KIND] != PRIVATE_ANON or st.vmas[v, V_HUGE] == VM_NOHUGEPAGE or st.slots[s, S_THP_DISABLED]:
        return np.int64(0)
    return st.thp[TH_ORDERS_HUGEPAGE] if st.vmas[v, V_HUGE] == VM_HUGEPAGE else st.thp[TH_ORDERS]


@jit_inline
def thp_vma_suitable_order(st, v, d, order):
    """Does the aligned 2**order range around dense page ``d`` lie inside the VMA? Compared in dense pages:
    the page space holds whole 2 MiB blocks, so a folio's pages are consecutive dense pages, aligned alike."""
    base = d & ~((np.int64(1) << order) - 1)
    return st.vmas[v, V_DLO] <= base and base + (np.int64(1) << order) <= st.vmas[v, V_DHI]


@jit
def alloc_anon_folio_order(st, s, v, d):
    """alloc_anon_folio: the highest allowed order below PMD's whose aligned range fits the VMA and whose
    PTEs are all none; 0 (a 4 KiB page) if none does."""
    allowed = thp_vma_allowable_orders(st, s, v)
    for order in range(HPAGE_PMD_ORDER - 1, 0, -1):
        if not (allowed >> order) & 1 or not thp_vma_suitable_order(st, v, d, order):
            continue
        base = d & ~((np.int64(1) << order) - 1)
        none = True
        for q in range(base, base + (np.int64(1) << order)):
            if st.ptes[s, q] & PRESENT:
                none = False
                break
        if none:
            return order
    return 0


# ----- faults -------------------------------------------------------------------------------


@jit
def do_huge_pmd_anonymous_page(st, s, v, d, write):
    """A fault in an empty 2 MiB (no page table) where PMD THP is allowed; False: fall back to PTEs."""
    if not thp_vma_suitable_order(st, v, d, HPAGE_PMD_ORDER):
        return False
    st.vmas[v, V_ANON] = 1  # vmf_anon_prepare, before the zero-page choice
    b = d >> HPAGE_PMD_ORDER
    c = st.counters
    if not write and st.thp[TH_ZERO_PAGE]:
        c[C_ZERO_PAGE] += 1
        c[C_HUGE_ZERO_PAGE] += 1
        st.pmds[s, b] = BLK_PMD
        for q in range(b << HPAGE_PMD_ORDER, (b + 1) << HPAGE_PMD_ORDER):
            st.ptes[s, q] = (ZERO_FRAME << FRAME_SHIFT) | PRESENT
        return True
    c[C_ZERO_FILL] += 1
    c[C_ZERO_FILL_PAGES] += HPAGE_PMD_NR
    c[C_THP_FAULT_ALLOC] += 1
    map_pmd(st, s, b, alloc_folio(st, HPAGE_PMD_ORDER))
    return True


@jit
def do_huge_pmd_wp_page(st, s, v, d):
    """A write to a write-protected PMD. The huge zero page: a new THP (6.13+), else split. A THP mapped by
    this PMD alone: reused whole. Else split the PMD; False: the PTE level copies."""
    b = d >> HPAGE_PMD_ORDER
    base = b << HPAGE_PMD_ORDER
    f = frame_of(st.ptes[s, base])
    c = st.counters
    if f == ZERO_FRAME:
        if st.thp[TH_ZERO_WRITE_ALLOC]:  # do_huge_zero_wp_pmd
            c[C_COW_COPY] += 1
            c[C_COW_COPY_PAGES] += HPAGE_PMD_NR
            c[C_THP_FAULT_ALLOC] += 1
            map_pmd(st, s, b, alloc_folio(st, HPAGE_PMD_ORDER))
            return True
    elif st.folios[f, F_REF] == 1:
        c[C_REUSE] += 1
        c[C_REUSE_PAGES] += HPAGE_PMD_NR
        for q in range(base, base + HPAGE_PMD_NR):
            st.ptes[s, q] |= WRITABLE
        return True
    elif st.policy[PP_KIND] == POL_THP_COW:  # Linux <= 5.7 (policies/thp_cow.py): the new THP first
        c[C_COW_COPY] += 1
        c[C_COW_COPY_PAGES] += HPAGE_PMD_NR
        c[C_THP_FAULT_ALLOC] += 1
        new = alloc_folio(st, HPAGE_PMD_ORDER)
        zap_huge_pmd(st, s, b)
        map_pmd(st, s, b, new)
        return True
    split_huge_pmd(st, s, b)
    return False


# ----- the PMD's life ----------------------------------------------------------------------


@jit
def map_pmd(st, s, b, f):
    """A PMD mapping THP ``f`` writable over block ``b``: one mapping of the folio, and its 512 PTEs."""
    folio_add(st, f, s, 1)
    st.folios[f, F_ENTIRE] += 1
    st.pmds[s, b] = BLK_PMD
    entry = (f << FRAME_SHIFT) | PRESENT | WRITABLE | DIRTY
    for q in range(b << HPAGE_PMD_ORDER, (b + 1) << HPAGE_PMD_ORDER):
        st.ptes[s, q] = entry


@jit
def split_huge_pmd(st, s, b):
    """__split_huge_pmd: a page table of 512 PTEs with the PMD's protection and dirty bit (the PTEs held
    them already); the PMD's one mapping becomes 512 (the huge zero page's: the 4 KiB zero page's)."""
    st.pmds[s, b] = BLK_TABLE
    st.counters[C_THP_SPLIT_PMD] += 1
    f = frame_of(st.ptes[s, b << HPAGE_PMD_ORDER])
    if f != ZERO_FRAME:
        st.folios[f, F_ENTIRE] -= 1
        folio_add(st, f, s, HPAGE_PMD_NR - 1)


@jit
def zap_huge_pmd(st, s, b):
    f = frame_of(st.ptes[s, b << HPAGE_PMD_ORDER])
    st.pmds[s, b] = 0
    for q in range(b << HPAGE_PMD_ORDER, (b + 1) << HPAGE_PMD_ORDER):
        st.ptes[s, q] = 0
    if f != ZERO_FRAME:
        st.folios[f, F_ENTIRE] -= 1
        folio_put(st, f, s)


@jit
def zap_pmd_range(st, s, dlo, dhi):
    """The PMDs in dense [dlo, dhi): zapped whole where the range covers them, else split (the PTE zap then
    takes the part in range; the folio stays allocated while any page is mapped)."""
    if dlo >= dhi:
        return
    for b in range(dlo >> HPAGE_PMD_ORDER, ((dhi - 1) >> HPAGE_PMD_ORDER) + 1):
        if st.pmds[s, b] & BLK_PMD:
            if dlo <= b << HPAGE_PMD_ORDER and (b + 1) << HPAGE_PMD_ORDER <= dhi:
                zap_huge_pmd(st, s, b)
            else:
                split_huge_pmd(st, s, b)


@jit
def split_huge_pmd_at(st, s, page):
    """vma_adjust_trans_huge: a VMA split at raw ``page`` splits the PMD it would cut: no PMD straddles two
    VMAs (the model's madvise splits it at the range's unaligned ends, which is where the VMAs split)."""
    if page & (HPAGE_PMD_NR - 1) == 0:
        return
    d = dense_index(st.pages, st.direct_base, page)
    if d < st.pages.shape[0] and page_of(st, d) >> HPAGE_PMD_ORDER == page >> HPAGE_PMD_ORDER \
            and st.pmds[s, d >> HPAGE_PMD_ORDER] & BLK_PMD:
        split_huge_pmd(st, s, d >> HPAGE_PMD_ORDER)


@jit
def copy_huge_pmd(st, sp, sc, b):
    """fork: the THP shared by both PMDs, each write-protected; the huge zero page copied as it is."""
    base = b << HPAGE_PMD_ORDER
    for q in range(base, base + HPAGE_PMD_NR):
        entry = st.ptes[sp, q] & ~WRITABLE
        st.ptes[sp, q] = entry
        st.ptes[sc, q] = entry
    st.pmds[sc, b] = BLK_PMD
    f = frame_of(st.ptes[sp, base])
    if f != ZERO_FRAME:
        folio_add(st, f, sc, 1)
        st.folios[f, F_ENTIRE] += 1


@jit
def madvise_collapse(st, s, start, end):
    """MADV_COLLAPSE: each aligned 2 MiB of raw [start, end) inside one private anonymous VMA that may have
    THPs (whatever the knobs say) and holds a present page other than the zero page becomes a new THP,
    mapped writable by one PMD in this process only. No fault; the old pages lose this process's mappings."""
    dlo = dense_index(st.pages, st.direct_base, start)
    dhi = dense_index(st.pages, st.direct_base, end)
    for b in range((dlo + HPAGE_PMD_NR - 1) >> HPAGE_PMD_ORDER, dhi >> HPAGE_PMD_ORDER):
        base = b << HPAGE_PMD_ORDER
        v = find_vma(st, s, base)
        if (v < 0 or base + HPAGE_PMD_NR > st.vmas[v, V_DHI] or st.vmas[v, V_KIND] != PRIVATE_ANON
                or st.vmas[v, V_HUGE] == VM_NOHUGEPAGE or st.slots[s, S_THP_DISABLED] or st.pmds[s, b] & BLK_PMD):
            continue
        present = False
        for q in range(base, base + HPAGE_PMD_NR):
            if st.ptes[s, q] & PRESENT and frame_of(st.ptes[s, q]) != ZERO_FRAME:
                present = True
                break
        if not present:
            continue  # nothing to collapse: no page table, or only none and zero-page PTEs
        f = alloc_folio(st, HPAGE_PMD_ORDER)
        zap_pte_range_large(st, s, base, base + HPAGE_PMD_NR)
        st.pmds[s, b] = 0
        map_pmd(st, s, b, f)
        st.vmas[v, V_ANON] = 1
        st.counters[C_THP_COLLAPSE_ALLOC] += 1
