"""Frames, large folios' counts, dense pages, backing objects, VMAs and address spaces: model/kernel.py's
state on arrays.

Mirrors the model's frames (``_alloc_frame``, ``_put_frame``, ``_map_frame``), a large folio's counts
(model/folio.py ``Folio``: ``add_mappings``, ``remove_mappings``, ``exclusive_to``, and
``_put_folio_mappings``), ``zap_pte_range``, VMAs and ``mm_of``. The mappings that use them (mmap, munmap,
madvise, exit, exec) are mmap.py's, the PMD paths huge_memory.py's, fork fork.py's.
"""

from __future__ import annotations

import numpy as np

from .layout import (ANON, B_DHI, B_DLO, B_SEG, B_USERS, C_AHEAD_WASTE, C_EXTRA_PAGES, C_RESIDENT,
                     C_RESIDENT_PEAK, DIRTY, FRAME_SHIFT, F_MM0, F_MM1, F_N0, F_N1, F_ORDER, F_REF, F_SHARED, LARGE,
                     MAPPED, N_FOLIO_FIELDS, ONE_REF, PENDING, PRESENT, P_REF, P_RLEN, P_SEG, SC_BACKINGS_FREE,
                     SC_BK_BUMP, SC_BK_LIVE_FRAMES, SC_COV_BUMP, SC_FRAMES_FREE, SC_PREFETCH_MIN_BYTES,
                     SC_PSTATES_FREE, SC_SLOTS_FREE, SC_VMAS_FREE, S_FORKED, S_NVMAS, S_THP_DISABLED, S_VMA_CACHE,
                     S_VMA_HEAD, TH_REUSE_LARGE, V_ANON, V_BACKING, V_DHI, V_DLO, V_END, V_HUGE, V_KIND, V_NEXT,
                     V_PSTATE, V_START, WRITABLE, ZAP_AHEAD, ZERO_FRAME, _pop, _push, dense_index, frame_of, jit,
                     jit_inline, pte_at)
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


# ----- large folios (model/folio.py Folio) ------------------------------------------
# A folio is its head frame f (frame_kind LARGE); folios[f] holds its counts. ``s`` names an address space
# by its slot: a slot is reused only once every mapping of the old one is gone, and then no folio's mm
# slot holds it any more (a slot's count never exceeds the mappings it stands for, so it empties first).


@jit
def alloc_folio(st, order):
    """A new anonymous folio of 2**order pages, each resident from now until the folio is freed."""
    f = _pop(st.frame_free, st.sc, SC_FRAMES_FREE)
    st.frame_kind[f] = LARGE
    st.frames[f] = ONE_REF
    for k in range(N_FOLIO_FIELDS):
        st.folios[f, k] = 0
    st.folios[f, F_ORDER] = order
    c = st.counters
    c[C_RESIDENT] += 1 << order
    if c[C_RESIDENT] > c[C_RESIDENT_PEAK]:
        c[C_RESIDENT_PEAK] = c[C_RESIDENT]
    return f


@jit_inline
def folio_add(st, f, s, n):
    """Folio.add_mappings: n more mappings (PTEs, or 1 for a PMD) by slot ``s``."""
    fo = st.folios
    fo[f, F_REF] += n
    m = s + 1
    if fo[f, F_MM0] == m:
        fo[f, F_N0] += n
    elif fo[f, F_MM1] == m:
        fo[f, F_N1] += n
    elif fo[f, F_MM0] == 0:
        fo[f, F_MM0] = m
        fo[f, F_N0] = n
        if fo[f, F_REF] != n:  # other mappings exist: maybe mapped shared
            fo[f, F_SHARED] = 1
    elif fo[f, F_MM1] == 0:
        fo[f, F_MM1] = m
        fo[f, F_N1] = n
        fo[f, F_SHARED] = 1
    else:
        fo[f, F_SHARED] = 1  # a third mm: no slot, so no telling any more


@jit_inline
def folio_remove(st, f, s, n):
    """Folio.remove_mappings: n mappings fewer by slot ``s``; the shared bit clears when one slot holds all."""
    fo = st.folios
    fo[f, F_REF] -= n
    m = s + 1
    if fo[f, F_MM0] == m:
        fo[f, F_N0] -= n
        if fo[f, F_N0] > 0:
            return
        fo[f, F_MM0] = 0
        fo[f, F_N0] = 0
    elif fo[f, F_MM1] == m:
        fo[f, F_N1] -= n
        if fo[f, F_N1] > 0:
            return
        fo[f, F_MM1] = 0
        fo[f, F_N1] = 0
    if ((fo[f, F_MM0] != 0 and fo[f, F_N0] == fo[f, F_REF]) or (fo[f, F_MM1] != 0 and fo[f, F_N1] == fo[f, F_REF])
            or fo[f, F_REF] == 0):
        fo[f, F_SHARED] = 0


@jit
def folio_put(st, f, s):
    """_put_folio_mappings(folio, mm, 1): one mapping fewer; the folio is freed whole with its last."""
    folio_remove(st, f, s, 1)
    if st.folios[f, F_REF] == 0:
        st.frames[f] = 0
        _push(st.frame_free, st.sc, SC_FRAMES_FREE, f)
        st.counters[C_RESIDENT] -= 1 << st.folios[f, F_ORDER]


@jit_inline
def folio_exclusive_to(st, f, s):
    """Folio.exclusive_to (6.16+): more than one mapping, not maybe shared, and slot ``s`` holds some."""
    fo = st.folios
    if fo[f, F_REF] <= 1 or fo[f, F_SHARED]:
        return False
    return fo[f, F_MM0] == s + 1 or fo[f, F_MM1] == s + 1


@jit_inline
def put_frame_any(st, s, f):
    """The model's _put_frame(frame, unmap=True, mm) where a frame may be a large folio's."""
    if f != ZERO_FRAME and st.frame_kind[np.uintp(f)] == LARGE:
        folio_put(st, f, s)
    else:
        put_frame(st, f, True)


@jit_inline
def can_reuse_any(st, s, f):
    """Kernel.wp_can_reuse: a 4 KiB page if exclusive; a large folio's page only on kernels that reuse them,
    while the folio is this address space's alone."""
    if f != ZERO_FRAME and st.frame_kind[np.uintp(f)] == LARGE:
        return st.thp[TH_REUSE_LARGE] != 0 and folio_exclusive_to(st, f, s)
    return wp_can_reuse(st, f)


@jit
def zap_pte_range(st, s, dlo, dhi):
    if st.large:
        return zap_pte_range_large(st, s, dlo, dhi)
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


@jit
def zap_pte_range_large(st, s, dlo, dhi):
    """zap_pte_range where a PTE may map a large folio's page (its PMDs were zapped or split before)."""
    for d in range(dlo, dhi):
        pte = st.ptes[s, d]
        if pte & PRESENT:
            settle_ahead(st, s, d)
            st.ptes[s, d] = 0
            put_frame_any(st, s, frame_of(pte))


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
def vma_new(st, s, start, end, kind, backing, anon, pstate, huge):
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
    vm[v, V_HUGE] = huge
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
        st.slots[s, S_THP_DISABLED] = 0
    return s


