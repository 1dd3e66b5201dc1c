"""Invariants of the model on random event streams, under every policy."""

from hypothesis import given, settings, strategies as st

from streams import POLICIES, event_streams, snapshot_streams
from cowahead.model import Kernel
from cowahead.policies import parse_policy

SETTINGS = settings(max_examples=150, deadline=None)


def replay(stream, policy: str) -> tuple[Kernel, list[int]]:
    kernel, reads = Kernel(parse_policy(policy)), []
    kernel.replay(stream.trace(), reads)
    return kernel, reads


@SETTINGS
@given(st.one_of(event_streams(), snapshot_streams()), st.sampled_from(POLICIES))
def test_map_counts_equal_the_ptes_after_every_event(stream, policy):
    kernel = Kernel(parse_policy(policy))
    trace = stream.trace()
    kernel.policy.prepare(trace)
    for index, event in enumerate(trace.events()):
        kernel.apply(event, index)
        kernel.check_invariants()


@SETTINGS
@given(event_streams(), st.sampled_from(POLICIES))
def test_no_frame_leaks_once_every_process_has_exited(stream, policy):
    trace = stream.trace()
    pids = {int(p) for p in trace.columns["pid"]} | {int(a) for k, a in zip(trace.columns["kind"], trace.columns["arg"]) if k == 5}
    for pid in sorted(pids):
        stream.exit(pid)
    kernel, _ = replay(stream, policy)
    assert kernel.live == {}
    assert kernel.counters.resident == 0 and kernel.counters.extra_pages == 0


@SETTINGS
@given(st.one_of(event_streams(), snapshot_streams()))
def test_cow_ahead_changes_cost_never_what_a_process_reads(stream):
    _, expected = replay(stream, "none")
    for policy in POLICIES[1:]:
        assert replay(stream, policy)[1] == expected, policy


@SETTINGS
@given(event_streams(cow_only=True), st.sampled_from([p for p in POLICIES if p.startswith(("fixed", "around"))]))
def test_fixed_and_around_never_fault_more_than_none_on_cow_only_streams(stream, policy):
    none, _ = replay(stream, "none")
    ahead, _ = replay(stream, policy)
    assert ahead.counters.faults <= none.counters.faults


@SETTINGS
@given(event_streams(), st.sampled_from(["oracle:2", "oracle:4", "oracle:16", "oracle:512"]))
def test_oracle_wastes_nothing(stream, policy):
    c = replay(stream, policy)[0].counters
    assert c.ahead_waste == 0 and c.ahead_hits == c.ahead_copies


@SETTINGS
@given(st.one_of(event_streams(), snapshot_streams()), st.sampled_from(POLICIES))
def test_every_ahead_copy_is_a_hit_or_waste(stream, policy):
    c = replay(stream, policy)[0].counters
    assert c.ahead_hits + c.ahead_waste == c.ahead_copies
    assert c.extra_pages_peak <= c.ahead_copies
