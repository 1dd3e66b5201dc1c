"""``fixed-behind:N`` (the exercise of issue 17): hand-computed cases, in the model and the engine."""

from __future__ import annotations

import pytest
from conftest import Stream

from cowahead.engine import replay_engine
from cowahead.errors import CowaheadError
from cowahead.model import Kernel
from cowahead.policies import parse_policy


def downward_child() -> Stream:
    """A parent fills 16 pages and forks; the child writes page 10, then 9 and 8, and exits."""
    s = Stream().mmap(1, 0, 16).write(1, *range(16)).fork(1, 2)
    return s.write(2, 10, 9, 8).exit(2)


@pytest.mark.parametrize("replay", ["model", "engine"])
def test_the_window_is_the_pages_behind_the_fault(replay):
    trace = downward_child().trace()
    c = Kernel(parse_policy("fixed-behind:4")).replay(trace) if replay == "model" else \
        replay_engine(trace, ["fixed-behind:4"])[0]
    # the COW fault at 10 copies 10 and, behind it, 7, 8 and 9 in one batch; 9 and 8 are then written
    # without a fault (hits), 7 never is and goes with the child (waste)
    assert (c.zero_fill, c.cow_copy, c.ahead_copies, c.ahead_batches) == (16, 1, 3, 1)
    assert (c.ahead_hits, c.ahead_waste, c.extra_pages_peak, c.faults) == (2, 1, 3, 17)


@pytest.mark.parametrize("replay", ["model", "engine"])
def test_the_window_stops_at_the_vma_start(replay):
    trace = Stream().mmap(1, 0, 16).write(1, *range(16)).fork(1, 2).write(2, 1).exit(2).trace()
    c = Kernel(parse_policy("fixed-behind:8")).replay(trace) if replay == "model" else \
        replay_engine(trace, ["fixed-behind:8"])[0]
    assert (c.cow_copy, c.ahead_copies, c.ahead_waste) == (1, 1, 1)  # only page 0 lies behind page 1


def test_fixed_behind_is_fixed_mirrored():
    """Written upwards, fixed:4 saves what fixed-behind:4 saves written downwards."""
    up = Stream().mmap(1, 0, 16).write(1, *range(16)).fork(1, 2).write(2, *range(16)).exit(2).trace()
    down = Stream().mmap(1, 0, 16).write(1, *range(16)).fork(1, 2).write(2, *range(15, -1, -1)).exit(2).trace()
    fixed, behind = replay_engine(up, ["fixed:4"])[0], replay_engine(down, ["fixed-behind:4"])[0]
    assert fixed == behind and behind.cow_copy == 4 and behind.ahead_copies == 12


@pytest.mark.parametrize("bad", ["fixed-behind", "fixed-behind:0", "fixed-behind:513", "fixed-behind:x"])
def test_bad_windows_are_one_clear_error(bad):
    with pytest.raises(CowaheadError, match="fixed-behind"):
        parse_policy(bad)
