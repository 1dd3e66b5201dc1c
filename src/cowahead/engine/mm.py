"""Frames, dense pages, backing objects, VMAs and address spaces: model/kernel.py's state on arrays.

Mirrors the model's frames (``_alloc_frame``, ``_put_frame``, ``_map_frame``), its
mappings (``mmap``, ``munmap``, ``madvise_dontneed``, ``zap_pte_range``) and its
processes (``exit``, ``exec``); fork lives in fork.py, beside the policies' fork hook.
"""

from __future__ import annotations

import numpy as np

from .layout import (ANON, B_DHI, B_DLO, B_SEG, B_USERS, C_AHEAD_WASTE, C_EXTRA_PAGES, C_RESIDENT,
                     C_RESIDENT_PEAK, DIRTY, FRAME_SHIFT, MAPPED, ONE_REF, PENDING, PRESENT, PRIVATE_ANON,
                     P_REF, P_RLEN, P_SEG, SC_BACKINGS_FREE, SC_BK_BUMP, SC_BK_LIVE_FRAMES, SC_COV_BUMP,
                     SC_FRAMES_FREE, SC_PREFETCH_MIN_BYTES, SC_PSTATES_FREE, SC_SLOTS_FREE, SC_VMAS_FREE,
                     S_FORKED, S_NVMAS, S_VMA_CACHE, S_VMA_HEAD, V_ANON, V_BACKING, V_DHI, V_DLO, V_END, V_KIND,
                     V_NEXT, V_PSTATE, V_START, WRITABLE, ZAP_AHEAD, ZERO_FRAME, _pop, _push, dense_index,
                     frame_of, jit, jit_inline, pte_at)
from .prefetch import prefetch_item


# ----- frames ---------------------------------------------------------------------


@jit_inline
def alloc_frame(st, kind):
    f = _pop(st.frame_free, st.sc, SC_FRAMES_FREE)
    u = np.uintp(f)
    st.frame_kind[u] = kind
    c = st.counters
    c[C_RESIDENT] += 1
    if c[C_RESIDENT] > c[C_RESIDENT_PEAK]:
        c[C_RESIDENT_PEAK] = c[C_RESIDENT]
    # Last, so that where map_frame follows at once the compiler folds its add into this store.
    st.frames[u] = 0
    return f


@jit_inline
def put_frame(st, f, unmap):
    if f == ZERO_FRAME:
        return
    u = np.uintp(f)
    st.frames[u] -= MAPPED if unmap else ONE_REF
    if st.frames[u] == 0:
        _push(st.frame_free, st.sc, SC_FRAMES_FREE, f)
        st.counters[C_RESIDENT] -= 1


@jit_inline
def wp_can_reuse(st, f):
    """Only an anonymous frame mapped once and referenced once may be reused."""
    u = np.uintp(f)
    return f != ZERO_FRAME and st.frames[u] == MAPPED and st.frame_kind[u] == ANON


@jit_inline
def map_frame(st, s, d, f, writable):
    """A new PTE: writable ones start dirty, as the model's _map_frame."""
    if f != ZERO_FRAME:
        st.frames[np.uintp(f)] += MAPPED
    st.ptes[pte_at(s, d)] = (f << FRAME_SHIFT) | (PRESENT | WRITABLE | DIRTY if writable else PRESENT)


@jit_inline
def settle_ahead(st, s, d):
    """An ahead copy leaving its PTE unwritten was waste."""
    if st.ptes[pte_at(s, d)] & PENDING:
        st.counters[C_AHEAD_WASTE] += 1
        st.counters[C_EXTRA_PAGES] -= 1


@jit_inline
def far_state(st):
    """Is the PTE and frame memory a replay reaches into too big for the caches? Else prefetching costs."""
    return st.ptes.nbytes + st.frames.nbytes >= st.sc[SC_PREFETCH_MIN_BYTES]


@jit
def zap_pte_range(st, s, dlo, dhi):
    far = far_state(st)
    u = np.uintp(s)
    for d in range(dlo, dhi):
        e = np.uintp(d)
        if far and d + ZAP_AHEAD < dhi:  # frames copied at random pages lie at random: overlap their misses
            prefetch_item(st.frames, frame_of(st.ptes[u, np.uintp(d + ZAP_AHEAD)]))
        pte = st.ptes[u, e]
        if pte & PRESENT:
            settle_ahead(st, s, d)
            st.ptes[u, e] = 0
            put_frame(st, frame_of(pte), True)


