"""The fast replay engine: the reference model's counters, compiled with numba.

``replay_engine(trace, ["none", "fixed:16", ...])`` streams the trace once
(after one pre-pass for its page space, and one more for the oracle's
future) and replays every policy on each chunk. Its counters equal the
reference model's exactly (tests/test_engine.py); memory contents are not
modelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import EngineUnsupported
from ..model.counters import FIELD_NAMES, Counters
from ..model.folio import FolioSettings
from ..policies import OraclePolicy, Policy, parse_policies
from ..trace.events import Advice, EventKind
from ..trace.parquet import ROW_GROUP_ROWS, TraceFile
from ..trace.trace import Trace
from . import layout, replay
from .prepass import Decoded, PageSpace, TraceSource, decoded_chunks, future, in_memory_if_small, page_space
from .state import State, grow, log_room, new_state


def replay_chunk(st: State, d, first_index: int) -> State:
    """Replay one decoded chunk, growing the state's pools whenever an event needs room."""
    resume, n = 0, len(d.kind)
    while True:
        resume = replay.replay_chunk(st, d.kind, d.pid, d.arg, d.address, d.length, d.dlo, d.dhi, first_index, resume,
                                    d.scattered)
        if resume == n:
            return st
        st = grow(st)


def folio_settings(source: TraceSource) -> FolioSettings:
    """The folio settings a trace was made under (columns alone carry none: 4 KiB pages)."""
    if isinstance(source, (str, Path)):
        source = TraceFile(source)
    return FolioSettings.from_metadata(source.metadata if isinstance(source, (Trace, TraceFile)) else {})


def refuse_large_folios(folios: FolioSettings, d: Decoded | None = None) -> None:
    """The engine replays 4 KiB pages in VMAs that madvise leaves whole, so far. A trace whose settings let a
    fault map a large folio in any VMA, or (seen in chunk ``d``) that asks MADV_HUGEPAGE where THP may follow
    it, MADV_COLLAPSE (which makes THPs whatever the knobs say), or MADV_(NO)HUGEPAGE at all (both split
    VMAs, in the kernel and the model; benchmarks/fuzz_trace.py found the engine's windows then clipped at
    different VMA ends) is one for the reference model."""
    reasons = []
    if folios.anon_orders(hugepage=False):
        reasons.append("large folios: " + ", ".join(f"{k}={v}" for k, v in folios.as_thp().items()
                                                    if v not in ("never", "inherit", "1")))
    if d is not None:
        advice = d.arg[d.kind == EventKind.MADVISE]
        if np.any(advice == Advice.COLLAPSE):
            reasons.append("MADV_COLLAPSE, which makes THPs")
        if np.any((advice == Advice.HUGEPAGE) | (advice == Advice.NOHUGEPAGE)):
            reasons.append("MADV_HUGEPAGE or MADV_NOHUGEPAGE, which split VMAs"
                           + (" and let THP follow" if folios.anon_orders(hugepage=True) else ""))
    if reasons:
        raise EngineUnsupported(f"the fast engine cannot replay this trace yet ({'; '.join(reasons)}); use the "
                                "reference model (cowahead simulate --reference)")


def to_counters(st: State) -> Counters:
    return Counters(**{name: int(v) for name, v in zip(FIELD_NAMES, st.counters)})


def replay_states(source: TraceSource, policies: Sequence[str | Policy], space: PageSpace | None = None,
                  chunk_rows: int = ROW_GROUP_ROWS, progress: Callable[[int], None] = lambda events: None,
                  log_faults: Sequence[str] = (), decoded: list[Decoded] | None = None,
                  folios: FolioSettings | None = None) -> list[State]:
    """Replay ``source`` (a Trace, TraceFile, columns or path) under each policy; the final states, in order.

    ``space`` skips the page-space pre-pass when the caller already has it;
    ``chunk_rows`` sets the chunk size of an in-memory trace (a file's row groups are its chunks);
    ``progress`` hears the events of each chunk once every policy has replayed it;
    the policies named in ``log_faults`` keep the model's fault log (``fault_log``);
    ``decoded``: the trace's chunks already decoded (``decoded_chunks``), kept by a caller that replays
    the same trace again; ``folios``: the trace's folio settings, for a caller handing over bare columns
    (by default read from the trace's metadata).
    """
    parsed = parse_policies(policies)
    folios = folios or folio_settings(source)
    refuse_large_folios(folios)
    source = in_memory_if_small(source)
    space = space or page_space(source, chunk_rows)
    oracle_future = (future(source, space, chunk_rows, decoded) if any(isinstance(p, OraclePolicy) for p in parsed)
                     else None)
    states = [new_state(space, p, oracle_future, p.name in log_faults) for p in parsed]
    logging = any(len(st.fault_log) for st in states)
    first_index = 0
    for d in decoded_chunks(source, space, chunk_rows, decoded):
        refuse_large_folios(folios, d)
        if logging:  # room for one fault per page the chunk accesses; a replay without a log skips the sum
            accessed = int((d.dhi - d.dlo).sum())
            states = [log_room(st, accessed) for st in states]
        states = [replay_chunk(st, d, first_index) for st in states]
        first_index += len(d.kind)
        progress(len(d.kind))
    for st in states:
        replay.finish(st)
    return states


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


__all__ = ["replay_engine", "replay_states", "fault_log", "decoded_chunks", "page_space", "PageSpace",
           "TraceSource"]
