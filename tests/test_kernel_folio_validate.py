"""Issue 19: the model against the patched 6.12 kernel under THP and mTHP, host side.

What changed in the model (and the engine alike) so that it equals the 6.12 patch, and the plan that
`cowahead kernel check` runs in the guest. Expected values are worked out by hand from the kernel's
rules as the comments say, never read back from the code under test.
"""

from __future__ import annotations

from test_engine_folios import assert_engine_equals_model

from cowahead.kernel import inguest
from cowahead.kernel.kbuild import SOURCES
from cowahead.kernel.validate import (GUEST_KERNEL, LARGE_PATTERNS, POLICIES, THP_CONFIGS, Workload, compare,
                                      make_plan, model_policy, model_workload, workload, workload_counters)
from cowahead.model import Kernel
from cowahead.model.folio import FolioSettings
from cowahead.policies import parse_policy
from cowahead.trace.generators import PARENT, TraceBuilder

CHILD = PARENT + 1
ENGINE_POLICIES = ("none", "fixed:16", "around:16", "adaptive", "folio")


def replay(b: TraceBuilder, policy: str, thp: dict | None = None, kernel: str = GUEST_KERNEL):
    meta = {"thp": thp, "kernel": kernel} if thp else {"kernel": kernel}
    trace = b.trace(meta)
    return trace, Kernel(parse_policy(policy)).replay(trace)


def test_a_window_skips_zero_page_ptes():
    """Parent writes the even pages of 64 and reads the odd ones (the zero page); the child's write at 0
    under fixed:16 breaks COW on 1..15: the 7 even pages are copied, the 7 odd ones (zero page: nothing
    to break, as the patch's cow_ahead_page skips them) are left alone."""
    b = TraceBuilder()
    b.mmap(PARENT, 64)
    for p in range(64):
        (b.write if p % 2 == 0 else b.read)(PARENT, p)
    b.fork(PARENT, CHILD)
    b.write(CHILD, 0)
    b.exit(CHILD)
    b.exit(PARENT)
    trace, c = replay(b, "fixed:16")
    assert (c.cow_copy, c.ahead_copies, c.ahead_reuses) == (1, 7, 0)
    assert_engine_equals_model(trace, ENGINE_POLICIES)


def test_no_cow_ahead_after_a_copy_from_the_zero_page():
    """Page 0 was only read before fork: the child's write there copies the zero page (a first write, not
    a broken share: the patch starts no window, old_folio is NULL); its write at 1 copies and breaks
    2..16 ahead (15 pages), in one batch."""
    b = TraceBuilder()
    b.mmap(PARENT, 64)
    b.read(PARENT, 0)
    b.writes(PARENT, range(1, 64))
    b.fork(PARENT, CHILD)
    b.writes(CHILD, [0, 1])
    b.exit(CHILD)
    b.exit(PARENT)
    trace, c = replay(b, "fixed:16")
    assert (c.cow_copy, c.ahead_copies, c.ahead_batches) == (2, 15, 1)
    assert_engine_equals_model(trace, ENGINE_POLICIES)


def _mthp_two_sided() -> TraceBuilder:
    b = TraceBuilder()
    b.mmap(PARENT, 64)
    b.writes(PARENT, range(64))  # four 64 KiB folios of 16 pages
    b.fork(PARENT, CHILD)
    b.write(CHILD, 5)
    b.write(PARENT, 5)
    b.exit(CHILD)
    b.exit(PARENT)
    return b


def test_folio_policy_on_612_copies_the_rest_of_the_folio_on_both_sides():
    """mTHP 64 KiB. The child's write at 5 copies it and, under folio, the folio's 15 other pages. The
    parent's folio is then mapped by the parent alone, but 6.12 never reuses a large folio's page by its
    counts (wp_can_reuse_anon_folio is false for a large folio, PageAnonExclusive was cleared at fork):
    its write at 5 copies too, and its 15 others follow: 2 copies on demand, 30 ahead, no reuse."""
    thp = THP_CONFIGS["mthp-64k"]
    trace, c = replay(_mthp_two_sided(), "folio", FolioSettings.from_thp(thp).as_thp())
    assert (c.cow_copy, c.ahead_copies, c.ahead_reuses, c.reuse) == (2, 30, 0, 0)
    assert_engine_equals_model(trace, ENGINE_POLICIES)


def test_on_615_the_parents_write_reuses_the_folio_it_alone_maps():
    """The same trace under 6.18 rules (reuse of PTE-mapped large folios, 1da190f4d0a6): the parent's write
    is a reuse and nothing follows it, so the guest's kernel version matters to the model."""
    thp = FolioSettings.from_thp(THP_CONFIGS["mthp-64k"]).as_thp()
    _, c = replay(_mthp_two_sided(), "folio", thp, kernel="6.18.0")
    assert (c.cow_copy, c.ahead_copies, c.reuse) == (1, 15, 1)