# ----- dense pages ----------------------------------------------------------------


@jit_inline
def page_of(st, d):
    """The page number of dense index ``d``; an offset when the page space is one dense run."""
    if st.direct_base >= 0:
        return st.direct_base + d
    return st.pages[d]


@jit_inline
def dense_after(st, d, limit):
    """The first dense index after ``d`` whose page is >= ``limit``: a window's end."""
    n = st.pages.shape[0]
    if st.direct_base >= 0:
        return min(n, max(d + 1, limit - st.direct_base))
    q = d + 1
    while q < n and st.pages[q] < limit:  # a window is short: a scan beats a search
        q += 1
    return q


@jit_inline
def dense_from(st, d, start):
    """The first dense index at or before ``d`` whose page is >= ``start`` (<= ``d``'s page)."""
    if st.direct_base >= 0:
        return max(0, start - st.direct_base)
    q = d
    while q > 0 and st.pages[q - 1] >= start:
        q -= 1
    return q


# ----- policy states --------------------------------------------------------------


@jit
def pstate_put(st, q):
    if q < 0:
        return
    ps = st.pstates
    ps[q, P_REF] -= 1
    if ps[q, P_REF] == 0:
        _push(st.pstate_free, st.sc, SC_PSTATES_FREE, q)
        if ps[q, P_SEG] + ps[q, P_RLEN] == st.sc[SC_COV_BUMP]:
            st.sc[SC_COV_BUMP] = ps[q, P_SEG]  # the newest segment: reclaimed, as a stack


# ----- backing objects ------------------------------------------------------------


@jit
def backing_new(st, dlo, dhi):
    b = _pop(st.backing_free, st.sc, SC_BACKINGS_FREE)
    seg = st.sc[SC_BK_BUMP]
    st.sc[SC_BK_BUMP] += dhi - dlo
    for i in range(seg, seg + dhi - dlo):
        st.backing_frames[i] = -1
    st.backings[b, B_USERS] = 1
    st.backings[b, B_DLO] = dlo
    st.backings[b, B_DHI] = dhi
    st.backings[b, B_SEG] = seg
    return b


@jit
def drop_user(st, b):
    """A VMA stops using ``b``; with the last one the object and its frames go."""
    if b < 0:
        return
    bk = st.backings
    bk[b, B_USERS] -= 1
    if bk[b, B_USERS] > 0:
        return
    seg, dlo = bk[b, B_SEG], bk[b, B_DLO]
    for i in range(seg, seg + bk[b, B_DHI] - dlo):
        f = st.backing_frames[i]
        if f >= 0:
            put_frame(st, f, False)
            st.backing_frames[i] = -1
            st.sc[SC_BK_LIVE_FRAMES] -= 1
    _push(st.backing_free, st.sc, SC_BACKINGS_FREE, b)
    if seg + bk[b, B_DHI] - dlo == st.sc[SC_BK_BUMP]:
        st.sc[SC_BK_BUMP] = seg  # the newest segment: reclaimed, as a stack


@jit
def backing_frame(st, v, d, kind):
    """The shmem or page-cache frame of page ``d``; allocated with the object's own reference."""
    b = st.vmas[v, V_BACKING]
    i = st.backings[b, B_SEG] + d - st.backings[b, B_DLO]
    f = st.backing_frames[i]
    if f < 0:
        f = alloc_frame(st, kind)
        st.frames[f] += ONE_REF
        st.backing_frames[i] = f
        st.sc[SC_BK_LIVE_FRAMES] += 1
    return f


# ----- VMAs -----------------------------------------------------------------------


@jit
def vma_new(st, s, start, end, kind, backing, anon, pstate):
    v = _pop(st.vma_free, st.sc, SC_VMAS_FREE)
    vm = st.vmas
    vm[v, V_START] = start
    vm[v, V_END] = end
    vm[v, V_DLO] = dense_index(st.pages, st.direct_base, start)
    vm[v, V_DHI] = dense_index(st.pages, st.direct_base, end)
    vm[v, V_KIND] = kind
    vm[v, V_BACKING] = backing
    vm[v, V_ANON] = anon
    vm[v, V_PSTATE] = pstate
    if pstate >= 0:
        st.pstates[pstate, P_REF] += 1
    vm[v, V_NEXT] = st.slots[s, S_VMA_HEAD]
    st.slots[s, S_VMA_HEAD] = v
    st.slots[s, S_NVMAS] += 1
    return v


