"""`validate` with large folios: THP and mTHP configurations, the model against the kernel page for page.

The runs need root: the THP knobs are files under /sys/kernel/mm/transparent_hugepage/ and
pagemap shows PFNs to root only; without root they skip and say so. Every knob is restored
after each test (checked). The plan tests run anywhere.

Expected values are derived by hand from docs/folios-host.md: under THP madvise with
MADV_HUGEPAGE a parent writing 1024 pages takes 2 faults (two 2 MiB THPs, PMD-mapped); a
child writing every page after fork takes 1024 faults, each splitting nothing more than its
own PMD once and copying one 4 KiB page. Under mTHP 64 KiB the same parent takes 64 faults of
16 pages each.
"""

from __future__ import annotations

import os
import platform
from collections import Counter

import pytest

from cowahead.cli.main import main
from cowahead.errors import CowaheadError
from cowahead.model.folio import FolioSettings
from cowahead.real import linux
from cowahead.real import validate as validate_module
from cowahead.real.plan import Op, build_plan
from cowahead.real.thp import knob_snapshot
from cowahead.real.truth import Comparison
from cowahead.real.validate import CONFIG_NAMES, ValidateSettings, document, knobs, parse_configs, summary, validate
from cowahead.trace.events import PAGE_SIZE, Advice, EventKind
from cowahead.trace.generators import BASE, PARENT, PATTERNS, TraceBuilder, generate

CHILD = PARENT + 1
SUPPORT = linux.probe_support()
REASON = ("needs root: the THP knobs are root-only files under /sys/kernel/mm/transparent_hugepage/ and pagemap "
          "shows PFNs to root only" if os.geteuid() != 0 else "; ".join(SUPPORT.problems))
needs_root = pytest.mark.skipif(os.geteuid() != 0 or not SUPPORT.ok, reason=REASON or "ok")
MADVISE = FolioSettings.from_thp({"enabled": "madvise"}, "6.18")


@pytest.fixture
def knobs_restored():
    """Every THP knob (and khugepaged's) is as it was after the test."""
    before = knob_snapshot()
    yield
    assert knob_snapshot() == before


def run(trace_or_spec, config: str, policy: str = "none", pages: int = 1024) -> Comparison:
    """One trace (or generator spec) under one THP configuration, as validate runs it."""
    with knobs(config) as thp:
        folios = FolioSettings.from_thp(thp, platform.release())
        trace = generate(trace_or_spec, pages) if isinstance(trace_or_spec, str) else trace_or_spec
        return validate_module._run(build_plan(trace, policy, folios=folios), SUPPORT.zero_pfn)


def madvise_hugepage(b: TraceBuilder, pages: int) -> None:
    b.add(PARENT, EventKind.MADVISE, BASE, pages * PAGE_SIZE, int(Advice.HUGEPAGE))


def whole_pmd_reuse_trace() -> object:
    """THP madvise, 1024 pages: the parent's two THPs, a fork, the child copies page 5 and exits; the
    parent then writes every page: no other mm maps its THPs, so each PMD is reused whole (2 faults)."""
    b = TraceBuilder()
    b.mmap(PARENT, 1024)
    madvise_hugepage(b, 1024)
    b.writes(PARENT, range(1024))
    b.fork(PARENT, CHILD)
    b.write(CHILD, 5)
    b.exit(CHILD)
    b.writes(PARENT, range(1024))
    b.exit(PARENT)
    return b.trace({"pattern": "whole-pmd-reuse"})


def huge_zero_page_trace() -> object:
    """Reading 512 pages maps the huge zero page (1 fault); a write then gets a new THP (1 fault, 512 pages)."""
    b = TraceBuilder()
    b.mmap(PARENT, 512)
    madvise_hugepage(b, 512)
    for page in range(512):
        b.read(PARENT, page)
    b.writes(PARENT, range(512))
    b.exit(PARENT)
    return b.trace({"pattern": "huge-zero-page"})


# ----- plans and options (no kernel needed) --------------------------------------------------------


