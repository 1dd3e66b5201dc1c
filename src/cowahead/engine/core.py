"""The compiled fault path: the reference model (model/kernel.py) on numpy arrays.

This is the one sanctioned duplicate of the reference model. Every function
here mirrors one there, under the same name, and must count exactly what it
counts; tests/test_engine.py holds the two equal. Differences are only of
representation:

* pages are *dense indices* into the trace's page space (``page_space``):
  only pages a read or write touches can ever be present, so PTEs live in
  ``ptes[slot, d]``: one uint32 each, the frame index above FRAME_SHIFT and
  the flags below, so a fault finds its flags and its frame in one cache line;
* an address space is a *slot* (reused after exit); VMAs, backing objects
  (shmem, page cache), frames and policy states live in pools with free
  lists. Splitting a VMA edits it in place: counters never depend on which
  VMA object survives;
* every frame is mapped at one page only (fork maps at the same address, a
  backing object's offset is fixed to its first mapping), so a backing
  object's frames are a segment indexed by dense page.

A pool that might overflow during an event is checked before the event;
``replay_chunk`` then stops and returns the event's index so the caller can
grow the pools (state.py) and call again from there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..trace.events import PAGE_SHIFT
from . import cache  # noqa: F401  (before any @jit: keys numba's cache on all engine sources)
from .prefetch import prefetch, prefetch_item

# Event kinds (trace/events.py EventKind) and VMA kinds (VmaKind).
MMAP, MUNMAP, DONTNEED, READ, WRITE, FORK, EXEC, EXIT = 0, 1, 2, 3, 4, 5, 6, 7
PRIVATE_ANON, SHARED_ANON, PRIVATE_FILE = 0, 1, 2

# Frame kinds (model/memory.py FrameKind); frame 0 is the shared zero page.
ANON, ZERO, FILE, SHMEM = 0, 1, 2, 3
ZERO_FRAME = 0
# A frame's counts, the ones every fault reads, in one uint32: mappings in the low 16 bits, references
# in the high 16, so mapping or unmapping a frame is one add; the kind (read only to reuse) lies apart.
# A mapping is also a reference, so references >= mappings >= 0, and a frame is free when the word is 0.
# 4 bytes rather than 8 halve the frame memory a random fault reaches into. A/B in one sitting, random
# over 5M pages, medians of 3, events/s: touched state none 53–58M → 63–67M, fixed:16 44–50M → 55–57M;
# fresh state none 47–52M → 59M, fixed:16 42–44M → 52–53M.
ONE_MAP, ONE_REF = 1, 1 << 16
MAPPED = ONE_MAP + ONE_REF  # what mapping a frame adds
# Every frame but the zero page (never counted) is mapped at one page, so at most once per address
# space, and referenced by those mappings and at most one page cache or shmem object: its counts fit
# in 16 bits while no more address spaces than this live at once.
MAX_SLOTS = (1 << 16) - 2

# PTE flag bits; PENDING and HIT are model/memory.py's Ahead states. A PTE is a uint32:
# (frame << FRAME_SHIFT) | flags, as Linux keeps the pfn and the flags in one pte_t.
PRESENT, WRITABLE, DIRTY, PENDING, HIT = 1, 2, 4, 8, 16
FRAME_SHIFT = 5
FLAGS_MASK = (1 << FRAME_SHIFT) - 1
MAX_FRAMES = 1 << (32 - FRAME_SHIFT)  # 2^27 frames (512 GiB of 4 KiB pages) fit in a PTE

# Counters, in model/counters.py field order (checked at import by engine/__init__).
(C_EVENTS, C_ZERO_FILL, C_ZERO_PAGE, C_MAP, C_COW_COPY, C_REUSE, C_OUTSIDE_VMA, C_AHEAD_COPIES,
 C_AHEAD_REUSES, C_AHEAD_BATCHES, C_AHEAD_HITS, C_AHEAD_WASTE, C_EXTRA_PAGES, C_EXTRA_PAGES_PEAK,
 C_EXTRA_PAGES_FINAL, C_RESIDENT, C_RESIDENT_PEAK) = range(17)
N_COUNTERS = 17

# Slot (address space) fields.
S_VMA_HEAD, S_VMA_CACHE, S_FORKED, S_NVMAS = 0, 1, 2, 3
N_SLOT_FIELDS = 4

# VMA fields: raw page range, dense range, kind, backing, anon_vma, policy state, list link.
V_START, V_END, V_DLO, V_DHI, V_KIND, V_BACKING, V_ANON, V_PSTATE, V_NEXT = range(9)
N_VMA_FIELDS = 9

# Backing object fields: users, dense range of its first mapping, frame segment.
B_USERS, B_DLO, B_DHI, B_SEG = range(4)
N_BACKING_FIELDS = 4

# Policy state fields (adaptive RampState and ccow Coverage share one pool).
P_REF, P_NEXT_EXPECTED, P_WINDOW, P_MISS, P_LAST_DLO, P_LAST_DHI, P_SEG, P_RLO, P_RLEN, P_ROLLED = range(10)
N_PSTATE_FIELDS = 10

# Scalars: free-stack tops, bump pointers, live counts, what the caller must grow.
(SC_FRAMES_FREE, SC_VMAS_FREE, SC_BACKINGS_FREE, SC_PSTATES_FREE, SC_SLOTS_FREE, SC_BK_BUMP, SC_COV_BUMP,
 SC_BK_LIVE_FRAMES, SC_FORKS, SC_NEED_FRAMES, SC_NEED_VMAS, SC_NEED_BACKINGS, SC_NEED_BK_FRAMES,
 SC_NEED_PSTATES, SC_NEED_COV, SC_NEED_SLOTS, SC_FEW_FAULTS, SC_PREFETCH_MIN_BYTES) = range(18)
N_SCALARS = 18

# Policies.
POL_NONE, POL_FIXED, POL_AROUND, POL_ADAPTIVE, POL_CCOW, POL_ORACLE = range(6)
PTRS_PER_PTE = 512
MMAP_LOTSAMISS = 100
# Events ahead whose PTE and frame the replay loop prefetches (when pages jump about). A PTE 32 ahead
# rather than 16: hotcold none 61M → 65M events/s, random unchanged (touched state).
PTE_AHEAD, FRAME_AHEAD = 32, 8
# What the replay loop prefetches: nothing, PTEs only (a chunk after one where few events faulted),
# or PTEs and the frames they map.
PREFETCH_NONE, PREFETCH_PTES, PREFETCH_PTES_AND_FRAMES = 0, 1, 2
NEAR_PAGES = 8  # an access this close to the last one is "in order": the hardware prefetcher follows it
ZAP_AHEAD = 32  # PTEs ahead whose frame fork's copy and exit's zap prefetch: each step is short
# Below this much PTE and frame memory the state stays in cache and prefetching is pure overhead.
# Measured on the 2-vCPU benchmark VM (random, none): without prefetching 52M vs 43M events/s over 50K
# pages (2.6 MB), 39M vs 37M over 200K (10 MB); with it 33M vs 28M over 500K (26 MB).
# new_state puts it in sc[SC_PREFETCH_MIN_BYTES], so that a test can set it to 0.
PREFETCH_MIN_STATE_BYTES = 16 << 20

# Compiled without numba's reference counting: every function here takes the whole
# State tuple, and counting references to its arrays on each call cost ~1 µs per call.
# Nothing here allocates an array, so nothing needs counting.
jit = njit(cache=True, _nrt=False)
jit_inline = njit(cache=True, _nrt=False, inline="always")

# ----- pools -------------------------------------------------------------------------


@jit_inline
def _pop(free, sc, top):
    sc[top] -= 1
    return free[sc[top]]


@jit_inline
def _push(free, sc, top, item):
    free[sc[top]] = item
    sc[top] += 1


# ----- frames ------------------------------------------------------------------------


# Hot paths index with np.uintp(...): numba then skips its fix-up of negative indices (none is).


@jit_inline
def pte_at(s, d):
    """The index of slot ``s``'s PTE for dense page ``d`` in ptes, unsigned (above)."""
    return np.uintp(s), np.uintp(d)


