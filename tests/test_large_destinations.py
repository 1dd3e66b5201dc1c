"""Large destination folios (issue 23, model/large_destination.py): each expected value worked out by hand
from the rule, then the engine held equal to the model on the same scenarios.

Pages are relative to BASE, which is 2 MiB aligned. A 64 KiB mTHP is 16 pages (order 4), a 16 KiB one 4
pages (order 2). The kernel is the 6.12 patch's (no COW reuse of a large folio by its counts) unless a test
says otherwise.
"""

from __future__ import annotations

import pytest
from conftest import BASE_PAGE, Stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import event_streams, folio_streams
from test_engine_folios import KERNELS, LARGE_SETTINGS, assert_engine_equals_model

from cowahead.engine import replay_engine
from cowahead.model import Kernel
from cowahead.model.folio import LARGE_DESTINATIONS_KEY, FolioSettings
from cowahead.policies import parse_policy
from cowahead.trace.events import Advice
from cowahead.trace.generators import generate

MTHP_64K = {"enabled": "never", "hugepages-64kB/enabled": "always"}
MTHP_16K = {"enabled": "never", "hugepages-16kB/enabled": "always"}
MTHP_16K_64K = {"enabled": "never", "hugepages-16kB/enabled": "always", "hugepages-64kB/enabled": "always"}
ALWAYS = {"enabled": "always"}
K612 = "6.12.57"


def replay(stream: Stream, policy: str, thp: dict = MTHP_64K, kernel: str = K612, large: bool = True) -> Kernel:
    """Replay event by event under ``policy``, checking the model's own invariants after each."""
    trace = stream.trace(thp, kernel, large_destinations=large)
    k = Kernel(parse_policy(policy))
    k.policy.prepare(trace)  # the oracle's future
    k.folios = FolioSettings.from_metadata(trace.metadata)
    for index, event in enumerate(trace.events()):
        k.apply(event, index)
        k.check_invariants()
    k.finish()
    return k


def forked(pages: int = 16) -> Stream:
    """The parent writes ``pages`` pages (under mTHP: its own large folios), then forks the child, pid 2."""
    return Stream().mmap(1, 0, pages).write(1, *range(pages)).fork(1, 2)


def forked_4k(read: int, pages: int = 16) -> Stream:
    """As ``forked``, but the parent reads page ``read`` first: every mTHP block holding it then has a PTE
    (the zero page's) at the writes, so those pages are 4 KiB ones (alloc_anon_folio needs none)."""
    return Stream().mmap(1, 0, pages).read(1, read).write(1, *range(pages)).fork(1, 2)


def child_pte(k: Kernel, page: int):
    return k.processes[2].ptes[BASE_PAGE + page]


def child_folio(k: Kernel, page: int):
    return child_pte(k, page).frame.folio


# ----- the rule, by hand -------------------------------------------------------------------------------


def test_fixed_16_at_an_aligned_page_copies_the_block_into_one_64k_folio():
    # The child's write at page 0: span 0 … 15 (fixed:16), all shared (the parent's mTHP): one order-4 block.
    # The fault copies 1 page, 15 ahead, all into one folio; the next 15 writes take no fault (writable).
    k = replay(forked().write(2, 0), "fixed:16")
    c = k.counters
    assert (c.cow_copy, c.cow_copy_pages, c.ahead_copies, c.ahead_batches) == (1, 1, 15, 1)
    assert (c.cow_large_alloc, c.cow_large_pages) == (1, 16)
    folio = child_folio(k, 0)
    assert folio.order == 4 and [child_folio(k, p) for p in range(16)] == [folio] * 16
    assert (folio.large_mapcount, folio.refcount, folio.maybe_shared) == (16, 16, False)  # the child's alone
    ptes = [child_pte(k, p) for p in range(16)]
    assert all(pte.writable and pte.frame.mapcount == 1 for pte in ptes)
    assert ptes[0].dirty and not any(pte.dirty for pte in ptes[1:])  # only the faulting page written
    assert c.resident == 32  # the parent's folio and the child's
    k = replay(forked().write(2, *range(16)), "fixed:16")
    c = k.counters
    assert (c.faults, c.cow_copy, c.ahead_hits, c.reuse) == (2, 1, 15, 0)  # the parent's zero fill and one COW


