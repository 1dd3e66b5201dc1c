"""The engine's state for one policy: numpy arrays in a NamedTuple, and how they grow.

The compiled modules (layout.py names the fields) read and write these
arrays; when an event might overflow a pool, ``replay_chunk`` stops before
it and ``grow`` makes room (doubling), so memory follows what the trace
keeps alive, not its length.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import EngineUnsupported
from ..model.counters import batch_bin
from ..model.folio import FolioSettings
from ..policies import Policy
from . import layout
from .windows import ENGINE_KINDS, POL_ORACLE, POL_WITNESS, keeps_regions_kind, window_worst
from .prepass import Future, PageSpace


class State(NamedTuple):
    pages: np.ndarray
    direct_base: int
    policy: np.ndarray        # policy_params()
    region_of: np.ndarray     # ccow: dense region of each dense page
    region_start: np.ndarray  # ccow: first dense page of each dense region, and the end
    ptes: np.ndarray          # [slot, page] uint32: frame << FRAME_SHIFT | PRESENT, WRITABLE, DIRTY, PENDING, HIT
    slots: np.ndarray
    slot_free: np.ndarray
    slot_of: np.ndarray       # pid index -> slot, -1 when the pid has no address space
    frames: np.ndarray        # [frame] uint32: mappings + references << 16 (layout.ONE_MAP, layout.ONE_REF)
    frame_kind: np.ndarray    # ANON, ZERO, FILE, SHMEM, or LARGE: a large folio's head frame
    frame_free: np.ndarray
    vmas: np.ndarray
    vma_free: np.ndarray
    backings: np.ndarray
    backing_free: np.ndarray
    backing_frames: np.ndarray
    pstates: np.ndarray
    pstate_free: np.ndarray
    coverage: np.ndarray      # ccow: [current, last] counters per region, segments per state
    sc: np.ndarray
    counters: np.ndarray
    oracle_keys: np.ndarray
    oracle_start: np.ndarray
    oracle_writes: np.ndarray  # prepass.Future.writes: each write's time beside its last drop
    oracle_cursor: np.ndarray
    oracle_rank: np.ndarray   # prepass.Future.rank
    fault_log: np.ndarray     # [fault, (event index, dense page)] where kept (log_faults), else 0 rows
    large: int                # 1: a fault may map a large folio (PageSpace.large); 0: 4 KiB pages only
    thp: np.ndarray           # the folio settings (layout.TH_*)
    pmds: np.ndarray          # [slot, 2 MiB block] uint8 BLK_TABLE | BLK_PMD; no columns unless large
    folios: np.ndarray        # [frame, F_*] int32: a large folio's counts, on its head frame; no rows unless large
    cow_batches: np.ndarray   # [ahead copies, ahead reuses] -> 4 KiB COW faults (model/counters.py BATCH_BINS)
    samples: np.ndarray       # [sample point, counter]: the counters after each sample point's events (Python fills)


def policy_params(policy: Policy) -> np.ndarray:
    """kind, window (N or MAX; ccow: region pages), threshold pages (ccow), log2 of the window or -1."""
    kind = ENGINE_KINDS.get(policy.family)
    if kind is None:
        raise EngineUnsupported(f"the fast engine has no implementation of policy {policy.name} yet: use the reference "
                            "model (cowahead simulate --reference)")
    window, threshold = policy.engine_params()
    shift = window.bit_length() - 1 if window and window & (window - 1) == 0 else -1
    return np.array([kind, window, threshold, shift], np.int64)


# The witness (windows.witness_window): ccow's counts in 512-page regions (a shift of 9), a threshold of 1.
WITNESS_REGION_PAGES = 512


def witness_params() -> np.ndarray:
    """policy_params of the witness: none's replay, watching adaptive's and ccow's conditions (engine/witness.py)."""
    return np.array([POL_WITNESS, WITNESS_REGION_PAGES, 1, WITNESS_REGION_PAGES.bit_length() - 1], np.int64)


def thp_params(folios: FolioSettings) -> np.ndarray:
    """The folio settings the compiled code reads (layout.TH_*): allowed orders as bit masks, and so on."""
    def mask(orders: list[int]) -> int:
        return sum(1 << order for order in orders)
    return np.array([mask(folios.anon_orders(hugepage=False)), mask(folios.anon_orders(hugepage=True)),
                     int(folios.use_zero_page), int(folios.reuses_large_folios),
                     int(folios.huge_zero_write_allocates), int(folios.reclaims_page_tables),
                     int(folios.large_destinations)], np.int64)


def _free_stack(capacity: int, first: int = 0, dtype=np.int64, reuse: np.ndarray | None = None) -> np.ndarray:
    """first … capacity-1; in ``reuse`` where it has that shape and type (counted up in place: no temporary)."""
    if not _fits(reuse, (capacity - first,), dtype):
        return np.arange(first, capacity, dtype=dtype)
    reuse.fill(1)
    reuse[:1] = first
    return np.cumsum(reuse, out=reuse)


