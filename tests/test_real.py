"""Real runs on the running kernel: the model page for page, and memory integrity.

Needs root (pagemap PFNs) and MADV_POPULATE_WRITE (Linux 5.14+); without
them these tests skip and say why. The plan tests run anywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from cowahead.cli.main import main
from cowahead.real import linux
from cowahead.real.plan import Op, build_plan
from cowahead.real.runner import run_plan
from cowahead.real.truth import compare
from cowahead.real.validate import POLICIES, ValidateSettings, validate
from cowahead.trace.events import PAGE_SIZE, EventKind
from cowahead.trace.generators import BASE, PARENT, PATTERNS, TraceBuilder, generate

SUPPORT = linux.probe_support()
needs_kernel = pytest.mark.skipif(not SUPPORT.ok, reason="; ".join(SUPPORT.problems) or "ok")


def ahead_reuse_trace():
    """The child copies pages 1-8, so the parent's frames 1-8 are exclusive but write-protected;
    the parent's COW fault at page 0 under fixed:8 then reuses 1-7 without copying."""
    b = TraceBuilder()
    b.mmap(PARENT, 16)
    b.writes(PARENT, range(16))
    b.fork(PARENT, PARENT + 1)
    b.writes(PARENT + 1, range(1, 8))
    b.write(PARENT, 0)
    b.writes(PARENT, range(1, 4))
    b.exit(PARENT + 1)
    b.exit(PARENT)
    return b.trace({"pattern": "ahead-reuse"})


# ----- plans (no kernel needed) ------------------------------------------------------------


def test_plan_ends_a_batch_right_after_the_fault_that_copies_ahead():
    plan = build_plan(generate("sequential", 64), "fixed:16")
    child_steps = [s for s in plan.steps if s.pid == PARENT + 1]
    assert [s.op for s in child_steps[:3]] == [Op.WRITE, Op.AHEAD, Op.WRITE]
    assert child_steps[0].pages.tolist() == [0]
    assert child_steps[1].pages.tolist() == list(range(1, 16))
    assert child_steps[2].pages.tolist() == list(range(1, 16)) + [16]


def test_plan_expects_each_process_to_hold_its_own_writes():
    plan = build_plan(generate("sequential", 8), "none")
    exits = {s.pid: s for s in plan.steps if s.op == Op.EXIT}
    parent_values = exits[PARENT].expected
    child_values = exits[PARENT + 1].expected
    assert parent_values.tolist() == list(range(1, 9))
    assert child_values.tolist() == list(range(9, 17))
    assert plan.steps[-1].op == Op.EXIT and plan.steps[-1].pid == PARENT


# ----- the running kernel ------------------------------------------------------------------


@needs_kernel
@pytest.mark.parametrize("policy", POLICIES)
def test_every_generator_matches_the_model_page_for_page(policy):
    results = validate(ValidateSettings(list(PATTERNS), [policy], pages=256))
    problems = [f"{r.pattern} {r.policy}: {line}" for r in results
                for line in r.mismatches + r.unexplained + r.integrity]
    assert not problems, "\n".join(problems[:20])
    assert all(r.model == r.real for r in results)


@needs_kernel
def test_user_space_cow_ahead_reuses_exclusive_pages_without_copying():
    plan = build_plan(ahead_reuse_trace(), "fixed:8")
    assert sum(1 for *_, kind in plan.model_log if kind == "ahead_reuses") == 7
    result = compare(run_plan(plan, measure=True), SUPPORT.zero_pfn)
    assert result.ok, result.mismatches + result.unexplained + result.integrity
    # the child: a COW copy at page 1 and 2-8 copied ahead; the parent: a copy at 0, 1-7 reused
    assert result.real == {"zero_fill": 16, "cow_copy": 2, "ahead_copies": 7, "ahead_reuses": 7}


@needs_kernel
def test_a_wrong_model_is_caught_page_for_page():
    plan = build_plan(generate("random", 64), "fixed:4")
    index, pid, page, kind = next(e for e in plan.model_log if e[3] == "ahead_copies")
    plan.model_log.remove((index, pid, page, kind))
    plan.model_log.append((index, pid, page, "ahead_reuses"))
    result = compare(run_plan(plan, measure=True), SUPPORT.zero_pfn)
    assert not result.ok
    assert result.mismatches == [f"event {index} pid {pid} page {page:#x}: model ahead_reuses, kernel ahead_copies"]


