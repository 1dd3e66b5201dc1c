"""The policies' windows, compiled: one function per policy file (policies/*.py), and the dispatch.

Each ``*_window`` returns the dense range [lo, hi) the policy file's
``window`` names, and ``cow_ahead`` breaks COW on it, as the model's
``Kernel.cow_ahead`` does with a policy's pages; the oracle alone, whose
window has holes, breaks its pages itself. One ``break_cow_range`` for all
ranged windows, not one inlined into each: each copy of that loop inlined
into the hot loop (replay_accesses) made it spill more, so a sixth window
(fixed-behind) cost ``none``, which never enters it, 2.5 % more
instructions per event (callgrind, sequential, 200K pages: 185.8 → 190.5;
without the sixth branch 185.7). With one ``break_cow_range``, fixed:16
executes 4–9 % fewer instructions than with six, and none on hotcold 5 %
more (benchmarks/results/engine-instructions-2026-12-01-2.json against
the first run of that day).
``cow_ahead`` picks the window by the policy's engine kind. A policy reads only what a kernel could: PTE flags (present,
writable, dirty, copied ahead), its own per-VMA state, ccow's region
counters; the oracle alone reads the future (prepass.Future). Adding a
policy: its POL_ number in ENGINE_KINDS (after POL_LAST_INLINED: the hot
loop's inlined dispatch holds the six measured ones), its window here, a
branch in ``rare_window`` (which ``ranged_window``, shared by ``cow_ahead``
and, where large folios may be, ``cow_ahead_large``, calls; a window with
holes, as folio's, gets a branch in ``cow_ahead_large``, and in
``cow_ahead`` too if it can act on 4 KiB pages), and ``on_fork`` if it
looks at forks. thp-cow has no window: its whole-THP copy is a branch of
huge_memory.do_huge_pmd_wp_page.
"""

from __future__ import annotations

import numpy as np

from ..policies.adaptive import MMAP_LOTSAMISS
from ..trace.events import PTRS_PER_PTE
from .cow import _breakable, break_cow_range, break_cow_range_large, breakable_large
from .layout import (C_AHEAD_BATCHES, DIRTY, FRAME_AHEAD, FUTURE_AHEAD, HIT, PENDING, PP_KIND, PP_SHIFT,
                     PP_THRESHOLD, PP_WINDOW, PTE_AHEAD, P_LAST_DHI, P_LAST_DLO, P_MISS, P_NEXT_EXPECTED, P_REF,
                     P_RLEN, P_RLO, P_ROLLED, P_SEG, P_WINDOW, READ, SC_COV_BUMP, SC_FORKS, SC_PSTATES_FREE, SC_WITNESS,
                     S_FORKED, S_VMA_HEAD, V_DHI, V_DLO, V_END, V_NEXT, V_PSTATE, V_START, WITNESS_ADAPTIVE, WITNESS_CCOW,
                     WRITE, _pop, frame_of,
                     jit, jit_inline)
from .mm import dense_after, dense_from, page_of
from .prefetch import prefetch_item


# Engine kinds (state.policy[PP_KIND]), by policy family.
(POL_NONE, POL_FIXED, POL_AROUND, POL_ADAPTIVE, POL_CCOW, POL_ORACLE, POL_FIXED_BEHIND, POL_CCOW_PUBLISHED, POL_FOLIO,
 POL_THP_COW, POL_WITNESS) = range(11)
ENGINE_KINDS = {"none": POL_NONE, "fixed": POL_FIXED, "around": POL_AROUND, "adaptive": POL_ADAPTIVE,
                "ccow": POL_CCOW, "oracle": POL_ORACLE, "fixed-behind": POL_FIXED_BEHIND,
                "ccow-published": POL_CCOW_PUBLISHED, "folio": POL_FOLIO, "thp-cow": POL_THP_COW}
# POL_WITNESS is no policy file's: none's replay watching adaptive's and ccow's conditions (witness_window).
# The kinds past this one are looked at outside the hot loop's inlined dispatch (rare_window): each
# branch inlined there costs every policy, none included (see above).
POL_LAST_INLINED = POL_FIXED_BEHIND


@jit_inline
def keeps_regions_kind(kind):
    """ccow, ccow-published and the witness keep counters per region."""
    return kind == POL_CCOW or kind == POL_CCOW_PUBLISHED or kind == POL_WITNESS


