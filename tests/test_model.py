"""Hand-computed cases for every fault kind and every policy."""

import pytest

from conftest import BASE_PAGE, Stream
from cowahead.model import Kernel
from cowahead.model.memory import FrameKind
from cowahead.policies import parse_policy
from cowahead.trace import VmaKind


def run(stream: Stream, policy: str = "none") -> Kernel:
    kernel = Kernel(parse_policy(policy), log_faults=True)
    kernel.replay(stream.trace())
    kernel.check_invariants()
    return kernel


def logged(kernel: Kernel, kind: str, pid: int | None = None) -> list[int]:
    """Pages (relative to BASE) the log shows for one kind of fault or ahead action."""
    return [page - BASE_PAGE for _, p, page, k in kernel.fault_log if k == kind and pid in (None, p)]


def populated(pages: int = 16) -> Stream:
    return Stream().mmap(1, 0, pages).write(1, *range(pages)).fork(1, 2)


# ----- fault kinds (policy none) ----------------------------------------------------------

def test_write_to_unmapped_anonymous_page_is_zero_fill(stream):
    c = run(stream.mmap(1, 0, 4).write(1, 0, 1)).counters
    assert (c.zero_fill, c.faults, c.resident) == (2, 2, 2)


def test_read_maps_the_zero_page_and_a_later_write_copies_from_it(stream):
    k = run(stream.mmap(1, 0, 4).read(1, 0).write(1, 0))
    assert logged(k, "zero_page") == [0] and logged(k, "cow_copy") == [0]
    assert k.counters.zero_fill == 0 and k.counters.resident == 1


def test_write_after_fork_copies_in_the_child_and_reuses_in_the_parent():
    k = run(populated(4).write(2, 0).write(1, 0))
    assert logged(k, "cow_copy") == [0]
    assert logged(k, "reuse", pid=1) == [0]


def test_write_after_the_child_exits_reuses_without_a_copy():
    k = run(populated(4).exit(2).write(1, 0, 1))
    assert logged(k, "reuse") == [0, 1] and k.counters.cow_copy == 0


def test_second_write_to_a_copied_page_does_not_fault():
    k = run(populated(4).write(2, 0).write(2, 0))
    assert k.counters.cow_copy == 1 and k.counters.faults == 5


def test_dontneed_then_write_is_a_zero_fill_again():
    k = run(populated(4).dontneed(2, 0, 2).write(2, 0).read(2, 1))
    assert logged(k, "zero_fill", pid=2) == [0] and logged(k, "zero_page", pid=2) == [1]


def test_shared_anonymous_memory_is_never_copied(stream):
    s = stream.mmap(1, 0, 4, VmaKind.SHARED_ANON).write(1, 0).read(1, 1).fork(1, 2).write(2, 0).write(1, 1)
    k = run(s)
    assert k.counters.cow_copy == 0
    assert logged(k, "zero_fill") == [0, 1]          # shmem pages allocated on first touch
    assert logged(k, "map", pid=2) == [0]            # the child maps the parent's shmem page
    assert logged(k, "reuse", pid=1) == [1]          # write to a read-mapped shared page


def test_private_file_read_maps_the_page_cache_and_write_copies(stream):
    k = run(stream.mmap(1, 0, 4, VmaKind.PRIVATE_FILE).read(1, 0).write(1, 0).write(1, 1))
    assert logged(k, "map") == [0] and logged(k, "cow_copy") == [0, 1]
    assert k.processes[1].ptes[BASE_PAGE].frame.kind == FrameKind.ANON


def test_access_outside_every_vma_is_counted_not_replayed(stream):
    c = run(stream.mmap(1, 0, 2).write(1, 5)).counters
    assert c.outside_vma == 1 and c.faults == 0


def test_every_frame_is_freed_when_every_process_exits():
    k = run(populated(8).write(2, 1, 3).exec(2).exit(1))
    assert k.live == {} and k.counters.resident == 0


# ----- fixed:N ------------------------------------------------------------------------------

def test_fixed_copies_the_next_pages_after_a_cow_copy():
    k = run(populated(16).write(2, 4), "fixed:4")
    assert logged(k, "ahead_copies") == [5, 6, 7]
    assert k.counters.extra_pages_peak == 3


