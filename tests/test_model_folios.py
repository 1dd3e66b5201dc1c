"""Large folios in the model: each expected count worked out by hand from mm/memory.c and mm/huge_memory.c.

Pages are relative to BASE, which is 2 MiB aligned: pages 0–511 are one PMD, 512–1023 the next.
A 64 KiB mTHP is 16 pages (order 4), a 16 KiB one 4 pages (order 2).
"""

import pytest

from conftest import BASE_PAGE, Stream
from cowahead.errors import CowaheadError
from cowahead.model import Kernel
from cowahead.model.folio import Folio, FolioSettings
from cowahead.policies import parse_policy
from cowahead.trace import EventKind
from cowahead.trace.events import Advice

MADVISE = {"enabled": "madvise"}           # this host's default: THP only where MADV_HUGEPAGE asks
ALWAYS = {"enabled": "always"}
MTHP_64K = {"enabled": "never", "hugepages-64kB/enabled": "always"}
MIXED = {"enabled": "never", "hugepages-16kB/enabled": "always", "hugepages-64kB/enabled": "always",
         "hugepages-2048kB/enabled": "always"}


def replay(stream: Stream, thp: dict | None, kernel: str = "6.18.0") -> Kernel:
    """Replay event by event, checking the model's own invariants after each."""
    k = Kernel(parse_policy("none"))
    trace = stream.trace(thp, kernel)
    k.folios = FolioSettings.from_metadata(trace.metadata)
    for index, event in enumerate(trace.events()):
        k.apply(event, index)
        k.check_invariants()
    return k


def hugepage_region(pages: int = 1024) -> Stream:
    return Stream().mmap(1, 0, pages).madvise(1, 0, pages, Advice.HUGEPAGE)


# ----- folio choice at a fault -------------------------------------------------------------------


def test_madv_hugepage_region_faults_once_per_2mib():
    k = replay(hugepage_region().write(1, *range(1024)), MADVISE)
    c = k.counters
    assert (c.zero_fill, c.zero_fill_pages, c.thp_fault_alloc, c.resident) == (2, 1024, 2, 1024)


def test_without_madvise_the_madvise_setting_maps_4k_pages():
    c = replay(Stream().mmap(1, 0, 1024).write(1, *range(1024)), MADVISE).counters
    assert (c.zero_fill, c.zero_fill_pages, c.thp_fault_alloc) == (1024, 1024, 0)


def test_always_needs_no_madvise_but_an_aligned_2mib_inside_the_vma():
    # VMA pages 0–767: the first 2 MiB fits (one fault), pages 512–767 do not (256 faults of 4 KiB)
    c = replay(Stream().mmap(1, 0, 768).write(1, *range(768)), ALWAYS).counters
    assert (c.zero_fill, c.thp_fault_alloc, c.zero_fill_pages) == (1 + 256, 1, 768)


def test_a_trace_without_settings_is_4k_only_even_with_madvise_events():
    c = replay(hugepage_region().write(1, *range(1024)), None).counters
    assert (c.zero_fill, c.thp_fault_alloc) == (1024, 0)


def test_mthp_64k_faults_once_per_16_pages():
    c = replay(Stream().mmap(1, 0, 64).write(1, *range(64)), MTHP_64K).counters
    assert (c.zero_fill, c.zero_fill_pages, c.mthp_fault_alloc, c.thp_fault_alloc) == (4, 64, 4, 0)


def test_mthp_falls_back_when_a_pte_of_the_range_is_present():
    # page 5 read first maps the zero page: the 64 KiB range 0–15 is not all none, and no smaller
    # order is enabled, so the write at page 0 allocates 4 KiB
    c = replay(Stream().mmap(1, 0, 64).read(1, 5).write(1, 0), MTHP_64K).counters
    assert (c.zero_page, c.zero_fill, c.zero_fill_pages, c.mthp_fault_alloc) == (1, 1, 1, 0)


def test_mixed_sizes_take_the_largest_order_whose_range_is_all_none():
    # VMA 0–1023 under 16K+64K+2M always. Read page 5: an empty 2 MiB, so the huge zero page by PMD.
    # VMA 1024+ is not PMD-sized (pages 1024–1087): page 1029 read, then a write at 1024 finds the
    # 64 KiB range 1024–1039 not none but the 16 KiB range 1024–1027 none: order 2, 4 pages.
    s = Stream().mmap(1, 0, 1024).read(1, 5).mmap(1, 1024, 64).read(1, 1029).write(1, 1024)
    c = replay(s, MIXED).counters
    assert (c.huge_zero_page, c.zero_fill, c.zero_fill_pages, c.mthp_fault_alloc) == (1, 1, 4, 1)


