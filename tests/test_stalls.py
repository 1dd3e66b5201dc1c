"""Stalls and memory over time: each COW fault's batch and the counters at sample points, counted by the model
and the engine alike, and worked out by hand."""

from __future__ import annotations

import pytest
from conftest import Stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import FOLIO_SETTINGS, POLICIES, event_streams, folio_streams, snapshot_streams

from cowahead.engine import cow_batches, replay_states, samples, to_counters
from cowahead.model import Kernel
from cowahead.model.costs import CostModel
from cowahead.policies import parse_policy
from cowahead.results.memory import memory_series, sample_points
from cowahead.results.rows import simulate_engine, simulate_reference
from cowahead.results.stalls import batch_stall_us, percentile, stall_distribution, stall_summary
from cowahead.trace.events import Advice

# Round numbers, so that every stall below can be added up by hand.
COSTS = CostModel(cow_fault_us=1.0, zero_fill_us=0.25, zero_page_us=0.125, map_us=0.5, reuse_us=0.375,
                  ahead_copy_us=0.5, ahead_call_us=2.0, ahead_reuse_us=0.1)


def model_batches(trace, policy: str) -> dict:
    kernel = Kernel(parse_policy(policy))
    kernel.replay(trace)
    return dict(kernel.cow_batches)


def child_writes_half() -> Stream:
    """64 pages written by the parent, a child writes the first 32 in order."""
    return Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, *range(32))


def copies_then_reuses() -> Stream:
    """8 pages; the child writes 4–7 (under fixed:8 one fault, 5–7 copied ahead); then the parent writes 0:
    1–3 are still shared (copied ahead), 4–7 are the parent's alone once the child copied them (reused)."""
    return Stream().mmap(1, 0, 8).write(1, *range(8)).fork(1, 2).write(2, 4, 5, 6, 7).write(1, 0)


def test_none_counts_one_empty_batch_per_cow_fault():
    assert model_batches(child_writes_half().trace(), "none") == {(0, 0): 32}


def test_fixed_8_on_sequential_writes_counts_four_batches_of_seven_copies():
    assert model_batches(child_writes_half().trace(), "fixed:8") == {(7, 0): 4}


def test_a_batch_of_copies_and_reuses():
    assert model_batches(copies_then_reuses().trace(), "fixed:8") == {(3, 0): 1, (3, 4): 1}
    assert model_batches(copies_then_reuses().trace(), "none") == {(0, 0): 5}


def test_a_batch_stall_by_hand():
    assert batch_stall_us(0, 0, COSTS) == 1.0                            # the trap and copy only: no batch
    assert batch_stall_us(7, 0, COSTS) == pytest.approx(1 + 7 * 0.5 + 2)  # 6.5
    assert batch_stall_us(3, 4, COSTS) == pytest.approx(1 + 3 * 0.5 + 4 * 0.1 + 2)  # 4.9
    assert batch_stall_us(0, 2, COSTS) == pytest.approx(1 + 0.2 + 2)


def test_percentiles_by_nearest_rank():
    from cowahead.model.counters import Counters
    counts = Counters(cow_copy=100, cow_copy_pages=100)
    distribution = stall_distribution({(0, 0): 98, (7, 0): 1, (15, 0): 1}, counts, COSTS)
    assert distribution == [(1.0, 98), (6.5, 1), (10.5, 1)]
    assert percentile(distribution, 50) == 1.0
    assert percentile(distribution, 98) == 1.0   # the 98th fault of 100
    assert percentile(distribution, 99) == 6.5   # the 99th
    assert percentile(distribution, 100) == 10.5
    summary = stall_summary({(0, 0): 98, (7, 0): 1, (15, 0): 1}, counts, COSTS)
    assert summary == {"cow_faults": 100, "stall_total_us": 98 + 6.5 + 10.5, "stall_p50_us": 1.0,
                       "stall_p99_us": 6.5, "stall_max_us": 10.5}


def test_a_whole_thp_copy_is_one_long_stall():
    """thp-cow: the child's first write copies the 512-page THP in one fault (cow_copy_pages 512)."""
    s = Stream().mmap(1, 0, 512).madvise(1, 0, 512, Advice.HUGEPAGE).write(1, *range(512)).fork(1, 2).write(2, 3)
    [row] = simulate_reference(s.trace({"enabled": "madvise"}), ["thp-cow"], COSTS)
    assert (row["cow_faults"], row["stall_max_us"]) == (1, pytest.approx(1 + 511 * 0.5))
    assert row["cow_batches"] == []  # no window: not in the 4 KiB histogram