def test_without_the_option_the_same_fault_copies_16_pages_of_their_own():
    k = replay(forked().write(2, 0), "fixed:16", large=False)
    c = k.counters
    assert (c.cow_copy, c.ahead_copies, c.cow_large_alloc, c.cow_large_pages) == (1, 15, 0, 0)
    assert all(child_folio(k, p) is None for p in range(16))


def test_4k_source_pages_go_into_one_destination_too():
    # The parent read page 5 first: its 16 pages are 4 KiB ones (15 zero fills, page 5 copied from the zero
    # page). The child's write at 0 still finds 16 shared pages: one order-4 destination.
    k = replay(forked_4k(read=5).write(2, 0), "fixed:16")
    c = k.counters
    assert (c.zero_fill, c.mthp_fault_alloc) == (15, 0)
    assert (c.cow_copy, c.ahead_copies, c.cow_large_alloc, c.cow_large_pages) == (2, 15, 1, 16)


def test_one_exclusive_page_leaves_no_64k_block_and_falls_back_to_4k():
    # 4 KiB sources; the parent drops page 3, so the child's page 3 is exclusive (map and ref count 1): the
    # window reuses it, so the block 0 … 15 does not qualify. 64 KiB is the only order: page 0 copied on
    # demand, 1, 2, 4 … 15 ahead into 4 KiB pages (14), page 3 reused ahead.
    k = replay(forked_4k(read=5).dontneed(1, 3, 1).write(2, 0), "fixed:16")
    c = k.counters
    assert (c.ahead_copies, c.ahead_reuses, c.cow_large_alloc, c.cow_large_pages) == (14, 1, 0, 0)
    assert all(child_folio(k, p) is None for p in range(16))


def test_smaller_orders_take_what_the_64k_block_leaves():
    # 16 and 64 KiB allowed. The parent read page 3 first: pages 0 … 3 are 4 KiB, 4 … 15 three 16 KiB folios.
    # It drops page 3 after the fork: the child's page 3 is exclusive. The child's write at 0: no order-4
    # block (page 3), order 2: 0 … 3 no (page 3), 4 … 7, 8 … 11, 12 … 15 yes. Page 0 a 4 KiB copy on demand,
    # 1 and 2 4 KiB copies ahead, 3 reused, 12 pages in three new 16 KiB folios.
    k = replay(forked_4k(read=3).dontneed(1, 3, 1).write(2, 0), "fixed:16", thp=MTHP_16K_64K)
    c = k.counters
    assert (c.ahead_copies, c.ahead_reuses, c.cow_large_alloc, c.cow_large_pages) == (14, 1, 3, 12)
    assert [child_folio(k, p) is None for p in range(4)] == [True] * 4
    assert [child_folio(k, p).order for p in range(4, 16)] == [2] * 12
    assert len({id(child_folio(k, p)) for p in range(4, 16)}) == 3


def test_a_block_needs_the_whole_of_it_in_the_span():
    # fixed:16 at page 1: span 1 … 16; the order-4 blocks 0 … 15 and 16 … 31 each have a page outside it.
    k = replay(forked(32).write(2, 1), "fixed:16")
    c = k.counters
    assert (c.ahead_copies, c.cow_large_alloc) == (15, 0)


def test_around_puts_the_faulting_page_inside_its_block():
    # around:16 at page 5: the window 0 … 15 holds the fault; one order-4 block, page 5 dirty, the rest
    # clean copies ahead (pages before the fault among them).
    k = replay(forked(32).write(2, 5), "around:16")
    c = k.counters
    assert (c.cow_copy, c.ahead_copies, c.cow_large_alloc, c.cow_large_pages) == (1, 15, 1, 16)
    assert [p for p in range(16) if child_pte(k, p).dirty] == [5] and child_folio(k, 0) is child_folio(k, 15)
    assert all(child_folio(k, p) is not child_folio(k, 0) for p in range(16, 32))  # still the parent's


def test_fixed_64_makes_four_blocks():
    # fixed:64 at page 0 of 64 shared pages: blocks 0, 16, 32 and 48, the faulting page's first.
    c = replay(forked(64).write(2, 0), "fixed:64").counters
    assert (c.ahead_copies, c.cow_large_alloc, c.cow_large_pages) == (63, 4, 64)


def test_the_folio_policy_copies_a_shared_folio_into_one_of_its_order():
    # folio at page 5 of the parent's 64 KiB folio: the span is the folio's 16 pages: one order-4 destination.
    c = replay(forked().write(2, 5), "folio").counters
    assert (c.cow_copy, c.ahead_copies, c.cow_large_alloc, c.cow_large_pages) == (1, 15, 1, 16)