def test_fixed_stops_at_the_vma_end():
    k = run(populated(10).write(2, 7), "fixed:8")
    assert logged(k, "ahead_copies") == [8, 9]


def test_fixed_stops_at_the_end_of_a_vma_split_by_munmap():
    k = run(populated(16).munmap(2, 6, 1).write(2, 3), "fixed:8")
    assert logged(k, "ahead_copies") == [4, 5]


def test_fixed_does_nothing_after_a_reuse_or_zero_fill():
    k = run(populated(8).exit(2).write(1, 0), "fixed:8")
    assert k.counters.ahead_copies == 0 and k.counters.reuse == 1


def test_ahead_copies_written_later_are_hits_and_save_faults():
    k = run(populated(8).write(2, 0, 1, 2, 3), "fixed:4")
    c = k.counters
    assert (c.cow_copy, c.ahead_copies, c.ahead_hits, c.ahead_waste) == (1, 3, 3, 0)
    assert c.extra_pages_final == 0


@pytest.mark.parametrize("drop", ["munmap", "exec", "exit", "dontneed"])
def test_unwritten_ahead_copies_are_waste_when_dropped(drop):
    s = populated(8).write(2, 0, 1)          # page 0 faults; 1, 2, 3 copied ahead; 1 written
    if drop == "munmap":
        s.munmap(2, 2, 2)
    elif drop == "dontneed":
        s.dontneed(2, 2, 2)
    else:
        getattr(s, drop)(2)
    c = run(s, "fixed:4").counters
    assert (c.ahead_copies, c.ahead_hits, c.ahead_waste) == (3, 1, 2)


def test_unwritten_ahead_copies_at_a_fork_are_waste():
    k = run(populated(8).write(2, 0).fork(2, 3).write(2, 1), "fixed:4")
    c = k.counters
    assert c.cow_copy == 2  # the write after the fork faults again ...
    assert logged(k, "ahead_copies") == [1, 2, 3, 2, 3, 4]  # ... and copies its own window
    # 1, 2, 3 wasted at the fork; 2, 3, 4 unwritten at the end of the trace
    assert (c.ahead_copies, c.ahead_hits, c.ahead_waste) == (6, 0, 6)


def test_ahead_copies_still_unwritten_at_the_end_of_the_trace_count_as_waste():
    s = Stream().mmap(1, 0, 8).write(1, *range(8)).fork(1, 2).write(2, 0)
    c = run(s, "fixed:4").counters
    assert c.extra_pages_final == 3 and c.ahead_waste == 3


# ----- the exclusivity rule (CVE-2020-29374) ---------------------------------------------------

def test_ahead_pages_shared_with_another_process_are_copied_not_reused():
    k = run(populated(8).fork(1, 3).write(2, 0), "fixed:4")
    assert logged(k, "ahead_copies") == [1, 2, 3] and k.counters.ahead_reuses == 0
    for page in (1, 2, 3):  # the parent and the other child still share the old frames
        old = k.processes[1].ptes[BASE_PAGE + page].frame
        assert old is k.processes[3].ptes[BASE_PAGE + page].frame and old.mapcount == 2
        assert not k.processes[1].ptes[BASE_PAGE + page].writable


def test_an_exclusive_ahead_page_is_reused_without_a_copy():
    # The child broke COW on 6 and 7 (7 ahead), so the parent's 6 and 7 are exclusive again.
    k = run(populated(8).write(2, 6).write(1, 4), "fixed:4")
    assert logged(k, "ahead_copies", pid=2) == [7]
    assert logged(k, "ahead_copies", pid=1) == [5]
    assert logged(k, "ahead_reuses", pid=1) == [6, 7]


def test_ahead_copy_never_changes_what_the_other_process_reads():
    s = populated(8).write(1, 0, 1, 2).read(2, 0, 1, 2, 3)
    assert _reads(s, "fixed:8") == _reads(s, "none")


def _reads(stream: Stream, policy: str) -> list[int]:
    values: list[int] = []
    Kernel(parse_policy(policy)).replay(stream.trace(), values)
    return values


# ----- around:N ------------------------------------------------------------------------------------