# ----- ccow's regions and the policy states ------------------------------------------


@jit_inline
def region_index(st, d):
    """ccow: the dense region of dense page ``d``; a shift, not a load, in a dense run of pages."""
    shift = st.policy[PP_SHIFT]  # log2 of the region size when it is a power of two (a division is slow)
    if st.direct_base >= 0 and shift >= 0:
        return ((st.direct_base + d) >> shift) - (st.direct_base >> shift)
    return st.region_of[d]


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
    if keeps_regions_kind(st.policy[PP_KIND]) and dlo < dhi:
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


# ----- fixed:N (policies/fixed.py) ---------------------------------------------------


@jit_inline
def fixed_window(st, s, v, d):
    """p+1 … p+N−1, clipped to the VMA end."""
    stop = min(page_of(st, d) + st.policy[PP_WINDOW], st.vmas[v, V_END])
    return d + 1, dense_after(st, d, stop)


# ----- fixed-behind:N (policies/fixed_behind.py) ------------------------------------


@jit_inline
def fixed_behind_window(st, s, v, d):
    """p−N+1 … p−1, clipped to the VMA start."""
    start = max(page_of(st, d) - st.policy[PP_WINDOW] + 1, st.vmas[v, V_START])
    return dense_from(st, d, start), d


# ----- around:N (policies/around.py) -------------------------------------------------


@jit_inline
def around_window(st, s, v, d):
    """The aligned N-page window holding p, clipped to the VMA and the page table."""
    vm = st.vmas
    p = page_of(st, d)
    size = st.policy[PP_WINDOW]
    aligned = p - p % size
    table = p - p % PTRS_PER_PTE
    start = max(aligned, vm[v, V_START], table)
    end = min(aligned + size, vm[v, V_END], table + PTRS_PER_PTE)
    # d itself is writable by now, so the range skips it
    return dense_from(st, d, start), dense_after(st, d, end)


# ----- adaptive[:MAX] (policies/adaptive.py) -----------------------------------------



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
    """Learn from the dirty bits of the last window, ramp or reset; the window after p."""
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
        window = next_window(window, st.policy[PP_WINDOW])
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
    return d + 1, end


# ----- ccow[:REGION_PAGES,THRESHOLD] (policies/ccow.py) ------------------------------


@jit_inline
def ccow_window(st, s, v, d):
    """Count the fault in its region; copy the region if its last interval's count reached the threshold
    and this process has forked."""
    vm = st.vmas
    q = pstate_of(st, v)
    r = region_index(st, d)
    i = st.pstates[q, P_SEG] + r - st.pstates[q, P_RLO]
    st.coverage[0, i] += 1
    if st.slots[s, S_FORKED] and st.coverage[1, i] >= st.policy[PP_THRESHOLD]:
        return max(st.region_start[r], vm[v, V_DLO]), min(st.region_start[r + 1], vm[v, V_DHI])
    return d, d


# ----- ccow-published[:REGION_PAGES] (policies/ccow_published.py) --------------------


@jit
def ccow_published_window(st, s, v, d):
    """Count the fault in its region as ccow does; copy the region once this process has forked and the
    VMA has any history (nr_access = MAX_ENTRY: the threshold never decides)."""
    q = pstate_of(st, v)
    r = region_index(st, d)
    seg = st.pstates[q, P_SEG]
    st.coverage[0, seg + r - st.pstates[q, P_RLO]] += 1
    if not st.slots[s, S_FORKED]:
        return d, d
    for i in range(seg, seg + st.pstates[q, P_RLEN]):
        if st.coverage[1, i]:
            return max(st.region_start[r], st.vmas[v, V_DLO]), min(st.region_start[r + 1], st.vmas[v, V_DHI])
    return d, d


@jit
def rare_window(st, s, v, d, pol):
    """The ranged windows of the kinds past POL_LAST_INLINED, a call of its own. folio's needs the folio
    copied from, which only the large-folio path has (cow_ahead_large), and thp-cow has none."""
    if pol == POL_CCOW_PUBLISHED:
        return ccow_published_window(st, s, v, d)
    if pol == POL_WITNESS:
        return witness_window(st, s, v, d)
    return d, d


