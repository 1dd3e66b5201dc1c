"""The engine with large folios counts exactly what the reference model counts: every Counters field, every
policy, every folio setting, both kernels' rules (6.12: no COW reuse of PTE-mapped large folios, a write to
the huge zero page splits it, MADV_DONTNEED frees no page table; 6.18: all three as this host measured).

Differential tests on random folio streams (streams.folio_streams, also with mappings of every kind) per
folio setting and kernel, test_engine.py's streams under each folio setting, the hand-written scenarios of
tests/test_model_folios.py, every generator's folio variants, a sparse page space, small chunks (the
pools grow mid-trace) and the fault log; and with large destinations (model/large_destination.py) on, random
streams under each setting with an mTHP size (tests/test_large_destinations.py has the hand-written ones).
"""

from __future__ import annotations

import pytest
from conftest import Stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import FOLIO_SETTINGS, POLICIES, event_streams, folio_streams, snapshot_streams
from test_engine import ENGINE_POLICIES, rough_streams
from test_model_folios import four_workers, hugepage_region

from cowahead.engine import (cow_batches, fault_log, page_space, replay_engine, replay_states, samples,
                             to_counters)
from cowahead.model import Kernel
from cowahead.model.folio import FolioSettings
from cowahead.policies import parse_policy
from cowahead.results.memory import sample_points
from cowahead.trace import write_trace
from cowahead.trace.events import Advice
from cowahead.trace.generators import FOLIO_VARIANTS, PATTERNS, generate

KERNELS = ["6.18.0", "6.12.57"]
SETTING_IDS = [",".join(f"{k}={v}" for k, v in (thp or {}).items()) or "4k" for thp in FOLIO_SETTINGS]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MADVISE = {"enabled": "madvise"}
ALWAYS = {"enabled": "always"}
MTHP_64K = {"enabled": "never", "hugepages-64kB/enabled": "always"}
MIXED = {"enabled": "never", "hugepages-16kB/enabled": "always", "hugepages-64kB/enabled": "always",
         "hugepages-2048kB/enabled": "always"}


def model(trace, policy: str):
    return Kernel(parse_policy(policy)).replay(trace)


def assert_engine_equals_model(trace, policies=POLICIES, chunk_rows=1 << 20):
    """Every counter and the COW batch histogram of every policy; the engine's counters, in order."""
    engine, points = [], sample_points(len(trace), 7)
    for policy, st in zip(policies, replay_states(trace, policies, chunk_rows=chunk_rows, sample_points=points)):
        kernel = Kernel(parse_policy(policy))
        engine.append(to_counters(st))
        assert engine[-1] == kernel.replay(trace, sample_points=points), policy
        assert cow_batches(st) == kernel.cow_batches, policy
        assert samples(st) == kernel.samples, policy
    return engine


# ----- random streams, per folio setting and kernel -----------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("thp", FOLIO_SETTINGS, ids=SETTING_IDS)
@SETTINGS
@given(stream=folio_streams())
def test_engine_equals_model_on_folio_streams(stream, thp, kernel):
    trace = stream.trace(thp, kernel)
    assert_engine_equals_model(trace)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("thp", FOLIO_SETTINGS, ids=SETTING_IDS)
@SETTINGS
@given(stream=folio_streams(mixed=True))
def test_engine_equals_model_on_folio_streams_with_every_vma_kind(stream, thp, kernel):
    """Shared, private-file and anonymous mappings laid anywhere over the THPs and mTHPs."""
    trace = stream.trace(thp, kernel)
    assert_engine_equals_model(trace)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("thp", FOLIO_SETTINGS[1:], ids=SETTING_IDS[1:])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.one_of(event_streams(), snapshot_streams(), rough_streams()), chunk_rows=st.integers(1, 64))
def test_engine_equals_model_on_the_4k_streams_under_folio_settings(stream, chunk_rows, thp, kernel):
    """test_engine.py's streams (every VMA kind, pids reused, far-apart areas: a sparse space of whole
    blocks) under each folio setting, in small chunks, with its longer policy list."""
    trace = stream.trace(thp, kernel)
    assert_engine_equals_model(trace, ENGINE_POLICIES, chunk_rows=chunk_rows)


