"""The fault path, as in mm/memory.c and the model: ``handle_mm_fault`` dispatches each fault kind to its
handler's steps; a COW copy on demand then asks the policy's window (windows.cow_ahead).

Two paths. ``handle_mm_fault`` is the 4 KiB one, inlined into the hot loop: a trace where no fault can
map a large folio takes it and nothing else. ``handle_mm_fault_large`` is the model's whole fault path
with large folios (PMDs, mTHP, folio-aware reuse and copies, page tables), a call of its own that
``access`` makes instead where ``State.large`` says so: replay.py compiles its hot loop twice, once for
each, so the 4 KiB loop holds none of that path, not even its test.
"""

from __future__ import annotations

import numpy as np

from ..model.counters import BATCH_BINS
from .cow import wp_page_copy, wp_page_copy_large
from .huge_memory import (alloc_anon_folio_order, do_huge_pmd_anonymous_page, do_huge_pmd_wp_page,
                          thp_vma_allowable_orders)
from .layout import (ANON, BLK_PMD, BLK_TABLE, B_DLO, B_SEG, C_AHEAD_COPIES, C_AHEAD_HITS, C_AHEAD_REUSES,
                     C_COW_COPY, C_COW_COPY_PAGES, C_EXTRA_PAGES, C_MAP, C_MTHP_FAULT_ALLOC, C_OUTSIDE_VMA, C_REUSE,
                     C_REUSE_PAGES, C_ZERO_FILL, C_ZERO_FILL_PAGES, C_ZERO_PAGE, DIRTY, FILE, FRAME_SHIFT, F_ORDER,
                     HIT, HPAGE_PMD_ORDER, LARGE, PENDING, PP_KIND, PRESENT, PRIVATE_ANON, SC_LOG_LEN, SHARED_ANON,
                     SHMEM, TH_LARGE_DEST, V_ANON, V_BACKING, V_KIND, WRITABLE, ZERO_FRAME, frame_of, jit, jit_inline,
                     pte_at)
from .large_destination import cow_ahead_large_dest
from .mm import alloc_folio, alloc_frame, backing_frame, can_reuse_any, find_vma, folio_add, map_frame, wp_can_reuse
from .windows import POL_NONE, cow_ahead, cow_ahead_large


@jit
def count_batch(st, copies_before, reuses_before):
    """A 4 KiB COW fault whose window broke COW on more pages, into the batch histogram (model/counters.py),
    from the ahead counters before its window. A call of its own, made only then: the hot loop holds none of
    it, and the faults that broke nothing more (every fault of none) are counted at the end
    (replay.finish), from the COW faults less the other bins."""
    c = st.counters
    st.cow_batches[min(c[C_AHEAD_COPIES] - copies_before, BATCH_BINS),
                   min(c[C_AHEAD_REUSES] - reuses_before, BATCH_BINS)] += 1


@jit_inline
def do_fault(st, s, v, d, write, kind):
    """A fault at an absent PTE of a VMA that is not private anonymous, always 4 KiB: do_shared_fault,
    do_cow_fault or do_read_fault. The counter it bumped (C_ZERO_FILL, C_MAP or C_COW_COPY)."""
    if kind == SHARED_ANON:  # do_shared_fault
        b = st.vmas[v, V_BACKING]
        counted = C_ZERO_FILL if st.backing_frames[st.backings[b, B_SEG] + d - st.backings[b, B_DLO]] < 0 else C_MAP
        map_frame(st, s, d, backing_frame(st, v, d, SHMEM), write)
    elif write:  # do_cow_fault
        counted = C_COW_COPY
        st.vmas[v, V_ANON] = 1
        backing_frame(st, v, d, FILE)
        map_frame(st, s, d, alloc_frame(st, ANON), True)
    else:  # do_read_fault
        counted = C_MAP
        map_frame(st, s, d, backing_frame(st, v, d, FILE), False)
    st.counters[counted] += 1
    return counted


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
        else:
            do_fault(st, s, v, d, write, kind)
        return
    # do_wp_page
    if kind == SHARED_ANON or wp_can_reuse(st, frame_of(fl)):
        c[C_REUSE] += 1
        st.ptes[pte_at(s, d)] = fl | WRITABLE
        return
    c[C_COW_COPY] += 1
    wp_page_copy(st, s, v, d)
    # A copy from the zero page is a first write, not a broken share: no COW-ahead (the model's do_wp_page).
    if st.policy[PP_KIND] != POL_NONE and frame_of(fl) != ZERO_FRAME:  # a call costs more than Linux's own path here
        copies, reuses = c[C_AHEAD_COPIES], c[C_AHEAD_REUSES]
        if cow_ahead(st, s, v, d, pid, now):
            count_batch(st, copies, reuses)


# ----- where large folios may be (State.large) -----------------------------------------


