"""The fast replay engine: the reference model's counters, compiled with numba.

``replay_engine(trace, ["none", "fixed:16", ...])`` streams the trace once
(after one pre-pass for its page space, and one more for the oracle's
future) and replays every policy on each chunk. Its counters equal the
reference model's exactly (tests/test_engine.py, and with large folios under
every folio setting and kernel version tests/test_engine_folios.py); memory
contents are not modelled. A trace whose faults may map large folios (THP,
mTHP, MADV_COLLAPSE) takes the large-folio fault path (huge_memory.py); one
without takes the 4 KiB path alone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from ..model.counters import FIELD_NAMES, Counters
from ..model.folio import FolioSettings
from ..policies import OraclePolicy, Policy, parse_policies
from ..trace.parquet import ROW_GROUP_ROWS, TraceFile
from . import layout, replay
from .prepass import (Decoded, Future, PageSpace, TraceSource, decoded_chunks, folio_settings, future,
                      in_memory_if_small, page_space)
from .state import State, grow, log_room, new_state
from .witness import SAW_EVERYTHING, may_replay_as_none, replays_as_none, witness_saw


def replay_chunk(st: State, d, first_index: int) -> State:
    """Replay one decoded chunk, growing the state's pools whenever an event needs room."""
    resume, n = 0, len(d.kind)
    while True:
        resume = replay.replay_chunk(st, d.kind, d.pid, d.arg, d.address, d.length, d.dlo, d.dhi, first_index, resume,
                                    d.scattered)
        if resume == n:
            return st
        st = grow(st)


def to_counters(st: State) -> Counters:
    return Counters(**{name: int(v) for name, v in zip(FIELD_NAMES, st.counters)})


def samples(st: State) -> list[Counters]:
    """The counters at each sample point of the replay (replay_states' ``sample_points``)."""
    return [Counters(**{name: int(v) for name, v in zip(FIELD_NAMES, row)}) for row in st.samples]


def cow_batches(st: State) -> dict[tuple[int, int], int]:
    """The 4 KiB COW faults by (ahead copies, ahead reuses) of their batch, as the model's Kernel.cow_batches."""
    copies, reuses = np.nonzero(st.cow_batches)
    return {(int(a), int(r)): int(st.cow_batches[a, r]) for a, r in zip(copies, reuses)}


