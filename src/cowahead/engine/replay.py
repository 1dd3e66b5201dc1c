"""The event loop: one decoded chunk at a time, with room checked before each event that might need it."""

from __future__ import annotations

import numpy as np

from .fault import access, log_fault, store
from .fork import do_fork
from .layout import (C_AHEAD_WASTE, C_COW_COPY, C_COW_COPY_PAGES, C_EVENTS, C_EXTRA_PAGES, C_EXTRA_PAGES_FINAL,
                     C_MAP, C_REUSE, C_REUSE_PAGES, C_ZERO_FILL, C_ZERO_FILL_PAGES, C_ZERO_PAGE, DONTNEED, EXEC,
                     EXIT, FORK, FRAME_AHEAD, HPAGE_PMD_NR, HPAGE_PMD_ORDER, MADVISE, MADV_COLLAPSE, MMAP, MUNMAP,
                     PREFETCH_NONE, PREFETCH_PTES, PREFETCH_PTES_AND_FRAMES, PREFETCH_WITH_FUTURE, PRESENT, PTE_AHEAD, READ,
                     SC_BACKINGS_FREE, SC_BK_BUMP, SC_BK_LIVE_FRAMES, SC_COV_BUMP, SC_FEW_FAULTS, SC_FRAMES_FREE,
                     SC_NEED_BACKINGS, SC_NEED_BK_FRAMES, SC_NEED_COV, SC_NEED_FRAMES, SC_NEED_PSTATES,
                     SC_NEED_SLOTS, SC_NEED_VMAS, SC_PSTATES_FREE, SC_SLOTS_FREE, SC_VMAS_FREE, S_NVMAS,
                     S_THP_DISABLED, THP_DISABLE, WRITABLE, WRITE, dense_index, frame_of, jit, jit_inline,
                     page_range, pte_at)
from .mm import far_state, mm_of
from .mmap import do_exec, do_exit, madvise, madvise_dontneed, mmap, munmap
from .prefetch import prefetch, prefetch_item
from .windows import keeps_regions, prefetch_future, prefetches_future, window_worst


@jit_inline
def access_worst(st, npages):
    """The most a read or write of ``npages`` pages may take: frames (per page a page-cache frame, the
    copy, and at most a window of ahead copies), policy states, and ccow's region counters."""
    per_page = 2 + window_worst(st.policy)
    cov = st.region_start.shape[0] + npages + 1 if keeps_regions(st) else 0
    return per_page * npages, npages + 1, cov


