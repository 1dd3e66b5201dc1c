"""Intervals of a trace's events that a result measures by the counters at their ends.

Two kinds, both lists of [start, end) event counts, ascending, overlapping ones merged:

- **storm** windows: the events within 100 ms after each fork. The parent's COW faults crowd there, and a
  server's latency suffers there (results/stalls.py prices them).
- **child lives**: from each fork to its child's exit or exec. The pages copied in them, on demand or
  ahead, are the pages a snapshot child ends up owning alone: Redis's ``rdb_last_cow_size`` less the
  child's own new pages, which no policy changes.

A replay keeps its counters after the intervals' ends (its sample points, as for memory over time); the
change across each interval, summed, is what happened inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..model.counters import Counters
from ..trace import Trace, TraceFile
from ..trace.events import EventKind
from .memory import memory_series, sample_points

STORM_NS = 100_000_000  # the first 100 ms after a fork
NEVER = np.iinfo(np.int64).min

# What each kind of interval needs of the counters.
STORM_FIELDS = ("cow_copy", "cow_copy_pages", "ahead_copies", "ahead_reuses", "ahead_batches")
COPY_FIELDS = ("cow_copy_pages", "ahead_copies")

Interval = tuple[int, int]


def storm_windows(chunks: Iterable[Mapping[str, np.ndarray]], window_ns: int = STORM_NS) -> list[Interval]:
    """The events within ``window_ns`` after a fork. ``chunks``: the trace's time_ns and kind columns in
    order, a row group at a time. An event is in a window when its time is before the latest end of any
    fork at or before it: a running maximum, so times need not be sorted and overlapping windows merge."""
    windows: list[Interval] = []
    end_ns, start, first = NEVER, -1, 0  # carried from chunk to chunk; start -1: no window open
    for c in chunks:
        time_ns = np.asarray(c["time_ns"], np.int64)
        ends = np.where(np.asarray(c["kind"]) == EventKind.FORK, time_ns + window_ns, NEVER)
        running = np.maximum(np.maximum.accumulate(ends), end_ns) if len(ends) else ends
        inside = time_ns < running
        changes = np.flatnonzero(np.diff(np.concatenate(([start >= 0], inside)).astype(np.int8)))
        for k in changes:  # each event whose insideness differs from the event before it
            if inside[k]:
                start = first + int(k)
            else:
                windows.append((start, first + int(k)))
                start = -1
        if len(ends):
            end_ns = int(running[-1])
        first += len(ends)
    if start >= 0:
        windows.append((start, first))
    return windows


def child_lives(chunks: Iterable[Mapping[str, np.ndarray]]) -> list[Interval]:
    """From each fork to the first exit or exec of its child (or the trace's end). ``chunks``: the kind,
    pid and arg columns in order."""
    born: dict[int, int] = {}  # a child alive now: the event count at its fork
    lives: list[Interval] = []
    first = 0
    for c in chunks:
        kind = np.asarray(c["kind"])
        for k in np.flatnonzero((kind == EventKind.FORK) | (kind == EventKind.EXIT) | (kind == EventKind.EXEC)):
            if kind[k] == EventKind.FORK:
                born[int(c["arg"][k])] = first + int(k)
            elif int(c["pid"][k]) in born:
                lives.append((born.pop(int(c["pid"][k])), first + int(k)))
        first += len(kind)
    lives.extend((start, first) for start in born.values())
    return merge(lives)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Ascending, with overlapping or touching intervals joined."""
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def interval_points(*kinds: Sequence[Interval]) -> list[int]:
    """The event counts at which a replay keeps its counters to measure these intervals."""
    return sorted({p for intervals in kinds for interval in intervals for p in interval})


def interval_change(intervals: Sequence[Interval], at: Mapping[int, Counters], fields: Sequence[str]) -> dict[str, int]:
    """The change of ``fields`` inside the intervals, summed, from the counters kept after each event count
    in ``at`` (count 0, before any event, is all zeros: a replay keeps no sample there)."""
    zero = Counters()
    return {name: sum(getattr(at.get(end, zero), name) - getattr(at.get(start, zero), name)
                      for start, end in intervals) for name in fields}


class Sampling:
    """Where one trace's replay keeps its counters: memory's evenly spaced points and the intervals' ends;
    ``measure`` turns the counters kept there into what a row carries."""

    def __init__(self, memory: Sequence[int], storm: Sequence[Interval], lives: Sequence[Interval]) -> None:
        self.memory, self.storm, self.lives = list(memory), list(storm), list(lives)
        self.points = sorted(set(self.memory) | set(interval_points(self.storm, self.lives)))

    def measure(self, kept: Sequence[Counters]) -> dict:
        """``kept``: the counters after each point past 0, as the replay keeps them (its ``samples``)."""
        at = dict(zip([p for p in self.points if p > 0], kept))
        return {"memory": memory_series(self.memory, [at[p] for p in self.memory]),
                "intervals": {"storm_windows": len(self.storm), "storm": interval_change(self.storm, at, STORM_FIELDS),
                              "child_lives": len(self.lives),
                              "child_copies": interval_change(self.lives, at, COPY_FIELDS)}}


def sampling(source: Trace | TraceFile | Mapping[str, np.ndarray] | str | Path) -> Sampling:
    """The sampling of a trace: a Trace, its columns, or a file (streamed a row group at a time)."""
    if isinstance(source, (str, Path)):
        source = TraceFile(source)
    if isinstance(source, TraceFile):
        events, chunks = source.num_events, source.iter_chunks
    else:
        columns = source.columns if isinstance(source, Trace) else source
        events, chunks = len(columns["kind"]), lambda names: [columns]
    return Sampling(sample_points(events), storm_windows(chunks(("time_ns", "kind"))),
                    child_lives(chunks(("kind", "pid", "arg"))))
