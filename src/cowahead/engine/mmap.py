"""Mappings and processes: the model's ``mmap``, ``munmap``, ``madvise`` (DONTNEED, HUGEPAGE, NOHUGEPAGE,
COLLAPSE), ``free_pgtables``, ``exit`` and ``exec`` (model/kernel.py), on mm.py's state.

Where large folios may be (``State.large``) a zap takes the PMDs first (huge_memory.zap_pmd_range), and
the page tables a mapping leaves behind are tracked as the model does: munmap frees those of the 2 MiB
that no VMA overlaps any more, a MADV_DONTNEED spanning a whole 2 MiB frees its emptied one on 6.14+
(CONFIG_PT_RECLAIM), exit frees all. MADV_HUGEPAGE and MADV_NOHUGEPAGE split a PMD that a new VMA
boundary would cut (vma_adjust_trans_huge), as the model does.
"""

from __future__ import annotations

from .huge_memory import madvise_collapse, split_huge_pmd_at, zap_pmd_range
from .layout import (BLK_TABLE, B_USERS, HPAGE_PMD_NR, HPAGE_PMD_ORDER, MADV_COLLAPSE, MADV_HUGEPAGE,
                     MADV_NOHUGEPAGE, PRIVATE_ANON, SC_SLOTS_FREE, S_FORKED, S_VMA_HEAD, TH_RECLAIM_PT, VM_HUGEPAGE,
                     VM_NOHUGEPAGE, V_ANON, V_BACKING, V_DHI, V_DLO, V_END, V_HUGE, V_KIND, V_NEXT, V_PSTATE,
                     V_START, _push, dense_index, jit)
from .mm import backing_new, drop_user, mm_of, page_of, vma_new, vma_remove, zap_pte_range


@jit
def zap_range(st, s, dlo, dhi):
    """unmap_page_range: PMDs first (split where the range cuts one), then the PTEs."""
    if st.large:
        zap_pmd_range(st, s, dlo, dhi)
    zap_pte_range(st, s, dlo, dhi)


@jit
def unmap_vma_range(st, s, v, start, end):
    """Zap [start, end) of ``v`` and keep what remains on either side (in place)."""
    vm = st.vmas
    dlo = dense_index(st.pages, st.direct_base, start)
    dhi = dense_index(st.pages, st.direct_base, end)
    zap_range(st, s, dlo, dhi)
    left = vm[v, V_START] < start
    right = end < vm[v, V_END]
    if left and right:
        # users: +1 +1 -1 for the two pieces and the old VMA, as in the model
        vma_new(st, s, end, vm[v, V_END], vm[v, V_KIND], vm[v, V_BACKING], vm[v, V_ANON], vm[v, V_PSTATE],
                vm[v, V_HUGE])
        if vm[v, V_BACKING] >= 0:
            st.backings[vm[v, V_BACKING], B_USERS] += 1
        vm[v, V_END] = start
        vm[v, V_DHI] = dlo
    elif left:
        vm[v, V_END] = start
        vm[v, V_DHI] = dlo
    elif right:
        vm[v, V_START] = end
        vm[v, V_DLO] = dhi
    else:
        b = vm[v, V_BACKING]
        vma_remove(st, s, v)
        drop_user(st, b)


@jit
def munmap(st, s, start, end):
    vm = st.vmas
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        nxt = vm[v, V_NEXT]  # pieces split off go to the list head, never revisited
        if vm[v, V_START] < end and start < vm[v, V_END]:
            unmap_vma_range(st, s, v, max(vm[v, V_START], start), min(vm[v, V_END], end))
        v = nxt
    if st.large:
        free_pgtables(st, s, start, end)


@jit
def free_pgtables(st, s, start, end):
    """free_pgd_range: the page tables of raw [start, end) that no VMA overlaps any more go. Only dense
    blocks can hold a table, and those overlapping the range are the blocks of its dense pages."""
    dlo = dense_index(st.pages, st.direct_base, start)
    dhi = dense_index(st.pages, st.direct_base, end)
    if dlo >= dhi:
        return
    vm = st.vmas
    for b in range(dlo >> HPAGE_PMD_ORDER, ((dhi - 1) >> HPAGE_PMD_ORDER) + 1):
        if not st.pmds[s, b] & BLK_TABLE:
            continue
        first = page_of(st, b << HPAGE_PMD_ORDER)
        used = False
        v = st.slots[s, S_VMA_HEAD]
        while v >= 0:
            if vm[v, V_START] < first + HPAGE_PMD_NR and first < vm[v, V_END]:
                used = True
                break
            v = vm[v, V_NEXT]
        if not used:
            st.pmds[s, b] &= ~BLK_TABLE