def test_a_vma_smaller_than_the_folio_gets_4k_pages():
    c = replay(Stream().mmap(1, 0, 8).write(1, *range(8)), MTHP_64K).counters
    assert (c.zero_fill, c.mthp_fault_alloc) == (8, 0)


def test_nohugepage_and_thp_disable_forbid_large_folios_thp_disable_survives_fork_and_exec():
    c = replay(Stream().mmap(1, 0, 512).madvise(1, 0, 512, Advice.NOHUGEPAGE).write(1, *range(512)),
               ALWAYS).counters
    assert (c.zero_fill, c.thp_fault_alloc) == (512, 0)
    s = Stream().thp_disable(1).fork(1, 2).exec(2).mmap(2, 0, 512).write(2, 0)
    c = replay(s, ALWAYS).counters
    assert (c.zero_fill, c.thp_fault_alloc) == (1, 0)
    c = replay(Stream().thp_disable(1).thp_disable(1, False).mmap(1, 0, 512).write(1, 0), ALWAYS).counters
    assert c.thp_fault_alloc == 1


def test_madvise_inside_a_thp_splits_its_pmd_so_that_no_pmd_straddles_two_vmas():
    # hypothesis found it: under always, a THP at 0–511, MADV_HUGEPAGE on page 0 alone splits the VMA at 1;
    # the PMD must be split too (vma_adjust_trans_huge), or fork copies it once per VMA
    s = Stream().mmap(1, 0, 512).write(1, 0).madvise(1, 0, 1, Advice.HUGEPAGE).fork(1, 2)
    k = replay(s, ALWAYS)
    assert (k.counters.thp_split_pmd, len(k.processes[1].vmas), k.processes[2].pmds) == (1, 2, {})


def test_madvise_on_part_of_a_vma_splits_it():
    s = Stream().mmap(1, 0, 1024).madvise(1, 0, 512, Advice.HUGEPAGE).write(1, *range(1024))
    k = replay(s, MADVISE)
    assert (k.counters.thp_fault_alloc, k.counters.zero_fill) == (1, 1 + 512)
    assert [(v.start - k.processes[1].vmas[0].start, v.hugepage) for v in k.processes[1].vmas] == \
        [(0, True), (512, False)]


# ----- the huge zero page -------------------------------------------------------------------------


def test_a_read_maps_the_huge_zero_page_and_a_write_on_6_18_allocates_a_thp():
    k = replay(hugepage_region(512).read(1, 0).write(1, 3).read(1, 3, 4), MADVISE)
    c = k.counters
    assert (c.zero_page, c.huge_zero_page, c.cow_copy, c.cow_copy_pages, c.thp_fault_alloc) == (1, 1, 1, 512, 1)
    assert c.resident == 512 and c.thp_split_pmd == 0


def test_before_6_13_a_write_to_the_huge_zero_page_splits_it_and_copies_4k():
    c = replay(hugepage_region(512).read(1, 0).write(1, 3), MADVISE, kernel="6.12.57").counters
    assert (c.cow_copy, c.cow_copy_pages, c.thp_split_pmd, c.resident) == (1, 1, 1, 1)


def test_without_use_zero_page_a_read_allocates_the_thp():
    c = replay(hugepage_region(512).read(1, 0), {**MADVISE, "use_zero_page": "0"}).counters
    assert (c.zero_fill, c.zero_fill_pages, c.huge_zero_page) == (1, 512, 0)


def test_values_written_through_a_pmd_survive_a_split_and_fork():
    s = hugepage_region(512).write(1, 7).fork(1, 2).write(2, 9)  # the child's write splits its PMD
    k = Kernel(parse_policy("none"))
    reads: list[int] = []
    s.read(2, 7).read(1, 7).read(1, 9).read(2, 9)
    k.replay(s.trace(MADVISE), reads)
    assert reads == [1, 1, 0, 2]  # page 7 holds the first write; page 9 only the child's second


# ----- fork and COW on a PMD THP --------------------------------------------------------------------


def four_workers() -> Stream:
    """The issue's program, scaled: 2 THPs, four children each writing a quarter, every page."""
    s = hugepage_region().write(1, *range(1024))
    for child in range(2, 6):
        s.fork(1, child)
    for i, child in enumerate(range(2, 6)):
        s.write(child, *range(256 * i, 256 * (i + 1)))
    return s