# ----- the witness (engine/witness.py) ----------------------------------------------


@jit
def witness_window(st, s, v, d):
    """Break nothing, as none, and note whether any adaptive:MAX or ccow:REGION (REGION a power of two) could
    break a page at this COW fault, had it replayed the trace as none up to here (engine/witness.py says why
    that is enough). adaptive: its window stays 0, and so empty, until a COW fault lands on the page after its
    VMA's last one (adaptive_window's ramp test, whatever MAX). ccow: it copies only in a forked process, in a
    region whose last interval counted at least its threshold (>= 1) of COW faults; counted here in 512-page
    regions, each holding whole every smaller power-of-two region (both aligned on page numbers), so a count
    of 0 here is 0 there."""
    ps = st.pstates
    q = pstate_of(st, v)
    p = page_of(st, d)
    if p == ps[q, P_NEXT_EXPECTED]:
        st.sc[SC_WITNESS] |= WITNESS_ADAPTIVE
    ps[q, P_NEXT_EXPECTED] = min(p + 1, st.vmas[v, V_END])  # adaptive_window's stop for a window of 0
    i = ps[q, P_SEG] + region_index(st, d) - ps[q, P_RLO]
    st.coverage[0, i] += 1
    if st.slots[s, S_FORKED] and st.coverage[1, i] >= 1:
        st.sc[SC_WITNESS] |= WITNESS_CCOW
    return d, d


# ----- folio (policies/folio.py) -----------------------------------------------------


@jit
def folio_window(st, s, v, d, old, order):
    """The other pages of the large folio ``old`` (of 2**order pages) that were copied from at ``d``, mapped
    by this process's PTEs inside the VMA, each broken as the faulting page was (reused if exclusive)."""
    base = d & ~((np.int64(1) << order) - 1)  # a folio sits naturally aligned, in dense pages too
    lo = max(base, st.vmas[v, V_DLO])
    hi = min(base + (np.int64(1) << order), st.vmas[v, V_DHI])
    done = 0
    for q in range(lo, hi):
        if q != d and breakable_large(st, s, q) and frame_of(st.ptes[s, q]) == old:
            done += break_cow_range_large(st, s, v, q, q + 1)
    return done


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


# ----- oracle:N (policies/oracle.py) ------------------------------------------------


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
    writes = st.oracle_writes  # time and last drop side by side (prepass.Future)
    while c < end and writes[2 * c] < now:
        c += 1
    st.oracle_cursor[j] = c
    return c < end and writes[2 * c + 1] < now


@jit_inline
def prefetches_future(st):
    """Can the replay loop prefetch the oracle's lookups (an oracle whose future has a rank table)?"""
    return st.policy[PP_KIND] == POL_ORACLE and st.oracle_rank.shape[0] > 0


@jit_inline
def _next_page_key(st, kind, pid, dlo, j):
    """The future's key of the page after access j's first (where an oracle window's search starts), or -1
    (past the chunk, not an access)."""
    if j >= kind.shape[0] or not (kind[j] == WRITE or kind[j] == READ):
        return -1
    return np.int64(pid[j]) * st.pages.shape[0] + dlo[j] + 1