@jit
def madvise_dontneed(st, s, start, end):
    """Zap the range; where large folios may be, on 6.14+ a page table the zap of one VMA's part emptied
    whole is freed (CONFIG_PT_RECLAIM), so a later fault there may map a PMD THP again."""
    vm = st.vmas
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        if vm[v, V_START] < end and start < vm[v, V_END]:
            dlo = dense_index(st.pages, st.direct_base, max(vm[v, V_START], start))
            dhi = dense_index(st.pages, st.direct_base, min(vm[v, V_END], end))
            zap_range(st, s, dlo, dhi)
            if st.large and st.thp[TH_RECLAIM_PT]:
                for b in range((dlo + HPAGE_PMD_NR - 1) >> HPAGE_PMD_ORDER, dhi >> HPAGE_PMD_ORDER):
                    st.pmds[s, b] &= ~BLK_TABLE
        v = vm[v, V_NEXT]


@jit
def madvise_hugepage(st, s, start, end, flag):
    """MADV_HUGEPAGE / MADV_NOHUGEPAGE: VM_HUGEPAGE or VM_NOHUGEPAGE on raw [start, end) (``flag``), splitting
    VMAs at its ends; each piece keeps the VMA's kind, backing, anon_vma and policy state, as the model's
    ``replace`` does. In every state, large or not: a split VMA clips a window where the whole one did not."""
    vm = st.vmas
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        nxt = vm[v, V_NEXT]  # pieces split off go to the list head, never revisited
        if vm[v, V_START] < end and start < vm[v, V_END]:
            a, z = max(vm[v, V_START], start), min(vm[v, V_END], end)
            b = vm[v, V_BACKING]
            if vm[v, V_START] < a:
                if st.large:
                    split_huge_pmd_at(st, s, a)
                vma_new(st, s, vm[v, V_START], a, vm[v, V_KIND], b, vm[v, V_ANON], vm[v, V_PSTATE], vm[v, V_HUGE])
                if b >= 0:
                    st.backings[b, B_USERS] += 1
            if z < vm[v, V_END]:
                if st.large:
                    split_huge_pmd_at(st, s, z)
                vma_new(st, s, z, vm[v, V_END], vm[v, V_KIND], b, vm[v, V_ANON], vm[v, V_PSTATE], vm[v, V_HUGE])
                if b >= 0:
                    st.backings[b, B_USERS] += 1
            vm[v, V_START] = a
            vm[v, V_END] = z
            vm[v, V_DLO] = dense_index(st.pages, st.direct_base, a)
            vm[v, V_DHI] = dense_index(st.pages, st.direct_base, z)
            vm[v, V_HUGE] = flag
        v = nxt


@jit
def madvise(st, pid, start, end, advice):
    """The advice the model acts on; any other changes nothing (and makes no address space)."""
    if advice == MADV_HUGEPAGE:
        madvise_hugepage(st, mm_of(st, pid), start, end, VM_HUGEPAGE)
    elif advice == MADV_NOHUGEPAGE:
        madvise_hugepage(st, mm_of(st, pid), start, end, VM_NOHUGEPAGE)
    elif advice == MADV_COLLAPSE:
        s = mm_of(st, pid)
        if st.large:  # a trace asking MADV_COLLAPSE always has large folios possible (prepass.page_space)
            madvise_collapse(st, s, start, end)


@jit
def mmap(st, s, start, end, kind):
    """MAP_FIXED semantics: whatever was mapped in the range goes first."""
    munmap(st, s, start, end)
    backing = -1
    if kind != PRIVATE_ANON:
        backing = backing_new(st, dense_index(st.pages, st.direct_base, start),
                              dense_index(st.pages, st.direct_base, end))
    vma_new(st, s, start, end, kind, backing, 0, -1, 0)


# ----- processes ------------------------------------------------------------------


@jit
def exit_mmap(st, s):
    vm = st.vmas
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        nxt = vm[v, V_NEXT]
        unmap_vma_range(st, s, v, vm[v, V_START], vm[v, V_END])
        v = nxt
    for b in range(st.pmds.shape[1]):  # no columns unless large folios are possible
        st.pmds[s, b] = 0


@jit
def do_exit(st, pid):
    s = st.slot_of[pid]
    if s >= 0:
        exit_mmap(st, s)
        st.slot_of[pid] = -1
        _push(st.slot_free, st.sc, SC_SLOTS_FREE, s)


@jit
def do_exec(st, pid):
    """A new, empty address space in the same slot; PR_SET_THP_DISABLE survives execve."""
    s = mm_of(st, pid)
    exit_mmap(st, s)
    st.slots[s, S_FORKED] = 0