def test_the_plan_carries_madvise_and_the_models_fault_sizes_and_folios():
    plan = build_plan(generate("sequential+madvise", 1024), "none", folios=MADVISE)
    madvise = [s for s in plan.steps if s.op == Op.MADVISE]
    assert len(madvise) == 1 and madvise[0].advice == Advice.HUGEPAGE and len(madvise[0].pages) == 1024
    big = {entry: n for entry, n in plan.model_pages.items() if n > 1}
    assert sorted((page - BASE // PAGE_SIZE, kind, n) for (_, _, page, kind), n in big.items()) == \
        [(0, "zero_fill", 512), (512, "zero_fill", 512)]
    fork = next(s for s in plan.steps if s.op == Op.FORK)
    assert fork.folios.pmd.all() and (fork.folios.size == 512).all()
    assert fork.folios.first.tolist() == [0] * 512 + [512] * 512
    child_exit = next(s for s in plan.steps if s.op == Op.EXIT and s.pid == CHILD)
    assert (child_exit.folios.size == 1).all() and not child_exit.folios.pmd.any()  # every page copied, 4 KiB


def test_a_trace_the_model_cannot_place_is_refused_in_one_line():
    b = TraceBuilder()
    b.mmap(PARENT, 512)
    b.add(PARENT, EventKind.MADVISE, BASE, 512 * PAGE_SIZE, int(Advice.COLLAPSE))
    with pytest.raises(CowaheadError, match="MADV_COLLAPSE"):
        build_plan(b.trace({}), "none")


def test_folio_configurations_parse_and_bad_ones_fail_in_one_line(capsys):
    assert parse_configs(None) == CONFIG_NAMES == ["never", "madvise", "always", "mthp-64k", "mthp-mixed"]
    assert parse_configs("madvise, mthp-64k,madvise") == ["madvise", "mthp-64k"]
    assert parse_configs("host") == []
    with pytest.raises(CowaheadError, match="no THP configuration 'huge'"):
        parse_configs("madvise,huge")
    assert main(["validate", "--folios", "madvise,huge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cowahead: error: no THP configuration 'huge'")


def test_a_run_that_fell_back_says_so_instead_of_mismatching():
    c = Comparison("sequential+madvise", "none", Counter(), Counter(), ["event 2 …"], [], [], 0, 0, 0,
                   fallbacks={"thp_fault_fallback": 1})
    assert c.status == "fallback" and not c.ok
    c.fallbacks = {}
    assert c.status == "mismatch"
    c.mismatches = []
    c.fallbacks = {"thp_fault_fallback": 1}  # another process's: nothing of ours disagrees
    assert c.status == "match"
    c.knobs_changed = ["enabled: madvise → always"]  # someone wrote a knob under the run: nothing is trusted
    assert c.status == "knobs"


# ----- the running kernel ------------------------------------------------------------------------


@needs_root
def test_sequential_under_madvise_is_two_thp_faults_in_the_kernel_and_the_model(knobs_restored):
    r = run("sequential+madvise", "madvise")
    assert r.ok, r.problems[:10]
    assert r.real == r.model == {"zero_fill": 2, "cow_copy": 1024}
    assert r.real_pages == r.model_pages == {"zero_fill": 1024, "cow_copy": 1024}
    assert r.faults_matched == r.faults_total == 1026
    # parent at fork and exit: two PMD-mapped 512-page folios; child at exit: 1024 pages of its own
    assert r.folio_pages_matched == r.folio_pages_total == 3 * 1024
    assert r.kernel_counters.get("thp_fault_alloc", 0) >= 2 and r.kernel_counters.get("thp_split_pmd", 0) >= 2


@needs_root
def test_sequential_under_mthp_64k_is_64_faults_of_16_pages(knobs_restored):
    r = run("sequential+mthp-64k", "mthp-64k")
    assert r.ok, r.problems[:10]
    assert r.real == r.model == {"zero_fill": 64, "cow_copy": 1024}
    assert r.real_pages == {"zero_fill": 1024, "cow_copy": 1024}
    assert r.kernel_counters.get("64kB/anon_fault_alloc", 0) >= 64


@needs_root
def test_a_whole_pmd_reuse_is_one_fault_and_spurious_faults_are_kept_apart(knobs_restored):
    r = run(whole_pmd_reuse_trace(), "madvise")
    assert r.ok, r.problems[:10]
    # 2 THP zero fills; the child's copy of page 5; the parent's two whole-PMD reuses of 512 pages each
    assert r.real == r.model == {"zero_fill": 2, "cow_copy": 1, "reuse": 2}
    assert r.real_pages == {"zero_fill": 1024, "cow_copy": 1, "reuse": 1024}
    assert r.faults == 5 and r.minflt == r.faults + r.noise + r.spurious  # stale TLB entries: spurious, not faults


@needs_root
def test_a_read_maps_the_huge_zero_page_and_a_write_replaces_it_with_a_thp(knobs_restored):
    r = run(huge_zero_page_trace(), "madvise")
    assert r.ok, r.problems[:10]
    assert r.real_pages == r.model_pages == {"zero_page": 512, "cow_copy": 512}
    assert r.real == {"zero_page": 1, "cow_copy": 1}


@needs_root
def test_a_wrong_folio_size_in_the_model_is_caught(knobs_restored):
    """The model told mTHP 64 KiB while the kernel runs THP never: every zero fill disagrees in size."""
    trace = generate("sequential+mthp-64k", 64)
    with knobs("never"):
        wrong = FolioSettings.from_thp({"enabled": "never", "hugepages-64kB/enabled": "always"}, platform.release())
        r = validate_module._run(build_plan(trace, "none", folios=wrong), SUPPORT.zero_pfn)
    assert r.status == "mismatch"
    zero = BASE // PAGE_SIZE
    assert f"event 1 pid {PARENT} page {zero:#x}: model zero_fill×16, kernel zero_fill" in r.mismatches
    assert any("model a 16-page folio from +0, kernel a 4 KiB page" in line for line in r.folio_mismatches)


@needs_root
def test_every_generator_matches_under_madvise_and_mthp_64k(knobs_restored):
    config = ValidateSettings(list(PATTERNS), ["none", "fixed:16"], 512, 0, ["madvise", "mthp-64k"])
    in_force: dict = {}
    results = validate(config, in_force=in_force)
    assert len(results) == len(PATTERNS) * 2 * 2
    assert [r.config for r in results] == ["madvise"] * 16 + ["mthp-64k"] * 16
    problems = [f"{r.config} {r.pattern} {r.policy}: {line}" for r in results for line in r.problems]
    assert not problems, "\n".join(problems[:20])
    assert in_force["madvise"]["enabled"] == "madvise" and in_force["mthp-64k"]["hugepages-64kB/enabled"] == "always"
    rows = summary(results)
    assert len(rows) == 16 and all(row["runs_matched"] == row["runs"] == 2 for row in rows)
    doc = document(config, results, [], in_force)
    assert doc["format"] == "cowahead-validate" and doc["version"] == 3
    assert doc["settings"]["configs"] == ["madvise", "mthp-64k"]
    run0 = doc["runs"][0]
    assert run0["status"] == "match" and run0["faults_matched"] == run0["faults_total"] > 0


@needs_root
def test_the_knobs_come_back_after_an_interrupt_in_the_middle(knobs_restored):
    def interrupt(result: Comparison) -> None:
        assert linux.probe_support().ok
        raise KeyboardInterrupt

    config = ValidateSettings(["sequential"], ["none"], 512, 0, ["always"])
    with pytest.raises(KeyboardInterrupt):
        validate(config, on_done=interrupt)


@needs_root
def test_the_verb_writes_a_results_file_per_configuration(tmp_path, capsys, knobs_restored):
    import json

    out = tmp_path / "v.json"
    assert main(["validate", "--quick", "-p", "none", "--folios", "always,mthp-mixed", "-o", str(out)]) == 0
    assert "16 of 16 runs match" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert {(row["config"], row["runs_matched"]) for row in doc["summary"]} == {("always", 1), ("mthp-mixed", 1)}
    assert doc["settings"]["thp_in_force"]["always"]["enabled"] == "always"
    assert all(r["folio_pages_matched"] == r["folio_pages_total"] > 0 for r in doc["runs"])


def test_a_policy_only_a_kernel_can_run_is_refused_before_anything_runs(capsys):
    assert main(["validate", "-p", "thp-cow", "--folios", "madvise"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "thp-cow" in err and "cannot be validated here" in err