# The settings with an mTHP size below 2 MiB: where large destinations (model/large_destination.py) can be.
LARGE_SETTINGS = [thp for thp in FOLIO_SETTINGS if thp and any(k.startswith("hugepages-") and "2048" not in k
                                                               for k in thp)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("thp", LARGE_SETTINGS, ids=[SETTING_IDS[FOLIO_SETTINGS.index(t)] for t in LARGE_SETTINGS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=st.one_of(folio_streams(), folio_streams(mixed=True), event_streams()))
def test_engine_equals_model_with_large_destinations(stream, thp, kernel):
    """Random streams (folio streams, with every VMA kind, and the 4 KiB streams) under each setting with an
    mTHP size, large destinations on: every counter, the batch histogram and the samples of every policy."""
    assert_engine_equals_model(stream.trace(thp, kernel, large_destinations=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folio_streams(max_ops=25), st.sampled_from(FOLIO_SETTINGS[2:]), st.sampled_from(KERNELS), st.integers(1, 40))
def test_engine_equals_model_on_folio_streams_in_small_chunks(stream, thp, kernel, chunk_rows):
    """Small chunks: the pools (frames, folios, slots with their 2 MiB blocks) grow between events."""
    trace = stream.trace(thp, kernel)
    assert_engine_equals_model(trace, ["none", "fixed:8", "ccow:8,0.5", "oracle:16"], chunk_rows=chunk_rows)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folio_streams(max_ops=25), st.sampled_from(FOLIO_SETTINGS[2:]), st.integers(1, 64),
       st.sampled_from(["none", "fixed:8"]))
def test_the_engines_fault_log_equals_the_models_with_folios(stream, thp, chunk_rows, policy):
    trace = stream.trace(thp)
    [logged] = replay_states(trace, [policy], chunk_rows=chunk_rows, log_faults=(policy,))
    events, pages = fault_log(logged)
    kernel = Kernel(parse_policy(policy), log_faults=True)
    kernel.replay(trace)
    expected = [(index, page) for index, _, page, kind in kernel.fault_log if not kind.startswith("ahead_")]
    assert list(zip(events.tolist(), pages.tolist())) == expected


# ----- the hand-written scenarios of tests/test_model_folios.py -----------------------------------


def mthp_fork(child_pages: range) -> Stream:
    return Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, *child_pages)


def _dontneed_thp() -> Stream:
    return hugepage_region(512).write(1, *range(512)).dontneed(1, 7, 1)


def _four_workers_exit_then_parent() -> Stream:
    s = four_workers()
    for child in range(2, 6):
        s.exit(child)
    return s.write(1, 0, 600)


def _child_copies_f_of_each_folio() -> Stream:
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2)
    return s.write(2, *[p for p in range(64) if p % 16 < 8]).write(1, *range(64))