def test_four_workers_copy_every_page_they_write_one_split_each():
    c = replay(four_workers(), MADVISE).counters
    # each child's first write splits its PMD (refcount 5) and copies; the other 255 pages are a
    # PTE-mapped THP mapped by other mms, so they are copied too: 4 x 256
    assert (c.cow_copy, c.cow_copy_pages, c.reuse, c.thp_split_pmd) == (1024, 1024, 0, 4)
    assert c.resident == 1024 + 1024


def test_after_the_workers_exit_the_parent_reuses_each_thp_whole():
    s = four_workers()
    for child in range(2, 6):
        s.exit(child)
    c = replay(s.write(1, 0, 600), MADVISE).counters
    assert (c.reuse, c.reuse_pages, c.thp_split_pmd) == (2, 1024, 4)


def test_parent_first_then_child_copies_where_4k_pages_would_be_reused():
    # The parent's write splits its PMD and copies page 0. With 4 KiB pages the child's old page 0 would
    # now be exclusive and reused; as part of a large folio the parent still maps (pages 1–511) it is
    # copied.
    s = hugepage_region(512).write(1, *range(512)).fork(1, 2).write(1, 0).write(2, 0)
    c = replay(s, MADVISE).counters
    assert (c.cow_copy, c.reuse, c.thp_split_pmd, c.resident) == (2, 0, 2, 514)
    c4k = replay(Stream().mmap(1, 0, 512).write(1, *range(512)).fork(1, 2).write(1, 0).write(2, 0), None).counters
    assert (c4k.cow_copy, c4k.reuse) == (1, 1)


def test_a_child_that_copied_every_page_leaves_the_parent_a_whole_pmd_reuse():
    s = hugepage_region(512).write(1, *range(512)).fork(1, 2).write(2, *range(512)).write(1, 100)
    c = replay(s, MADVISE).counters
    assert (c.cow_copy, c.reuse, c.reuse_pages) == (512, 1, 512)


# ----- PTE-mapped large folios: reuse by kernel version ------------------------------------------------


def mthp_fork(child_pages: range) -> Stream:
    return Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, *child_pages)


def test_6_18_reuses_a_folio_only_this_mm_maps_6_12_never_does():
    s = mthp_fork(range(64)).write(1, *range(64))
    new, old = replay(s, MTHP_64K).counters, replay(s, MTHP_64K, kernel="6.12.57").counters
    assert (new.cow_copy, new.reuse) == (64, 64)   # the child copied all: each folio is the parent's alone
    assert (old.cow_copy, old.reuse) == (128, 0)


def test_a_folio_the_child_still_maps_in_part_is_copied_by_the_parent():
    # the child wrote pages 0–7 of each 16-page folio and still maps 8–15: every parent write copies
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2)
    s.write(2, *[p for p in range(64) if p % 16 < 8]).write(1, *range(64))
    c = replay(s, MTHP_64K).counters
    assert (c.cow_copy, c.reuse) == (32 + 64, 0)


def test_the_last_mapped_page_of_a_large_folio_is_copied_not_reused():
    # 15 of 16 pages zapped (the page table stays: less than 2 MiB); after the child's exit the parent's
    # write finds a folio mapped once, and copies, so that the large folio is freed
    s = Stream().mmap(1, 0, 16).write(1, *range(16)).dontneed(1, 1, 15).fork(1, 2).exit(2).write(1, 0)
    k = replay(s, MTHP_64K)
    assert (k.counters.cow_copy, k.counters.reuse, k.counters.resident) == (1, 0, 1)


# ----- partial unmap and DONTNEED ---------------------------------------------------------------------


def test_dontneed_of_one_page_splits_and_holds_the_folio_a_whole_2mib_frees_it():
    s = hugepage_region(512).write(1, *range(512)).dontneed(1, 7, 1)
    k = replay(s, MADVISE)
    assert (k.counters.thp_split_pmd, k.counters.resident) == (1, 512)  # deferred split: still held
    k = replay(s.write(1, 7), MADVISE)  # the page table exists: a 4 KiB zero fill, no THP
    assert (k.counters.zero_fill, k.counters.thp_fault_alloc, k.counters.resident) == (2, 1, 513)
    k = replay(s.dontneed(1, 0, 512).write(1, 3), MADVISE)  # table reclaimed: a THP again
    assert (k.counters.thp_fault_alloc, k.counters.resident) == (2, 512)


def test_before_6_14_dontneed_keeps_the_emptied_page_table_so_no_thp_comes_back():
    s = hugepage_region(512).write(1, 0).dontneed(1, 7, 1).dontneed(1, 0, 512).write(1, 3)
    assert replay(s, MADVISE).counters.thp_fault_alloc == 2               # 6.18: the table went
    assert replay(s, MADVISE, kernel="6.12.57").counters.thp_fault_alloc == 1  # 6.12: a 4 KiB zero fill