@needs_kernel
def test_one_wrong_byte_fails_the_integrity_check():
    plan = build_plan(generate("sequential", 32), "fixed:4")
    child_exit = next(s for s in plan.steps if s.op == Op.EXIT and s.pid == PARENT + 1)
    child_exit.expected[5] ^= np.uint64(1 << 8)  # one byte of one page's value
    result = run_plan(plan, measure=False)
    assert result.integrity == [f"pid {PARENT + 1}: page +5: holds {int(child_exit.expected[5]) ^ 256}, "
                                f"must hold {int(child_exit.expected[5])}"]


@needs_kernel
@pytest.mark.parametrize("policy", POLICIES)
def test_unmeasured_runs_keep_every_write_and_leak_none(policy):
    for pattern in ("bgsave", "forkexec", "prefork"):
        plan = build_plan(generate(pattern, 128, seed=3), policy)
        result = run_plan(plan, measure=False)
        assert result.integrity == []
        # every memory step ran once, in the process the trace names; unmeasured, so no pagemap was read
        memory_steps = [(i, s.pid, s.op.value) for i, s in enumerate(plan.steps)
                        if s.op in (Op.WRITE, Op.READ, Op.AHEAD)]
        ran = sorted((op.step, p.pid, op.op) for p in result.processes for op in p.ops if op.op != Op.FORK.value)
        assert memory_steps and ran == memory_steps
        assert {p.pid for p in result.processes} == set(plan.pids)
        assert all(op.before is None and op.after is None for p in result.processes for op in p.ops)
        # processes take turns, so the times of their steps add up to no more than the whole run took
        assert 0 < result.work_ns <= result.wall_ns


@needs_kernel
def test_validate_verb_exits_0_when_all_match(capsys):
    assert main(["validate", "--quick", "--pages", "64", "--folios", "never,mthp-64k"]) == 0
    assert "32 of 32 runs match" in capsys.readouterr().out  # 8 generators × 2 policies × 2 THP configurations


def zero_page_and_unmap_trace():
    """Reads of fresh pages map the zero page; a write after it copies; DONTNEED and munmap drop pages."""
    b = TraceBuilder()
    b.mmap(PARENT, 32)
    for page in range(8):
        b.read(PARENT, page)
    b.writes(PARENT, range(0, 16))
    b.fork(PARENT, PARENT + 1)
    b.read(PARENT + 1, 20)
    b.writes(PARENT + 1, [20, 3])
    b.add(PARENT + 1, EventKind.DONTNEED, BASE + 4 * PAGE_SIZE, 4 * PAGE_SIZE)
    b.writes(PARENT + 1, [4, 5])
    b.add(PARENT, EventKind.MUNMAP, BASE + 8 * PAGE_SIZE, 8 * PAGE_SIZE)
    b.writes(PARENT, [1, 2])
    b.exec(PARENT + 1)
    b.exit(PARENT + 1)
    b.writes(PARENT, [6, 7])
    b.exit(PARENT)
    return b.trace({"pattern": "zero-page-unmap"})


@needs_kernel
@pytest.mark.parametrize("policy", ["none", "fixed:8"])
def test_zero_page_dontneed_munmap_and_exec_match_the_model(policy):
    plan = build_plan(zero_page_and_unmap_trace(), policy)
    result = compare(run_plan(plan, measure=True), SUPPORT.zero_pfn)
    assert result.ok, result.mismatches + result.unexplained + result.integrity
    assert result.real == result.model and result.real["zero_page"] == 9


@needs_kernel
def test_after_the_child_is_gone_the_parent_reuses_every_page():
    from cowahead.real.subtleties import child_exit
    assert child_exit(128, wait=True)["copies"] == 0


@needs_kernel
def test_pagemap_exclusive_bit_follows_the_child_copies():
    from cowahead.real.subtleties import exclusive_bit
    result = exclusive_bit(64)
    assert result["child_copies"] == 32 and result["parent_exclusive_are_the_written_ones"]


def two_snapshots_trace():
    """Two fork intervals: the parent rewrites 90% of a 512-page region during the first,
    so at its first COW fault of the second ccow copies the region's shared pages at once."""
    b = TraceBuilder()
    b.mmap(PARENT, 512)
    b.writes(PARENT, range(512))
    for child in (PARENT + 1, PARENT + 2):
        b.fork(PARENT, child)
        b.writes(PARENT, range(0, 460))
        b.exit(child)
    b.exit(PARENT)
    return b.trace({"pattern": "two-snapshots"})