@jit_inline
def prefetch_future(st, kind, pid, dlo, i):
    """The oracle window's first lookups for the accesses ahead, in three stages, each reading what the one
    before asked for: the rank entry (PTE_AHEAD on), the pair's key, cursor and end (FRAME_AHEAD on), its
    next write's time and drop (FUTURE_AHEAD on). Where COW faults come at random pages each lookup is a
    chain of three misses (random, oracle:2: 1.0 s against none's 0.28 s, a loaded VM)."""
    rank, keys, cursor = st.oracle_rank, st.oracle_keys, st.oracle_cursor
    last = keys.shape[0] - 1
    key = _next_page_key(st, kind, pid, dlo, i + PTE_AHEAD)
    if key >= 0:
        prefetch_item(rank, min(key, rank.shape[0] - 1))
    key = _next_page_key(st, kind, pid, dlo, i + FRAME_AHEAD)
    if key >= 0:
        j = min(oracle_index(st, key), last)
        prefetch_item(keys, j)
        prefetch_item(cursor, j)
        prefetch_item(st.oracle_start, j + 1)
    key = _next_page_key(st, kind, pid, dlo, i + FUTURE_AHEAD)
    if key >= 0:
        c = min(cursor[min(oracle_index(st, key), last)], st.oracle_writes.shape[0] // 2 - 1)
        prefetch_item(st.oracle_writes, 2 * c)  # its time and last drop: one line


@jit_inline
def oracle_window(st, s, v, d, pid, now, large):
    """fixed:N's pages that this process writes next, one by one (``large``: where large folios may be)."""
    keys = st.oracle_keys
    page = page_of(st, d)
    stop = min(page + st.policy[PP_WINDOW], st.vmas[v, V_END])
    if stop <= page + 1:  # no page after the fault's (oracle:1, the VMA's end): no search
        return 0
    j = oracle_index(st, pid * st.pages.shape[0] + d + 1)
    done = 0
    for q in range(d + 1, dense_after(st, d, stop)):
        while j < keys.shape[0] and keys[j] < pid * st.pages.shape[0] + q:
            j += 1
        if large:
            if breakable_large(st, s, q) and written_next(st, pid, q, now, j):
                done += break_cow_range_large(st, s, v, q, q + 1)
        elif _breakable(st, s, q) and written_next(st, pid, q, now, j):
            done += break_cow_range(st, s, v, q, q + 1)
    return done


# ----- the dispatch ------------------------------------------------------------------


@jit_inline
def ranged_window(st, s, v, d, pol):
    """The dense range [lo, hi) a ranged policy's window names (empty for none)."""
    lo = hi = d
    if pol == POL_FIXED:
        lo, hi = fixed_window(st, s, v, d)
    elif pol == POL_AROUND:
        lo, hi = around_window(st, s, v, d)
    elif pol == POL_ADAPTIVE:
        lo, hi = adaptive_window(st, s, v, d)
    elif pol == POL_CCOW:
        lo, hi = ccow_window(st, s, v, d)
    elif pol == POL_FIXED_BEHIND:
        lo, hi = fixed_behind_window(st, s, v, d)
    elif pol > POL_LAST_INLINED:
        lo, hi = rare_window(st, s, v, d, pol)
    return lo, hi


@jit_inline
def cow_ahead(st, s, v, d, pid, now):
    """Break COW on the policy's window; each page gets the faulting page's exclusivity check. How many
    pages it broke."""
    pol = st.policy[PP_KIND]
    if pol == POL_NONE:
        return 0
    if pol == POL_ORACLE:
        done = oracle_window(st, s, v, d, pid, now, False)
    else:
        lo, hi = ranged_window(st, s, v, d, pol)
        done = break_cow_range(st, s, v, lo, hi)
    if done:
        st.counters[C_AHEAD_BATCHES] += 1
    return done


@jit
def cow_ahead_large(st, s, v, d, pid, now, old, order):
    """cow_ahead where large folios may be: the same windows, broken by break_cow_range_large, and folio's,
    over the folio ``old`` of 2**``order`` pages the fault copied from (order 0: a 4 KiB page, no window).
    A call of its own, so that the hot loop holds no second copy of the windows."""
    pol = st.policy[PP_KIND]
    if pol == POL_NONE:
        return 0
    if pol == POL_ORACLE:
        done = oracle_window(st, s, v, d, pid, now, True)
    elif pol == POL_FOLIO:
        done = folio_window(st, s, v, d, old, order) if order else 0
    else:
        lo, hi = ranged_window(st, s, v, d, pol)
        done = break_cow_range_large(st, s, v, lo, hi)
    if done:
        st.counters[C_AHEAD_BATCHES] += 1
    return done


@jit_inline
def on_fork(st, s):
    """A policy's look at the parent before fork write-protects it (policies' on_fork)."""
    if keeps_regions_kind(st.policy[PP_KIND]):
        ccow_on_fork(st, s)


@jit_inline
def window_worst(policy):
    """The most pages one COW fault's window may break (``policy``: State.policy; also called from Python,
    as ``window_worst.py_func``, to size the batch histogram)."""
    return 0 if policy[PP_KIND] == POL_NONE else policy[PP_WINDOW]


@jit_inline
def keeps_regions(st):
    """Does the policy keep counters per region (ccow, ccow-published), which need room in the coverage pool?"""
    return keeps_regions_kind(st.policy[PP_KIND])
