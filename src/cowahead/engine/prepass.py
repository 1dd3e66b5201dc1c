"""Passes over a trace before replay: its page space, its pids, and the oracle's future.

All passes stream the trace chunk by chunk (Parquet row groups). The page
space is the set of pages a read or write touches — the only pages that can
ever be present — either as one dense run ``[base, base + n)`` when the span
is small (an offset is cheaper than a search) or as the sorted unique set.
Where a fault may map a large folio (``PageSpace.large``: the trace's folio
settings allow one, in any VMA or in a MADV_HUGEPAGE one the trace asks for,
or the trace asks MADV_COLLAPSE), a folio maps pages the trace never names;
they all lie in the 2 MiB of a touched page, so the space then holds every
touched 2 MiB whole: a run from a 2 MiB boundary to one, or whole blocks of
512 pages, and dense page d lies in block d >> 9 either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import psutil
from numba import njit

from ..errors import CowaheadError
from ..model.folio import FolioSettings
from ..trace.events import COLUMNS
from ..trace.parquet import ROW_GROUP_ROWS, TraceFile
from ..trace.trace import Trace
from . import cache  # noqa: F401  (before any @njit: keys numba's cache on all engine sources)
from .layout import (DONTNEED, EXEC, EXIT, FORK, HPAGE_PMD_NR, HPAGE_PMD_ORDER, MADV_COLLAPSE, MADV_HUGEPAGE,
                     MADVISE, MMAP, MUNMAP, NEAR_PAGES, READ, WRITE, dense_index, page_range)

# What replay reads of a trace: no time, since events replay in the file's order (the oracle's clock
# is the event's index). Leaving time_ns out of a read saves a fifth of the bytes and about a third
# of Parquet's decoding.
REPLAY_COLUMNS = ("pid", "kind", "address", "length", "arg")
# A trace file's replay columns, once read into memory.
Columns = dict[str, np.ndarray]
TraceSource = Union[Trace, TraceFile, Columns, str, Path]

# A span of at most this many pages (32 GiB) is indexed by offset, not by search.
DIRECT_SPAN = 1 << 23
# A trace file whose events fit in this share of the available memory is read once and its passes run
# from memory; a larger one streams its row groups in every pass, so memory stays bounded.
IN_MEMORY_SHARE = 0.25
# Dense page indices are int32 in decoded chunks (direct spans are far smaller).
MAX_DENSE_PAGES = (1 << 31) - 1
MAX_RANK = (1 << 31) - 1  # the oracle's rank table is int32


def iter_chunks(source: TraceSource, rows: int = ROW_GROUP_ROWS) -> Iterator[Columns]:
    """The trace's replay columns in chunks: a file's row groups, or ``rows``-event slices in memory."""
    if isinstance(source, (str, Path)):
        source = TraceFile(source)
    if isinstance(source, TraceFile):
        yield from source.iter_chunks(REPLAY_COLUMNS, access_args=False)  # replay reads no write's value
        return
    columns = source.columns if isinstance(source, Trace) else source
    for lo in range(0, len(columns["pid"]), rows):
        yield {k: _read_only(columns[k][lo:lo + rows]) for k in REPLAY_COLUMNS}


def _read_only(column: np.ndarray) -> np.ndarray:
    """A read-only view, as a column read from Parquet is: numba types read-only arrays apart, so a trace
    replayed from memory (a generated one) would otherwise compile every engine function a second time
    (about 70 s per worker process in a fresh clone's first `evaluate`)."""
    if not column.flags.writeable:
        return column
    view = column.view()
    view.flags.writeable = False
    return view


def in_memory_if_small(source: TraceSource) -> TraceSource:
    """A trace file's replay columns, read once if small enough to hold (Parquet decoding is the
    costliest part of a pass)."""
    if isinstance(source, (str, Path)):
        source = TraceFile(source)
    if isinstance(source, TraceFile) and fits_in_memory(source):
        return source.read_columns(REPLAY_COLUMNS, access_args=False)  # replay reads no write's value
    return source


def fits_in_memory(trace: TraceFile, columns=REPLAY_COLUMNS) -> bool:
    """Are ``columns`` of the whole trace small enough to hold (a share of the available memory)?"""
    per_event = sum(np.dtype(COLUMNS[k]).itemsize for k in columns)
    return trace.num_events * per_event <= IN_MEMORY_SHARE * psutil.virtual_memory().available


def folio_settings(source: TraceSource) -> FolioSettings:
    """The folio settings a trace was made under (columns alone carry none: 4 KiB pages)."""
    if isinstance(source, (str, Path)):
        source = TraceFile(source)
    return FolioSettings.from_metadata(source.metadata if isinstance(source, (Trace, TraceFile)) else {})


def large_folios_possible(folios: FolioSettings, hugepage_advised: bool, collapse_advised: bool) -> bool:
    """Can a fault of this trace map a large folio? Its settings allow one in any VMA, or in a VM_HUGEPAGE VMA
    and the trace asks MADV_HUGEPAGE; or it asks MADV_COLLAPSE, which makes THPs whatever the knobs say."""
    return bool(folios.anon_orders(hugepage=False) or (hugepage_advised and folios.anon_orders(hugepage=True))
                or collapse_advised)


@dataclass(frozen=True)
class PageSpace:
    pages: np.ndarray      # int64 page number of each dense index, ascending
    direct_base: int       # pages[0] when pages is one dense run, else -1
    pids: np.ndarray       # int64 sorted unique pids (event pids and fork children)
    events: int
    large: bool = False    # a fault may map a large folio: the space holds whole 2 MiB blocks
    folios: FolioSettings = field(default_factory=FolioSettings)  # the settings it was made for
    advice: int = 0        # large-folio advice the trace asks: bit 0 MADV_HUGEPAGE, bit 1 MADV_COLLAPSE

    def large_under(self, folios: FolioSettings) -> bool:
        """Would this trace have large folios possible under ``folios``?"""
        return large_folios_possible(folios, bool(self.advice & 1), bool(self.advice & 2))


@dataclass(frozen=True)
class Decoded:
    """One chunk in the engine's terms: pid indices and dense page ranges; the rest is the chunk's own.

    Only what replay reads at every event is made anew, and narrow (int32): decoding writes
    12 bytes an event, not 48, and the loop reads fewer lines."""
    kind: np.ndarray
    pid: np.ndarray      # int32 pid index
    arg: np.ndarray      # a fork's child pid index; else the event's arg (the chunk's own without forks)
    address: np.ndarray  # the chunk's own: other events' page ranges come from them (layout.page_range)
    length: np.ndarray
    dlo: np.ndarray      # int32 dense range of a read or write (0, 0 for other events)
    dhi: np.ndarray
    scattered: bool    # do its reads and writes jump about? (then replay prefetches, if the state is big)

    def events(self, start: int, stop: int) -> "Decoded":
        """Events start … stop−1 of the chunk (views, no copy)."""
        return Decoded(self.kind[start:stop], self.pid[start:stop], self.arg[start:stop], self.address[start:stop],
                       self.length[start:stop], self.dlo[start:stop], self.dhi[start:stop], self.scattered)


@njit(cache=True)
def _scan_chunk(kind, pid, address, length, arg):
    """Touched page bounds, pages touched, the pids seen (runs collapsed), and the large-folio advice asked
    (bit 0: MADV_HUGEPAGE, bit 1: MADV_COLLAPSE)."""
    lo, hi, touched = np.int64(1) << 62, np.int64(-1), np.int64(0)
    advice = 0
    seen = np.empty(2 * kind.shape[0], np.int64)
    m = 0
    last = np.int64(-1) << 40
    for i in range(kind.shape[0]):
        k = kind[i]
        p = np.int64(pid[i])
        if p != last:
            seen[m] = p
            m += 1
            last = p
        if k == FORK:
            seen[m] = arg[i]
            m += 1
        elif k == READ or k == WRITE:
            first, end = page_range(address[i], length[i])
            lo = min(lo, first)
            hi = max(hi, end)
            touched += end - first
        elif k == MADVISE:
            if arg[i] == MADV_HUGEPAGE:
                advice |= 1
            elif arg[i] == MADV_COLLAPSE:
                advice |= 2
    return lo, hi, touched, seen[:m], advice


@njit(cache=True)
def _touched_pages(kind, address, length, total):
    out = np.empty(total, np.int64)
    m = 0
    for i in range(kind.shape[0]):
        if kind[i] == READ or kind[i] == WRITE:
            first, end = page_range(address[i], length[i])
            for page in range(first, end):
                out[m] = page
                m += 1
    return out[:m]


def page_space(source: TraceSource, rows: int = ROW_GROUP_ROWS, folios: FolioSettings | None = None) -> PageSpace:
    """The trace's page space; ``folios``: the settings it replays under (by default its own, from its
    metadata), which say whether large folios are possible and so whether it holds whole 2 MiB blocks."""
    folios = folio_settings(source) if folios is None else folios
    lo, hi, events, touched = 1 << 62, -1, 0, []
    pids, advice = [], 0
    for chunk in iter_chunks(source, rows):
        c_lo, c_hi, c_touched, seen, c_advice = _scan_chunk(chunk["kind"], chunk["pid"], chunk["address"],
                                                            chunk["length"], chunk["arg"])
        lo, hi = min(lo, c_lo), max(hi, c_hi)
        pids.append(np.unique(seen))
        touched.append(c_touched)
        events += len(chunk["kind"])
        advice |= c_advice
    pids_sorted = np.unique(np.concatenate(pids)) if pids else np.zeros(0, np.int64)
    large = large_folios_possible(folios, bool(advice & 1), bool(advice & 2))
    if hi < 0:
        return PageSpace(np.zeros(0, np.int64), 0, pids_sorted, events, large, folios, advice)
    if large:  # whole 2 MiB blocks: every page a folio of a touched page may map
        lo, hi = lo & ~(HPAGE_PMD_NR - 1), (hi + HPAGE_PMD_NR - 1) & ~(HPAGE_PMD_NR - 1)
    if hi - lo <= DIRECT_SPAN:
        return PageSpace(np.arange(lo, hi, dtype=np.int64), lo, pids_sorted, events, large, folios, advice)
    unique = np.zeros(0, np.int64)
    for chunk, total in zip(iter_chunks(source, rows), touched):
        unique = np.union1d(unique, np.unique(_touched_pages(chunk["kind"], chunk["address"], chunk["length"],
                                                              total)))
    if large:
        blocks = np.unique(unique >> HPAGE_PMD_ORDER)
        unique = ((blocks[:, None] << HPAGE_PMD_ORDER) + np.arange(HPAGE_PMD_NR)).ravel()
    if len(unique) > MAX_DENSE_PAGES:
        raise CowaheadError(f"the trace touches {len(unique)} distinct pages; the engine indexes at most "
                            f"{MAX_DENSE_PAGES} (8 TiB): use `cowahead simulate --reference`")
    return PageSpace(unique, -1, pids_sorted, events, large, folios, advice)


@njit(cache=True, nogil=True)  # runs on a thread beside the replay (one_ahead)
def _decode(kind, pid, address, length, pids, pages, direct_base):
    n = kind.shape[0]
    out_pid = np.empty(n, np.int32)
    dlo = np.zeros(n, np.int32)
    dhi = np.zeros(n, np.int32)
    last_pid, last_index = np.int64(-1) << 40, np.int64(0)
    last_page, jumps, accesses = np.int64(0), 0, 0
    for i in range(n):
        p = np.int64(pid[i])
        if p != last_pid:
            last_pid, last_index = p, np.searchsorted(pids, p)
        out_pid[i] = last_index
        k = kind[i]
        if k == READ or k == WRITE:
            first, end = page_range(address[i], length[i])
            d = dense_index(pages, direct_base, first)
            dlo[i] = d
            dhi[i] = d + end - first
            accesses += 1
            if abs(d - last_page) > NEAR_PAGES:
                jumps += 1
            last_page = d
    # More than one access in eight landing over NEAR_PAGES from the last one: the hardware's
    # own prefetcher will not follow, software prefetching pays.
    return out_pid, dlo, dhi, jumps * 8 > accesses


def decode(chunk: dict[str, np.ndarray], space: PageSpace) -> Decoded:
    pid, dlo, dhi, scattered = _decode(chunk["kind"], chunk["pid"], chunk["address"], chunk["length"], space.pids,
                                       space.pages, space.direct_base)
    arg, forks = chunk["arg"], np.flatnonzero(chunk["kind"] == FORK)
    if len(forks):  # a fork's child pid becomes its index; the chunk's own column stays as it is
        arg = arg.copy()
        arg[forks] = np.searchsorted(space.pids, arg[forks])
    # every column the replay reads from the chunk read-only, forks or none: one compiled variant
    return Decoded(_read_only(chunk["kind"]), pid, _read_only(arg), _read_only(chunk["address"]),
                   _read_only(chunk["length"]), dlo, dhi, bool(scattered))


# ----- the oracle's future -------------------------------------------------------------


@dataclass(frozen=True)
class Future:
    """Every write of each (pid, page) pair, in time order, with the last drop before it.

    ``keys`` are sorted ``pid * pages + page``; the writes of pair j are
    ``start[j]`` … ``start[j + 1]`` − 1, and write c is ``writes[2c]`` (its
    time) beside ``writes[2c + 1]`` (the latest fork/exec/exit of the pid or
    mmap/munmap/dontneed of the page by the pid before it): the oracle reads
    both at once, one cache line, not one line in each of two arrays. A write
    at ``w`` answers the oracle's question at ``now <= w`` with yes exactly when
    its last drop is before ``now`` (policies/oracle.py).
    """
    keys: np.ndarray
    start: np.ndarray
    writes: np.ndarray  # int64 time, last drop of each write, side by side
    rank: np.ndarray  # int32 searchsorted(keys, k) for k in [0, keys[-1] + 1] where keys are dense, else empty

    @property
    def time(self) -> np.ndarray:
        return self.writes[0::2]

    @property
    def last_drop(self) -> np.ndarray:
        return self.writes[1::2]


@njit(cache=True)
def _write_keys(kind, pid, dlo, dhi, npages):
    total = 0
    for i in range(kind.shape[0]):
        if kind[i] == WRITE:
            total += dhi[i] - dlo[i]
    out = np.empty(total, np.int64)
    m = 0
    for i in range(kind.shape[0]):
        if kind[i] == WRITE:
            for d in range(dlo[i], dhi[i]):
                out[m] = pid[i] * npages + d
                m += 1
    return out


@njit(cache=True)
def _written_bounds(kind, pid, dlo, dhi, npages):
    """How many pages the chunk writes, and the largest (pid, page) key among them (-1: none)."""
    total, largest = np.int64(0), np.int64(-1)
    for i in range(kind.shape[0]):
        if kind[i] == WRITE and dhi[i] > dlo[i]:
            total += dhi[i] - dlo[i]
            largest = max(largest, np.int64(pid[i]) * npages + dhi[i] - 1)
    return total, largest


@njit(cache=True)
def _count_writes(kind, pid, dlo, dhi, npages, counts):
    """counts[key] += 1 for the (pid, page) key of every page the chunk writes."""
    for i in range(kind.shape[0]):
        if kind[i] == WRITE:
            base = np.int64(pid[i]) * npages
            for d in range(dlo[i], dhi[i]):
                counts[base + d] += 1


@njit(cache=True)
def _fill_future(kind, pid, arg, address, length, dlo, dhi, first_index, pages, direct_base, keys, rank, pair, m,
                 filling, last_barrier, writes):
    """Place each write of the chunk under its pair: ``rank[key]`` where the keys have a rank table, else
    ``pair[m]``, the pair of the trace's m-th written page. ``filling[2j]`` is pair j's next write slot,
    ``filling[2j + 1]`` its last drop: side by side, where a write reads and bumps both (one line, not two)."""
    npages = pages.shape[0]
    ranked = rank.shape[0] > 0
    for i in range(kind.shape[0]):
        k = kind[i]
        p = pid[i]
        t = first_index + i
        if k == WRITE:
            for d in range(dlo[i], dhi[i]):
                if ranked:
                    j = np.int64(rank[np.int64(p) * npages + d])
                else:
                    j = pair[m]
                    m += 1
                c = filling[2 * j]
                writes[2 * c] = t
                writes[2 * c + 1] = max(last_barrier[p], filling[2 * j + 1])
                filling[2 * j] = c + 1
        elif k == FORK:
            last_barrier[p] = t
            last_barrier[arg[i]] = t  # a reused child pid starts afresh
        elif k == EXEC or k == EXIT:
            last_barrier[p] = t
        elif k == MMAP or k == MUNMAP or k == DONTNEED:
            first, end = page_range(address[i], length[i])
            a = dense_index(pages, direct_base, first)
            b = dense_index(pages, direct_base, end)
            for j in range(np.searchsorted(keys, p * npages + a), np.searchsorted(keys, p * npages + b)):
                filling[2 * j + 1] = t
    return m


def _table_fits(largest: int, count: int) -> bool:
    """Are keys up to ``largest`` dense enough among ``count`` items for a table indexed by key?"""
    return largest < 8 * count + 1024


def _pairs(written: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (pid, page) keys, the pair of each written page (in trace order), and writes per pair."""
    if len(written) and _table_fits(written.max(), len(written)):
        # Keys this dense (at most 64 bytes of table per written page): count and look up, no sort.
        per_key = np.bincount(written)
        keys = np.flatnonzero(per_key)
        lookup = np.empty(len(per_key), np.int64)
        lookup[keys] = np.arange(len(keys))
        return keys, lookup[written], per_key[keys]
    keys, counts = np.unique(written, return_counts=True)
    order = np.argsort(written, kind="stable")  # numpy's unique(return_inverse=True), without its cost
    pair = np.empty(len(written), np.int64)
    pair[order] = np.repeat(np.arange(len(keys)), counts)
    return keys, pair, counts


def decoded_chunks(source: TraceSource, space: PageSpace, rows: int = ROW_GROUP_ROWS,
                   decoded: list[Decoded] | None = None) -> Iterator[Decoded]:
    """The trace's chunks decoded: ``decoded`` where the caller keeps them, else decoded as read."""
    if decoded is not None:
        yield from decoded
        return
    for chunk in iter_chunks(source, rows):
        yield decode(chunk, space)


def future(source: TraceSource, space: PageSpace, rows: int = ROW_GROUP_ROWS,
           decoded: list[Decoded] | None = None) -> Future:
    """The oracle's future (Future), in two passes over the decoded chunks (``decoded``, or decoded as read)."""
    npages = len(space.pages)
    keys, rank, pair, counts = _future_keys(source, space, rows, decoded)
    start = np.zeros(len(keys) + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    writes = np.empty(2 * start[-1], np.int64)
    filling = np.empty(2 * len(keys), np.int64)
    filling[0::2] = start[:-1]
    filling[1::2] = -1
    last_barrier = np.full(max(1, len(space.pids)), -1, np.int64)
    first_index, m = 0, 0
    for d in decoded_chunks(source, space, rows, decoded):
        m = _fill_future(d.kind, d.pid, d.arg, d.address, d.length, d.dlo, d.dhi, first_index, space.pages,
                         space.direct_base, keys, rank, pair, m, filling, last_barrier, writes)
        first_index += len(d.kind)
    return Future(keys, start, writes, rank)


def _future_keys(source: TraceSource, space: PageSpace, rows: int,
                 decoded: list[Decoded] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct written (pid, page) keys, their rank table (_rank; empty where they are sparse), the pair
    of each written page in trace order where there is no table (else empty), and the writes per key.

    Where the keys are dense (_table_fits) they are counted in a table by key, in one pass, and the fill
    pass finds each write's pair in the rank table the oracle needs anyway: no key and pair arrays of 16
    bytes per written page, and no gather through a lookup table (on the loaded benchmark VM, random over
    5M pages: 1.4 s for _pairs' count and lookups). Sparse keys, and those of a streamed trace, go through
    _pairs."""
    npages = len(space.pages)
    total, largest = 0, -1
    streamed = decoded is None and isinstance(source, (TraceFile, str, Path))
    # Streamed, a pass is a read and a decode of the file: the sort's one pass, not counting's two
    for d in () if streamed else decoded_chunks(source, space, rows, decoded):
        c_total, c_largest = _written_bounds(d.kind, d.pid, d.dlo, d.dhi, npages)
        total, largest = total + int(c_total), max(largest, int(c_largest))
    if total and _table_fits(largest, total) and total <= MAX_RANK:
        counts = np.zeros(largest + 1, np.int64)
        for d in decoded_chunks(source, space, rows, decoded):
            _count_writes(d.kind, d.pid, d.dlo, d.dhi, npages, counts)
        keys = np.flatnonzero(counts)
        # the table by the writes' count, which may hold more than _rank's test by the keys' count allows
        return keys, _rank_table(keys), np.zeros(0, np.int64), counts[keys]
    parts = [_write_keys(d.kind, d.pid, d.dlo, d.dhi, npages) for d in decoded_chunks(source, space, rows, decoded)]
    keys, pair, counts = _pairs(np.concatenate(parts) if parts else np.zeros(0, np.int64))
    rank = _rank(keys)
    return keys, rank, pair if len(rank) == 0 else np.zeros(0, np.int64), counts


def _rank(keys: np.ndarray) -> np.ndarray:
    """How many keys lie below each k up to keys[-1] + 1: the oracle's search per fault becomes one load.
    Only where the keys are dense (_table_fits, as for _pairs' table); a search over millions of keys
    misses the cache at nearly every step (3M searches over 3.2M keys: 686 ms, against 28 ms for the table)."""
    if not len(keys) or not _table_fits(keys[-1], len(keys)) or len(keys) > MAX_RANK:
        return np.zeros(0, np.int32)
    return _rank_table(keys)


def _rank_table(keys: np.ndarray) -> np.ndarray:
    # int32: half the table, and the same type in every State
    return _fill_rank(keys, np.empty(int(keys[-1]) + 2, np.int32))


@njit(cache=True)
def _fill_rank(keys, rank):
    """rank[k] = how many keys lie below k, in one pass (bincount and cumsum took 0.1 s on 8M keys)."""
    k = 0
    for j in range(keys.shape[0]):
        while k <= keys[j]:
            rank[k] = j
            k += 1
    while k < rank.shape[0]:
        rank[k] = keys.shape[0]
        k += 1
    return rank
