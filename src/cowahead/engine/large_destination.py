"""Large destination folios: model/large_destination.py on arrays (the rule is written down there).

Only the large-folio fault path comes here, and only where the option is on and the VMA allows an order
below PMD's (``do_wp_page_large``). The window is asked first, once (a ranged window moves its policy's
state), then the faulting page's block (or its 4 KiB copy), then the other blocks, then the window's other
pages as ``cow_ahead_large`` breaks them: the model's order. The other blocks are found by one scan in
address order that takes, at each aligned page, the largest qualifying block starting there; pages in
earlier blocks are writable by then and qualify for no other, so this is the model's partition (each page
in the largest qualifying aligned block that holds it: aligned blocks nest).
"""

from __future__ import annotations

import numpy as np

from .cow import break_cow_range_large, copy_to_large_folio, would_copy_large, wp_page_copy_large
from .layout import C_AHEAD_BATCHES, HPAGE_PMD_ORDER, PP_KIND, PP_WINDOW, V_DHI, V_DLO, V_END, frame_of, jit
from .mm import dense_after, page_of
from .windows import (POL_FOLIO, POL_ORACLE, folio_window, oracle_index, oracle_window, ranged_window,
                      written_next)


@jit
def window_bounds(st, s, v, d, pol, order):
    """The dense range [lo, hi) that holds the window's pages; a ranged window's is the window, and asking
    for it moves its policy's state (once per fault). The oracle's and folio's have holes (in_window)."""
    if pol == POL_ORACLE:
        stop = min(page_of(st, d) + st.policy[PP_WINDOW], st.vmas[v, V_END])
        return d + 1, dense_after(st, d, stop)
    if pol == POL_FOLIO:
        if order == 0:
            return d, d  # a copy from a 4 KiB page: no window
        base = d & ~((np.int64(1) << order) - 1)
        return max(base, st.vmas[v, V_DLO]), min(base + (np.int64(1) << order), st.vmas[v, V_DHI])
    return ranged_window(st, s, v, d, pol)


@jit
def in_window(st, s, d, q, pol, lo, hi, old, pid, now):
    """Is dense page ``q`` in the fault's span: the faulting page, or a page the window names?"""
    if q == d:
        return True
    if q < lo or q >= hi:
        return False
    if pol == POL_ORACLE:
        return written_next(st, pid, q, now, oracle_index(st, pid * st.pages.shape[0] + q))
    if pol == POL_FOLIO:
        return frame_of(st.ptes[s, q]) == old  # a page of the folio copied from
    return True


@jit
def block_qualifies(st, s, v, d, base, order, pol, lo, hi, old, pid, now):
    """Is every page of the aligned block in the span and one that would be copied?"""
    for q in range(base, base + (np.int64(1) << order)):
        if not in_window(st, s, d, q, pol, lo, hi, old, pid, now) or not would_copy_large(st, s, v, q):
            return False
    return True


@jit
def largest_block_at(st, s, v, d, base, limit, allowed, pol, lo, hi, old, pid, now):
    """The largest allowed order of a qualifying block that starts at ``base`` (aligned to it) and ends by
    ``limit``; 0 if none."""
    for order in range(HPAGE_PMD_ORDER - 1, 0, -1):
        n = np.int64(1) << order
        if ((allowed >> order) & 1 and base & (n - 1) == 0 and base + n <= limit
                and block_qualifies(st, s, v, d, base, order, pol, lo, hi, old, pid, now)):
            return order
    return 0


@jit
def faulting_block(st, s, v, d, allowed, pol, lo, hi, old, pid, now):
    """The order of the largest qualifying block that holds the faulting page; 0 if none."""
    for order in range(HPAGE_PMD_ORDER - 1, 0, -1):
        base = d & ~((np.int64(1) << order) - 1)
        if (allowed >> order) & 1 and block_qualifies(st, s, v, d, base, order, pol, lo, hi, old, pid, now):
            return order
    return 0


@jit
def cow_ahead_large_dest(st, s, v, d, pid, now, old, order, allowed):
    """The faulting page's copy and cow_ahead_large, with large destinations of the orders in ``allowed``
    (a bit mask, below PMD's): the copy from ``old`` (of 2**``order`` pages) at ``d`` included. How many
    pages were broken ahead."""
    pol = st.policy[PP_KIND]
    lo, hi = window_bounds(st, s, v, d, pol, order)
    own = faulting_block(st, s, v, d, allowed, pol, lo, hi, old, pid, now)
    done = 0
    if own:
        done += copy_to_large_folio(st, s, v, d & ~((np.int64(1) << own) - 1), own, d)
    else:
        wp_page_copy_large(st, s, v, d)
    q, end = min(lo, d), max(hi, d + 1)
    while q < end:
        k = largest_block_at(st, s, v, d, q, end, allowed, pol, lo, hi, old, pid, now)
        if k:
            done += copy_to_large_folio(st, s, v, q, k, d)
            q += np.int64(1) << k
        else:
            q += 1
    if pol == POL_ORACLE:
        done += oracle_window(st, s, v, d, pid, now, True)
    elif pol == POL_FOLIO:
        done += folio_window(st, s, v, d, old, order) if order else 0
    else:
        done += break_cow_range_large(st, s, v, lo, hi)
    if done:
        st.counters[C_AHEAD_BATCHES] += 1
    return done
