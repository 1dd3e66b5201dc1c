"""The folio-shaped policies — folio, thp-cow, ccow-published — each count worked out by hand, in the model
and in the engine (``replay`` holds the engine's counters equal to the model's on every case).

Pages relative to a 2 MiB-aligned BASE; a 64 KiB mTHP is pages 16k … 16k+15.
"""

import pytest

from conftest import Stream
from cowahead.engine import replay_engine
from cowahead.errors import CowaheadError
from cowahead.model import Kernel
from cowahead.model.folio import FolioSettings
from cowahead.policies import parse_policy
from cowahead.trace.events import Advice

MADVISE = {"enabled": "madvise"}
MTHP_64K = {"enabled": "never", "hugepages-64kB/enabled": "always"}


def replay(stream: Stream, policy: str, thp: dict | None, kernel: str = "6.18.0") -> Kernel:
    k = Kernel(parse_policy(policy))
    trace = stream.trace(thp, kernel)
    k.folios = FolioSettings.from_metadata(trace.metadata)
    k.policy.prepare(trace)
    for index, event in enumerate(trace.events()):
        k.apply(event, index)
        k.check_invariants()
    k.finish()
    assert replay_engine(trace, [policy]) == [k.counters], "the engine differs from the model"
    return k


def thp_fork() -> Stream:
    return Stream().mmap(1, 0, 512).madvise(1, 0, 512, Advice.HUGEPAGE).write(1, *range(512)).fork(1, 2)


# ----- folio ------------------------------------------------------------------------------------------


def test_folio_copies_the_rest_of_a_64k_folio_after_one_copy():
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, 3, 5).write(1, 3)
    c = replay(s, "folio", MTHP_64K).counters
    # the child's write at 3 copies it (the folio is shared) and breaks COW on 0–2 and 4–15: 15 ahead copies;
    # its write at 5 hits one; the parent's write at 3 finds the folio its own alone: a reuse (6.18)
    assert (c.cow_copy, c.ahead_copies, c.ahead_batches, c.ahead_hits, c.reuse) == (1, 15, 1, 1, 1)
    assert c.ahead_waste == 14 and c.extra_pages_final == 14  # 0–2, 4, 6–15 never written


def test_folio_after_a_thp_split_copies_the_other_511_pages():
    c = replay(thp_fork().write(2, 100), "folio", MADVISE).counters
    assert (c.cow_copy, c.thp_split_pmd, c.ahead_copies, c.ahead_batches) == (1, 1, 511, 1)
    assert c.resident == 512 + 512


def test_folio_does_nothing_after_a_copy_from_a_4k_page():
    c = replay(Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, 3), "folio", None).counters
    assert (c.cow_copy, c.ahead_copies, c.ahead_batches) == (1, 0, 0)


def test_folio_stays_inside_the_vma():
    # a 64 KiB folio at pages 0–15, then munmap of 12–15: the window is 0–11 without the faulting page
    s = Stream().mmap(1, 0, 16).write(1, 0).munmap(1, 12, 4).fork(1, 2).write(2, 0)
    c = replay(s, "folio", MTHP_64K).counters
    assert (c.cow_copy, c.ahead_copies) == (1, 11)


# ----- thp-cow ----------------------------------------------------------------------------------------


def test_thp_cow_copies_the_whole_thp_in_one_fault_and_the_parent_then_reuses_its_own():
    c = replay(thp_fork().write(2, 7, 8).write(1, 0), "thp-cow", MADVISE).counters
    assert (c.cow_copy, c.cow_copy_pages, c.thp_split_pmd, c.ahead_copies) == (1, 512, 0, 0)
    # the child's write at 8 hits its new writable PMD: no fault; the parent's THP is its alone again
    assert (c.reuse, c.reuse_pages, c.faults) == (1, 512, 1 + 1 + 1)
    assert c.resident == 1024


def test_thp_cow_on_an_mthp_or_a_4k_page_is_todays_4k_copy():
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, 3)
    for thp in (MTHP_64K, None):
        c = replay(s, "thp-cow", thp).counters
        assert (c.cow_copy, c.cow_copy_pages, c.ahead_copies) == (1, 1, 0)


def test_thp_cow_values_survive_the_whole_copy():
    s = thp_fork().write(2, 7)
    reads: list[int] = []
    s.read(2, 6, 7).read(1, 7)
    Kernel(parse_policy("thp-cow")).replay(s.trace(MADVISE), reads)
    assert reads == [7, 513, 8]  # page 6's fill value, the child's write, the parent's own fill value


# ----- ccow-published ---------------------------------------------------------------------------------


def two_forks(policy: str) -> Kernel:
    # VMA 16 pages, regions of 8. Interval 1 (after the first fork): one COW copy in region 0. Second fork:
    # the history is {region 0: 1}. Then a write in region 1, whose own count is 0.
    s = Stream().mmap(1, 0, 16).write(1, *range(16)).fork(1, 2).write(1, 0).fork(1, 3).write(1, 9)
    return replay(s, policy, None)


def test_ccow_published_copies_a_whole_region_once_the_vma_has_history():
    c = two_forks("ccow-published:8").counters
    assert (c.cow_copy, c.ahead_copies, c.ahead_batches) == (2, 7, 1)  # pages 8 and 10–15 copied ahead


def test_ccow_as_the_paper_has_it_leaves_that_region_alone():
    c = two_forks("ccow:8,0.7").counters  # region 1 counted 0 < 5 (70 % of 8) in the last interval
    assert (c.cow_copy, c.ahead_copies) == (2, 0)


def test_ccow_published_before_any_history_copies_nothing_ahead():
    s = Stream().mmap(1, 0, 16).write(1, *range(16)).fork(1, 2).write(1, 0, 9)
    c = replay(s, "ccow-published:8", None).counters
    assert (c.cow_copy, c.ahead_copies) == (2, 0)


def test_policy_strings():
    assert parse_policy("ccow-published").name == "ccow-published"
    assert parse_policy("ccow-published:64").region_pages == 64
    with pytest.raises(CowaheadError, match="takes no arguments"):
        parse_policy("folio:4")
    with pytest.raises(CowaheadError, match="takes no arguments"):
        parse_policy("thp-cow:2")
    with pytest.raises(CowaheadError, match="window must be"):
        parse_policy("ccow-published:1024")