def test_munmap_of_half_a_thp_holds_it_until_the_rest_goes():
    s = hugepage_region(512).write(1, *range(512)).munmap(1, 0, 256)
    assert replay(s, MADVISE).counters.resident == 512
    assert replay(s.munmap(1, 256, 256), MADVISE).counters.resident == 0


def test_exit_frees_every_folio():
    k = replay(four_workers().exit(1).exit(2).exit(3).exit(4).exit(5), MADVISE)
    assert k.live == {} and k.counters.resident == 0


# ----- the folio's counts and the settings ---------------------------------------------------------


def test_mm_slots_clear_the_shared_bit_when_one_mm_holds_every_mapping():
    parent, child, third = object(), object(), object()
    f = Folio(4)
    f.add_mappings(parent, 16)
    assert not f.maybe_shared and f.exclusive_to(parent)
    f.add_mappings(child, 16)
    assert f.maybe_shared and not f.exclusive_to(parent)
    f.remove_mappings(child, 16)
    assert not f.maybe_shared and f.exclusive_to(parent)
    f.add_mappings(child, 1)
    f.add_mappings(third, 1)   # no slot left for a third mm
    f.remove_mappings(child, 1)
    assert f.maybe_shared      # the third mm's mapping is in no slot: still maybe shared
    f.remove_mappings(third, 1)
    assert not f.maybe_shared  # slot 0 holds all 16 again


def test_settings_from_the_recorders_words():
    s = FolioSettings.from_thp({"enabled": "madvise", "use_zero_page": "1", "hugepages-64kB/enabled": "always",
                                "hugepages-2048kB/enabled": "inherit", "hugepages-8kB/enabled": "never"},
                               "6.18.44-fc-v657")
    assert s.kernel == (6, 18) and s.orders == {9: "inherit", 4: "always", 1: "never"}
    assert s.anon_orders(hugepage=False) == [4] and s.anon_orders(hugepage=True) == [9, 4]
    assert FolioSettings.from_thp(s.as_thp(), "6.18") == s
    with pytest.raises(CowaheadError, match="expected one of"):
        FolioSettings.from_thp({"enabled": "sometimes"})
    with pytest.raises(CowaheadError, match="not a folio size"):
        FolioSettings.from_thp({"hugepages-12kB/enabled": "always"})


def test_khugepaged_collapses_are_counted_not_placed():
    s = hugepage_region(512).write(1, 0)
    s._add(1, EventKind.COLLAPSE, 0, 512)
    assert replay(s, MADVISE).unplaced_collapses == 1


def test_madv_collapse_copies_4k_pages_into_one_thp_without_faults_even_under_never():
    s = Stream().mmap(1, 0, 1024).write(1, *range(0, 512, 2)).read(1, 1).madvise(1, 0, 1024, Advice.COLLAPSE)
    k = replay(s.read(1, 2, 3).write(1, 5), {"enabled": "never"})
    c = k.counters
    # 256 zero fills, one zero-page read; the collapse: one THP of the first 2 MiB (the second holds nothing)
    assert (c.zero_fill, c.zero_page, c.thp_collapse_alloc, c.resident) == (256, 1, 1, 512)
    assert c.faults == 257  # the reads and the write after it hit the writable PMD: no fault
    reads: list[int] = []
    Kernel(parse_policy("none")).replay(s.trace({"enabled": "never"}), reads)
    assert reads == [0, 2, 0]  # page 1 before (zero page), page 2 (the second write), page 3 (absent: zeros)


def test_madv_collapse_in_a_parent_leaves_the_child_its_old_pages_to_reuse():
    s = Stream().mmap(1, 0, 512).write(1, *range(512)).fork(1, 2).madvise(1, 0, 512, Advice.COLLAPSE)
    c = replay(s.write(2, *range(512)).write(1, 7), {"enabled": "never"}).counters
    assert (c.thp_collapse_alloc, c.reuse, c.cow_copy) == (1, 512, 0)  # the child is the old pages' only mapper


# ----- properties on random streams under every folio setting ---------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from streams import FOLIO_SETTINGS, folio_streams  # noqa: E402

KERNELS = ["6.18.0", "6.12.57"]


@settings(max_examples=200, deadline=None)
@given(folio_streams(), st.sampled_from(FOLIO_SETTINGS), st.sampled_from(KERNELS))
def test_counts_hold_after_every_event_under_every_folio_setting(stream, thp, kernel):
    replay(stream, thp, kernel)  # check_invariants after each event


