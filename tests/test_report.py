"""The HTML report, opened in headless Chromium as a reader would."""

import json
import re
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import requires
from matplotlib import image as mpimg

from cowahead.cli.main import main
from cowahead.engine import fault_log, replay_states
from cowahead.model.costs import CostModel
from cowahead.report.html import write_report
from cowahead.results.document import load_results, new_results, save_results
from cowahead.results.heatmap import heatmap
from cowahead.results.rows import simulate_reference
from cowahead.results.summary import Budgets, best_acting, best_per_family
from cowahead.trace import EventKind
from cowahead.trace.generators import generate

CHROMIUM = shutil.which("chromium")
needs_chromium = requires("chromium", "chromium")
POLICIES = ["none", "fixed:4", "fixed:32", "around:16", "adaptive", "ccow", "oracle:4", "oracle:32"]


def engine_heatmap(trace) -> dict:
    [state] = replay_states(trace, ["none"], log_faults=("none",))
    return heatmap(trace.columns, *fault_log(state))


def test_heatmap_bins_the_faults_on_the_mapped_ranges_laid_end_to_end():
    """Two VMAs 1,000 pages apart, of 4 and 2 pages: the address axis is 6 pages long. Hand-made columns:
    two mmaps, then four writes at times 10 … 40 whose faults are on offsets 0, 3 and 4 and one page
    outside both VMAs."""
    base = 0x10000
    mmap, write = int(EventKind.MMAP), int(EventKind.WRITE)
    columns = {"time_ns": np.array([0, 0, 10, 20, 30, 40]), "kind": np.array([mmap, mmap] + [write] * 4),
               "address": np.array([base, base + 1004] + [0] * 4) * 4096,
               "length": np.array([4 * 4096, 2 * 4096, 1, 1, 1, 1])}
    data = heatmap(columns, np.array([2, 3, 4, 5]), np.array([base, base + 3, base + 1004, base + 500]),
                   time_bins=2, address_bins=3)
    assert data["pages"] == 6 and data["vmas"] == [[base, base + 4], [base + 1004, base + 1006]]
    assert data["outside"] == 1
    # times [10, 41) in two bins split at 25.5: 10 and 20, then 30; address bins of two pages each:
    # offset 0 → bin 0, offset 3 → bin 1, offset 4 (base+1004) → bin 2
    assert data["counts"] == [[1, 0], [1, 0], [0, 1]]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, Path]:
    results = new_results(asdict(CostModel()))
    for pattern in ("sequential", "random"):
        trace = generate(pattern, 512, seed=1)
        results["workloads"].append({"name": pattern, "source": trace.metadata["source"], "events": len(trace),
                                     "rows": simulate_reference(trace, POLICIES, CostModel()),
                                     "heatmap": engine_heatmap(trace)})
    path = tmp_path_factory.mktemp("results") / "results.json"
    save_results(results, path)
    return results, path