def test_adaptive_span_starts_at_the_fault():
    # 16 KiB only. adaptive: the child's fault at 3 has no window (a 4 KiB copy); at 4 it is sequential, the
    # window 5 … 8 (4 pages): span 4 … 8, so the order-2 block 4 … 7 and page 8 as a 4 KiB copy ahead.
    c = replay(forked(32).write(2, 3, 4), "adaptive", thp=MTHP_16K).counters
    assert (c.cow_copy, c.ahead_copies, c.cow_large_alloc, c.cow_large_pages) == (2, 4, 1, 4)


def test_no_block_without_a_window_or_an_mthp_order():
    # none: the span is the faulting page alone. THP always, no mTHP size: PMD order only, never a
    # destination (alloc_anon_folio's orders are below PMD's): the 15 pages after the split are 4 KiB copies.
    c = replay(forked().write(2, 0), "none").counters
    assert (c.cow_copy, c.cow_large_alloc) == (1, 0)
    thp = Stream().mmap(1, 0, 512).write(1, 0).fork(1, 2).write(2, 0)
    c = replay(thp, "fixed:16", thp=ALWAYS).counters
    assert (c.thp_split_pmd, c.ahead_copies, c.cow_large_alloc) == (1, 15, 0)
    nohuge = Stream().mmap(1, 0, 16).madvise(1, 0, 16, Advice.NOHUGEPAGE).write(1, *range(16)).fork(1, 2).write(2, 0)
    c = replay(nohuge, "fixed:16", thp=MTHP_64K).counters
    assert (c.ahead_copies, c.cow_large_alloc) == (15, 0)


# ----- what it leaves behind ---------------------------------------------------------------------------


def test_a_partial_munmap_leaves_the_folio_whole_until_its_last_page_goes():
    # The child's 64 KiB destination (16 resident pages of its own); munmap of 8 … 15 drops 8 mappings but
    # the folio stays allocated (resident 32); munmap of 0 … 7 then frees it (16: the parent's).
    k = replay(forked().write(2, 0).munmap(2, 8, 8), "fixed:16")
    folio = child_folio(k, 0)
    assert (folio.large_mapcount, k.counters.resident) == (8, 32)
    k = replay(forked().write(2, 0).munmap(2, 8, 8).munmap(2, 0, 8), "fixed:16")
    assert k.counters.resident == 16


def test_dontneed_of_part_of_the_destination_then_a_write_zero_fills_4k():
    # MADV_DONTNEED of page 3 of the child's destination, then a write there: the 64 KiB block has PTEs, so
    # a 4 KiB zero fill (the parent's fault was one 64 KiB zero fill).
    c = replay(forked().write(2, 0).dontneed(2, 3, 1).write(2, 3), "fixed:16").counters
    assert (c.zero_fill, c.zero_fill_pages, c.resident) == (2, 17, 33)


def test_a_later_fork_shares_the_destination_and_its_copy_is_large_again():
    # The child (2) forks 3 after its write: its folio is mapped by both, shared; 3's write at 0 copies the
    # 16 pages into a destination of its own. 6.18: then 2's folio is its alone again and 2's write reuses it;
    # 6.12: never reused by its counts, so 2's write copies it into a third destination.
    s = forked().write(2, 0).fork(2, 3).write(3, 0).write(2, 0)
    c = replay(s, "fixed:16", kernel="6.18.0").counters
    assert (c.cow_copy, c.reuse, c.cow_large_alloc) == (2, 1, 2)
    c = replay(s, "fixed:16", kernel=K612).counters
    assert (c.cow_copy, c.reuse, c.cow_large_alloc) == (3, 0, 3)


def test_the_option_is_off_unless_the_trace_asks():
    assert not FolioSettings().large_destinations
    assert not FolioSettings.from_metadata({"thp": MTHP_64K}).large_destinations
    assert FolioSettings.from_metadata({"thp": MTHP_64K, LARGE_DESTINATIONS_KEY: True}).large_destinations


# ----- the engine, equal to the model --------------------------------------------------------------------

