"""The sweep verb: range syntax, the grid over traces × policies, the results file."""

from __future__ import annotations

import json
import tempfile

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import event_streams, snapshot_streams

from cowahead.cli.main import main
from cowahead.engine import replay_engine
from cowahead.errors import CowaheadError
from cowahead.results.document import load_results
from cowahead.results.memory import sample_points
from cowahead.sweep import expand_policies
from cowahead.trace import write_trace
from cowahead.trace.generators import generate


def names(policies) -> list[str]:
    return [p.name for p in policies]


def test_a_range_expands_to_the_powers_of_two_inside_it():
    assert names(expand_policies(["fixed:1..512"])) == [f"fixed:{1 << k}" for k in range(10)]
    assert names(expand_policies(["ccow:3..20,0.5", "none"])) == ["ccow:4,0.5", "ccow:8,0.5", "ccow:16,0.5", "none"]
    assert names(expand_policies(["fixed:16", "FIXED:16", "none"])) == ["fixed:16", "none"]  # each policy once


@pytest.mark.parametrize("bad", ["fixed:1...8", "fixed:8..2", "fixed:a..b", "fixed:..8", "fixed:1..2..4",
                                 "fixed:1..1024", "around:5..5", "nonsense:1..4"])
def test_bad_ranges_are_one_line_errors(bad, tmp_path, capsys):
    with pytest.raises(CowaheadError):
        expand_policies([bad])
    assert main(["sweep", "x.parquet", "-p", bad, "-o", str(tmp_path / "r.json")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", ["missing.parquet", "foreign.parquet", "truncated.parquet"])
def test_a_bad_trace_is_exactly_one_line(bad, tmp_path, capsys):
    good = tmp_path / "good.parquet"
    write_trace(generate("random", pages=64), good)
    (tmp_path / "foreign.parquet").write_text("not a trace")
    (tmp_path / "truncated.parquet").write_bytes(good.read_bytes()[:300])
    assert main(["sweep", str(good), str(tmp_path / bad), "-o", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cowahead: error: {tmp_path / bad}")


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_sweep_writes_every_trace_and_policy_with_metadata(tmp_path, suffix, capsys):
    paths = []
    for pattern in ["sequential", "forkexec"]:
        paths.append(tmp_path / f"{pattern}.parquet")
        write_trace(generate(pattern, pages=256), paths[-1])
    out = tmp_path / f"results{suffix}"
    assert main(["sweep", *map(str, paths), "-p", "fixed:1..16", "-p", "oracle:4", "-o", str(out), "-j", "2"]) == 0
    if suffix == ".json":
        doc = json.loads(out.read_text())
        rows = {(w["name"], r["policy"]): r for w in doc["workloads"] for r in w["rows"]}
        assert doc["machine"]["kernel"] and doc["versions"]["numba"] and doc["created"]
    else:
        table = pq.read_table(out)
        doc = json.loads(table.schema.metadata[b"cowahead"])
        rows = {(r["trace"], r["policy"]): r for r in table.to_pylist()}
        assert doc["versions"]["numba"]
    assert len(rows) == 2 * 7  # none is added as the baseline
    fixed16 = replay_engine(paths[0], ["fixed:16"])[0]
    assert rows["sequential", "fixed:16"]["ahead_copies"] == fixed16.ahead_copies > 0
    assert "best window per family" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_a_sweeps_results_rebuild_into_a_report_with_a_plot_per_trace(tmp_path, suffix):
    paths = []
    for pattern in ["sequential", "hotcold"]:
        paths.append(tmp_path / f"{pattern}.parquet")
        write_trace(generate(pattern, pages=600), paths[-1])
    out = tmp_path / f"results{suffix}"
    assert main(["sweep", *map(str, paths), "-p", "fixed:1..64", "-p", "adaptive", "-o", str(out), "-j", "1"]) == 0
    if suffix == ".parquet":  # read back into the very workloads the JSON form holds
        as_json = tmp_path / "results.json"
        assert main(["sweep", *map(str, paths), "-p", "fixed:1..64", "-p", "adaptive", "-o", str(as_json)]) == 0
        workloads = load_results(out)["workloads"]
        assert workloads == load_results(as_json)["workloads"] and len(workloads[1]["rows"]) == 9
    assert main(["report", str(out), "-o", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    for pattern in ["sequential", "hotcold"]:
        plot = tmp_path / "report" / f"{pattern}-tradeoff.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"{pattern}-tradeoff.png" in page
    assert "COW-ahead helps: fixed:64" in page  # sequential's verdict names its best window


def test_the_tradeoff_table_fits_80_columns_without_clipping(tmp_path):
    import io

    from rich.console import Console

    from cowahead.cli.sweep import tradeoff_table
    from cowahead.model.costs import CostModel
    from cowahead.sweep import run_sweep

    path = tmp_path / "random.parquet"
    write_trace(generate("random", pages=3000), path)
    results = run_sweep([str(path)], expand_policies(["none", "fixed:1..512", "adaptive", "oracle:512"]), 1,
                        CostModel())
    table = tradeoff_table(results["workloads"][0])
    shown, dropped = table.fitting(80)
    out = io.StringIO()
    Console(file=out, width=80).print(shown)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    kept = [c.header for c in shown.columns]
    assert kept[:2] == ["family", "best window"] and kept[-2:] == ["Δ time", "Δ time user space"]
    for row in table.rows:
        for header, cell in zip(table.headers, row):
            if header in kept and cell:
                assert any(f" {cell} " in line for line in lines), (header, cell)


def test_an_interrupted_sweep_keeps_what_it_replayed(tmp_path):
    """Ctrl-C arriving in the parent after the first group: the document holds that group, says it was
    interrupted, and lists the missing policies (in process, so the moment is exact)."""
    from cowahead.model.costs import CostModel
    from cowahead.sweep import run_sweep

    trace = tmp_path / "hotcold.parquet"
    write_trace(generate("hotcold", pages=2000), trace)
    policies = expand_policies(["none", "fixed:1..512"])

    def interrupt(done):
        raise KeyboardInterrupt

    doc = run_sweep([str(trace)], policies, 1, CostModel(), interrupt)  # one worker: groups end in order
    kept = doc["workloads"][0]
    assert doc["sweep"]["interrupted"] and doc["sweep"]["replays"] == len(kept["rows"]) < len(policies)
    assert kept["rows"][0]["policy"] == "none"  # the baseline is replayed first
    assert sorted(kept["missing"] + [r["policy"] for r in kept["rows"]]) == sorted(names(policies))
    assert kept["rows"] == run_sweep([str(trace)], policies, 1, CostModel())["workloads"][0]["rows"][:len(kept["rows"])]
    from cowahead.report.html import write_report
    page = write_report(doc, tmp_path / "report").read_text()
    assert f"interrupted: {len(kept['missing'])} of {len(policies)} policies were not replayed" in page


def test_ctrl_c_stops_the_workers_and_writes_the_partial_results(tmp_path):
    """A real SIGINT to `cowahead sweep` while its worker replays: exit 130, one line, no traceback, the
    results file written with what was done, and no worker left behind."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    trace, out = tmp_path / "random.parquet", tmp_path / "r.json"
    write_trace(generate("random", pages=1_000_000), trace)
    # SIGINT's default action, even where the test runs in a background job (which inherits it ignored)
    sweep = subprocess.Popen([sys.executable, "-m", "cowahead.cli.main", "sweep", str(trace), "-j", "1", "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parent = psutil.Process(sweep.pid)
    deadline = time.monotonic() + 60
    while not parent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = parent.children()
    assert workers, "the sweep started no worker"
    time.sleep(1.0)  # some replays done, far from all 51 (they take 4.2 s on one worker on the benchmark VM)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cowahead: interrupted; ")
    doc = load_results(out)
    assert doc["sweep"]["interrupted"] and doc["sweep"]["replays"] < doc["sweep"]["planned"] == 51
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


def test_ctrl_c_during_evaluates_replay_stops_the_evaluation(tmp_path):
    """evaluate's replay is a sweep, but an evaluation has no partial form: Ctrl-C there stops it."""
    import dataclasses

    from cowahead.model.costs import CostModel
    from cowahead.suite import Settings, evaluate

    def step(description, total):
        def advance(n):
            if description.startswith("replay"):
                raise KeyboardInterrupt
        return advance

    settings = dataclasses.replace(Settings.default(True, real=False), pages=256)
    with pytest.raises(KeyboardInterrupt):
        evaluate(["sequential"], settings, tmp_path / "ev", CostModel(), step)
    assert not (tmp_path / "ev" / "results.json").exists()


def without_memory(row: dict) -> dict:
    """A sweep's row without its memory series (simulate's rows carry none)."""
    return {k: v for k, v in row.items() if k != "memory"}


def test_a_sweep_with_heatmaps_gives_the_heatmap_of_the_models_faults_under_none(tmp_path):
    """evaluate's heatmaps come from the sweep's own none replay (the engine's fault log), and equal the
    heatmap of the reference model's fault log; a trace handed over in memory is not read back."""
    import numpy as np

    from cowahead.model import Kernel
    from cowahead.model.costs import CostModel
    from cowahead.policies import parse_policy
    from cowahead.results.heatmap import heatmap
    from cowahead.results.rows import simulate_engine
    from cowahead.sweep import run_sweep

    trace, path = generate("bgsave", pages=512, seed=1), tmp_path / "bgsave.parquet"
    write_trace(trace, path)
    policies = ["none", "fixed:16", "oracle:16"]
    [workload] = run_sweep([str(path)], expand_policies(policies), 2, CostModel(), heatmaps=True)["workloads"]
    kernel = Kernel(parse_policy("none"), log_faults=True)
    kernel.replay(trace)
    events, pages = (np.array(column) for column in zip(*[(i, p) for i, _, p, _ in kernel.fault_log]))
    expected = heatmap(trace.columns, events, pages)
    assert workload["heatmap"] == expected
    assert sum(map(sum, expected["counts"])) + expected["outside"] == len(events) > 0
    assert [without_memory(r) for r in workload["rows"]] == simulate_engine(path, policies, CostModel())
    assert all(r["memory"]["events"] == sample_points(len(trace)) for r in workload["rows"])

    other = generate("sequential", pages=512, seed=1)  # what the caller holds for that path
    held = run_sweep([str(path)], expand_policies(policies), 1, CostModel(), in_memory={str(path): other})
    [held] = held["workloads"]
    assert [without_memory(r) for r in held["rows"]] == simulate_engine(other, policies, CostModel()) \
        != [without_memory(r) for r in workload["rows"]]
    assert "heatmap" not in held


def test_a_sweep_replays_what_the_engine_cannot_with_the_reference_model(tmp_path):
    """A trace with large folios (sequential+madvise), and a policy without a compiled window (folio): the
    sweep's rows and heatmap are the reference model's, not an error."""
    import numpy as np

    from cowahead.model import Kernel
    from cowahead.model.costs import CostModel
    from cowahead.policies import parse_policy
    from cowahead.results.heatmap import heatmap
    from cowahead.results.rows import simulate_reference
    from cowahead.sweep import run_sweep

    trace, path = generate("sequential+madvise", pages=1024, seed=1), tmp_path / "thp.parquet"
    write_trace(trace, path)
    policies = ["none", "fixed:16", "folio", "thp-cow"]
    [workload] = run_sweep([str(path)], expand_policies(policies), 2, CostModel(), heatmaps=True)["workloads"]
    assert [without_memory(r) for r in workload["rows"]] == simulate_reference(trace, policies, CostModel())
    none = {row["policy"]: row for row in workload["rows"]}["none"]
    assert (none["zero_fill"], none["zero_fill_pages"], none["thp_fault_alloc"]) == (2, 1024, 2)  # 2 MiB each
    kernel = Kernel(parse_policy("none"), log_faults=True)
    kernel.replay(trace)
    events, pages = (np.array(column) for column in zip(*[(i, p) for i, _, p, _ in kernel.fault_log]))
    assert workload["heatmap"] == heatmap(trace.columns, events, pages)


def test_groups_follow_a_traces_share_of_the_sweep():
    """Two tasks per worker over the whole sweep: a trace alone on 2 workers is cut in 4 groups, one of 120
    equal traces is one group (one pass), a trace holding 90% of the events still gets 4; each group list is
    the policies, in order, once."""
    from cowahead.sweep import DEFAULT_POLICIES, plan_groups

    policies = expand_policies(DEFAULT_POLICIES)  # 51
    alone, among, big = (plan_groups(1000, policies, 2, share) for share in (1.0, 1 / 120, 0.9))
    assert [len(g) for g in alone] == [13, 13, 13, 12] and [len(g) for g in big] == [13, 13, 13, 12]
    assert among == [policies]
    assert [len(g) for g in plan_groups(1000, policies, 1)] == [26, 25]
    for groups in (alone, among, big):
        assert [p for g in groups for p in g] == policies
    many_pages = plan_groups(20_000_000, policies, 2, 1 / 120)  # 800 MB a policy: one at a time fits in 1 GiB
    assert [len(g) for g in many_pages] == [1] * 51


def test_a_sweep_maps_only_the_traces_it_is_asked_to(tmp_path):
    """evaluate asks for the heatmap of each workload's first run only: the other runs' none replays keep no
    fault log."""
    from cowahead.model.costs import CostModel
    from cowahead.sweep import run_sweep

    first, second = tmp_path / "run0.parquet", tmp_path / "run1.parquet"
    write_trace(generate("bgsave", pages=256, seed=1), first)
    write_trace(generate("bgsave", pages=256, seed=2), second)
    results = run_sweep([str(first), str(second)], expand_policies(["none", "fixed:4"]), 2, CostModel(),
                        heatmaps={str(first)})
    mapped = {w["name"]: "heatmap" in w for w in results["workloads"]}
    assert mapped == {"run0": True, "run1": False}


SWEEP_POLICIES = ["none", "fixed:4", "around:16", "adaptive:8", "ccow:8,0.5", "oracle:1", "oracle:4", "oracle:16",
                  "oracle:512"]


def _clear_sweep_caches():
    from cowahead import sweep
    for cache in (sweep._source, sweep._page_space, sweep._decoded, sweep._folios, sweep._future):
        cache.cache_clear()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(event_streams(), snapshot_streams()), st.integers(1, 3))
def test_a_workers_groups_make_the_rows_of_each_policy_replayed_alone_by_the_model(stream, groups):
    """A sweep's worker reads the trace once (its replay columns), decodes it once and makes the oracle's
    future once for all its groups; each row (counters, COW batches, memory over time, and the heatmap of
    none) must be what the reference model makes replaying that policy alone from the file."""
    from cowahead.sweep import replay_group, replay_group_reference

    policies = expand_policies(SWEEP_POLICIES)
    size = -(-len(policies) // groups)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/t.parquet"
        write_trace(stream.trace(), path)
        _clear_sweep_caches()
        try:
            for lo in range(0, len(policies), size):
                group = policies[lo:lo + size]
                counted, heatmap = replay_group(path, group, heatmap=True)
                for policy, counters in zip(group, counted):  # what none's witness saw, which the model has not
                    assert ("witness" in counters) == (policy.name == "none")
                    counters.pop("witness", None)
                assert (counted, heatmap) == replay_group_reference(path, group, heatmap=True)
        finally:
            _clear_sweep_caches()


def test_a_sweep_on_two_workers_makes_the_rows_of_each_policy_replayed_alone(tmp_path):
    """The whole sweep, groups on two processes: its rows equal the reference model's, one policy at a time, those
    its witness showed replay as none (on random, adaptive and ccow; on sequential, ccow) among them."""
    from cowahead.model.costs import HEADLINE, cost_profile
    from cowahead.model.counters import Counters
    from cowahead.results.rows import result_row
    from cowahead.results.stalls import batches_from_json
    from cowahead.sweep import replay_group_reference, run_sweep

    paths = [tmp_path / "random.parquet", tmp_path / "sequential.parquet"]
    write_trace(generate("random", pages=700), paths[0])
    write_trace(generate("sequential", pages=300), paths[1])
    policies = expand_policies(["none", "fixed:1..64", "adaptive:1..8", "ccow:4..64", "oracle:1..512"])
    costs = cost_profile(HEADLINE)
    doc = run_sweep([str(path) for path in paths], policies, 2, costs)
    for path, workload in zip(paths, doc["workloads"]):
        for policy, row in zip(policies, workload["rows"]):
            (counted,), _ = replay_group_reference(str(path), [policy])
            batches, memory = batches_from_json(counted.pop("cow_batches")), counted.pop("memory")
            intervals = counted.pop("intervals")
            assert row == result_row(policy.name, Counters(**counted), costs, batches, memory,
                                     intervals=intervals), (path.name, policy.name)