def chromium(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_verb_rebuilds_the_page_from_results(results, tmp_path, capsys):
    _, path = results
    assert main(["report", str(path), "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").exists()
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert pngs == ["overview-change.png", "random-heatmap.png", "random-tradeoff.png", "sequential-heatmap.png",
                    "sequential-tradeoff.png"]


def test_report_verb_rejects_a_foreign_file(tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    assert main(["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "r")]) == 2
    assert "not a cowahead results file" in capsys.readouterr().err


@needs_chromium
def test_chromium_shows_the_plots_and_the_numbers_of_results_json(results, tmp_path):
    data, path = results
    page = write_report(load_results(path), tmp_path / "report")
    shot = tmp_path / "shot.png"
    run = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,3000", f"--screenshot={shot}",
                   page.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert pixels.shape[0] == 3000 and pixels.std() > 0.05  # not a blank page
    for png in (tmp_path / "report").glob("*.png"):
        image = mpimg.imread(png)
        assert image.shape[0] > 200 and image.std() > 0.05, png  # a drawn plot, not an empty canvas
    dom = chromium(f"--user-data-dir={tmp_path / 'profile2'}", "--virtual-time-budget=5000", "--dump-dom",
                   page.as_uri()).stdout
    widths = [int(w) for w in re.findall(r'data-width="(\d+)"', dom)]
    assert len(widths) == 5 and min(widths) > 200, widths  # every image loaded: the overview's grid too
    overview = dom[dom.index('class="overview"'):]
    overview = overview[:overview.index("</table>")]
    for workload in data["workloads"]:  # the overview's row: the verdict's policy, its Δ time, stalls, memory
        best = best_acting(best_per_family(workload["rows"]))
        cells = re.search(rf'#{workload["name"]}">{workload["name"]}</a></td>(.*?)</tr>', overview).group(1)
        assert f"<td>{best['policy']}</td>" in cells
        assert f"{best['predicted_change_pct']:+.1f}%" in cells and f"{best['stall_p99_us']:,.1f}" in cells
        assert f"{best['extra_pages_peak'] * 4096 / (1 << 20):,.1f}" in cells
    for workload in data["workloads"]:
        for summary in best_per_family(workload["rows"]):
            assert f"<td>{summary['policy']}</td>" in dom
            assert f"{summary['ahead_copies']:,}" in dom
            assert f"{summary['faults_change_pct']:+.1f}%" in dom
        for row in workload["rows"]:
            assert f"{row['faults']:,}" in dom and f"{row['predicted_us']:,.1f}" in dom


def test_evaluate_writes_results_and_a_report_that_agree(tmp_path, capsys):
    out = tmp_path / "eval"
    started = time.perf_counter()
    code = main(["evaluate", "sequential", "random", "--quick", "--pages", "256", "-o", str(out)])
    elapsed = time.perf_counter() - started
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    results = load_results(out / "results.json")
    assert [w["name"] for w in results["workloads"]] == ["sequential", "random"]
    for workload in results["workloads"]:
        policies = [r["policy"] for r in workload["rows"]]
        assert policies[0] == "none" and "oracle:64" in policies and "adaptive" in policies
        assert workload["heatmap"]["counts"] and (out / workload["trace"]).exists()
        best = {s["policy"] for s in best_per_family(workload["rows"])}
        assert {r["policy"] for r in workload["rows"] if "memory" in r} == best | {"none"}  # the plot's rows only
    # by default only sequential runs for real (REAL_BY_DEFAULT); --real times random too
    real = results["workloads"][0]["real"]
    assert set(real["change_pct"]) == {s["policy"] for s in best_per_family(results["workloads"][0]["rows"])}
    assert "real" not in results["workloads"][1] and results["settings"]["real_workloads"] == ["sequential"]
    sequential = results["workloads"][0]["rows"]
    none, fixed = sequential[0], next(r for r in sequential if r["policy"] == "fixed:64")
    assert none["cow_copies"] == 256 and fixed["cow_copies"] == 4  # 256 pages, one fault per 64
    assert "sequential: COW-ahead helps" in stdout
    assert list(results["timings_s"]) == ["workload sequential", "workload random", "replay", "real runs sequential"]
    timings = results["timings_s"]
    # laps one after another inside this one call, each rounded to 0.01 s: none negative, together no more
    # than the call took; replaying and running processes for real take measurable time
    assert all(t >= 0 for t in timings.values()) and sum(timings.values()) <= elapsed + 0.005 * len(timings)
    assert timings["replay"] > 0 and timings["real runs sequential"] > 0
    page = (out / "index.html").read_text()
    assert "sequential-tradeoff.png" in page and "random-heatmap.png" in page and "sequential-memory.png" in page
    assert "Where the time went" in page and "real runs sequential" in page and "p99 stall" in page


def test_evaluate_with_real_times_every_workload_that_can_run(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "random", "--quick", "--real", "--pages", "256", "-o", str(out)]) == 0
    results = load_results(out / "results.json")
    [random] = results["workloads"]
    assert set(random["real"]["change_pct"]) == {s["policy"] for s in best_per_family(random["rows"])}
    assert results["settings"]["real_workloads"] == "all"


def test_evaluate_refuses_real_and_no_real_together(tmp_path, capsys):
    assert main(["evaluate", "random", "--real", "--no-real", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--real and --no-real" in err and err.count("\n") == 1


def test_evaluate_rejects_an_unknown_workload_before_doing_anything(tmp_path, capsys):
    assert main(["evaluate", "sequential", "nonsense", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "'nonsense' is no generator" in err and err.count("\n") == 1
    assert not (tmp_path / "e" / "results.json").exists()


def test_evaluate_repeats_each_workload_and_reports_the_median_with_its_interval(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "bgsave", "--quick", "--no-real", "--pages", "512", "-r", "3", "-o", str(out)]) == 0
    results = load_results(out / "results.json")
    [bgsave] = results["workloads"]
    assert bgsave["runs"] == 3 and results["settings"]["repeats"] == 3
    assert all((out / t).exists() for t in bgsave["run_traces"]) and len(set(bgsave["run_traces"])) == 3
    for row in bgsave["rows"]:  # three seeds: three changes, their median, an interval around it
        repeat = row["repeat"]
        assert len(repeat["predicted_change_pct"]) == 3
        assert repeat["median_pct"] == sorted(repeat["predicted_change_pct"])[1]
        lo, hi = repeat["ci95_pct"]
        assert min(repeat["predicted_change_pct"]) <= lo <= repeat["median_pct"] <= hi
    best = best_acting(best_per_family(bgsave["rows"], Budgets(**results["budgets"])))
    assert "median of 3 runs" in capsys.readouterr().out and best["runs"] == 3


def test_a_real_change_inside_its_spread_is_flagged_as_noise():
    from cowahead.report.html import _spread
    assert "⚠ noise" in _spread("real_change_pct", {"real_change_pct": -3.0, "real_spread_pct": 5.0})
    assert "⚠" not in _spread("real_change_pct", {"real_change_pct": -9.7, "real_spread_pct": 2.0})
    assert _spread("real_change_pct", {"real_change_pct": -9.7, "real_spread_pct": None}) == ""


def test_a_corpus_evaluation_writes_the_corpus_page_and_links_it(results, tmp_path):
    data, _ = results
    write_report({**data, "settings": {"corpus": True}}, tmp_path / "corpus")
    assert "href='corpus.html'" in (tmp_path / "corpus" / "index.html").read_text()
    assert (tmp_path / "corpus" / "corpus.html").exists()
    write_report({**data, "settings": {"corpus": False}}, tmp_path / "default")
    assert "corpus.html" not in (tmp_path / "default" / "index.html").read_text()
    assert not (tmp_path / "default" / "corpus.html").exists()