@needs_kernel
def test_ccow_copies_a_covered_region_at_once_on_the_kernel():
    plan = build_plan(two_snapshots_trace(), "ccow")
    assert plan.counters.ahead_copies == 511
    result = compare(run_plan(plan, measure=True), SUPPORT.zero_pfn)
    assert result.ok, result.mismatches + result.unexplained + result.integrity
    assert result.real == result.model


# ----- degraded modes (simulated: any machine) -----------------------------------------------


def test_without_visible_pfns_validate_says_so_in_one_line_and_exits_2(monkeypatch, capsys):
    blind = linux.Support(False, True, 0, ("pagemap shows PFN 0 (needs root / CAP_SYS_ADMIN): no copies",))
    monkeypatch.setattr(linux, "probe_support", lambda: blind)
    assert main(["validate", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["cowahead: error: pagemap shows PFN 0 (needs root / CAP_SYS_ADMIN): no copies"]


def test_without_populate_write_only_none_is_validated_and_a_warning_says_so(monkeypatch):
    from cowahead.real.validate import check_support
    old = linux.Support(True, False, 1, ("madvise(MADV_POPULATE_WRITE) failed: not supported",))
    monkeypatch.setattr(linux, "probe_support", lambda: old)
    kept, warnings = check_support(["none", "fixed:16", "ccow"])
    assert kept == ["none"]
    assert warnings == ["madvise(MADV_POPULATE_WRITE) failed: not supported; degraded: validating 'none' only, "
                        "skipping 2"]


def process_tree_trace(seed: int):
    """A random tree of processes (forks from any live one, exits in any order, the root
    included), reading and writing random runs of 128 pages."""
    rng = np.random.default_rng(seed)
    b = TraceBuilder()
    b.mmap(PARENT, 128)
    alive, next_pid = [PARENT], PARENT + 1
    for _ in range(60):
        pid, x = int(rng.choice(alive)), rng.random()
        start = int(rng.integers(0, 120))
        if x < 0.1 and len(alive) < 5:
            b.fork(pid, next_pid)
            alive.append(next_pid)
            next_pid += 1
        elif x < 0.15 and len(alive) > 1:
            b.exit(pid)
            alive.remove(pid)
        elif x < 0.3:
            for page in range(start, start + int(rng.integers(1, 8))):
                b.read(pid, page)
        else:
            b.writes(pid, range(start, min(128, start + int(rng.integers(1, 12)))))
    for pid in reversed(alive):
        b.exit(pid)
    return b.trace({"pattern": f"process-tree-{seed}"})


@needs_kernel
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["none", "fixed:4", "around:16", "adaptive", "ccow:64,0.3", "oracle:16"])
def test_random_process_trees_match_the_model_page_for_page(seed, policy):
    result = compare(run_plan(build_plan(process_tree_trace(seed), policy), measure=True), SUPPORT.zero_pfn)
    assert result.ok, result.mismatches + result.unexplained + result.integrity


# ----- calibration ------------------------------------------------------------------------------


@needs_kernel
def test_calibrate_writes_a_versioned_file_that_simulate_can_use(tmp_path):
    import json
    from dataclasses import fields

    from cowahead.model.costs import CostModel
    output = tmp_path / "cal.json"
    assert main(["calibrate", "-o", str(output), "--pages", "256", "--repeats", "5"]) == 0
    doc = json.loads(output.read_text())
    assert (doc["format"], doc["version"]) == ("cowahead-calibration", 2)
    assert set(doc["costs"]) == {f.name for f in fields(CostModel)}
    assert {"kernel", "cpu", "thp"} <= set(doc["machine"]) and doc["versions"]["cowahead"]
    assert doc["settings"] == {"pages": 256, "repeats": 5, "warmup_rounds": 1}
    assert list(doc["populate_write_us_per_page"]) == [str(1 << k) for k in range(10)]
    for name, m in doc["measurements"].items():
        assert len(m["values_us"]) == 5 and m["median_us"] > 0, name
    costs = CostModel.load(output)
    assert costs.cow_fault_us == doc["costs"]["cow_fault_us"] > costs.reuse_us
    trace_path = tmp_path / "t.parquet"
    assert main(["generate", "sequential", "-n", "64", "-o", str(trace_path)]) == 0
    assert main(["simulate", str(trace_path), "--costs", str(output)]) == 0