# (name, stream, settings, kernel, the model's counters the scenario is about: checked too, so that a
# comparison that passes on anything is caught)
SCENARIOS = [
    ("madv_hugepage_region", lambda: hugepage_region().write(1, *range(1024)), MADVISE, "6.18.0",
     {"zero_fill": 2, "zero_fill_pages": 1024, "thp_fault_alloc": 2, "resident": 1024}),
    ("madvise_without_madv_hugepage", lambda: Stream().mmap(1, 0, 1024).write(1, *range(1024)), MADVISE, "6.18.0",
     {"zero_fill": 1024, "thp_fault_alloc": 0}),
    ("always_needs_aligned_2mib", lambda: Stream().mmap(1, 0, 768).write(1, *range(768)), ALWAYS, "6.18.0",
     {"zero_fill": 257, "thp_fault_alloc": 1, "zero_fill_pages": 768}),
    ("no_settings_4k", lambda: hugepage_region().write(1, *range(1024)), None, "6.18.0",
     {"zero_fill": 1024, "thp_fault_alloc": 0}),
    ("mthp_64k", lambda: Stream().mmap(1, 0, 64).write(1, *range(64)), MTHP_64K, "6.18.0",
     {"zero_fill": 4, "zero_fill_pages": 64, "mthp_fault_alloc": 4}),
    ("mthp_fallback", lambda: Stream().mmap(1, 0, 64).read(1, 5).write(1, 0), MTHP_64K, "6.18.0",
     {"zero_page": 1, "zero_fill": 1, "zero_fill_pages": 1, "mthp_fault_alloc": 0}),
    ("mixed_sizes", lambda: Stream().mmap(1, 0, 1024).read(1, 5).mmap(1, 1024, 64).read(1, 1029).write(1, 1024),
     MIXED, "6.18.0", {"huge_zero_page": 1, "zero_fill": 1, "zero_fill_pages": 4, "mthp_fault_alloc": 1}),
    ("vma_smaller_than_folio", lambda: Stream().mmap(1, 0, 8).write(1, *range(8)), MTHP_64K, "6.18.0",
     {"zero_fill": 8, "mthp_fault_alloc": 0}),
    ("nohugepage", lambda: Stream().mmap(1, 0, 512).madvise(1, 0, 512, Advice.NOHUGEPAGE).write(1, *range(512)),
     ALWAYS, "6.18.0", {"zero_fill": 512, "thp_fault_alloc": 0}),
    ("thp_disable_fork_exec", lambda: Stream().thp_disable(1).fork(1, 2).exec(2).mmap(2, 0, 512).write(2, 0),
     ALWAYS, "6.18.0", {"zero_fill": 1, "thp_fault_alloc": 0}),
    ("thp_disable_cleared",
     lambda: Stream().thp_disable(1).thp_disable(1, False).mmap(1, 0, 512).write(1, 0), ALWAYS, "6.18.0",
     {"thp_fault_alloc": 1}),
    ("madvise_part_of_vma",
     lambda: Stream().mmap(1, 0, 1024).madvise(1, 0, 512, Advice.HUGEPAGE).write(1, *range(1024)), MADVISE,
     "6.18.0", {"thp_fault_alloc": 1, "zero_fill": 513}),
    ("huge_zero_page_6_18", lambda: hugepage_region(512).read(1, 0).write(1, 3).read(1, 3, 4), MADVISE, "6.18.0",
     {"zero_page": 1, "huge_zero_page": 1, "cow_copy": 1, "cow_copy_pages": 512, "thp_fault_alloc": 1,
      "resident": 512, "thp_split_pmd": 0}),
    ("huge_zero_page_6_12", lambda: hugepage_region(512).read(1, 0).write(1, 3), MADVISE, "6.12.57",
     {"cow_copy": 1, "cow_copy_pages": 1, "thp_split_pmd": 1, "resident": 1}),
    ("huge_zero_page_6_12_ahead", lambda: hugepage_region(512).read(1, 0).write(1, 3).write(1, 4), MADVISE,
     "6.12.57", {"thp_split_pmd": 1}),
    ("no_use_zero_page", lambda: hugepage_region(512).read(1, 0), {**MADVISE, "use_zero_page": "0"}, "6.18.0",
     {"zero_fill": 1, "zero_fill_pages": 512, "huge_zero_page": 0}),
    ("split_and_fork", lambda: hugepage_region(512).write(1, 7).fork(1, 2).write(2, 9).read(2, 7).read(1, 7),
     MADVISE, "6.18.0", {"thp_split_pmd": 1, "cow_copy": 1}),
    ("four_workers", four_workers, MADVISE, "6.18.0",
     {"cow_copy": 1024, "cow_copy_pages": 1024, "reuse": 0, "thp_split_pmd": 4, "resident": 2048}),
    ("four_workers_exit", _four_workers_exit_then_parent, MADVISE, "6.18.0",
     {"reuse": 2, "reuse_pages": 1024, "thp_split_pmd": 4}),
    ("parent_first_then_child",
     lambda: hugepage_region(512).write(1, *range(512)).fork(1, 2).write(1, 0).write(2, 0), MADVISE, "6.18.0",
     {"cow_copy": 2, "reuse": 0, "thp_split_pmd": 2, "resident": 514}),
    ("child_copied_all_parent_reuses_pmd",
     lambda: hugepage_region(512).write(1, *range(512)).fork(1, 2).write(2, *range(512)).write(1, 100), MADVISE,
     "6.18.0", {"cow_copy": 512, "reuse": 1, "reuse_pages": 512}),
    ("mthp_reuse_6_18", lambda: mthp_fork(range(64)).write(1, *range(64)), MTHP_64K, "6.18.0",
     {"cow_copy": 64, "reuse": 64}),
    ("mthp_reuse_6_12", lambda: mthp_fork(range(64)).write(1, *range(64)), MTHP_64K, "6.12.57",
     {"cow_copy": 128, "reuse": 0}),
    ("child_maps_part_of_each_folio", _child_copies_f_of_each_folio, MTHP_64K, "6.18.0",
     {"cow_copy": 96, "reuse": 0}),
    ("last_mapped_page_copied",
     lambda: Stream().mmap(1, 0, 16).write(1, *range(16)).dontneed(1, 1, 15).fork(1, 2).exit(2).write(1, 0),
     MTHP_64K, "6.18.0", {"cow_copy": 1, "reuse": 0, "resident": 1}),
    ("dontneed_one_page", _dontneed_thp, MADVISE, "6.18.0", {"thp_split_pmd": 1, "resident": 512}),
    ("dontneed_then_write", lambda: _dontneed_thp().write(1, 7), MADVISE, "6.18.0",
     {"zero_fill": 2, "thp_fault_alloc": 1, "resident": 513}),
    ("dontneed_whole_reclaims_table", lambda: _dontneed_thp().write(1, 7).dontneed(1, 0, 512).write(1, 3),
     MADVISE, "6.18.0", {"thp_fault_alloc": 2, "resident": 512}),
    ("dontneed_whole_keeps_table_on_6_12",  # no CONFIG_PT_RECLAIM before 6.14: a 4 KiB page, no THP
     lambda: _dontneed_thp().write(1, 7).dontneed(1, 0, 512).write(1, 3), MADVISE, "6.12.57",
     {"thp_fault_alloc": 1, "resident": 1}),
    ("dontneed_halves_keep_table",
     lambda: hugepage_region(512).write(1, *range(512)).dontneed(1, 0, 256).dontneed(1, 256, 256).write(1, 0),
     MADVISE, "6.18.0", {"thp_fault_alloc": 1, "zero_fill": 2, "resident": 1}),
    ("munmap_half", lambda: hugepage_region(512).write(1, *range(512)).munmap(1, 0, 256), MADVISE, "6.18.0",
     {"resident": 512}),
    ("munmap_both_halves",
     lambda: hugepage_region(512).write(1, *range(512)).munmap(1, 0, 256).munmap(1, 256, 256), MADVISE, "6.18.0",
     {"resident": 0}),
    ("munmap_frees_table_then_thp",
     lambda: hugepage_region(512).write(1, 3).munmap(1, 0, 512).mmap(1, 0, 512).madvise(1, 0, 512, Advice.HUGEPAGE)
     .write(1, 0, 1), MADVISE, "6.18.0", {"thp_fault_alloc": 2}),
    ("exit_frees_every_folio", lambda: four_workers().exit(1).exit(2).exit(3).exit(4).exit(5), MADVISE, "6.18.0",
     {"resident": 0}),
    ("collapse_under_never",
     lambda: Stream().mmap(1, 0, 1024).write(1, *range(0, 512, 2)).read(1, 1).madvise(1, 0, 1024, Advice.COLLAPSE)
     .read(1, 2, 3).write(1, 5), {"enabled": "never"}, "6.18.0",
     {"zero_fill": 256, "zero_page": 1, "thp_collapse_alloc": 1, "resident": 512}),
    ("collapse_without_settings",
     lambda: Stream().mmap(1, 0, 512).write(1, 0).madvise(1, 0, 512, Advice.COLLAPSE).write(1, 1), None, "6.18.0",
     {"thp_collapse_alloc": 1, "resident": 512, "zero_fill": 1}),
    ("collapse_in_parent_child_reuses",
     lambda: Stream().mmap(1, 0, 512).write(1, *range(512)).fork(1, 2).madvise(1, 0, 512, Advice.COLLAPSE)
     .write(2, *range(512)).write(1, 7), {"enabled": "never"}, "6.18.0",
     {"thp_collapse_alloc": 1, "reuse": 512, "cow_copy": 0}),
    ("child_reuses_511",
     lambda: hugepage_region(512).write(1, *range(512)).fork(1, 2).write(2, 0).write(1, *range(512))
     .write(2, *range(1, 512)), MADVISE, "6.18.0", {"cow_copy": 513, "reuse": 511, "thp_split_pmd": 2}),
    ("child_reuses_511_6_12",
     lambda: hugepage_region(512).write(1, *range(512)).fork(1, 2).write(2, 0).write(1, *range(512))
     .write(2, *range(1, 512)), MADVISE, "6.12.57", {"cow_copy": 1024, "reuse": 0, "thp_split_pmd": 2}),
    ("copy_ahead_across_split_ptes",  # a window over PTEs the trace never names, after the PMD split
     lambda: hugepage_region(1024).write(1, 0, 600).fork(1, 2).write(2, 5, 700).exit(2).write(1, 9),
     MADVISE, "6.18.0", {"thp_split_pmd": 2}),
]