@jit_inline
def headroom(st, kind, pid, npages, address, length, arg):
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
    elif kind == MMAP or kind == MUNMAP or kind == MADVISE:
        vmas = 2
        if kind == MADVISE and arg == MADV_COLLAPSE:  # a THP per 2 MiB of the range
            start, stop = page_range(address, length)
            frames = ((dense_index(st.pages, st.direct_base, stop) - dense_index(st.pages, st.direct_base, start))
                      >> HPAGE_PMD_ORDER) + 1
        if kind == MMAP:
            backings = 1
            start, stop = page_range(address, length)
            bk_frames = (dense_index(st.pages, st.direct_base, stop)
                         - dense_index(st.pages, st.direct_base, start))
    if not keeps_regions(st):
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
    on; its frame FRAME_AHEAD on (unless ``what`` is PREFETCH_PTES); with PREFETCH_WITH_FUTURE, the
    oracle's own stages (windows.prefetch_future). No stage tests the flags for
    whether a fault is coming: where faults and hits mix at random, that branch mispredicted about
    once an event, and a needless prefetch costs less (random over 50K pages with prefetching on:
    32M → 37M events/s; over 5M pages no change). Indexed unsigned, as in replay_accesses: the
    writes of random over 5M pages took 111 ms instead of 124."""
    j = i + PTE_AHEAD
    s = _ahead(st, kind, pid, j)
    if s >= 0:
        prefetch(st.ptes, s, dlo[np.uintp(j)])
    if what == PREFETCH_PTES:
        return
    j = i + FRAME_AHEAD
    s = _ahead(st, kind, pid, j)
    if s >= 0:
        prefetch_item(st.frames, frame_of(st.ptes[pte_at(s, dlo[np.uintp(j)])]))
    if what == PREFETCH_WITH_FUTURE:
        prefetch_future(st, kind, pid, dlo, i)


@jit
def replay_accesses(st, kind, pid, dlo, dhi, first_index, start, prefetching):
    """Replay the run of one-page reads and writes from event ``start`` while a fault has room; returns the
    first event it leaves to replay_chunk (another kind, several pages, a pid without an address
    space, a pool to check). Nearly every event goes through here: apart from replay_chunk's many
    other paths, the compiler keeps this loop's values in registers. Measured on the benchmark VM when
    the loop was split off (fresh state, medians of 3, events/s): sequential none 46.4M → 52.2M,
    random none 28.6M → 30.5M, hotcold fixed:16 24.5M → 29.9M. This is the 4 KiB loop: compiled with
    ``large`` False, it holds no large-folio code at all."""
    return accesses(st, kind, pid, dlo, dhi, first_index, start, prefetching, False)


@jit
def replay_accesses_large(st, kind, pid, dlo, dhi, first_index, start, prefetching):
    """replay_accesses for a state where large folios may be: each fault calls handle_mm_fault_large."""
    return accesses(st, kind, pid, dlo, dhi, first_index, start, prefetching, True)


@jit_inline
def accesses(st, kind, pid, dlo, dhi, first_index, start, prefetching, large):
    """The loop of replay_accesses; ``large`` is a constant in each caller (the compiler drops the other path)."""
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
        access(st, s, d, k == WRITE, p, first_index + i, large)
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
    elif prefetches_future(st):
        prefetching = PREFETCH_WITH_FUTURE
    else:
        prefetching = PREFETCH_PTES_AND_FRAMES
    faults_before = faults(c)
    logging = st.fault_log.shape[0] > 0  # then every event takes the path below, which logs each fault
    i = resume
    while True:
        if not logging:
            if st.large:
                i = replay_accesses_large(st, kind, pid, dlo, dhi, first_index, i, prefetching)
            else:
                i = replay_accesses(st, kind, pid, dlo, dhi, first_index, i, prefetching)
        if i == n:
            break
        k, p = kind[i], pid[i]
        if not headroom(st, k, p, dhi[i] - dlo[i], address[i], length[i], arg[i]):
            c[C_EVENTS] += i - resume
            return i
        if k == WRITE or k == READ:
            s = mm_of(st, p)
            for d in range(dlo[i], dhi[i]):
                if access(st, s, d, k == WRITE, p, first_index + i, st.large != 0) and logging:
                    log_fault(st, d, first_index + i)
        elif k == FORK:
            do_fork(st, p, arg[i])
        elif k == EXEC:
            do_exec(st, p)
        elif k == EXIT:
            do_exit(st, p)
        elif k == THP_DISABLE:  # prctl(PR_SET_THP_DISABLE)
            st.slots[mm_of(st, p), S_THP_DISABLED] = 1 if arg[i] != 0 else 0
        else:
            start, stop = page_range(address[i], length[i])
            if k == MMAP:
                mmap(st, mm_of(st, p), start, stop, arg[i])
            elif k == MUNMAP:
                munmap(st, mm_of(st, p), start, stop)
            elif k == DONTNEED:
                madvise_dontneed(st, mm_of(st, p), start, stop)
            elif k == MADVISE:
                madvise(st, p, start, stop, arg[i])
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
    """End of trace: ahead copies still unwritten count as waste; the page counters settled."""
    c = st.counters
    c[C_EXTRA_PAGES_FINAL] = c[C_EXTRA_PAGES]
    c[C_AHEAD_WASTE] += c[C_EXTRA_PAGES]
    settle_pages(st.large, c)
    # the 4 KiB COW faults that broke nothing more: all of them less those counted in other bins, and less
    # the whole-folio copies (each adds 511 pages to cow_copy_pages)
    whole = (c[C_COW_COPY_PAGES] - c[C_COW_COPY]) // (HPAGE_PMD_NR - 1)
    st.cow_batches[0, 0] = c[C_COW_COPY] - whole - (st.cow_batches.sum() - st.cow_batches[0, 0])


@jit
def settle_pages(large, c):
    """Where no fault can map a large folio each fault's pages are one page: the page counters are the
    fault counters, set here (at the end, and in a sample of the counters mid-trace) rather than bumped at
    every fault; the large-folio fault path counts them as it goes."""
    if not large:
        c[C_ZERO_FILL_PAGES] = c[C_ZERO_FILL]
        c[C_COW_COPY_PAGES] = c[C_COW_COPY]
        c[C_REUSE_PAGES] = c[C_REUSE]
