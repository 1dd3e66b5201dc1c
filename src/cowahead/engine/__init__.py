"""The fast replay engine: the reference model's counters, compiled with numba.

``replay_engine(trace, ["none", "fixed:16", ...])`` streams the trace once
(after one pre-pass for its page space, and one more for the oracle's
future) and replays every policy on each chunk. Its counters equal the
reference model's exactly (tests/test_engine.py); memory contents are not
modelled.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..model.counters import FIELD_NAMES, Counters
from ..policies import OraclePolicy, parse_policy
from ..trace.parquet import ROW_GROUP_ROWS
from . import core
from .prepass import PageSpace, TraceSource, decode, future, in_memory_if_small, iter_chunks, page_space
from .state import State, grow, new_state

if FIELD_NAMES != ["events", "zero_fill", "zero_page", "map", "cow_copy", "reuse", "outside_vma", "ahead_copies",
                   "ahead_reuses", "ahead_batches", "ahead_hits", "ahead_waste", "extra_pages", "extra_pages_peak",
                   "extra_pages_final", "resident", "resident_peak"]:
    raise ImportError("model/counters.py changed its fields: update engine/core.py's C_* indices")


def replay_chunk(st: State, d, first_index: int) -> State:
    """Replay one decoded chunk, growing the state's pools whenever an event needs room."""
    resume, n = 0, len(d.kind)
    while True:
        resume = core.replay_chunk(st, d.kind, d.pid, d.arg, d.address, d.length, d.dlo, d.dhi, first_index, resume,
                                    d.scattered)
        if resume == n:
            return st
        st = grow(st)


def to_counters(st: State) -> Counters:
    return Counters(**{name: int(v) for name, v in zip(FIELD_NAMES, st.counters)})


def replay_engine(source: TraceSource, policies: Sequence[str], space: PageSpace | None = None,
                  chunk_rows: int = ROW_GROUP_ROWS,
                  progress: Callable[[int], None] = lambda events: None) -> list[Counters]:
    """Replay ``source`` (a Trace, TraceFile or path) under each policy string; counters in order.

    ``space`` skips the page-space pre-pass when the caller already has it;
    ``chunk_rows`` sets the chunk size of an in-memory trace (a file's row groups are its chunks);
    ``progress`` hears the events of each chunk once every policy has replayed it.
    """
    parsed = [parse_policy(p) for p in policies]
    source = in_memory_if_small(source)
    space = space or page_space(source, chunk_rows)
    oracle_future = future(source, space, chunk_rows) if any(isinstance(p, OraclePolicy) for p in parsed) else None
    states = [new_state(space, p, oracle_future) for p in parsed]
    first_index = 0
    for chunk in iter_chunks(source, chunk_rows):
        d = decode(chunk, space)
        states = [replay_chunk(st, d, first_index) for st in states]
        first_index += len(d.kind)
        progress(len(d.kind))
    for st in states:
        core.finish(st)
    return [to_counters(st) for st in states]


__all__ = ["replay_engine", "page_space", "PageSpace", "TraceSource"]