@jit_inline
def frame_of(pte):
    """The frame a PTE value maps (meaningful when PRESENT)."""
    return np.int64(pte >> FRAME_SHIFT)


@jit_inline
def set_flags(st, pte, flags):
    """Replace the flags of PTE ``pte`` (an index), keeping its frame."""
    st.ptes[pte] = (st.ptes[pte] & ~FLAGS_MASK) | flags


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


# ----- page space --------------------------------------------------------------------


@jit_inline
def page_range(address, length):
    """The pages [first, end) that ``length`` bytes at ``address`` touch: at least one."""
    a = np.int64(address)
    return a >> PAGE_SHIFT, ((a + max(np.int64(length), 1) - 1) >> PAGE_SHIFT) + 1


@jit
def dense_index(pages, direct_base, page):
    """First dense index whose page is >= ``page`` (searchsorted, or an offset when dense)."""
    n = pages.shape[0]
    if direct_base >= 0:
        d = page - direct_base
        return 0 if d < 0 else (n if d > n else d)
    return np.searchsorted(pages, page)


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


@jit_inline
def region_index(st, d):
    """ccow: the dense region of dense page ``d``; a shift, not a load, in a dense run of pages."""
    shift = st.policy[3]  # log2 of the region size when it is a power of two (a division is slow)
    if st.direct_base >= 0 and shift >= 0:
        return ((st.direct_base + d) >> shift) - (st.direct_base >> shift)
    return st.region_of[d]