@jit
def vma_remove(st, s, v):
    vm = st.vmas
    prev, cur = -1, st.slots[s, S_VMA_HEAD]
    while cur != v:
        prev, cur = cur, vm[cur, V_NEXT]
    if prev < 0:
        st.slots[s, S_VMA_HEAD] = vm[v, V_NEXT]
    else:
        vm[prev, V_NEXT] = vm[v, V_NEXT]
    st.slots[s, S_NVMAS] -= 1
    st.slots[s, S_VMA_CACHE] = -1
    pstate_put(st, vm[v, V_PSTATE])
    _push(st.vma_free, st.sc, SC_VMAS_FREE, v)


@jit_inline
def find_vma(st, s, d):
    """The VMA holding dense page ``d`` (dense bounds compare like raw ones), or -1."""
    vm = st.vmas
    v = st.slots[np.uintp(s), S_VMA_CACHE]
    if v >= 0 and vm[np.uintp(v), V_DLO] <= d < vm[np.uintp(v), V_DHI]:
        return v
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        if vm[v, V_DLO] <= d < vm[v, V_DHI]:
            st.slots[s, S_VMA_CACHE] = v
            return v
        v = vm[v, V_NEXT]
    return -1


@jit
def unmap_vma_range(st, s, v, start, end):
    """Zap [start, end) of ``v`` and keep what remains on either side (in place)."""
    vm = st.vmas
    dlo = dense_index(st.pages, st.direct_base, start)
    dhi = dense_index(st.pages, st.direct_base, end)
    zap_pte_range(st, s, dlo, dhi)
    left = vm[v, V_START] < start
    right = end < vm[v, V_END]
    if left and right:
        # users: +1 +1 -1 for the two pieces and the old VMA, as in the model
        vma_new(st, s, end, vm[v, V_END], vm[v, V_KIND], vm[v, V_BACKING], vm[v, V_ANON], vm[v, V_PSTATE])
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


@jit
def madvise_dontneed(st, s, start, end):
    vm = st.vmas
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        if vm[v, V_START] < end and start < vm[v, V_END]:
            zap_pte_range(st, s, dense_index(st.pages, st.direct_base, max(vm[v, V_START], start)),
                          dense_index(st.pages, st.direct_base, min(vm[v, V_END], end)))
        v = vm[v, V_NEXT]


@jit
def mmap(st, s, start, end, kind):
    """MAP_FIXED semantics: whatever was mapped in the range goes first."""
    munmap(st, s, start, end)
    backing = -1
    if kind != PRIVATE_ANON:
        backing = backing_new(st, dense_index(st.pages, st.direct_base, start),
                              dense_index(st.pages, st.direct_base, end))
    vma_new(st, s, start, end, kind, backing, 0, -1)


# ----- processes ------------------------------------------------------------------


@jit_inline
def mm_of(st, pid):
    s = st.slot_of[pid]
    if s < 0:
        s = _pop(st.slot_free, st.sc, SC_SLOTS_FREE)
        st.slot_of[pid] = s
        st.slots[s, S_VMA_HEAD] = -1
        st.slots[s, S_VMA_CACHE] = -1
        st.slots[s, S_FORKED] = 0
        st.slots[s, S_NVMAS] = 0
    return s


@jit
def exit_mmap(st, s):
    vm = st.vmas
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        nxt = vm[v, V_NEXT]
        unmap_vma_range(st, s, v, vm[v, V_START], vm[v, V_END])
        v = nxt


@jit
def do_exit(st, pid):
    s = st.slot_of[pid]
    if s >= 0:
        exit_mmap(st, s)
        st.slot_of[pid] = -1
        _push(st.slot_free, st.sc, SC_SLOTS_FREE, s)


@jit
def do_exec(st, pid):
    s = mm_of(st, pid)
    exit_mmap(st, s)
    st.slots[s, S_FORKED] = 0