@jit
def handle_mm_fault_large(st, s, d, write, pid, now):
    """The model's handle_mm_fault with large folios: a write to a write-protected PMD first
    (do_huge_pmd_wp_page, which may split it), then the PTE level; an absent page in an empty 2 MiB may
    get a PMD THP (or the huge zero page), else do_anonymous_page's folio. Every mapping at the PTE level
    installs its page table. False: no VMA holds the page."""
    v = find_vma(st, s, d)
    if v < 0:
        st.counters[C_OUTSIDE_VMA] += 1
        return False
    b = d >> HPAGE_PMD_ORDER
    if st.ptes[s, d] & PRESENT:  # a write to a write-protected PTE or PMD
        if st.pmds[s, b] & BLK_PMD and do_huge_pmd_wp_page(st, s, v, d):
            return True
        do_wp_page_large(st, s, v, d, pid, now)
        return True
    kind = st.vmas[v, V_KIND]
    c = st.counters
    if kind == PRIVATE_ANON:
        if (not st.pmds[s, b] & BLK_TABLE and (thp_vma_allowable_orders(st, s, v) >> HPAGE_PMD_ORDER) & 1
                and do_huge_pmd_anonymous_page(st, s, v, d, write)):
            return True  # pmd_none (no page table: an absent PTE means no PMD either) and THP allowed
        do_anonymous_page_large(st, s, v, d, write)
    else:
        counted = do_fault(st, s, v, d, write, kind)
        if counted == C_ZERO_FILL:  # a 4 KiB page each: the pages counters follow the faults
            c[C_ZERO_FILL_PAGES] += 1
        elif counted == C_COW_COPY:
            c[C_COW_COPY_PAGES] += 1
    st.pmds[s, b] |= BLK_TABLE  # _map_frame: the PTE's page table
    return True


@jit_inline
def do_anonymous_page_large(st, s, v, d, write):
    """A read maps the 4 KiB zero page; a write a new zeroed folio (alloc_anon_folio's order), every page of
    it mapped writable at once."""
    c = st.counters
    if not write:
        c[C_ZERO_PAGE] += 1
        map_frame(st, s, d, ZERO_FRAME, False)
        return
    st.vmas[v, V_ANON] = 1
    order = alloc_anon_folio_order(st, s, v, d)
    c[C_ZERO_FILL] += 1
    if order == 0:
        c[C_ZERO_FILL_PAGES] += 1
        map_frame(st, s, d, alloc_frame(st, ANON), True)
        return
    c[C_ZERO_FILL_PAGES] += 1 << order
    c[C_MTHP_FAULT_ALLOC] += 1
    f = alloc_folio(st, order)
    base = d & ~((1 << order) - 1)
    folio_add(st, f, s, 1 << order)  # as 2**order single mappings: the first takes slot 0 of a new folio
    entry = (f << FRAME_SHIFT) | PRESENT | WRITABLE | DIRTY
    for q in range(base, base + (1 << order)):
        st.ptes[s, q] = entry


@jit_inline
def do_wp_page_large(st, s, v, d, pid, now):
    """do_wp_page where the frame may be a large folio's: reuse by wp_can_reuse's rules, else copy 4 KiB."""
    c = st.counters
    fl = st.ptes[s, d]
    if st.vmas[v, V_KIND] == SHARED_ANON or can_reuse_any(st, s, frame_of(fl)):
        c[C_REUSE] += 1
        c[C_REUSE_PAGES] += 1
        st.ptes[s, d] = fl | WRITABLE
        return
    c[C_COW_COPY] += 1
    c[C_COW_COPY_PAGES] += 1
    old = frame_of(fl)  # vmf.folio: the folio copied from, which the copy may free (folio's window asks)
    order = st.folios[old, F_ORDER] if old != ZERO_FRAME and st.frame_kind[old] == LARGE else 0
    if st.policy[PP_KIND] == POL_NONE or old == ZERO_FRAME:  # no COW-ahead after a copy from the zero page
        wp_page_copy_large(st, s, v, d)
        return
    copies, reuses = c[C_AHEAD_COPIES], c[C_AHEAD_REUSES]
    # Large destinations: the orders below PMD's this VMA allows, if the option is on (else none: 4 KiB copies).
    allowed = thp_vma_allowable_orders(st, s, v) & ((1 << HPAGE_PMD_ORDER) - 1) if st.thp[TH_LARGE_DEST] else 0
    if allowed:
        done = cow_ahead_large_dest(st, s, v, d, pid, now, old, order, allowed)
    else:
        wp_page_copy_large(st, s, v, d)
        done = cow_ahead_large(st, s, v, d, pid, now, old, order)
    if done:
        count_batch(st, copies, reuses)


# ----- the access ------------------------------------------------------------------------


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
def access(st, s, d, write, pid, now, large):
    """A load or store by ``pid`` at dense page ``d``: fault if needed, then do it. Did it fault? ``large``
    (State.large, a constant in the hot loop's two versions) picks the fault path."""
    pte = pte_at(s, d)
    fl = st.ptes[pte]
    faulted = False
    if not (fl & PRESENT) or (write and not (fl & WRITABLE)):
        if large:  # large folios possible: the model's whole fault path, a call of its own
            if not handle_mm_fault_large(st, s, d, write, pid, now):
                return False
        else:
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