# ----- policy states -----------------------------------------------------------------


@jit
def pstate_new(st, v):
    q = _pop(st.pstate_free, st.sc, SC_PSTATES_FREE)
    ps = st.pstates
    ps[q, P_REF] = 1
    ps[q, P_NEXT_EXPECTED] = -1
    ps[q, P_WINDOW] = 0
    ps[q, P_MISS] = 0
    ps[q, P_LAST_DLO] = 0
    ps[q, P_LAST_DHI] = 0
    ps[q, P_ROLLED] = -1
    # ccow: one counter pair per region overlapping the VMA now (it can only shrink).
    dlo, dhi = st.vmas[v, V_DLO], st.vmas[v, V_DHI]
    rlo, rlen = 0, 0
    if st.policy[0] == POL_CCOW and dlo < dhi:
        rlo = region_index(st, dlo)
        rlen = region_index(st, dhi - 1) + 1 - rlo
    seg = st.sc[SC_COV_BUMP]
    st.sc[SC_COV_BUMP] += rlen
    for i in range(seg, seg + rlen):
        st.coverage[0, i] = 0
        st.coverage[1, i] = 0
    ps[q, P_SEG] = seg
    ps[q, P_RLO] = rlo
    ps[q, P_RLEN] = rlen
    st.vmas[v, V_PSTATE] = q
    return q


@jit_inline
def pstate_of(st, v):
    q = st.vmas[v, V_PSTATE]
    if q < 0:
        q = pstate_new(st, v)
    return q


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


# ----- backing objects ---------------------------------------------------------------


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


# ----- VMAs --------------------------------------------------------------------------


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


# ----- processes ---------------------------------------------------------------------


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