def test_around_uses_the_aligned_window_holding_the_fault():
    k = run(populated(32).write(2, 21), "around:8")
    assert logged(k, "ahead_copies") == [16, 17, 18, 19, 20, 22, 23]


def test_around_is_clipped_to_the_vma_start():
    s = Stream().mmap(1, 3, 13).write(1, *range(3, 16)).fork(1, 2).write(2, 5)
    k = run(s, "around:8")
    assert logged(k, "ahead_copies") == [3, 4, 6, 7]


def test_around_is_clipped_to_the_page_table():
    # 1024 pages span two page tables; a fault in the second never reaches the first.
    k = run(populated(1024).write(2, 600), "around:512")
    ahead = logged(k, "ahead_copies")
    assert len(ahead) == 511 and min(ahead) == 512 and max(ahead) == 1023


# ----- adaptive --------------------------------------------------------------------------------------

def test_adaptive_ramps_up_on_sequential_faults():
    k = run(populated(200).write(2, *range(200)), "adaptive:32")
    batches: dict[int, int] = {}
    for index, _, _, kind in k.fault_log:
        if kind == "ahead_copies":
            batches[index] = batches.get(index, 0) + 1
    # a first fault is not yet sequential; then the readahead ramp 4, 8, 16, 32, 32, ...
    assert list(batches.values())[:6] == [4, 8, 16, 32, 32, 32]
    assert k.counters.ahead_waste == 0


def test_adaptive_stays_off_on_scattered_faults():
    c = run(populated(64).write(2, 0, 9, 3, 30, 17, 50), "adaptive").counters
    assert c.ahead_copies == 0


def test_adaptive_turns_off_after_too_many_clean_ahead_pages():
    # Pairs of sequential faults whose ahead pages are never written: each pair
    # turns the ramp on (4 pages ahead); the next fault sees them clean.
    s = populated(4096)
    for start in range(0, 4096 - 16, 16):
        s.write(2, start, start + 1)
    c = run(s, "adaptive").counters
    pairs = len(range(0, 4096 - 16, 16))
    assert c.ahead_copies < 4 * pairs                 # it stopped copying at some point
    assert c.ahead_copies >= 100                     # but only after > MMAP_LOTSAMISS misses


# ----- ccow ----------------------------------------------------------------------------------------------

def test_ccow_copies_a_whole_region_after_a_dense_interval():
    s = Stream().mmap(1, 0, 1024).write(1, *range(1024)).fork(1, 2)
    s.write(1, *range(400))          # interval 1: 400 of 512 pages of region 0 copied (>= 358)
    s.exit(2).fork(1, 3)             # interval 2 starts; region 0's history is 400
    s.write(1, 10)                   # one COW fault in region 0 copies every shared page of it
    k = run(s, "ccow")
    ahead = logged(k, "ahead_copies", pid=1)
    assert len(ahead) == 511 and min(ahead) == 0 and max(ahead) == 511


def test_ccow_does_not_copy_ahead_in_a_sparse_region_or_in_the_child():
    s = Stream().mmap(1, 0, 1024).write(1, *range(1024)).fork(1, 2)
    s.write(1, *range(512, 612))     # region 1 only 100 copies
    s.exit(2).fork(1, 3).write(1, 520).write(3, 0)
    c = run(s, "ccow").counters
    assert c.ahead_copies == 0


def test_ccow_threshold_and_region_are_parameters():
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(1, *range(10)).exit(2).fork(1, 3).write(1, 0)
    assert run(s, "ccow:16,0.5").counters.ahead_copies == 15
    assert run(s, "ccow:16,0.75").counters.ahead_copies == 0


# ----- oracle ------------------------------------------------------------------------------------------

def test_oracle_copies_only_pages_written_next():
    c = run(populated(16).write(2, 0, 2, 4), "oracle:8").counters
    assert (c.cow_copy, c.ahead_copies, c.ahead_hits, c.ahead_waste) == (1, 2, 2, 0)


def test_oracle_skips_pages_dropped_before_their_write():
    c = run(populated(16).write(2, 0).munmap(2, 2, 1).write(2, 1), "oracle:8").counters
    assert (c.ahead_copies, c.ahead_waste) == (1, 0)