@pytest.mark.parametrize("stream, policy, p50, p99, worst, faults", [
    (child_writes_half, "none", 1.0, 1.0, 1.0, 32),
    (child_writes_half, "fixed:8", 6.5, 6.5, 6.5, 4),
    (copies_then_reuses, "fixed:8", 4.5, 4.9, 4.9, 2),
])
def test_rows_carry_the_stalls_in_the_engine_and_the_model(stream, policy, p50, p99, worst, faults):
    trace = stream().trace()
    for row in simulate_engine(trace, [policy], COSTS) + simulate_reference(trace, [policy], COSTS):
        assert (row["cow_faults"], row["stall_p50_us"], row["stall_p99_us"], row["stall_max_us"]) == \
            (faults, pytest.approx(p50), pytest.approx(p99), pytest.approx(worst))


def cow_part_of_predict_us(c, costs: CostModel) -> float:
    """predict_us without what no COW fault costs: zero fills (a THP's extra pages too), zero pages, maps,
    reuse faults."""
    return (costs.predict_us(c) - c.zero_fill * costs.zero_fill_us - c.zero_page * costs.zero_page_us
            - c.map * costs.map_us - c.reuse * costs.reuse_us
            - max(0, c.zero_fill_pages - c.zero_fill) * costs.ahead_copy_us)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(event_streams(), snapshot_streams(), folio_streams(max_ops=25)), st.sampled_from(FOLIO_SETTINGS),
       st.sampled_from(POLICIES))
def test_the_stalls_add_up_to_the_cow_part_of_the_predicted_time(stream, thp, policy):
    """Every COW fault is in the histogram or a whole-folio copy, and every ahead page in some batch."""
    trace = stream.trace(thp)
    kernel = Kernel(parse_policy(policy))
    c = kernel.replay(trace)
    summary = stall_summary(kernel.cow_batches, c, COSTS)
    assert summary["cow_faults"] == c.cow_copy
    assert sum(n for (a, r), n in kernel.cow_batches.items() if a + r) == c.ahead_batches
    assert sum(a * n for (a, r), n in kernel.cow_batches.items()) == c.ahead_copies
    assert sum(r * n for (a, r), n in kernel.cow_batches.items()) == c.ahead_reuses
    assert summary["stall_total_us"] == pytest.approx(cow_part_of_predict_us(c, COSTS), abs=1e-3)


def test_the_engine_sizes_its_histogram_by_the_window():
    """none keeps one bin; fixed:512 513 × 513; the model and the engine agree (tests/test_engine.py holds
    them equal on every stream). The child's first write copies the rest of the 64-page VMA ahead."""
    trace = child_writes_half().trace()
    none, fixed = replay_states(trace, ["none", "fixed:512"])
    assert none.cow_batches.shape == (1, 1) and fixed.cow_batches.shape == (513, 513)
    assert cow_batches(fixed) == model_batches(trace, "fixed:512") == {(63, 0): 1}
    assert to_counters(fixed).ahead_copies == 63


# ----- memory over time --------------------------------------------------------------------------


@pytest.mark.parametrize("policy, after_first_copy", [("none", (0, 1, 65)), ("fixed:8", (7, 8, 72))])
def test_memory_over_time_by_hand(policy, after_first_copy):
    """Events: mmap, 64 writes, fork (66 events), then the child's 32 writes. After event 67 (the child's
    first write) fixed:8 has copied page 0 and 7 pages ahead, none unwritten yet; at the end all 32 are
    written. (extra pages, pages copied, resident) at 66, 67 and 98 events, in the engine and the model."""
    trace = child_writes_half().trace()
    points = [66, 67, 98]
    expected = [(0, 0, 64), after_first_copy, (0, 32, 96)]
    [st] = replay_states(trace, [policy], sample_points=points)
    kernel = Kernel(parse_policy(policy))
    kernel.replay(trace, sample_points=points)
    for series in (memory_series(points, samples(st)), memory_series(points, kernel.samples)):
        assert series["events"] == points
        assert list(zip(series["extra_pages"], series["pages_copied"], series["resident"])) == expected


def test_sample_points_are_bounded_and_end_at_the_trace_end():
    assert sample_points(10, 4) == [2, 5, 8, 10]  # round(2.5) is 2: Python rounds half to even
    assert sample_points(3, 64) == [1, 2, 3]
    assert sample_points(0) == []
    assert len(sample_points(10_000_000)) == 64