@jit
def ccow_on_fork(st, s):
    """Count the parent's written ahead copies per region, then roll each history over once."""
    vm, ps, cov = st.vmas, st.pstates, st.coverage
    st.sc[SC_FORKS] += 1
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        q = pstate_of(st, v)
        seg, rlo = ps[q, P_SEG], ps[q, P_RLO]
        d = vm[v, V_DLO]
        while d < vm[v, V_DHI]:  # region by region: one region lookup per region, not per page
            r = region_index(st, d)
            end = min(st.region_start[r + 1], vm[v, V_DHI])
            written = 0
            for a in range(d, end):
                if st.ptes[s, a] & HIT:
                    written += 1
            cov[0, seg + r - rlo] += written
            d = end
        v = vm[v, V_NEXT]
    v = st.slots[s, S_VMA_HEAD]
    while v >= 0:
        q = vm[v, V_PSTATE]
        if ps[q, P_ROLLED] != st.sc[SC_FORKS]:
            ps[q, P_ROLLED] = st.sc[SC_FORKS]
            seg, n = ps[q, P_SEG], ps[q, P_RLEN]
            for i in range(seg, seg + n):
                cov[1, i] = cov[0, i]
                cov[0, i] = 0
        v = vm[v, V_NEXT]


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
def do_fork(st, parent, child):
    """dup_mmap: copy VMAs; private pages become shared and write-protected."""
    sp = mm_of(st, parent)
    if child == parent:
        # The model exits the pid and leaves it a fresh, empty address space.
        do_exit(st, child)
        mm_of(st, child)
        return
    if st.slot_of[child] >= 0:
        do_exit(st, child)  # the pid was reused without an exit event
    if st.policy[0] == POL_CCOW:
        ccow_on_fork(st, sp)
    st.slots[sp, S_FORKED] = 1
    sc = mm_of(st, child)
    vm = st.vmas
    v = st.slots[sp, S_VMA_HEAD]
    while v >= 0:
        b = vm[v, V_BACKING]
        if b >= 0:
            st.backings[b, B_USERS] += 1
        c = vma_new(st, sc, vm[v, V_START], vm[v, V_END], vm[v, V_KIND], b, vm[v, V_ANON], -1)
        if vm[v, V_KIND] != SHARED_ANON and vm[v, V_ANON]:
            copy_pte_range(st, sp, sc, vm[c, V_DLO], vm[c, V_DHI])
        v = vm[v, V_NEXT]


# ----- the fault path ----------------------------------------------------------------


@jit_inline
def wp_page_copy(st, s, v, d):
    """Copy the old frame into a new exclusive one and map it writable."""
    old = frame_of(st.ptes[pte_at(s, d)])
    new = alloc_frame(st, ANON)
    st.vmas[np.uintp(v), V_ANON] = 1
    put_frame(st, old, True)
    map_frame(st, s, d, new, True)


@jit_inline
def break_cow_range(st, s, v, lo, hi):
    """break_cow_ahead of the model on each page of [lo, hi) (inside ``v``): skipped unless present and
    write-protected, then reused or copied. Returns how many were broken.

    wp_page_copy's steps (alloc_frame, put_frame, map_frame) are written out here, with the free
    stack's top and the counters in locals stored once per window rather than once per page.
    Measured A/B on the benchmark VM, touched state: hotcold fixed:16 55.8–56.1M → 58.6–59.6M
    events/s, random fixed:16 43.6–43.9M → 44.8–45.2M; none unchanged (it never comes here)."""
    ptes, frames, free, c = st.ptes, st.frames, st.frame_free, st.counters
    u = np.uintp(s)
    top, resident, peak = st.sc[SC_FRAMES_FREE], c[C_RESIDENT], c[C_RESIDENT_PEAK]
    copies = reuses = 0
    for q in range(lo, hi):
        e = np.uintp(q)
        pte = ptes[u, e]
        if (pte & (PRESENT | WRITABLE)) != PRESENT:
            continue
        old = frame_of(pte)
        if wp_can_reuse(st, old):
            ptes[u, e] = pte | WRITABLE
            reuses += 1
            continue
        top -= 1
        new = free[np.uintp(top)]
        st.frame_kind[np.uintp(new)] = ANON
        frames[np.uintp(new)] = MAPPED
        resident += 1
        peak = max(peak, resident)
        if old != ZERO_FRAME:
            frames[np.uintp(old)] -= MAPPED
            if frames[np.uintp(old)] == 0:
                free[np.uintp(top)] = old
                top += 1
                resident -= 1
        ptes[u, e] = (new << FRAME_SHIFT) | PRESENT | WRITABLE | PENDING  # clean, so the next fault can tell
        copies += 1
    st.sc[SC_FRAMES_FREE] = top
    c[C_RESIDENT], c[C_RESIDENT_PEAK] = resident, peak
    if copies:
        st.vmas[np.uintp(v), V_ANON] = 1
        c[C_AHEAD_COPIES] += copies
        c[C_EXTRA_PAGES] += copies  # only rises here, so its peak is the end's
        c[C_EXTRA_PAGES_PEAK] = max(c[C_EXTRA_PAGES_PEAK], c[C_EXTRA_PAGES])
    c[C_AHEAD_REUSES] += reuses
    return copies + reuses


