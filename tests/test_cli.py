"""The command line: real runs, and one clear line with exit status 2 on bad input."""

import json

import pytest

from cowahead.cli.main import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trace(tmp_path, capsys):
    path = tmp_path / "seq.parquet"
    code, out, _ = run(capsys, "generate", "sequential", "--pages", "256", "-o", str(path))
    assert code == 0 and "256 pages" in out
    return path


def test_simulate_json_has_the_promised_keys_and_model_numbers(trace, capsys):
    code, out, _ = run(capsys, "simulate", str(trace), "--json", "-p", "none", "-p", "fixed:16")
    rows = json.loads(out)
    assert code == 0 and [r["policy"] for r in rows] == ["none", "fixed:16"]
    for key in ("policy", "faults", "cow_copies", "ahead_copies", "ahead_hits", "ahead_waste", "zero_fills",
                "reuses", "extra_pages_peak", "predicted_us"):
        assert key in rows[0]
    none, fixed = rows
    # 256 zero fills, then the child copies every page: one fault per 16 pages with fixed:16
    assert (none["zero_fills"], none["cow_copies"]) == (256, 256)
    assert (fixed["cow_copies"], fixed["ahead_copies"], fixed["ahead_waste"]) == (16, 240, 0)


@pytest.mark.parametrize("flag, blocks", [([], 0), (["--large-destinations"], 16)])
def test_generate_large_destinations_reaches_simulate(tmp_path, capsys, flag, blocks):
    # 256 pages in 64 KiB mTHPs; the child's fixed:16 faults at 0, 16, …, 240: with the option each copies
    # its 16 pages into one 64 KiB folio (16 folios, 256 pages), without it into 4 KiB pages
    path = tmp_path / "seq.parquet"
    assert run(capsys, "generate", "sequential+mthp-64k", "--pages", "256", *flag, "-o", str(path))[0] == 0
    code, out, _ = run(capsys, "simulate", str(path), "--json", "-p", "fixed:16")
    [row] = json.loads(out)
    assert (code, row["cow_copies"], row["cow_large_alloc"], row["cow_large_pages"]) == (0, 16, blocks, 16 * blocks)


def test_simulate_prints_a_table(trace, capsys):
    code, out, _ = run(capsys, "simulate", str(trace), "-p", "none", "-p", "around:8")
    assert code == 0 and "around:8" in out and "predicted" in out


@pytest.mark.parametrize("reference", [False, True])
def test_simulate_reports_progress_over_every_replayed_event(reference, tmp_path):
    """The progress bar's count: the engine replays all policies in one pass, the model one pass each."""
    from cowahead.model.costs import CostModel
    from cowahead.model.kernel import PROGRESS_EVENTS
    from cowahead.results.rows import simulate_engine, simulate_reference
    from cowahead.trace import TraceFile, write_trace
    from cowahead.trace.generators import generate

    path = tmp_path / "r.parquet"
    write_trace(generate("random", pages=40_000), path)  # 80,004 events: one full step of the model and a rest
    events = TraceFile(path).num_events
    assert events > PROGRESS_EVENTS
    heard = []
    policies = ["none", "fixed:16", "adaptive"]
    if reference:
        rows = simulate_reference(TraceFile(path).read(), policies, CostModel(), heard.append)
    else:
        rows = simulate_engine(path, policies, CostModel(), heard.append)
    assert sum(heard) == events * (len(policies) if reference else 1)
    assert len(heard) == (2 * len(policies) if reference else 1)  # the engine's chunk is a million events
    assert [r["policy"] for r in rows] == policies


@pytest.mark.parametrize("argv, message", [
    (["simulate", "{trace}", "-p", "bogus"], "unknown policy 'bogus'"),
    (["simulate", "{trace}", "-p", "fixed:0"], "window must be 1"),
    (["simulate", "{trace}", "-p", "fixed:513"], "window must be 1"),
    (["simulate", "{trace}", "-p", "around:12"], "power of two"),
    (["simulate", "{trace}", "-p", "ccow:512,2"], "threshold"),
    (["simulate", "{trace}", "-p", "fixed:x"], "not a whole number"),
    (["simulate", "/nonexistent/t.parquet"], "no such trace file"),
    (["simulate", "{foreign}"], "not a Parquet file"),
    (["simulate"], "Missing argument"),
    (["generate", "nonsense", "-o", "{out}"], "unknown pattern"),
    (["generate", "zipf:abc", "-o", "{out}"], "not a valid float"),
    (["generate", "random", "--pages", "0", "-o", "{out}"], "--pages"),
    (["simulate", "{trace}", "--costs", "{foreign}"], "calibration"),
])
def test_bad_input_gets_one_line_and_exit_status_2(trace, tmp_path, capsys, argv, message):
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("not a trace")
    argv = [a.format(trace=trace, foreign=foreign, out=tmp_path / "o.parquet") for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cowahead: error:") and message in err, err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("width", [60, 80, 100, 130, 250])
def test_the_results_table_leaves_columns_out_rather_than_clip_numbers(width, trace):
    """A narrow terminal gets fewer columns, each number whole, and a line naming what was left out."""
    import io

    from rich.console import Console

    from cowahead.model.costs import CostModel
    from cowahead.report.table import COLUMNS, results_table
    from cowahead.results.rows import simulate_engine

    rows = simulate_engine(trace, ["none", "fixed:16", "around:16", "adaptive", "ccow", "oracle:16"], CostModel())
    table = results_table(rows, "t")
    shown, dropped = table.fitting(width)
    out = io.StringIO()
    Console(file=out, width=width).print(shown)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    kept = [c.header for c in shown.columns]
    assert kept[0] == "policy" and kept[-2:] == ["Δ time", "Δ time user space"]
    assert len(kept) + len(dropped) == len(COLUMNS)
    base = rows[0]
    for name, cell, _ in COLUMNS:
        if name in kept:
            for r in rows:
                assert any(f" {cell(r, base)} " in line for line in lines), (name, cell(r, base))
    if width in (60, 250):
        assert (dropped == []) == (width == 250)