def test_fixed_window_takes_a_pte_mapped_thps_pages():
    """THP always: the parent's write maps one PMD THP over 512 pages; the child's write at 0 splits its PMD
    and copies page 0; fixed:4 then copies 1..3 of the PTE-mapped THP (the patch no longer skips a large
    folio's pages): 1 split, 1 + 3 copies."""
    b = TraceBuilder()
    b.mmap(PARENT, 512)
    b.write(PARENT, 0)
    b.fork(PARENT, CHILD)
    b.write(CHILD, 0)
    b.exit(CHILD)
    b.exit(PARENT)
    trace, c = replay(b, "fixed:4", FolioSettings.from_thp(THP_CONFIGS["always"]).as_thp())
    assert (c.thp_fault_alloc, c.thp_split_pmd, c.cow_copy, c.ahead_copies) == (1, 1, 1, 3)
    assert_engine_equals_model(trace, ENGINE_POLICIES)


def test_model_policy_of_the_kernels_folio_ignores_the_window():
    assert model_policy("folio", 16) == "folio" and model_policy("folio", 0) == "none"
    assert model_policy("around", 4) == "around:4"


def test_every_in_kernel_policy_is_in_the_patch_and_the_plan():
    """The sysctl names of the 6.12 patch are the plan's policies, folio included."""
    text = SOURCES["6.12"].patch.read_text()
    for name in ("fixed", "around", "adaptive", "folio"):
        assert f'= "{name}",' in text
    assert set(POLICIES) == {"fixed", "around", "adaptive", "folio"}
    assert "!folio_test_large(old_folio)" not in text  # a large folio's fault starts a window now


def test_the_zero_workloads_layout_at_fork():
    """The zero pattern, by its definition: the odd pages of 0-511 read (256 zero pages), 1024 read under THP
    always (the huge zero page: 512 more), 1536-2047 written (one THP): 768 zero, 512 large, every page
    present."""
    w = workload("zero", 2048, 0)
    m = model_workload(w, "none")
    assert (m["layout_fork_present"], m["layout_fork_zero"], m["layout_fork_large"]) == (2048, 768, 512)
    assert m["setup_thp_fault_alloc"] == 1


def test_thp_split_loses_a_page_and_a_whole_thp_before_fork():
    """MADV_DONTNEED of page 100 splits THP 0 (PTE-mapped, one hole), of 1024-1535 zaps THP 2 whole; the
    MADV_NOHUGEPAGE of 1600-1615 splits the VMA and so THP 3: 2 splits, 2048 - 1 - 512 pages present."""
    m = model_workload(workload("thp-split", 2048, 0), "none")
    assert (m["setup_thp_split_pmd"], m["layout_fork_present"], m["layout_fork_large"]) == (2, 1535, 1535)


def test_thp_sequential_under_none_by_hand_equals_the_guests_report():
    """Four THPs; each child's first write in one splits its PMD; 6.12 copies every page (none is
    reused); the child ends with 2048 small pages, the parent keeps its four THPs."""
    output = {"during": {"cow_fault_copy": 2048, "cow_ahead_copy": 0, "cow_ahead_reuse": 0, "cow_ahead_unused": -1,
                         "pgfault": 2050, "pgreuse": 0, "thp_fault_alloc": 0, "thp_fault_fallback": 0,
                         "thp_split_pmd": 4},
              "unmap": {}, "child_ns": 0,
              "setup": {"thp_fault_alloc": 4, "thp_split_pmd": 0},
              "layout_fork": {"present": 2048, "large": 2048, "zero": 0},
              "layout_child": {"present": 2048, "large": 0, "zero": 0},
              "layout_parent": {"present": 2048, "large": 2048, "zero": -1}}
    flat = workload_counters(output)
    assert "layout_parent_zero" not in flat and flat["thp_split_pmd"] == 4
    w = workload("thp-sequential", 2048, 0)
    row = {"kind": "workload", "pattern": w.name, "policy": "fixed", "window": 0, "output": output,
           "thp": THP_CONFIGS["always"], "thp_set": THP_CONFIGS["always"], "dmesg": []}
    (item,) = compare([row], {w.name: w})
    assert item["match"], item["differs"]
    bad = dict(row, output={**output, "layout_child": {"present": 2048, "large": 1, "zero": 0}})
    (item,) = compare([bad], {w.name: w})
    assert not item["match"] and item["differs"] == {"layout_child_large": [1, 0]}
    reused = dict(row, output={**output, "during": {**output["during"], "pgreuse": 1}})
    (item,) = compare([reused], {w.name: w})
    assert not item["match"] and item["differs"] == {"pgreuse": [1, 0]}  # no reuse fault: 6.12 copies them all
    ignored = dict(row, thp_set={**THP_CONFIGS["always"], "enabled": "never"})
    assert not compare([ignored], {w.name: w})[0]["match"]  # the guest did not take the knobs