@jit_inline
def _breakable(st, s, q):
    return (st.ptes[pte_at(s, q)] & (PRESENT | WRITABLE)) == PRESENT


@jit_inline
def oracle_index(st, key):
    """searchsorted(oracle_keys, key): one load from the rank table where the keys are dense."""
    rank = st.oracle_rank
    if rank.shape[0] > 0:
        return np.int64(rank[min(key, rank.shape[0] - 1)])
    return np.searchsorted(st.oracle_keys, key)


@jit_inline
def written_next(st, pid, q, now, j):
    """Oracle: is (pid, q) written at or after ``now`` before anything drops it? (policies/oracle.py)

    ``j`` is the index of the first future key >= (pid, q): a window's pages are consecutive keys,
    so the caller searches once per fault and steps from there.
    """
    key = pid * st.pages.shape[0] + q
    if j == st.oracle_keys.shape[0] or st.oracle_keys[j] != key:
        return False
    c, end = st.oracle_cursor[j], st.oracle_start[j + 1]
    while c < end and st.oracle_time[c] < now:
        c += 1
    st.oracle_cursor[j] = c
    return c < end and st.oracle_last_drop[c] < now


@jit_inline
def next_window(window, max_pages):
    """get_init_ra_size / get_next_ra_size of mm/readahead.c."""
    if window == 0:
        return min(4, max_pages)
    if window < max_pages // 16:
        return 4 * window
    if window <= max_pages // 2:
        return 2 * window
    return max_pages


@jit_inline
def adaptive_window(st, s, v, d):
    """Learn from the dirty bits of the last window, ramp or reset; returns the dense window end."""
    ps = st.pstates
    q = pstate_of(st, v)
    miss = ps[q, P_MISS]
    for a in range(ps[q, P_LAST_DLO], ps[q, P_LAST_DHI]):
        fl = st.ptes[s, a]
        if not (fl & (PENDING | HIT)):
            continue  # unmapped, or not copied ahead (absent, already writable, reused): nothing to learn
        if fl & DIRTY:
            miss = max(0, miss - 1)
        else:
            miss += 1
    p = page_of(st, d)
    window = ps[q, P_WINDOW]
    if p == ps[q, P_NEXT_EXPECTED]:
        miss = max(0, miss - 1)
        window = next_window(window, st.policy[1])
    else:
        window = 0
    if miss > MMAP_LOTSAMISS:
        window = 0
    stop = min(p + 1 + window, st.vmas[v, V_END])
    end = dense_after(st, d, stop)
    ps[q, P_MISS] = miss
    ps[q, P_WINDOW] = window
    ps[q, P_NEXT_EXPECTED] = stop
    ps[q, P_LAST_DLO] = d + 1
    ps[q, P_LAST_DHI] = end
    return end


@jit_inline
def cow_ahead(st, s, v, d, pid, now):
    """Break COW on the policy's window; each page gets the faulting page's exclusivity check."""
    pol = st.policy[0]
    if pol == POL_NONE:
        return
    vm = st.vmas
    p = page_of(st, d)
    done = 0
    if pol == POL_FIXED:
        done = break_cow_range(st, s, v, d + 1, dense_after(st, d, min(p + st.policy[1], vm[v, V_END])))
    elif pol == POL_ORACLE:
        keys = st.oracle_keys
        j = oracle_index(st, pid * st.pages.shape[0] + d + 1)
        for q in range(d + 1, dense_after(st, d, min(p + st.policy[1], vm[v, V_END]))):
            while j < keys.shape[0] and keys[j] < pid * st.pages.shape[0] + q:
                j += 1
            if _breakable(st, s, q) and written_next(st, pid, q, now, j):
                done += break_cow_range(st, s, v, q, q + 1)
    elif pol == POL_AROUND:
        size = st.policy[1]
        aligned = p - p % size
        table = p - p % PTRS_PER_PTE
        start = max(aligned, vm[v, V_START], table)
        end = min(aligned + size, vm[v, V_END], table + PTRS_PER_PTE)
        # d itself is writable by now, so the range skips it
        done = break_cow_range(st, s, v, dense_from(st, d, start), dense_after(st, d, end))
    elif pol == POL_ADAPTIVE:
        done = break_cow_range(st, s, v, d + 1, adaptive_window(st, s, v, d))
    elif pol == POL_CCOW:
        q = pstate_of(st, v)
        r = region_index(st, d)
        i = st.pstates[q, P_SEG] + r - st.pstates[q, P_RLO]
        st.coverage[0, i] += 1
        if st.slots[s, S_FORKED] and st.coverage[1, i] >= st.policy[2]:
            done = break_cow_range(st, s, v, max(st.region_start[r], vm[v, V_DLO]),
                                   min(st.region_start[r + 1], vm[v, V_DHI]))
    if done:
        st.counters[C_AHEAD_BATCHES] += 1