@settings(max_examples=200, deadline=None)
@given(folio_streams(), st.sampled_from(FOLIO_SETTINGS[1:]), st.sampled_from(KERNELS))
def test_folios_change_what_memory_costs_never_what_a_process_reads(stream, thp, kernel):
    expected: list[int] = []
    Kernel(parse_policy("none")).replay(stream.trace(None), expected)
    reads: list[int] = []
    Kernel(parse_policy("none")).replay(stream.trace(thp, kernel), reads)
    assert reads == expected


@settings(max_examples=100, deadline=None)
@given(folio_streams(), st.sampled_from(FOLIO_SETTINGS), st.sampled_from(KERNELS))
def test_no_folio_outlives_its_last_process(stream, thp, kernel):
    trace = stream.trace(thp, kernel)
    for pid in sorted({int(p) for p in trace.columns["pid"]} | {int(a) for k, a in zip(trace.columns["kind"],
                                                                                     trace.columns["arg"]) if k == 5}):
        stream.exit(pid)
    k = Kernel(parse_policy("none"))
    k.replay(stream.trace(thp, kernel))
    assert k.live == {} and k.counters.resident == 0


def test_the_child_reuses_its_511_ptes_once_the_parent_has_copied_everything():
    # docs/folios-host.md experiment a: the child's write splits its PMD (1 copy); the parent's 512 writes
    # copy (the child maps 511 pages); then the folio is the child's alone: 511 reuses, no copy
    s = hugepage_region(512).write(1, *range(512)).fork(1, 2).write(2, 0).write(1, *range(512)).write(2, *range(1, 512))
    c = replay(s, MADVISE).counters
    assert (c.cow_copy, c.reuse, c.thp_split_pmd) == (1 + 512, 511, 2)


# ----- upstream's khugepaged collapse_max_ptes_shared, in the model ------------------------------
# The selftest (tools/testing/selftests/mm/khugepaged.c) PMD-maps a THP, forks, and the child writes
# pages 0 .. 511 - max_ptes_shared - 1; khugepaged must then refuse to collapse the child's PTE table,
# since more than max_ptes_shared of its PTEs still map the parent's THP. One page more written, and it
# must collapse. In the guest max_ptes_shared is 256 (HPAGE_PMD_NR / 2): the test prints "Trigger CoW
# on page 255 of 512". The kernel table (kernel-6.12-selftests-*.md) has this test DIFFER at every
# window; these say the model predicts exactly that, and why: the last window covers page 255.
MAX_PTES_SHARED = 256


def child_shared_after_writes(policy: str, written: int) -> int:
    """PTEs of the child still mapping the parent's THP after it wrote pages 0 .. written - 1."""
    k = Kernel(parse_policy(policy), folios=FolioSettings(enabled="always"))
    stream = Stream().mmap(1, 0, 512)
    for page in range(512):
        stream.write(1, page)
    stream.fork(1, 2)
    for page in range(written):
        stream.write(2, page)
    for index, event in enumerate(stream.trace(ALWAYS).events()):
        k.apply(event, index)
    k.check_invariants()
    thp = k.mm_of(1).pmds[BASE_PAGE >> 9].folio
    child = k.mm_of(2)
    assert BASE_PAGE >> 9 not in child.pmds, "the first COW fault split the child's PMD"
    return sum(1 for page in range(BASE_PAGE, BASE_PAGE + 512)
               if page in child.ptes and child.ptes[page].frame.folio is thp)


def test_stock_cow_keeps_the_selftests_shared_count():
    written = 512 - MAX_PTES_SHARED - 1
    assert child_shared_after_writes("none", written) == MAX_PTES_SHARED + 1  # no collapse: as the test asks
    assert child_shared_after_writes("none", written + 1) == MAX_PTES_SHARED  # collapse: as the test asks


@pytest.mark.parametrize("policy", ["fixed:16", "fixed:512", "around:16", "adaptive:16", "folio"])
def test_a_window_unshares_what_the_selftest_counts_as_shared(policy):
    """With a window the child's first step already leaves max_ptes_shared or fewer PTEs shared, so
    khugepaged collapses where the test expects it not to: what the kernel table shows."""
    assert child_shared_after_writes(policy, 512 - MAX_PTES_SHARED - 1) <= MAX_PTES_SHARED


def test_fixed_16_misses_the_selftests_count_by_the_one_page_its_last_window_copies():
    # written pages 0 .. 254: the window of the fault at 240 covers 240 .. 255, one page not written
    assert child_shared_after_writes("fixed:16", 255) == 256