@pytest.mark.parametrize("name, build, thp, kernel, expected", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_engine_equals_model_on_hand_written_scenarios(name, build, thp, kernel, expected):
    trace = build().trace(thp, kernel)
    engine = assert_engine_equals_model(trace, POLICIES + ["fixed:512", "around:512", "ccow:16,0.1", "oracle:512"])
    none = engine[0]
    assert {k: getattr(none, k) for k in expected} == expected


def test_ahead_copies_reach_pages_the_trace_never_names():
    """fixed:16 after a COW copy in a split THP breaks COW on the next 15 PTEs, which the split made from the
    PMD: pages no event names, yet present (the page space holds the whole 2 MiB)."""
    trace = hugepage_region(512).write(1, 0).fork(1, 2).write(2, 100).trace(MADVISE)
    none, fixed = assert_engine_equals_model(trace, ["none", "fixed:16"])
    assert (fixed.ahead_copies, fixed.thp_split_pmd, fixed.resident_peak) == (15, 1, 512 + 16)
    assert len(page_space(trace).pages) == 512 and page_space(trace).large


# ----- generators, sparse page spaces, files -------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(FOLIO_VARIANTS))
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_engine_equals_model_on_every_generator_folio_variant(pattern, variant):
    trace = generate(f"{pattern}+{variant}", pages=1100, seed=3)  # over two 2 MiB and a part
    assert_engine_equals_model(trace, ["none", "fixed:16", "around:16", "adaptive", "ccow", "oracle:16",
                                       "fixed-behind:16"])


def test_far_apart_folios_use_a_sparse_page_space_of_whole_blocks(tmp_path):
    far = 1 << 25  # pages: 128 GiB apart, past the dense span of 2^23 pages
    s = hugepage_region(1024).write(1, 3).mmap(1, far, 1024).madvise(1, far, 1024, Advice.HUGEPAGE)
    s.write(1, far + 600).fork(1, 2).write(2, 3, far + 601).write(1, 4).exit(2).write(1, far + 602)
    trace = s.trace(MADVISE)
    space = page_space(trace)
    assert space.large and space.direct_base == -1 and len(space.pages) == 2 * 512
    assert_engine_equals_model(trace)
    path = tmp_path / "t.parquet"
    write_trace(trace, path)
    assert replay_engine(path, POLICIES) == replay_engine(trace, POLICIES)


def test_a_4k_trace_takes_the_4k_path():
    """Without settings that allow a large folio (or MADV_COLLAPSE) the page space is the touched pages only
    and the state has no 2 MiB blocks: the fault path is the 4 KiB one."""
    plain = Stream().mmap(1, 0, 1024).madvise(1, 0, 1024, Advice.HUGEPAGE).write(1, 3, 700).trace(
        {"enabled": "never"})
    [st] = replay_states(plain, ["none"])
    assert not st.large and st.pmds.shape[1] == 0 and len(st.folios) == 0 and len(st.pages) == 698
    [st] = replay_states(plain, ["none"], folios=FolioSettings.from_thp(MADVISE))
    assert st.large and st.pmds.shape[1] == 2 and len(st.pages) == 1024


def test_a_madvise_split_clips_a_window_in_a_4k_trace_too():
    """MADV_HUGEPAGE splits a VMA whatever the settings; fixed:16's window stops at the new VMA end."""
    s = Stream().mmap(1, 0, 64).write(1, *range(64)).madvise(1, 8, 8, Advice.HUGEPAGE).fork(1, 2).write(2, 4)
    _, fixed = assert_engine_equals_model(s.trace(), ["none", "fixed:16"])
    assert fixed.ahead_copies == 3  # pages 5, 6, 7: the VMA ends at 8


def test_a_madvise_split_inside_a_thp_splits_its_pmd_and_fork_copies_it_once():
    """vma_adjust_trans_huge: MADV_NOHUGEPAGE on pages 100–109 of a PMD-mapped THP splits the PMD (no PMD
    straddles two VMAs), so fork shares a PTE-mapped folio, and the exits free it whole."""
    s = hugepage_region(512).write(1, 0).madvise(1, 100, 10, Advice.NOHUGEPAGE).fork(1, 2)
    none, = assert_engine_equals_model(s.trace(MADVISE), ["none"])
    assert (none.thp_split_pmd, none.resident) == (1, 512)
    none, = assert_engine_equals_model(s.exit(1).exit(2).trace(MADVISE), ["none"])
    assert (none.thp_split_pmd, none.resident, none.resident_peak) == (1, 0, 512)


def test_a_page_space_of_bare_columns_is_made_anew_only_where_large_folios_need_it():
    """A sweep hands over a page space of bare columns (no settings: 4 KiB) with the trace's own settings:
    rebuilt where these make large folios possible, kept (not even re-decoded) where they do not."""
    trace = four_workers().trace(MADVISE)
    space = page_space(trace.columns)
    assert not space.large and page_space(trace).large
    [st] = replay_states(trace.columns, ["none"], space=space, folios=FolioSettings.from_metadata(trace.metadata))
    assert st.large and to_counters(st) == model(trace, "none")
    plain = Stream().mmap(1, 0, 64).write(1, *range(64)).fork(1, 2).write(2, 5).trace({"enabled": "never"}, "6.12.0")
    space = page_space(plain.columns)
    [st] = replay_states(plain.columns, ["none"], space=space, folios=FolioSettings.from_metadata(plain.metadata))
    assert st.pages is space.pages and not st.large and to_counters(st) == model(plain, "none")