@jit_inline
def handle_mm_fault(st, s, v, d, write, pid, now):
    c = st.counters
    kind = st.vmas[np.uintp(v), V_KIND]
    fl = st.ptes[pte_at(s, d)]
    if not (fl & PRESENT):
        if kind == PRIVATE_ANON:  # do_anonymous_page
            if not write:
                c[C_ZERO_PAGE] += 1
                map_frame(st, s, d, ZERO_FRAME, False)
            else:
                c[C_ZERO_FILL] += 1
                st.vmas[v, V_ANON] = 1
                map_frame(st, s, d, alloc_frame(st, ANON), True)
        elif kind == SHARED_ANON:  # do_shared_fault
            b = st.vmas[v, V_BACKING]
            if st.backing_frames[st.backings[b, B_SEG] + d - st.backings[b, B_DLO]] < 0:
                c[C_ZERO_FILL] += 1
            else:
                c[C_MAP] += 1
            map_frame(st, s, d, backing_frame(st, v, d, SHMEM), write)
        elif write:  # do_cow_fault
            c[C_COW_COPY] += 1
            st.vmas[v, V_ANON] = 1
            backing_frame(st, v, d, FILE)
            map_frame(st, s, d, alloc_frame(st, ANON), True)
        else:  # do_read_fault
            c[C_MAP] += 1
            map_frame(st, s, d, backing_frame(st, v, d, FILE), False)
        return
    # do_wp_page
    if kind == SHARED_ANON or wp_can_reuse(st, frame_of(fl)):
        c[C_REUSE] += 1
        st.ptes[pte_at(s, d)] = fl | WRITABLE
        return
    c[C_COW_COPY] += 1
    wp_page_copy(st, s, v, d)
    if st.policy[0] != POL_NONE:  # a call costs more than Linux's own path here
        cow_ahead(st, s, v, d, pid, now)


@jit_inline
def store(st, pte, fl):
    """_store: a write to PTE ``pte`` (an index; ``fl`` its value) dirties it; the first on an ahead copy
    is a hit."""
    if fl & PENDING:
        st.counters[C_AHEAD_HITS] += 1
        st.counters[C_EXTRA_PAGES] -= 1
        fl = (fl & ~PENDING) | HIT
    st.ptes[pte] = fl | DIRTY


@jit_inline
def access(st, s, d, write, pid, now):
    """A load or store by ``pid`` at dense page ``d``: fault if needed, then do it."""
    pte = pte_at(s, d)
    fl = st.ptes[pte]
    if not (fl & PRESENT) or (write and not (fl & WRITABLE)):
        v = find_vma(st, s, d)  # a present PTE always lies in a VMA
        if v < 0:
            st.counters[C_OUTSIDE_VMA] += 1
            return
        handle_mm_fault(st, s, v, d, write, pid, now)
        fl = st.ptes[pte]
    if write:
        store(st, pte, fl)


# ----- replay ------------------------------------------------------------------------


@jit_inline
def access_worst(st, npages):
    """The most a read or write of ``npages`` pages may take: frames (per page a page-cache frame, the
    copy, and at most a window of ahead copies), policy states, and ccow's region counters."""
    per_page = 2 + (0 if st.policy[0] == POL_NONE else st.policy[1])
    cov = st.region_start.shape[0] + npages + 1 if st.policy[0] == POL_CCOW else 0
    return per_page * npages, npages + 1, cov


