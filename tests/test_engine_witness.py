"""The witness (engine/witness.py): none's replay, and which policies it shows replay as none.

Held on random event streams (hypothesis): the witness counts as none, and
every policy it says replays as none counts, batches and samples as none.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import event_streams, snapshot_streams
from test_engine import rough_streams

from cowahead.engine import cow_batches, replay_states, samples, to_counters
from cowahead.engine.witness import SAW_EVERYTHING, may_replay_as_none, replays_as_none, witness_saw
from cowahead.policies import parse_policies
from cowahead.results.memory import sample_points
from cowahead.trace.generators import generate

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Every policy a witness may tell apart, the sweep's windows and more (a threshold below the default, small regions)
HELD = ["fixed:1", "fixed-behind:1", "around:1", "oracle:1", "adaptive:1", "adaptive:2", "adaptive:4", "adaptive",
        "adaptive:512", "ccow:1,0.7", "ccow:2,0.7", "ccow:4", "ccow:16,0.1", "ccow:64,1", "ccow"]


def replayed(trace, policies, chunk_rows, witness=True):
    """Each policy's counters, batches and samples, by the name given; and the states."""
    points = sample_points(len(trace), 5)
    states = replay_states(trace, policies, chunk_rows=chunk_rows, sample_points=points, witness=witness)
    return {p: (to_counters(s), cow_batches(s), samples(s)) for p, s in zip(policies, states)}, states


@SETTINGS
@given(st.one_of(event_streams(), event_streams(cow_only=True), snapshot_streams(), rough_streams()),
       st.integers(1, 64))
def test_what_the_witness_shows_replays_as_none(stream, chunk_rows):
    trace = stream.trace()
    plain = replayed(trace, ["none"], chunk_rows, witness=False)[0]["none"]
    rows, states = replayed(trace, ["none"] + HELD, chunk_rows)
    assert rows["none"] == plain  # the witness counts, batches and samples as none
    saw = witness_saw(states[0])
    for name, policy in zip(HELD, parse_policies(HELD)):
        if replays_as_none(policy, saw):
            assert rows[name] == plain, name


def test_the_witness_tells_the_random_trace_apart_and_not_the_sequential():
    """On the random generator no adaptive ramps and no ccow has history: all replay as none; sequential ramps."""
    held = parse_policies(["adaptive:1", "adaptive:512", "ccow:1,0.7", "ccow", "fixed:1", "fixed:2"])
    for pattern, adaptive_as_none in (("random", True), ("sequential", False)):
        trace = generate(pattern, pages=2048, seed=0)
        rows, states = replayed(trace, ["none"] + [p.name for p in held], 1 << 20)
        saw = witness_saw(states[0])
        for policy in held:
            expected = policy.family == "ccow" or policy.name == "fixed:1" or (policy.family == "adaptive"
                                                                                and adaptive_as_none)
            assert replays_as_none(policy, saw) == expected, (pattern, policy.name)
            if expected:
                assert rows[policy.name] == rows["none"], (pattern, policy.name)


def test_a_plain_none_or_another_policy_shows_nothing():
    trace = generate("random", pages=256, seed=0)
    plain, fixed = replay_states(trace, ["none", "fixed:16"])  # no witness asked for
    assert witness_saw(plain) == witness_saw(fixed) == SAW_EVERYTHING
    assert not replays_as_none(parse_policies(["adaptive"])[0], SAW_EVERYTHING)
    assert replays_as_none(parse_policies(["none"])[0], SAW_EVERYTHING)


def test_only_powers_of_two_regions_and_one_page_windows_are_held():
    names = {"ccow:16,0.1": True, "ccow:3": False, "ccow-published": False, "fixed:2": False, "oracle:1": True,
             "around:1": True, "adaptive:5": True, "folio": False, "none": True}
    for (name, expected), policy in zip(names.items(), parse_policies(list(names))):
        assert may_replay_as_none(policy) == expected, name
