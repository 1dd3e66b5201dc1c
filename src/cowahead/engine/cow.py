"""Breaking COW on a page and on a range: the model's ``wp_page_copy`` and ``break_cow_ahead``, and a block's
copy into a large destination folio (``copy_to_large_folio``).

The ``_large`` versions are the same where a frame may be a large folio's (a reuse by the folio's rules,
a copy that drops one mapping of the folio) and a window may reach into a PMD-mapped 2 MiB (which has no
PTEs to break in the model: skipped); only the large-folio fault path calls them."""

from __future__ import annotations

import numpy as np

from .layout import (ANON, BLK_PMD, C_AHEAD_COPIES, C_AHEAD_REUSES, C_COW_LARGE_ALLOC, C_COW_LARGE_PAGES,
                     C_EXTRA_PAGES, C_EXTRA_PAGES_PEAK, C_RESIDENT, C_RESIDENT_PEAK, DIRTY, FRAME_SHIFT,
                     HPAGE_PMD_ORDER, MAPPED, PENDING, PRESENT, SC_FRAMES_FREE, V_ANON, V_DHI, V_DLO, WRITABLE,
                     ZERO_FRAME, frame_of, jit, jit_inline, pte_at)
from .mm import (alloc_folio, alloc_frame, can_reuse_any, folio_add, map_frame, put_frame, put_frame_any,
                 wp_can_reuse)


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
    """break_cow_ahead of the model on each page of [lo, hi) (inside ``v``): skipped unless present,
    write-protected and not the zero page, then reused or copied. Returns how many were broken.

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
        if old == ZERO_FRAME:  # never written: nothing to break (the model's break_cow_ahead)
            continue
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


# ----- where large folios may be ------------------------------------------------------


@jit_inline
def wp_page_copy_large(st, s, v, d):
    """wp_page_copy where the old frame may be a large folio's page."""
    old = frame_of(st.ptes[s, d])
    new = alloc_frame(st, ANON)
    st.vmas[v, V_ANON] = 1
    put_frame_any(st, s, old)
    map_frame(st, s, d, new, True)


@jit_inline
def breakable_large(st, s, q):
    """A PTE (not a PMD's) present and write-protected."""
    return (st.ptes[s, q] & (PRESENT | WRITABLE)) == PRESENT and not st.pmds[s, q >> HPAGE_PMD_ORDER] & BLK_PMD


@jit
def break_cow_range_large(st, s, v, lo, hi):
    """break_cow_range where large folios may be, page by page as the model's break_cow_ahead."""
    c = st.counters
    copies = reuses = 0
    for q in range(lo, hi):
        if not breakable_large(st, s, q):
            continue
        pte = st.ptes[s, q]
        old = frame_of(pte)
        if old == ZERO_FRAME:  # never written: nothing to break (the model's break_cow_ahead)
            continue
        if can_reuse_any(st, s, old):
            st.ptes[s, q] = pte | WRITABLE
            reuses += 1
            continue
        new = alloc_frame(st, ANON)
        put_frame_any(st, s, old)
        st.frames[new] += MAPPED
        st.ptes[s, q] = (new << FRAME_SHIFT) | PRESENT | WRITABLE | PENDING  # clean, so the next fault can tell
        copies += 1
        c[C_EXTRA_PAGES] += 1
        c[C_EXTRA_PAGES_PEAK] = max(c[C_EXTRA_PAGES_PEAK], c[C_EXTRA_PAGES])
    if copies:
        st.vmas[v, V_ANON] = 1
        c[C_AHEAD_COPIES] += copies
    c[C_AHEAD_REUSES] += reuses
    return copies + reuses


# ----- large destinations (model/large_destination.py) --------------------------------


@jit_inline
def would_copy_large(st, s, v, q):
    """LargeDestinations.would_copy: would breaking COW on dense page ``q`` of VMA ``v`` copy it?"""
    if q < st.vmas[v, V_DLO] or q >= st.vmas[v, V_DHI] or not breakable_large(st, s, q):
        return False
    f = frame_of(st.ptes[s, q])
    return f != ZERO_FRAME and not can_reuse_any(st, s, f)


@jit
def copy_to_large_folio(st, s, v, base, order, d):
    """LargeDestinations.copy_to_large_folio: the block of 2**order pages at ``base`` into one new folio,
    mapped writable by slot ``s`` alone; the faulting page ``d`` dirty, the others clean and copied ahead.
    How many were copied ahead."""
    c = st.counters
    n = np.int64(1) << order
    f = alloc_folio(st, order)
    folio_add(st, f, s, n)  # as n single mappings: the first takes slot 0 of the new folio
    st.vmas[v, V_ANON] = 1
    c[C_COW_LARGE_ALLOC] += 1
    c[C_COW_LARGE_PAGES] += n
    ahead = 0
    for q in range(base, base + n):
        put_frame_any(st, s, frame_of(st.ptes[s, q]))
        if q == d:
            st.ptes[s, q] = (f << FRAME_SHIFT) | PRESENT | WRITABLE | DIRTY
        else:
            st.ptes[s, q] = (f << FRAME_SHIFT) | PRESENT | WRITABLE | PENDING  # clean, so the next fault can tell
            ahead += 1
    c[C_AHEAD_COPIES] += ahead
    c[C_EXTRA_PAGES] += ahead
    c[C_EXTRA_PAGES_PEAK] = max(c[C_EXTRA_PAGES_PEAK], c[C_EXTRA_PAGES])
    return ahead
