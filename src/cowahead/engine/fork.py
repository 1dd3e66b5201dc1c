"""fork: ``dup_mmap`` of the model, with the policy's look at the parent first.

Where large folios may be, ``copy_page_range_large`` copies as the model's ``_copy_page_range``: a PMD by
``copy_huge_pmd`` (one more mapping of its THP), a page table wherever the parent has one, and each PTE
as one more mapping of its 4 KiB frame or of its large folio (CONFIG_MM_ID's slots see the child)."""

from __future__ import annotations

import numpy as np

from .huge_memory import copy_huge_pmd
from .layout import (BLK_PMD, BLK_TABLE, B_USERS, HIT, HPAGE_PMD_ORDER, LARGE, MAPPED, PENDING, PRESENT,
                     SHARED_ANON, S_FORKED, S_THP_DISABLED, S_VMA_HEAD, V_ANON, V_BACKING, V_DHI, V_DLO, V_END,
                     V_HUGE, V_KIND, V_NEXT, V_START, WRITABLE, ZAP_AHEAD, ZERO_FRAME, frame_of, jit)
from .mm import far_state, folio_add, mm_of, settle_ahead, vma_new
from .mmap import do_exit
from .prefetch import prefetch_item
from .windows import on_fork


@jit
def copy_pte_range(st, sp, sc, dlo, dhi):
    """Private pages become shared and write-protected in both; ahead states end."""
    ptes = st.ptes
    far = far_state(st)
    up, uc = np.uintp(sp), np.uintp(sc)
    for d in range(dlo, dhi):
        e = np.uintp(d)
        if far and d + ZAP_AHEAD < dhi:
            prefetch_item(st.frames, frame_of(ptes[up, np.uintp(d + ZAP_AHEAD)]))
        pte = ptes[up, e]
        if pte & PRESENT:
            settle_ahead(st, sp, d)
            shared = pte & ~(WRITABLE | PENDING | HIT)
            ptes[up, e] = shared
            ptes[uc, e] = shared
            f = frame_of(pte)
            if f != ZERO_FRAME:
                st.frames[np.uintp(f)] += MAPPED


@jit
def copy_page_range_large(st, sp, sc, dlo, dhi):
    """copy_page_range where large folios may be: the 2 MiB blocks first (a PMD shared, a page table
    copied), then every PTE outside the PMDs, shared and write-protected."""
    if dlo >= dhi:
        return
    for b in range(dlo >> HPAGE_PMD_ORDER, ((dhi - 1) >> HPAGE_PMD_ORDER) + 1):
        if st.pmds[sp, b] & BLK_PMD:
            copy_huge_pmd(st, sp, sc, b)
        elif st.pmds[sp, b] & BLK_TABLE:
            st.pmds[sc, b] |= BLK_TABLE
    ptes = st.ptes
    for d in range(dlo, dhi):
        pte = ptes[sp, d]
        if pte & PRESENT and not st.pmds[sp, d >> HPAGE_PMD_ORDER] & BLK_PMD:
            settle_ahead(st, sp, d)
            shared = pte & ~(WRITABLE | PENDING | HIT)
            ptes[sp, d] = shared
            ptes[sc, d] = shared
            f = frame_of(pte)
            if f == ZERO_FRAME:
                continue
            if st.frame_kind[f] == LARGE:
                folio_add(st, f, sc, 1)
            else:
                st.frames[f] += MAPPED


@jit
def do_fork(st, parent, child):
    """dup_mmap: copy VMAs; private pages become shared and write-protected."""
    sp = mm_of(st, parent)
    thp_disabled = st.slots[sp, S_THP_DISABLED]
    if child == parent:
        # The model exits the pid and leaves it a fresh, empty address space (PR_SET_THP_DISABLE inherited).
        do_exit(st, child)
        st.slots[mm_of(st, child), S_THP_DISABLED] = thp_disabled
        return
    if st.slot_of[child] >= 0:
        do_exit(st, child)  # the pid was reused without an exit event
    on_fork(st, sp)
    st.slots[sp, S_FORKED] = 1
    sc = mm_of(st, child)
    st.slots[sc, S_THP_DISABLED] = thp_disabled
    vm = st.vmas
    v = st.slots[sp, S_VMA_HEAD]
    while v >= 0:
        b = vm[v, V_BACKING]
        if b >= 0:
            st.backings[b, B_USERS] += 1
        c = vma_new(st, sc, vm[v, V_START], vm[v, V_END], vm[v, V_KIND], b, vm[v, V_ANON], -1, vm[v, V_HUGE])
        if vm[v, V_KIND] != SHARED_ANON and vm[v, V_ANON]:
            if st.large:
                copy_page_range_large(st, sp, sc, vm[c, V_DLO], vm[c, V_DHI])
            else:
                copy_pte_range(st, sp, sc, vm[c, V_DLO], vm[c, V_DHI])
        v = vm[v, V_NEXT]