@jit_inline
def headroom(st, kind, pid, npages, address, length):
    """Is every pool big enough for the worst this event can do? If not, say how much is needed."""
    sc = st.sc
    slots = 2 if kind == FORK else 1
    frames = vmas = backings = bk_frames = pstates = cov = 0
    nvmas = 0
    s = st.slot_of[pid]
    if s >= 0:
        nvmas = st.slots[s, S_NVMAS]
    if kind == READ or kind == WRITE:
        frames, pstates, cov = access_worst(st, npages)
        frames = min(frames, st.ptes.shape[0] * st.pages.shape[0] + sc[SC_BK_LIVE_FRAMES] + npages)
    elif kind == FORK:
        vmas = nvmas + 1
        pstates = nvmas + 1
        cov = st.region_start.shape[0] + nvmas + 1
    elif kind == MMAP or kind == MUNMAP:
        vmas = 2
        if kind == MMAP:
            backings = 1
            start, stop = page_range(address, length)
            bk_frames = (dense_index(st.pages, st.direct_base, stop)
                         - dense_index(st.pages, st.direct_base, start))
    if st.policy[0] != POL_CCOW:
        cov = 0
    ok = (sc[SC_SLOTS_FREE] >= slots and sc[SC_FRAMES_FREE] >= frames and sc[SC_VMAS_FREE] >= vmas
          and sc[SC_BACKINGS_FREE] >= backings and st.backing_frames.shape[0] - sc[SC_BK_BUMP] >= bk_frames
          and sc[SC_PSTATES_FREE] >= pstates and st.coverage.shape[1] - sc[SC_COV_BUMP] >= cov)
    if not ok:
        sc[SC_NEED_SLOTS] = slots
        sc[SC_NEED_FRAMES] = frames
        sc[SC_NEED_VMAS] = vmas
        sc[SC_NEED_BACKINGS] = backings
        sc[SC_NEED_BK_FRAMES] = bk_frames
        sc[SC_NEED_PSTATES] = pstates
        sc[SC_NEED_COV] = cov
    return ok


@jit_inline
def _ahead(st, kind, pid, j):
    """The slot of the access j events on, or -1 (past the chunk, not an access, no address space)."""
    if j >= kind.shape[0]:
        return -1
    e = np.uintp(j)
    if not (kind[e] == WRITE or kind[e] == READ):
        return -1
    return st.slot_of[np.uintp(pid[e])]


@jit_inline
def prefetch_ahead(st, kind, pid, dlo, i, what):
    """Two stages, the second reading what the first asked for: the PTE of an access PTE_AHEAD events
    on; its frame FRAME_AHEAD on (unless ``what`` is PREFETCH_PTES). No stage tests the flags for
    whether a fault is coming: where faults and hits mix at random, that branch mispredicted about
    once an event, and a needless prefetch costs less (random over 50K pages with prefetching on:
    32M → 37M events/s; over 5M pages no change). Indexed unsigned, as in replay_accesses: the
    writes of random over 5M pages took 111 ms instead of 124."""
    j = i + PTE_AHEAD
    s = _ahead(st, kind, pid, j)
    if s >= 0:
        prefetch(st.ptes, s, dlo[np.uintp(j)])
    if what != PREFETCH_PTES_AND_FRAMES:
        return
    j = i + FRAME_AHEAD
    s = _ahead(st, kind, pid, j)
    if s >= 0:
        prefetch_item(st.frames, frame_of(st.ptes[pte_at(s, dlo[np.uintp(j)])]))