# (name, stream, settings, kernel, the destinations fixed:16 makes, by hand: so that equal counts are
# counts of something)
HAND_WRITTEN = [
    # one block at the first write; the 15 writes after it take no fault
    ("aligned", lambda: forked().write(2, *range(16)), MTHP_64K, K612, 1),
    # one block at 0, page 9 is in it
    ("4k_sources", lambda: forked_4k(read=5).write(2, 0, 9), MTHP_64K, K612, 1),
    # page 3 exclusive, 64 KiB only: none
    ("exclusive_page", lambda: forked_4k(read=5).dontneed(1, 3, 1).write(2, 0), MTHP_64K, K612, 0),
    # as test_smaller_orders_take_what_the_64k_block_leaves: three 16 KiB ones
    ("smaller_orders", lambda: forked_4k(read=3).dontneed(1, 3, 1).write(2, 0), MTHP_16K_64K, K612, 3),
    # 0 … 15 at the write to 0, half unmapped, then 16 … 31 at the write to 16
    ("munmap_half", lambda: forked(32).write(2, 0).munmap(2, 8, 8).write(2, 16).exit(1), MTHP_64K, K612, 2),
    # as test_a_later_fork_shares_the_destination_and_its_copy_is_large_again
    ("refork_6_18", lambda: forked().write(2, 0).fork(2, 3).write(3, 0).write(2, 0).exit(3), MTHP_64K, "6.18.0", 2),
    ("refork_6_12", lambda: forked().write(2, 0).fork(2, 3).write(3, 0).write(2, 0).exit(3), MTHP_64K, K612, 3),
    # faults at 3, 19, 35, 51 (each window 16 pages): no 64 KiB block ever whole in a span, three 16 KiB each
    ("fixed_16_unaligned", lambda: forked(64).write(2, *range(3, 64)), MTHP_16K_64K, K612, 12),
]
ENGINE_POLICIES = ["none", "fixed:16", "fixed:64", "around:16", "around:4", "adaptive", "folio", "ccow:16,0.1",
                   "oracle:16", "fixed-behind:16", "thp-cow", "ccow-published"]


@pytest.mark.parametrize("name, build, thp, kernel, blocks", HAND_WRITTEN, ids=[h[0] for h in HAND_WRITTEN])
def test_engine_equals_model_on_hand_written_scenarios(name, build, thp, kernel, blocks):
    engine = assert_engine_equals_model(build().trace(thp, kernel, large_destinations=True), ENGINE_POLICIES)
    assert engine[ENGINE_POLICIES.index("fixed:16")].cow_large_alloc == blocks


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(folio_streams(), event_streams()), st.sampled_from(LARGE_SETTINGS), st.sampled_from(KERNELS),
       st.sampled_from(["fixed:16", "around:16", "folio", "adaptive", "ccow:16,0.1", "oracle:16"]))
def test_large_destinations_keep_the_invariants_and_what_a_process_reads(stream, thp, kernel, policy):
    """Every map and ref count right after every event, and every read the value a 4 KiB replay reads: each
    page's content went into the right page of its destination."""
    expected: list[int] = []
    Kernel(parse_policy("none")).replay(stream.trace(None), expected)
    replay(stream, policy, thp, kernel)  # check_invariants after each event
    reads: list[int] = []
    Kernel(parse_policy(policy)).replay(stream.trace(thp, kernel, large_destinations=True), reads)
    assert reads == expected


@pytest.mark.parametrize("pattern", ["sequential", "random", "bgsave"])
def test_engine_equals_model_on_generators_with_large_destinations(pattern):
    trace = generate(f"{pattern}+mthp-mixed", pages=1100, seed=3, large_destinations=True)
    assert_engine_equals_model(trace, ["none", "fixed:16", "around:64", "adaptive", "folio", "oracle:16"])


def test_a_sequential_child_breaks_the_same_pages_with_and_without_large_destinations():
    """The child writes every page once: each fault's window breaks the same pages either way; with large
    destinations most of them go into large folios (the windows start at aligned pages)."""
    policies = ["fixed:16", "around:64"]
    off = replay_engine(generate("sequential+mthp-64k", pages=1024, seed=3), policies)
    on = replay_engine(generate("sequential+mthp-64k", pages=1024, seed=3, large_destinations=True), policies)
    assert [(c.cow_copy, c.ahead_copies, c.ahead_reuses) for c in off] == \
        [(c.cow_copy, c.ahead_copies, c.ahead_reuses) for c in on]
    assert all(c.cow_large_alloc == 0 for c in off)
    # fixed:16: the child's faults at 0, 16, 32, …: each one order-4 block; around:64 four per fault
    assert [(c.cow_copy, c.cow_large_alloc, c.cow_large_pages) for c in on] == [(64, 64, 1024), (16, 64, 1024)]