def replay_states(source: TraceSource, policies: Sequence[str | Policy], space: PageSpace | None = None,
                  chunk_rows: int = ROW_GROUP_ROWS, progress: Callable[[int], None] = lambda events: None,
                  log_faults: Sequence[str] = (), decoded: list[Decoded] | None = None,
                  folios: FolioSettings | None = None, sample_points: Sequence[int] = (),
                  oracle_future: Future | None = None, reuse: list[State] | None = None,
                  witness: bool = False) -> list[State]:
    """Replay ``source`` (a Trace, TraceFile, columns or path) under each policy; the final states, in order.

    ``space`` skips the page-space pre-pass when the caller already has it;
    ``chunk_rows`` sets the chunk size of an in-memory trace (a file's row groups are its chunks);
    ``progress`` hears the events of each chunk once every policy has replayed it;
    the policies named in ``log_faults`` keep the model's fault log (``fault_log``);
    ``decoded``: the trace's chunks already decoded (``decoded_chunks``), kept by a caller that replays
    the same trace again; ``folios``: the trace's folio settings, for a caller handing over bare columns
    (by default read from the trace's metadata); ``sample_points``: ascending event counts after which each
    state's counters are kept (``State.samples``, one row per point: memory over time, as the model's
    ``Kernel.samples``); ``oracle_future``: the trace's future (``prepass.future`` for this ``space``), kept
    by a caller that replays oracles of the same trace again; ``witness``: ``none`` replays as the witness
    (engine/witness.py; its counters are none's) where the trace has 4 KiB pages only; ``reuse``: final states of an earlier replay of the same
    space that the caller no longer reads: each new state is made in one's big arrays (new_state), taken
    (popped) from the list, so that none is held past its use. A ``space`` made for settings under which large folios
    were possible and are not, or the reverse (a page space of bare columns knows no settings), is made
    anew for these, and the chunks decoded anew with it (and the future with them).

    Without ``decoded``, each chunk is decoded (and, for a streamed file, read) on a thread while the
    policies replay the chunk before: one chunk ahead, so memory stays bounded as streaming is. With an
    oracle and a trace held in memory, the chunks are decoded once for the future's passes and the replay.
    """
    parsed = parse_policies(policies)
    folios = folios or folio_settings(source)
    source = in_memory_if_small(source)
    if space is not None and space.folios != folios:
        if space.large or space.large_under(folios):
            space, decoded, oracle_future = None, None, None
        else:  # 4 KiB pages under both: the same space, with the settings it now replays under
            space = replace(space, folios=folios)
    space = space or page_space(source, chunk_rows, folios)
    if any(isinstance(p, OraclePolicy) for p in parsed) and oracle_future is None:
        if decoded is None and not isinstance(source, TraceFile):  # held in memory: decode once, not three times
            decoded = list(decoded_chunks(source, space, chunk_rows))
        oracle_future = future(source, space, chunk_rows, decoded)
    points = [p for p in sample_points if p > 0]
    reuse = reuse if reuse is not None else []
    watch = witness and not space.large  # the witness knows the 4 KiB fault path only
    states = [new_state(space, p, oracle_future, p.name in log_faults, len(points), reuse.pop() if reuse else None,
                        watch and p.family == "none") for p in parsed]
    reuse.clear()  # any left over: not held through the replay
    logging = any(len(st.fault_log) for st in states)
    first_index, taken = 0, 0
    chunks = decoded_chunks(source, space, chunk_rows, decoded)
    for d in (chunks if decoded is not None else one_ahead(chunks)):
        if logging:  # room for one fault per page the chunk accesses; a replay without a log skips the sum
            accessed = int((d.dhi - d.dlo).sum())
            states = [log_room(st, accessed) for st in states]
        start, n = 0, len(d.kind)
        while start < n:  # up to the next sample point in this chunk, or its end
            stop = min(n, points[taken] - first_index) if taken < len(points) else n
            part = d if (start, stop) == (0, n) else d.events(start, stop)
            states = [replay_chunk(st, part, first_index + start) for st in states]
            while taken < len(points) and points[taken] == first_index + stop:
                for st in states:
                    st.samples[taken] = st.counters
                    replay.settle_pages(st.large, st.samples[taken])
                taken += 1
            start = stop
        first_index += n
        progress(n)
    for st in states:
        replay.finish(st)
    return states


T = TypeVar("T")


def one_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each made on a thread while the caller works on the one before: reading and decoding the
    next chunk (pyarrow and the compiled decode release the GIL, as the compiled replay does) overlaps the
    replay of this one, on the second core. One item ahead: at most two chunks are held at a time."""
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="cowahead-decode") as pool:
        pending = pool.submit(next, items, done)
        while (item := pending.result()) is not done:
            pending = pool.submit(next, items, done)
            yield item


def replay_engine(source: TraceSource, policies: Sequence[str | Policy], space: PageSpace | None = None,
                  chunk_rows: int = ROW_GROUP_ROWS,
                  progress: Callable[[int], None] = lambda events: None) -> list[Counters]:
    """Replay ``source`` under each policy (replay_states); the counters, in order."""
    return [to_counters(st) for st in replay_states(source, policies, space, chunk_rows, progress)]


def fault_log(st: State) -> tuple[np.ndarray, np.ndarray]:
    """A state's fault log as (event index, page number) arrays, in the order the faults happened."""
    log = st.fault_log[:int(st.sc[layout.SC_LOG_LEN])]
    pages = st.pages[log[:, 1]] if st.direct_base < 0 else st.direct_base + log[:, 1]
    return log[:, 0].copy(), pages.astype(np.int64)


__all__ = ["replay_engine", "replay_states", "fault_log", "to_counters", "cow_batches", "samples", "decoded_chunks",
           "page_space", "folio_settings", "PageSpace", "TraceSource", "witness_saw", "replays_as_none",
           "may_replay_as_none", "SAW_EVERYTHING"]