def test_the_plan_runs_every_pattern_with_its_setup_and_knobs(tmp_path):
    programs = {"cow_workload": tmp_path / "cow_workload", "vmsplice_leak": tmp_path / "vmsplice_leak"}
    plan = make_plan(tmp_path, programs, leak=False, repeats=1)
    settings = {(r["pattern"], r["policy"], r["window"]) for r in plan.runs}
    assert len(settings) == len(plan.traces) * (1 + 4 * 3)  # window 0 once; 4 policies × 4, 16, 64
    assert set(LARGE_PATTERNS) <= set(plan.traces)
    for run in plan.runs:
        assert run["argv"][1] == "-s" and run["thp"] == THP_CONFIGS[plan.traces[run["pattern"]].config]
    text = (tmp_path / "setup-thp-split.txt").read_text().splitlines()
    assert text[0] == "h 0 2048" and "d 100 1" in text and "n 1600 16" in text


def test_a_workloads_trace_follows_the_guests_kernel_and_knobs():
    w = Workload("t", "mthp-64k", [("w", 0)], [0], None, 64)
    trace, marks = w.trace()
    assert trace.metadata["kernel"] == GUEST_KERNEL and trace.metadata["thp"]["hugepages-64kB/enabled"] == "always"
    assert FolioSettings.from_metadata(trace.metadata).kernel == (6, 12)
    assert marks == {"fork": 2, "child": 4, "parent": 4}  # mmap, write | fork, write | (no parent writes)


def test_inguest_reads_the_bracketed_thp_word(tmp_path, monkeypatch):
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    (tmp_path / "khugepaged").mkdir()
    (tmp_path / "khugepaged" / "scan_sleep_millisecs").write_text("10000\n")
    monkeypatch.setattr(inguest, "THP", tmp_path)
    assert inguest.thp_word("enabled") == "madvise"
    assert inguest.thp_word("khugepaged/scan_sleep_millisecs") == "10000"


def test_large_destination_workloads_run_with_the_option_on_both_sides(tmp_path):
    """Issue 23: an ld- workload is its pattern under 64 KiB mTHP (ld16-: 16 and 64 KiB) with the kernel's
    vm.cow_ahead_large_destinations on and the model's large destinations on (the trace's key). By hand:
    the parent's 2048 writes make 128 folios of 16 pages; the child writes every page in order; at fixed:16
    each fault is at a 16-aligned page and its span p … p+15 is one whole shared folio, so one order-4
    block per fault: 128 faults, 128 large folios of 2048 pages, 1920 pages copied ahead."""
    w = workload("ld-mthp-sequential", 2048, 0)
    assert (w.config, w.large_destinations) == ("mthp-64k", True)
    assert workload("ld16-mthp-holes", 2048, 0).config == "mthp-16-64"
    trace, _ = w.trace()
    assert FolioSettings.from_metadata(trace.metadata).large_destinations
    model = model_workload(w, "fixed:16")
    assert (model["cow_fault_copy"], model["cow_ahead_copy"]) == (128, 1920)
    assert (model["cow_large_alloc"], model["cow_large_pages"]) == (128, 2048)
    assert model_workload(workload("mthp-sequential", 2048, 0), "fixed:16")["cow_large_alloc"] == 0
    programs = {"cow_workload": tmp_path / "cow_workload", "vmsplice_leak": tmp_path / "vmsplice_leak"}
    plan = make_plan(tmp_path, programs, patterns=("mthp-sequential", "ld-mthp-sequential"), leak=False, repeats=1)
    assert {(r["pattern"], r["large_destinations"]) for r in plan.runs} == {("mthp-sequential", 0),
                                                                            ("ld-mthp-sequential", 1)}


def test_inguest_sets_large_destinations_and_a_kernel_without_it_fails_the_run(tmp_path, monkeypatch):
    for name in ("pages", "policy"):
        (tmp_path / name).write_text("0\n")
    monkeypatch.setattr(inguest, "SYSCTL_PAGES", tmp_path / "pages")
    monkeypatch.setattr(inguest, "SYSCTL_POLICY", tmp_path / "policy")
    monkeypatch.setattr(inguest, "SYSCTL_LARGE", tmp_path / "absent" / "large")
    inguest.set_cow_ahead("fixed", 16, 0)  # off, on a kernel without the sysctl: nothing to write
    try:
        inguest.set_cow_ahead("fixed", 16, 1)
    except OSError:
        pass
    else:
        raise AssertionError("asking a kernel without the sysctl for large destinations must fail")
    monkeypatch.setattr(inguest, "SYSCTL_LARGE", tmp_path / "large")
    inguest.set_cow_ahead("fixed", 16, 1)
    assert (tmp_path / "large").read_text() == "1" and (tmp_path / "pages").read_text() == "16"
