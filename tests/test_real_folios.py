"""Ground truth of large folios on this kernel: THP and mTHP, measured (issue 18).

These tests are the facts the model of folios is held against. Every
expected number is derived by hand from what the kernel is said to do
(docs/folios-host.md gives the rule and the kernel function behind each),
never taken from the code under test: "one fault maps 512 pages", "the
child's write copies exactly one 4 KiB page".

They need root (pagemap PFNs, /proc/kpageflags, the THP knobs) and skip
without it. Every test that changes a knob does so through ``thp_config``,
and an autouse fixture checks that every knob is as before after each
test, whatever happened in it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cowahead.errors import CowaheadError
from cowahead.machine import THP, thp_settings
from cowahead.real import folios, thp
from cowahead.real.folio_probes import Probe
from cowahead.real.folio_probes.experiments import MADV_HUGEPAGE, MADV_NOHUGEPAGE, run_experiment

PAGE = 4096
PMD = 512  # pages in a PMD THP (2 MiB)
MTHP_64K = 16  # pages in a 64 KiB folio

IS_ROOT = os.geteuid() == 0
HAS_MTHP = (THP / "hugepages-64kB" / "enabled").exists() and (THP / "hugepages-16kB" / "enabled").exists()
pytestmark = pytest.mark.skipif(
    not IS_ROOT or not (THP / "enabled").exists(),
    reason="needs root and /sys/kernel/mm/transparent_hugepage: PFNs in pagemap, /proc/kpageflags and the "
           "THP knobs are root-only")
needs_mthp = pytest.mark.skipif(not HAS_MTHP, reason="this kernel has no anonymous mTHP (hugepages-64kB/enabled, "
                                                     "Linux 6.8+)")


@pytest.fixture(autouse=True)
def knobs_untouched():
    """Every THP knob is the same after each test as before it."""
    before = thp.knob_snapshot()
    yield
    assert thp.knob_snapshot() == before


def fallbacks(experiment) -> dict[str, int]:
    """Allocation-fallback counters that moved during an experiment (should be none: else the facts differ)."""
    moved: dict[str, int] = {}
    for step in experiment.steps:
        for name, delta in step.counters.items():
            if "fallback" in name:
                moved[name] = moved.get(name, 0) + delta
    return moved


def facts(name: str) -> dict:
    """An experiment's facts, once it is sure that no large folio allocation fell back meanwhile."""
    experiment = run_experiment(name)
    assert not fallbacks(experiment), (f"{name}: a large folio allocation fell back ({fallbacks(experiment)}): "
                                       "memory was short or fragmented, and the figures below assume it was not")
    return experiment.facts


# ----- thp_config: set, restore --------------------------------------------------------------------


def test_thp_config_applies_a_named_configuration_and_restores_it():
    before = thp_settings()
    with thp.thp_config("mthp-mixed") as inside:
        assert inside["hugepages-16kB/enabled"] == "always"
        assert inside["hugepages-64kB/enabled"] == "always"
        assert inside["hugepages-2048kB/enabled"] == "always"
        assert inside["hugepages-32kB/enabled"] == "never"
        assert thp_settings() == inside
    assert thp_settings() == before


def test_keywords_override_the_named_configuration():
    with thp.thp_config("madvise", use_zero_page=0, mthp={"64kB": "always"}) as inside:
        assert inside["enabled"] == "madvise"
        assert inside["use_zero_page"] == "0"
        assert inside["hugepages-64kB/enabled"] == "always"


def test_every_knob_is_restored_after_an_exception():
    before = thp.knob_snapshot()
    with pytest.raises(ValueError), thp.thp_config("always", defrag="never", use_zero_page=0,
                                                   mthp={"64kB": "always"}):
        assert thp_settings()["enabled"] == "always"
        raise ValueError("a test failing inside")
    assert thp.knob_snapshot() == before