@jit
def replay_accesses(st, kind, pid, dlo, dhi, first_index, start, prefetching):
    """Replay the run of one-page reads and writes from event ``start`` while a fault has room; returns the
    first event it leaves to replay_chunk (another kind, several pages, a pid without an address
    space, a pool to check). Nearly every event goes through here: apart from replay_chunk's many
    other paths, the compiler keeps this loop's values in registers. Measured on the benchmark VM when
    the loop was split off (fresh state, medians of 3, events/s): sequential none 46.4M → 52.2M,
    random none 28.6M → 30.5M, hotcold fixed:16 24.5M → 29.9M."""
    n = kind.shape[0]
    ptes = st.ptes
    sc = st.sc
    one_fault_frames, one_fault_pstates, one_fault_cov = access_worst(st, 1)
    for i in range(max(start, 0), n):
        if prefetching != PREFETCH_NONE:
            prefetch_ahead(st, kind, pid, dlo, i, prefetching)
        # Indexed unsigned: numba then skips its fix-up of negative indices on each load (every index
        # here is >= 0). rewrite 167M → 206M events/s, sequential 80M → 83M (touched state, none).
        e = np.uintp(i)
        k = kind[e]
        if not (k == WRITE or k == READ) or dhi[e] - dlo[e] != 1:
            return i
        p = pid[e]
        s, d = st.slot_of[np.uintp(p)], dlo[e]
        if s < 0:
            return i
        pte = pte_at(s, d)
        fl = ptes[pte]
        if k == READ and fl & PRESENT:
            continue
        if (fl & (PRESENT | WRITABLE)) == (PRESENT | WRITABLE):  # a write (reads went on above)
            store(st, pte, fl)
            continue
        # Most faults are on one page: the pools' free counts alone say there is room.
        if not (sc[SC_FRAMES_FREE] >= one_fault_frames and sc[SC_PSTATES_FREE] >= one_fault_pstates
                and st.coverage.shape[1] - sc[SC_COV_BUMP] >= one_fault_cov):
            return i
        access(st, s, d, k == WRITE, p, first_index + i)
    return n


@jit
def replay_chunk(st, kind, pid, arg, address, length, dlo, dhi, first_index, resume, scattered):
    """Replay events ``resume`` … of one decoded chunk; returns where it stopped (len if done)."""
    n = kind.shape[0]
    c = st.counters
    sc = st.sc
    # Prefetching pays for scattered accesses in a state bigger than the caches only. A chunk after one
    # where few events faulted asks for PTEs only: 4 bytes each, they outgrow the core's L2 cache
    # (rewrite, touched state: 120M → 129M events/s), while its frames stay unread.
    if not (scattered and far_state(st)):
        prefetching = PREFETCH_NONE
    elif sc[SC_FEW_FAULTS]:
        prefetching = PREFETCH_PTES
    else:
        prefetching = PREFETCH_PTES_AND_FRAMES
    faults_before = faults(c)
    i = resume
    while True:
        i = replay_accesses(st, kind, pid, dlo, dhi, first_index, i, prefetching)
        if i == n:
            break
        k, p = kind[i], pid[i]
        if not headroom(st, k, p, dhi[i] - dlo[i], address[i], length[i]):
            c[C_EVENTS] += i - resume
            return i
        if k == WRITE or k == READ:
            s = mm_of(st, p)
            for d in range(dlo[i], dhi[i]):
                access(st, s, d, k == WRITE, p, first_index + i)
        elif k == FORK:
            do_fork(st, p, arg[i])
        elif k == EXEC:
            do_exec(st, p)
        elif k == EXIT:
            do_exit(st, p)
        else:
            start, stop = page_range(address[i], length[i])
            if k == MMAP:
                mmap(st, mm_of(st, p), start, stop, arg[i])
            elif k == MUNMAP:
                munmap(st, mm_of(st, p), start, stop)
            elif k == DONTNEED:
                madvise_dontneed(st, mm_of(st, p), start, stop)
        i += 1
    # Counted here, not per event: a counter in memory bumped at every event is a chain of its own.
    c[C_EVENTS] += n - resume
    if n > resume:
        sc[SC_FEW_FAULTS] = (faults(c) - faults_before) * 8 < n - resume
    return n


@jit_inline
def faults(c):
    return c[C_ZERO_FILL] + c[C_ZERO_PAGE] + c[C_MAP] + c[C_COW_COPY] + c[C_REUSE]


@jit
def finish(st):
    """End of trace: ahead copies still unwritten count as waste."""
    c = st.counters
    c[C_EXTRA_PAGES_FINAL] = c[C_EXTRA_PAGES]
    c[C_AHEAD_WASTE] += c[C_EXTRA_PAGES]
