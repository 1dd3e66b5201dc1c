"""The storm after each fork and the lives of forked children: their windows worked out by hand and against a
brute-force reading of the definition, and what the replays (model and engine) count inside them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import FOLIO_SETTINGS, POLICIES, event_streams, folio_streams, snapshot_streams

from cowahead.model.costs import CostModel
from cowahead.results.intervals import STORM_NS, child_lives, merge, storm_windows
from cowahead.results.rows import simulate_engine, simulate_reference
from cowahead.trace import Trace
from cowahead.trace.events import EventKind

MS = 1_000_000
COSTS = CostModel(cow_fault_us=1.0, ahead_copy_us=0.5, ahead_call_us=2.0, ahead_reuse_us=0.1)
FORK, WRITE, EXIT, EXEC = int(EventKind.FORK), int(EventKind.WRITE), int(EventKind.EXIT), int(EventKind.EXEC)


def columns(times, kinds, pids=None, args=None) -> dict:
    n = len(times)
    return {"time_ns": np.array(times, np.int64), "kind": np.array(kinds, np.int8),
            "pid": np.array(pids if pids is not None else [1] * n, np.int32),
            "arg": np.array(args if args is not None else [0] * n, np.int64)}


def chunked(c: dict, cuts: list[int]) -> list[dict]:
    bounds = [0, *sorted(cuts), len(c["kind"])]
    return [{k: v[lo:hi] for k, v in c.items()} for lo, hi in zip(bounds, bounds[1:])]


def test_storm_windows_by_hand():
    # forks at 0 and 50 ms merge into one window to 150 ms; a fork at 400 ms opens another to 500 ms
    times = [0, 10 * MS, 50 * MS, 120 * MS, 149 * MS, 150 * MS, 300 * MS, 400 * MS, 450 * MS, 600 * MS]
    kinds = [FORK, WRITE, FORK, WRITE, WRITE, WRITE, WRITE, FORK, WRITE, WRITE]
    assert storm_windows([columns(times, kinds)]) == [(0, 5), (7, 9)]
    assert storm_windows([columns(times, kinds)], window_ns=10 * MS) == [(0, 1), (2, 3), (7, 8)]
    assert storm_windows([columns([5, 6], [WRITE, WRITE])]) == []


def test_a_storm_runs_to_the_trace_end_across_chunks():
    c = columns([0, 1, 2, 3, 4], [WRITE, FORK, WRITE, WRITE, WRITE])
    assert storm_windows(chunked(c, [2, 3])) == [(1, 5)]


def inside_by_definition(times, kinds, window_ns) -> list[bool]:
    """An event is in a storm when some fork at or before it happened less than window_ns before it."""
    return [any(kinds[j] == FORK and times[i] < times[j] + window_ns for j in range(i + 1))
            for i in range(len(times))]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from([FORK, WRITE, WRITE])), max_size=40),
       st.lists(st.integers(0, 40), max_size=4), st.integers(1, 150))
def test_storm_windows_equal_the_definition_in_any_chunking(events, cuts, window):
    times, kinds = [t for t, _ in events], [k for _, k in events]  # times need not be sorted
    c = columns(times, kinds)
    windows = storm_windows(chunked(c, [x for x in cuts if x <= len(times)]), window_ns=window)
    marked = [False] * len(times)
    for start, end in windows:
        assert start < end
        marked[start:end] = [True] * (end - start)
    assert marked == inside_by_definition(times, kinds, window)
    assert all(a[1] < b[0] for a, b in zip(windows, windows[1:]))  # apart: touching ones would be one run


def test_child_lives_by_hand():
    # pid 1 forks 2 (exits at 4) and 3 (execs at 6); 3's second fork child 5 never exits
    kinds = [FORK, WRITE, FORK, WRITE, EXIT, WRITE, EXEC, WRITE, FORK, WRITE, WRITE]
    pids = [1, 1, 1, 2, 2, 1, 3, 1, 1, 1, 1]
    args = [2, 0, 3, 0, 0, 0, 0, 0, 5, 0, 0]
    c = columns(list(range(len(kinds))), kinds, pids, args)
    assert child_lives([c]) == [(0, 6), (8, 11)]  # (0, 4) and (2, 6) merged: each ends before its exit or exec
    assert child_lives(chunked(c, [3, 5, 9])) == [(0, 6), (8, 11)]


def test_merge():
    assert merge([(5, 8), (0, 2), (2, 3), (7, 9)]) == [(0, 3), (5, 9)]


def storm_then_calm() -> Stream:
    """64 written pages, a fork; the parent writes pages 0–9 at once, 10–17 a second later; the child exits;
    the parent writes 18–25, which are its own by then."""
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(1, *range(10))
    return s.wait(1000 * MS).write(1, *range(10, 18)).exit(2).write(1, *range(18, 26))


@pytest.mark.parametrize("simulate", [simulate_reference, simulate_engine])
def test_the_stall_after_fork_counts_the_storm_only(simulate):
    none, fixed = simulate(storm_then_calm().trace(), ["none", "fixed:4"], COSTS)
    # none: ten COW faults in the storm, eight after it, each 1 µs; 18–25 are reused (no stall counted)
    assert none["stall_after_fork_us"] == pytest.approx(10.0)
    assert none["stall_total_us"] == pytest.approx(18.0)
    # fixed:4 in the storm: faults at 0, 4, 8, each copying 3 ahead (8's reach 9–11): 3 × (1 + 1.5 + 2)
    assert fixed["stall_after_fork_us"] == pytest.approx(13.5)
    # after it: 10 and 11 were copied ahead; faults at 12 and 16 copy 3 each (16's reach 17–19)
    assert fixed["stall_total_us"] == pytest.approx(13.5 + 2 * 4.5)
    # while the child lived: none copied 0–17, fixed:4 0–19
    assert (none["child_copied_pages"], fixed["child_copied_pages"]) == (18, 20)


def test_storm_stall_equals_the_whole_stall_when_every_fault_is_in_it():
    s = Stream().mmap(1, 0, 32).write(1, *range(32)).fork(1, 2).write(2, *range(0, 32, 3)).write(1, *range(32))
    for row in simulate_engine(s.trace(), ["none", "fixed:8", "around:16", "adaptive"], CostModel()):
        assert row["stall_after_fork_us"] == pytest.approx(row["stall_total_us"]), row["policy"]
    assert STORM_NS == 100 * MS


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(event_streams(), snapshot_streams(), folio_streams(max_ops=25)), st.sampled_from(FOLIO_SETTINGS),
       st.sampled_from(POLICIES), st.data())
def test_the_engine_and_the_model_agree_on_the_intervals(stream, thp, policy, data):
    """Each event is given a random gap after the last, so forks' storms end anywhere; what the engine counts
    inside them and in the child lives is what the model counts, and never more than the whole trace."""
    trace = stream.trace(thp)
    gaps = data.draw(st.lists(st.sampled_from([0, MS, 60 * MS, 200 * MS]), min_size=len(trace), max_size=len(trace)))
    trace = Trace({**trace.columns, "time_ns": np.cumsum(gaps, dtype=np.int64)}, trace.metadata)
    [model] = simulate_reference(trace, [policy], COSTS)
    [engine] = simulate_engine(trace, [policy], COSTS)
    assert engine["intervals"] == model["intervals"]
    assert engine["stall_after_fork_us"] == pytest.approx(model["stall_after_fork_us"])
    assert model["stall_after_fork_us"] <= model["stall_total_us"] + 1e-6
    assert model["child_copied_pages"] <= model["pages_copied"]