def test_every_knob_is_restored_after_keyboard_interrupt():
    before = thp.knob_snapshot()
    with pytest.raises(KeyboardInterrupt), thp.thp_config("never", mthp={"16kB": "always"}):
        raise KeyboardInterrupt
    assert thp.knob_snapshot() == before


def test_sigterm_inside_raises_terminated_restores_the_knobs_and_the_old_handler():
    before = thp.knob_snapshot()
    old = signal.getsignal(signal.SIGTERM)
    with pytest.raises(thp.Terminated) as raised, thp.thp_config("always"):
        assert signal.getsignal(signal.SIGTERM) is not old
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; never reached
    assert raised.value.code == 128 + signal.SIGTERM
    assert thp.knob_snapshot() == before
    assert signal.getsignal(signal.SIGTERM) is old


def _lock_is_free() -> bool:
    import fcntl
    fd = os.open(thp.LOCK_PATH if thp.LOCK_PATH.parent.is_dir() else f"/tmp/{thp.LOCK_PATH.name}",
                 os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_thp_config_in_another_process_holds_the_knobs_until_it_restores_them():
    """Two processes setting and restoring the knobs at once leave one's settings behind; so a block holds a
    machine-wide lock from its snapshot to its restore (nested blocks in one process take it once)."""
    code = textwrap.dedent("""
        import sys
        from cowahead.real import thp
        with thp.thp_config("never"):
            with thp.thp_config("always"):  # nested: no second lock, no wait on itself
                print("held", flush=True)
                sys.stdin.readline()
        print("restored", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert not _lock_is_free()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "restored"
    finally:
        child.stdin.close()
        assert child.wait(timeout=30) == 0
    assert _lock_is_free()


def test_a_process_killed_with_sigterm_inside_restores_every_knob_and_exits_143():
    before = thp.knob_snapshot()
    code = textwrap.dedent("""
        import sys, time
        from cowahead.real.thp import thp_config
        with thp_config("mthp-mixed", enabled="always", use_zero_page=0):
            print("inside", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "inside"
        assert thp_settings()["enabled"] == "always"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert thp.knob_snapshot() == before


def test_a_child_forked_inside_does_not_restore_the_knobs_when_it_unwinds():
    code = textwrap.dedent("""
        import os, sys
        from cowahead.machine import thp_settings
        from cowahead.real.thp import thp_config
        with thp_config(enabled="always"):
            child = os.fork()
            if child == 0:
                sys.exit(0)  # unwinds through thp_config's finally, in the child
            os.waitpid(child, 0)
            print(thp_settings()["enabled"], flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "always"


def test_a_missing_knob_is_one_line_error_and_nothing_changes():
    before = thp.knob_snapshot()
    # 8 KiB (order 1) exists for shmem only.
    with pytest.raises(CowaheadError, match=r"hugepages-8kB/enabled is missing") as raised, \
            thp.thp_config(mthp={"8kB": "always"}):
        pass
    assert "\n" not in str(raised.value)
    with pytest.raises(CowaheadError, match=r"takes always, madvise, never, not 'sometimes'"), \
            thp.thp_config(enabled="sometimes"):
        pass
    with pytest.raises(CowaheadError, match="no THP configuration 'huge'"), thp.thp_config("huge"):
        pass
    assert thp.knob_snapshot() == before


def test_not_root_is_one_line_error(monkeypatch):
    monkeypatch.setattr(thp.os, "geteuid", lambda: 1000)
    with pytest.raises(CowaheadError, match="setting THP knobs needs root"), thp.thp_config("always"):
        pass


def test_named_configurations_say_what_every_anonymous_size_is():
    sizes = thp.anon_sizes()
    assert "8kB" not in sizes  # order 1 is never an anonymous folio size
    for config in thp.CONFIGS.values():
        knobs = config.knobs()
        assert all(f"hugepages-{s}/enabled" in knobs for s in sizes), config.name
    assert thp.CONFIGS["mthp-64k"].knobs()["hugepages-64kB/enabled"] == "always"
    assert thp.CONFIGS["mthp-64k"].knobs()["enabled"] == "madvise"
    assert thp.CONFIGS["never"].knobs()["enabled"] == "never"


# ----- folios.py: reading folio membership ---------------------------------------------------------


def test_a_read_fault_maps_the_4k_zero_page_and_kpageflags_says_so():
    with thp.thp_config("never"), Probe() as probe:
        a = probe.map(4 * PAGE, PAGE)
        assert probe.read(a, 4 * PAGE)["minflt"] == 4
        f = folios.read_folios(probe.pid, a, 4)
        assert f.present.all() and f.is_zero_page.all() and not f.is_thp.any()
        assert len(set(f.pfn.tolist())) == 1  # one shared zero page
        assert f.folio_pages.tolist() == [1, 1, 1, 1]


def test_folio_walk_finds_the_head_outside_the_range_and_reads_256mib_fast():
    with thp.thp_config("madvise"), Probe() as probe:
        a = probe.map(256 << 20, PMD * PAGE)
        probe.madvise(a, 256 << 20, MADV_HUGEPAGE)
        assert probe.write(a, 256 << 20)["minflt"] == 128  # one fault per 2 MiB
        start = time.perf_counter()
        f = folios.read_folios(probe.pid, a, 65536)
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0, f"reading 65,536 pages took {elapsed:.2f} s"
        assert f.folio_sizes() == {PMD: 128}
        assert f.is_thp.all() and f.is_anon.all() and f.pmd_mapped.all()
        heads = f.head_pfn.reshape(128, PMD)
        assert (heads == f.pfn[::PMD, None]).all()  # every page's head is its 2 MiB's first page
        assert (np.diff(f.pfn.reshape(128, PMD), axis=1) == 1).all()  # a folio is contiguous
        # A range starting in the middle of a folio: its head is found by walking back.
        mid = folios.read_folios(probe.pid, a + 100 * PAGE, 10)
        assert (mid.head_pfn == f.pfn[0]).all() and (mid.folio_pages == PMD).all()
        smaps = folios.smaps_range(probe.pid, a, 256 << 20)
        assert smaps["AnonHugePages"] == 256 * 1024 and smaps["vmas"] == 1


# ----- a. PMD THP and fork ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pmd_fork():
    return facts("pmd-thp-fork")


def test_pmd_thp_zero_fill_one_fault_maps_512_pages(pmd_fork):
    assert pmd_fork["zero_fill_faults_per_2mib"] == 1
    assert pmd_fork["zero_fill_folio_sizes"] == {PMD: 4}
    assert pmd_fork["zero_fill_pmd_mapped_pages"] == 4 * PMD


def test_fork_shares_the_pmd_unsplit(pmd_fork):
    assert pmd_fork["fork_child_pmd_mapped_pages"] == 4 * PMD
    assert pmd_fork["fork_child_exclusive_pages"] == 0


def test_child_write_splits_only_the_childs_pmd_and_copies_one_4k_page(pmd_fork):
    assert pmd_fork["child_write_one_faults"] == 1
    assert pmd_fork["child_write_one_child_copied"] == 1
    assert pmd_fork["child_write_one_child_T0_pmd_mapped"] == 0  # the child's PMD became 512 PTEs
    assert pmd_fork["child_write_one_child_T1_pmd_mapped"] == PMD  # other THPs untouched
    assert pmd_fork["child_write_one_child_T0_folios"] == [1, PMD]  # the copy is a 4 KiB page
    assert pmd_fork["child_write_one_child_unwritten_same_pfn_as_parent"] == PMD - 1
    assert pmd_fork["child_write_one_parent_copied"] == 0
    assert pmd_fork["child_write_one_parent_T0_pmd_mapped"] == PMD  # the parent's PMD is not split
    assert pmd_fork["child_write_one_thp_split_pmd"] >= 1
    assert pmd_fork["child_write_one_thp_split_page"] == 0  # the folio itself is not split


def test_child_writing_all_512_copies_each_4k_page(pmd_fork):
    assert pmd_fork["child_write_rest_faults"] == PMD - 1  # page 5 is writable already
    assert pmd_fork["child_write_rest_child_copied"] == PMD - 1
    assert pmd_fork["child_write_rest_child_T0_folios"] == [1]  # 512 small pages, no new THP


def test_parent_reuses_the_whole_pmd_once_the_child_maps_none_of_it(pmd_fork):
    assert pmd_fork["parent_after_child_copied_all_faults"] == 1
    assert pmd_fork["parent_after_child_copied_all_copied"] == 0
    assert pmd_fork["parent_after_child_copied_all_T0_pmd_mapped"] == PMD
    assert pmd_fork["parent_after_child_copied_all_rest_copied"] == 0  # the whole PMD is writable


def test_parent_writing_first_splits_its_own_pmd_and_copies_every_page(pmd_fork):
    assert pmd_fork["parent_first_faults"] == PMD
    assert pmd_fork["parent_first_parent_copied"] == PMD
    assert pmd_fork["parent_first_parent_T1_pmd_mapped"] == 0
    assert pmd_fork["parent_first_child_T1_pmd_mapped"] == PMD
    assert pmd_fork["child_after_parent_faults"] == 1  # then the child reuses its PMD whole
    assert pmd_fork["child_after_parent_copied"] == 0
    assert pmd_fork["child_after_parent_T1_pmd_mapped"] == PMD
    assert pmd_fork["child_after_parent_rest_copied"] == 0


def test_parent_copies_while_the_child_maps_any_page_then_the_child_reuses_its_ptes(pmd_fork):
    assert pmd_fork["parent_while_child_maps_511_faults"] == PMD
    assert pmd_fork["parent_while_child_maps_511_copied"] == PMD
    assert pmd_fork["parent_while_child_maps_511_T2_pmd_mapped"] == 0
    # The folio is now mapped by the child's 511 PTEs only: each write reuses a page (1da190f4d0a6).
    assert pmd_fork["child_ptes_after_parent_copied_faults"] == PMD - 1
    assert pmd_fork["child_ptes_after_parent_copied_copied"] == 0


def test_after_the_child_exits_the_parent_reuses_the_pmd(pmd_fork):
    assert pmd_fork["parent_alone_faults"] == 1
    assert pmd_fork["parent_alone_copied"] == 0
    assert pmd_fork["parent_alone_T3_pmd_mapped"] == PMD
    assert pmd_fork["parent_alone_rest_copied"] == 0


def test_pmd_reuse_leaves_spurious_faults_but_changes_nothing_more():
    f = facts("spurious-pmd-reuse")
    assert f["read_faults"] == 0
    assert f["write_faults"] >= 1  # 1 reuse, and one more per 4 KiB TLB entry still read-only
    assert f["write_copied"] == 0
    assert f["write_pmd_mapped"] == PMD
    assert f["write_thp_split_pmd"] == 0


def test_pagemap_exclusive_bit_of_a_pmd_mapped_thp_is_its_head_pages():
    f = facts("exclusive-bit")
    assert f["page5_parent_T0_exclusive"] == 0  # page 5 is the parent's alone, but the head is shared
    assert f["page5_parent_T0_pmd_mapped"] == PMD
    assert f["page5_child_T0_exclusive_pages"] == [5]
    assert f["head_parent_T1_exclusive"] == PMD  # the head alone is the parent's: all 512 read exclusive
    assert f["head_child_T1_exclusive_pages"] == [0]


# ----- b. mTHP 64 KiB and fork ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mthp_fork():
    if not HAS_MTHP:
        pytest.skip("this kernel has no anonymous mTHP")
    return facts("mthp-64k-fork")


def test_mthp_zero_fill_one_fault_per_64k(mthp_fork):
    assert mthp_fork["zero_fill_faults_per_64kib"] == 1
    assert mthp_fork["zero_fill_folio_sizes"] == {MTHP_64K: 8}
    assert mthp_fork["zero_fill_pmd_mapped_pages"] == 0
    assert mthp_fork["zero_fill_64kB_anon_fault_alloc"] >= 8


def test_mthp_child_write_copies_one_4k_page(mthp_fork):
    assert mthp_fork["child_write_one_faults"] == 1
    assert mthp_fork["child_write_one_copied"] == 1
    assert mthp_fork["child_write_one_new_folio_pages"] == [1]
    assert mthp_fork["child_write_one_parent_copied"] == 0
    assert mthp_fork["child_write_one_child_F0_other_pages_same_folio"] == MTHP_64K - 1
    assert mthp_fork["child_write_folio_faults"] == MTHP_64K
    assert mthp_fork["child_write_folio_copied"] == MTHP_64K
    assert mthp_fork["child_write_folio_new_folio_pages"] == [1]


def test_mthp_parent_reuses_only_when_no_other_mm_maps_any_page_of_the_folio(mthp_fork):
    assert mthp_fork["parent_after_child_copied_all_faults"] == MTHP_64K
    assert mthp_fork["parent_after_child_copied_all_copied"] == 0
    assert mthp_fork["parent_after_child_copied_one_faults"] == MTHP_64K
    assert mthp_fork["parent_after_child_copied_one_copied"] == MTHP_64K
    assert mthp_fork["child_write_15_faults"] == 15
    assert mthp_fork["parent_while_child_maps_one_faults"] == MTHP_64K
    assert mthp_fork["parent_while_child_maps_one_copied"] == MTHP_64K


def test_mthp_the_last_mapped_page_of_a_folio_is_copied_not_reused(mthp_fork):
    # __wp_can_reuse_large_anon_folio: "free up a large folio if only a single page is mapped".
    assert mthp_fork["child_last_mapped_page_faults"] == 1
    assert mthp_fork["child_last_mapped_page_copied"] == 1
    assert mthp_fork["parent_one_page_left_faults"] == 1
    assert mthp_fork["parent_one_page_left_copied"] == 1
    assert mthp_fork["parent_two_pages_left_faults"] == 2
    assert mthp_fork["parent_two_pages_left_copied"] == 0


def test_mthp_after_the_child_exits_the_parent_reuses_every_page(mthp_fork):
    assert mthp_fork["parent_alone_faults"] == MTHP_64K
    assert mthp_fork["parent_alone_copied"] == 0


@needs_mthp
def test_pagemap_exclusive_bit_of_a_pte_mapped_folio_is_per_page():
    f = facts("exclusive-bit-mthp")
    assert f["parent_exclusive_pages"] == [5]  # CONFIG_PAGE_MAPCOUNT: the page's own map count
    assert f["child_exclusive_pages"] == [5]


# ----- c. the huge zero page ----------------------------------------------------------------------


def test_a_read_fault_maps_the_huge_zero_page_and_a_write_allocates_a_thp():
    f = facts("huge-zero-page")
    assert f["read_faults"] == 1
    assert f["read_maps_huge_zero_page"] == PMD
    assert f["read_pmd_mapped"] == PMD
    assert f["read_folio_sizes"] == {}  # no memory of its own
    assert f["write_faults"] == 1
    assert f["write_appeared_or_copied"] == PMD  # a whole new THP, not a 4 KiB page
    assert f["write_folio_pages"] == [PMD]
    assert f["write_pmd_mapped"] == PMD
    assert f["write_thp_fault_alloc"] >= 1
    assert f["write_thp_split_pmd"] == 0
    assert f["write_rest_faults"] == 0
    assert f["read_one_page_faults"] == 1  # one read maps the whole 2 MiB to the huge zero page
    assert f["read_one_page_maps_huge_zero_page"] == PMD
    # Shared by fork; the child's write gets its own THP, the parent keeps the huge zero page.
    assert f["fork_child_huge_zero_pages"] == PMD
    assert f["child_write_faults"] == 1
    assert f["child_write_child_folio_pages"] == [PMD]
    assert f["child_write_child_pmd_mapped"] == PMD
    assert f["child_write_parent_huge_zero_pages"] == PMD


def test_without_use_zero_page_a_read_fault_allocates_a_writable_thp():
    f = facts("huge-zero-page-off")
    assert f["read_faults"] == 1
    assert f["read_maps_huge_zero_page"] == 0
    assert f["read_folio_sizes"] == {PMD: 1}
    assert f["read_thp_fault_alloc"] >= 1
    assert f["write_faults"] == 0  # mapped writable (and dirty) at the read fault


@needs_mthp
def test_under_mthp_a_read_maps_4k_zero_pages_and_the_writes_after_it_copy_4k():
    f = facts("zero-page-mthp")
    assert f["read_faults"] == MTHP_64K
    assert f["read_zero_pages"] == MTHP_64K
    assert f["write_after_read_faults"] == MTHP_64K
    assert f["write_after_read_copied"] == MTHP_64K
    assert f["write_after_read_folio_pages"] == [1]
    assert f["write_never_read_faults"] == 1
    assert f["write_never_read_folio_pages"] == [MTHP_64K]


# ----- d. MADV_DONTNEED inside a PMD THP --------------------------------------------------------------


@pytest.fixture(scope="module")
def dontneed():
    return facts("dontneed-in-thp")


def test_dontneed_of_one_page_splits_the_pmd_and_keeps_the_folio(dontneed):
    assert dontneed["one_page_faults"] == 0
    assert dontneed["one_page_dropped"] == 1
    assert dontneed["one_page_T0_pmd_mapped"] == 0
    assert dontneed["one_page_rest_same_pfn"] == PMD - 1
    assert dontneed["one_page_rest_folio_pages"] == [PMD]  # still one 2 MiB folio, PTE-mapped
    counters = dontneed["one_page_counters"]
    assert counters.get("thp_split_pmd", 0) >= 1
    # not freed: the 2 MiB is still held, by 511 PTEs (above). The system-wide 2048kB/nr_anon is not asked:
    # any other process's THP (a QEMU guest's memory, a build under THP always) moves it during the step.
    assert counters.get("2048kB/nr_anon_partially_mapped", 0) >= 1  # queued for a deferred split
    smaps = dontneed["one_page_smaps"]  # the VMA's four THPs less one page; three still PMD-mapped
    assert smaps["Rss"] == 4 * 2048 - 4
    assert smaps["AnonHugePages"] == 3 * 2048


def test_a_fault_in_a_split_thp_gets_a_4k_page(dontneed):
    assert dontneed["refill_faults"] == 1
    assert dontneed["refill_folio_pages"] == [1]
    assert dontneed["refill_same_pfn_as_before"] is False
    assert dontneed["other_faults"] == 1
    assert dontneed["other_folio_pages"] == [1]


def test_dontneed_of_the_whole_2m_frees_it_and_the_next_write_gets_a_thp(dontneed):
    assert dontneed["whole_dropped"] == PMD
    # freed, in the process's own smaps (the system-wide nr_anon moves with other processes' THPs): T0 is
    # whole again but PTE-mapped (pages 7 and 9 were refilled), T1 is gone, T2 and T3 are still PMD-mapped
    assert dontneed["whole_smaps"]["Rss"] == 3 * 2048
    assert dontneed["whole_smaps"]["AnonHugePages"] == 2 * 2048
    assert dontneed["whole_write_faults"] == 1
    assert dontneed["whole_write_appeared"] == PMD
    assert dontneed["whole_write_folio_pages"] == [PMD]
    assert dontneed["whole_write_pmd_mapped"] == PMD


def test_while_a_page_table_is_there_faults_get_4k_pages(dontneed):
    assert dontneed["half_dropped"] == PMD // 2
    assert dontneed["half_write_faults"] == PMD // 2
    assert dontneed["half_write_folio_pages"] == [1]
    assert dontneed["half_untouched_folio_pages"] == [PMD]
    # Every PTE none, but the table stays (two half-size DONTNEEDs): still 4 KiB, no THP.
    assert dontneed["empty_table_present"] == 0
    assert dontneed["empty_table_write_faults"] == 1
    assert dontneed["empty_table_write_appeared"] == 1
    assert dontneed["empty_table_write_folio_pages"] == [1]


def test_one_dontneed_over_the_whole_2m_frees_the_page_table_and_thp_comes_back(dontneed):
    # CONFIG_PT_RECLAIM: a zap of a whole PMD range frees the emptied PTE table.
    assert dontneed["reclaim_write_faults"] == 1
    assert dontneed["reclaim_write_folio_pages"] == [PMD]
    assert dontneed["reclaim_write_pmd_mapped"] == PMD
    assert dontneed["mixed_dropped"] == PMD
    assert dontneed["mixed_write_faults"] == 1
    assert dontneed["mixed_write_folio_pages"] == [PMD]
    assert dontneed["mixed_write_pmd_mapped"] == PMD


# ----- e. which mTHP order --------------------------------------------------------------------------


@needs_mthp
def test_mthp_order_is_the_largest_enabled_whose_aligned_range_is_empty_and_inside_the_vma():
    f = facts("mthp-order-choice")
    assert f["pre_folio_pages"] == [1]
    assert f["with_pte_in_16k_range_faults"] == 1
    assert f["with_pte_in_16k_range_appeared"] == 1  # both 16 and 64 KiB ranges hold page 3: 4 KiB
    assert f["with_pte_in_16k_range_folio_pages"] == [1]
    assert f["with_pte_in_64k_range_appeared"] == 4  # 64 KiB range not empty, 16 KiB range is
    assert f["with_pte_in_64k_range_folio_pages"] == [4]
    assert f["with_pte_in_64k_range_counters"].get("16kB/anon_fault_alloc", 0) >= 1
    assert f["empty_64k_range_appeared"] == MTHP_64K
    assert f["empty_64k_range_folio_pages"] == [MTHP_64K]
    assert f["small_vma_faults"] == 2  # 32 KiB VMA: two 16 KiB folios
    assert f["small_vma_folio_pages"] == [4]
    assert f["unaligned_vma_faults"] == 3 + 1 + 1
    assert f["unaligned_vma_folio_pages_by_page"] == [4] * 12 + [MTHP_64K] * 16 + [4] * 4


@needs_mthp
def test_mthp_mixed_pmd_where_2m_fits_else_64k_else_16k():
    f = facts("mthp-mixed")
    assert f["aligned_2m_faults"] == 1
    assert f["aligned_2m_folio_sizes"] == {PMD: 1}
    assert f["aligned_2m_pmd_mapped"] == PMD
    assert f["one_mib_faults"] == 16
    assert f["one_mib_folio_sizes"] == {MTHP_64K: 16}
    # 2 MiB starting 32 KiB past a 2 MiB boundary: 2 x 16 KiB, 31 x 64 KiB, 2 x 16 KiB.
    assert f["unaligned_2m_faults"] == 2 + 31 + 2
    assert f["unaligned_2m_folio_sizes"] == {4: 4, MTHP_64K: 31}


# ----- f. prctl, MADV_NOHUGEPAGE, MADV_COLLAPSE --------------------------------------------------------


def test_pr_set_thp_disable_is_inherited_at_fork_and_kept_across_exec():
    f = facts("thp-disable-prctl")
    assert f["set"] == 0 and f["get"] == 1
    assert f["parent_faults"] == PMD and f["parent_folio_sizes"] == {1: PMD}
    assert f["child_get"] == 1
    assert f["child_faults"] == PMD and f["child_folio_sizes_T1"] == [1]
    assert f["child_after_exec_thp_disable"] == 1
    assert f["exec_child_faults"] == PMD and f["exec_child_folio_sizes"] == {1: PMD}
    assert f["clear"] == 0
    assert f["after_clear_faults"] == 1 and f["after_clear_folio_sizes"] == {PMD: 1}


def test_pr_thp_disable_except_advised_keeps_thp_for_madv_hugepage_only():
    f = facts("thp-disable-except-advised")
    if f["set"]["ret"] != 0:
        pytest.skip(f"PR_THP_DISABLE_EXCEPT_ADVISED refused (errno {f['set']['errno']}): Linux < 6.18")
    assert f["get"] == 1 | 2
    assert f["unadvised_faults"] == PMD and f["unadvised_folio_sizes"] == [1]
    assert f["advised_faults"] == 1 and f["advised_folio_sizes"] == [PMD]


def test_madv_nohugepage_gets_4k_pages_under_thp_always():
    f = facts("nohugepage")
    assert f["nohugepage_faults"] == PMD and f["nohugepage_folio_sizes"] == [1]
    assert f["plain_faults"] == 1 and f["plain_folio_sizes"] == [PMD]


def test_madv_collapse_copies_512_small_pages_into_a_thp_even_when_shared():
    f = facts("collapse")
    assert f["before_folio_sizes"] == [1]
    assert f["collapse_reply"]["ret"] == 0
    assert f["collapse_reply"]["minflt"] == 0
    assert f["collapse_copied"] == PMD
    assert f["collapse_folio_pages"] == [PMD]
    assert f["collapse_pmd_mapped"] == PMD
    assert f["collapse_counters"].get("thp_collapse_alloc", 0) >= 1
    assert f["write_after_faults"] == 0  # the new PMD is writable
    # Shared with a child: the parent gets a THP of its own; the child keeps the old pages.
    assert f["shared_collapse_reply"]["ret"] == 0
    assert f["shared_collapse_parent_copied"] == PMD
    assert f["shared_collapse_parent_folio_pages"] == [PMD]
    assert f["shared_collapse_child_copied"] == 0
    assert f["parent_write_faults"] == 0
    assert f["child_write_faults"] == PMD  # the old pages are the child's alone: reused
    assert f["child_write_copied"] == 0


# ----- g. allocation fallback ----------------------------------------------------------------------


@needs_mthp
@pytest.mark.skipif(not os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                    reason="needs the cgroup v1 memory controller to make a charge fail")
def test_a_large_folio_that_cannot_be_charged_falls_back_and_the_counters_show_it():
    experiment = run_experiment("charge-fallback")
    f = experiment.facts
    # PMD THP fails: the fault falls back to the PTE path, which gets the next enabled order (64 KiB).
    assert f["thp_faults"] == 1
    assert f["thp_folio_pages"] == [MTHP_64K]
    for counter in ("thp_fault_fallback", "thp_fault_fallback_charge", "2048kB/anon_fault_fallback",
                    "2048kB/anon_fault_fallback_charge"):
        assert f["thp_counters"].get(counter, 0) >= 1, counter
    # 64 KiB fails too: 4 KiB.
    assert f["mthp_faults"] == 1
    assert f["mthp_folio_pages"] == [1]
    assert f["mthp_appeared"] == 1
    for counter in ("64kB/anon_fault_fallback", "64kB/anon_fault_fallback_charge"):
        assert f["mthp_counters"].get(counter, 0) >= 1, counter
    assert not [p for p in os.listdir("/sys/fs/cgroup/memory") if p.startswith("cowahead-fallback-")]


def test_madv_hugepage_in_a_4k_process_is_what_makes_a_thp_under_madvise():
    with thp.thp_config("madvise"), Probe() as probe:
        a = probe.map(2 * PMD * PAGE, PMD * PAGE)
        probe.madvise(a, PMD * PAGE, MADV_HUGEPAGE)
        probe.madvise(a + PMD * PAGE, PMD * PAGE, MADV_NOHUGEPAGE)
        assert probe.write(a, PMD * PAGE)["minflt"] == 1
        assert probe.write(a + PMD * PAGE, PMD * PAGE)["minflt"] == PMD
        f = folios.read_folios(probe.pid, a, 2 * PMD)
        assert f.folio_sizes() == {PMD: 1, 1: PMD}