def _zeros(shape: tuple[int, ...], dtype, reuse: np.ndarray | None = None) -> np.ndarray:
    """np.zeros(shape, dtype); in ``reuse`` (an earlier state's array, no longer read) where it has that shape and
    type. Zeroing memory the process holds costs less than the kernel's first touch of new memory: on this VM a
    process's first 850 MB of new transparent huge pages took 2.0 s of system time (compaction), later ones
    0.08 s, and zeroing them once held 0.01–0.02 s."""
    if not _fits(reuse, shape, dtype):
        return np.zeros(shape, dtype)
    reuse.fill(0)
    return reuse


def _fits(array: np.ndarray | None, shape: tuple[int, ...], dtype) -> bool:
    return array is not None and array.shape == shape and array.dtype == np.dtype(dtype)


def _regions(space: PageSpace, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not keeps_regions_kind(params[layout.PP_KIND]) or len(space.pages) == 0:
        return np.zeros(1, np.int32), np.zeros(1, np.int64)
    size, n = int(params[layout.PP_WINDOW]), len(space.pages)
    if space.direct_base >= 0 and params[layout.PP_SHIFT] >= 0:
        # one dense run, a power-of-two size: layout.region_index shifts, only the region starts are read
        starts = np.arange((-space.direct_base) % size or size, n, size)
        region_of = np.zeros(1, np.int32)
    else:
        raw = space.pages // size  # ascending, as the pages are: regions are runs, no sort needed
        starts = np.flatnonzero(raw[1:] != raw[:-1]) + 1
        region_of = np.zeros(n, np.int32)  # int32: read at every ccow fault, half the cache lines
        region_of[starts] = 1
        np.cumsum(region_of, out=region_of)
    return region_of, np.concatenate([[0], starts, [n]]).astype(np.int64)


def new_state(space: PageSpace, policy: Policy, future: Future | None, log_faults: bool = False,
              samples: int = 0, reuse: State | None = None, witness: bool = False) -> State:
    """A state at the trace's start. ``reuse``: a state of an earlier replay, no longer read, whose big arrays
    (PTEs, frames, the free stack, the oracle's cursors) this one overwrites where their shapes fit.
    ``witness``: ``policy`` is none, replayed as the witness (witness_params)."""
    if witness and policy.family != "none":
        raise ValueError(f"only none replays as the witness, not {policy.name}")
    params = witness_params() if witness else policy_params(policy)
    npages, npids = len(space.pages), max(1, len(space.pids))
    # Room for two address spaces' worth of frames from the start: growing is a copy. A space of whole 2 MiB
    # blocks holds pages no event names, and a folio is one frame: a quarter of that, and grow if need be.
    slots, vmas = 4, 64
    frames = min((npages // 4 if space.large else 2 * npages) + 1024, layout.MAX_FRAMES)
    region_of, region_start = _regions(space, params)
    sc = np.zeros(layout.N_SCALARS, np.int64)
    sc[layout.SC_SLOTS_FREE] = slots
    sc[layout.SC_FRAMES_FREE] = frames - 1  # frame 0 is the zero page
    sc[layout.SC_VMAS_FREE] = vmas
    sc[layout.SC_BACKINGS_FREE] = 16
    sc[layout.SC_PSTATES_FREE] = 64
    sc[layout.SC_PREFETCH_MIN_BYTES] = layout.PREFETCH_MIN_STATE_BYTES
    old = reuse._asdict() if reuse is not None else {}
    frame_kind = _zeros((frames,), np.uint8, old.get("frame_kind"))
    frame_kind[layout.ZERO_FRAME] = layout.ZERO
    if future is None or params[layout.PP_KIND] != POL_ORACLE:
        empty = np.zeros(0, np.int64)
        future = Future(empty, np.zeros(1, np.int64), empty, np.zeros(0, np.int32))
    cursor = _zeros(future.start[:-1].shape, np.int64, old.get("oracle_cursor"))
    cursor[:] = future.start[:-1]
    return State(
        pages=space.pages, direct_base=int(space.direct_base), policy=params,
        region_of=region_of, region_start=region_start,
        ptes=_zeros((slots, npages), np.uint32, old.get("ptes")),
        slots=np.zeros((slots, layout.N_SLOT_FIELDS), np.int64), slot_free=_free_stack(slots),
        slot_of=np.full(npids, -1, np.int64),
        frames=_zeros((frames,), np.uint32, old.get("frames")), frame_kind=frame_kind,
        # int32 at once: 10M frames, new_state 28 → 8 ms
        frame_free=_free_stack(frames, 1, np.int32, old.get("frame_free")),
        vmas=np.zeros((vmas, layout.N_VMA_FIELDS), np.int64), vma_free=_free_stack(vmas),
        backings=np.zeros((16, layout.N_BACKING_FIELDS), np.int64), backing_free=_free_stack(16),
        backing_frames=np.zeros(1024, np.int32),
        pstates=np.zeros((64, layout.N_PSTATE_FIELDS), np.int64), pstate_free=_free_stack(64),
        coverage=np.zeros((2, 1024 if keeps_regions_kind(params[layout.PP_KIND]) else 0), np.int32),
        sc=sc, counters=np.zeros(layout.N_COUNTERS, np.int64),
        oracle_keys=future.keys, oracle_start=future.start, oracle_writes=future.writes,
        oracle_cursor=cursor, oracle_rank=future.rank,
        fault_log=np.zeros((1024 if log_faults else 0, 2), np.int64),
        large=int(space.large), thp=thp_params(space.folios),
        pmds=np.zeros((slots, npages >> layout.HPAGE_PMD_ORDER if space.large else 0), np.uint8),
        folios=np.zeros((frames if space.large else 0, layout.N_FOLIO_FIELDS), np.int32),
        cow_batches=np.zeros((batch_bin(window_worst.py_func(params)) + 1,) * 2, np.int64),
        samples=np.zeros((samples, layout.N_COUNTERS), np.int64),
    )


def log_room(st: State, pages: int) -> State:
    """A state that keeps a fault log, with room for ``pages`` more faults (at most one per page accessed)."""
    log, used = st.fault_log, int(st.sc[layout.SC_LOG_LEN])
    if len(log) == 0 or len(log) - used >= pages:
        return st
    return st._replace(fault_log=_grow_rows(log, max(2 * len(log), used + pages)))


def _grow_rows(table: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows,) + table.shape[1:], table.dtype)
    out[:len(table)] = table
    return out


def _grow_free(free: np.ndarray, sc: np.ndarray, top: int, old: int, new: int) -> np.ndarray:
    """The free stack with room for ``new`` items; the added indices old … new-1 go on top."""
    out = np.zeros(new, free.dtype)
    n = int(sc[top])
    out[:n] = free[:n]
    out[n:n + new - old] = np.arange(old, new)
    sc[top] = n + new - old
    return out


# A pool's limit, where it has one: its most rows, and what they are (for the error past it).
Limit = tuple[int, str]


def _capacity(current: int, free: int, need: int, limit: Limit | None = None) -> int:
    """Double until ``need`` more fit, never past ``limit``: past it, the engine cannot replay the trace."""
    capacity = current
    while free + capacity - current < need:
        if limit is not None and capacity >= limit[0]:
            raise EngineUnsupported(f"the trace keeps more than {limit[0]} {limit[1]}: replay it with --reference")
        capacity = capacity * 2 if limit is None else min(capacity * 2, limit[0])
    return capacity


def grow(st: State) -> State:
    """Make room for what ``headroom`` asked for; returns the (partly) new state."""
    sc, changes = st.sc, {}
    old = len(st.slots)
    new = _capacity(old, int(sc[layout.SC_SLOTS_FREE]), int(sc[layout.SC_NEED_SLOTS]),
                    (layout.MAX_SLOTS, "address spaces at once, more than a frame's 16-bit counts hold"))
    if new > old:
        changes.update(ptes=_grow_rows(st.ptes, new), slots=_grow_rows(st.slots, new), pmds=_grow_rows(st.pmds, new),
                       slot_free=_grow_free(st.slot_free, sc, layout.SC_SLOTS_FREE, old, new))
    # Each pool: its tables (rows indexed alike), its free stack, the stack's top, what is needed, and its
    # limit: a PTE holds a frame index of 27 bits.
    frames_limit = (layout.MAX_FRAMES, "pages resident at once, more than the engine's PTEs can index")
    for tables, free, top, need, limit in [
            (("frames", "frame_kind") + (("folios",) if st.large else ()), "frame_free", layout.SC_FRAMES_FREE,
             layout.SC_NEED_FRAMES, frames_limit),
            (("vmas",), "vma_free", layout.SC_VMAS_FREE, layout.SC_NEED_VMAS, None),
            (("backings",), "backing_free", layout.SC_BACKINGS_FREE, layout.SC_NEED_BACKINGS, None),
            (("pstates",), "pstate_free", layout.SC_PSTATES_FREE, layout.SC_NEED_PSTATES, None)]:
        old = len(getattr(st, tables[0]))
        new = _capacity(old, int(sc[top]), int(sc[need]), limit)
        if new > old:
            changes.update({table: _grow_rows(getattr(st, table), new) for table in tables})
            changes[free] = _grow_free(getattr(st, free), sc, top, old, new)
    old = len(st.backing_frames)
    new = _capacity(old, old - int(sc[layout.SC_BK_BUMP]), int(sc[layout.SC_NEED_BK_FRAMES]))
    if new > old:
        changes["backing_frames"] = _grow_rows(st.backing_frames, new)
    old = st.coverage.shape[1]
    new = _capacity(max(old, 1), max(old, 1) - int(sc[layout.SC_COV_BUMP]), int(sc[layout.SC_NEED_COV]))
    if new > old:
        coverage = np.zeros((2, new), np.int32)
        coverage[:, :old] = st.coverage
        changes["coverage"] = coverage
    sc[layout.SC_NEED_FRAMES:layout.SC_NEED_SLOTS + 1] = 0
    return st._replace(**changes)
