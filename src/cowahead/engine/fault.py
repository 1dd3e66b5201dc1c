"""The fault path, as in mm/memory.c and the model: ``handle_mm_fault`` dispatches each fault kind to its
handler's steps; a COW copy on demand then asks the policy's window (windows.cow_ahead)."""

from __future__ import annotations

import numpy as np

from .cow import wp_page_copy
from .layout import (ANON, B_DLO, B_SEG, C_AHEAD_HITS, C_COW_COPY, C_EXTRA_PAGES, C_MAP, C_OUTSIDE_VMA, C_REUSE,
                     C_ZERO_FILL, C_ZERO_PAGE, DIRTY, FILE, HIT, PENDING, PP_KIND, PRESENT, PRIVATE_ANON,
                     SC_LOG_LEN, SHARED_ANON, SHMEM, V_ANON, V_BACKING, V_KIND, WRITABLE, ZERO_FRAME, frame_of,
                     jit_inline, pte_at)
from .mm import alloc_frame, backing_frame, find_vma, map_frame, wp_can_reuse
from .windows import POL_NONE, cow_ahead


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
    if st.policy[PP_KIND] != POL_NONE:  # a call costs more than Linux's own path here
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
def log_fault(st, d, now):
    """The model's fault_log (the heatmap's data): the event and the dense page. Only replay_chunk's
    event-by-event path calls it, for a state that keeps a log, so the hot loop (replay_accesses) carries
    none of it; the caller made room for every page the chunk accesses (engine/__init__.py)."""
    i = st.sc[SC_LOG_LEN]
    st.fault_log[i, 0] = now
    st.fault_log[i, 1] = d
    st.sc[SC_LOG_LEN] = i + 1


@jit_inline
def access(st, s, d, write, pid, now):
    """A load or store by ``pid`` at dense page ``d``: fault if needed, then do it. Did it fault?"""
    pte = pte_at(s, d)
    fl = st.ptes[pte]
    faulted = False
    if not (fl & PRESENT) or (write and not (fl & WRITABLE)):
        v = find_vma(st, s, d)  # a present PTE always lies in a VMA
        if v < 0:
            st.counters[C_OUTSIDE_VMA] += 1
            return False
        handle_mm_fault(st, s, v, d, write, pid, now)
        fl = st.ptes[pte]
        faulted = True
    if write:
        store(st, pte, fl)
    return faulted
