"""Output files: folders made as needed, one clear line where a file cannot be written, atomic writes."""

from __future__ import annotations

import os
import stat

import pytest

from cowahead.cli.main import main
from cowahead.errors import CowaheadError
from cowahead.output import output_file, write_atomically
from cowahead.trace import write_trace
from cowahead.trace.generators import generate


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    # the new file gets the mode any new file gets under the umask, 0666 masked (not mkstemp's 0600)
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            write_atomically(path, lambda tmp: tmp.write_text(f"new {umask:o}"))
        finally:
            os.umask(old)
        assert path.read_text() == f"new {umask:o}" and oct(stat.S_IMODE(path.stat().st_mode)) == oct(mode)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_output_in_a_missing_folder_gets_its_folder(tmp_path, capsys):
    trace = tmp_path / "deep" / "er" / "t.parquet"
    assert main(["generate", "random", "--pages", "64", "-o", str(trace)]) == 0
    results = tmp_path / "results" / "2026" / "r.parquet"
    assert main(["sweep", str(trace), "-p", "fixed:1..4", "-o", str(results)]) == 0
    assert trace.is_file() and results.is_file()


@pytest.mark.parametrize("verb", [["sweep", "TRACE", "-p", "fixed:1..4"], ["generate", "random", "--pages", "64"],
                                  ["record", "--", "true"], ["scenario", "run", "python-forkpool"]])
def test_an_output_that_cannot_be_written_fails_before_the_work_in_one_line(verb, tmp_path, capsys, monkeypatch):
    """Its folder cannot be made (a file is in the way): exit 2 and one line, before any sweep, recording or
    scenario starts, so nothing is lost."""
    import cowahead.cli.record as record
    import cowahead.cli.sweep as sweep

    def never(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(sweep, "run_sweep", never)
    monkeypatch.setattr(record, "Recorder", never)
    monkeypatch.setattr("cowahead.scenarios.python_forkpool.run", never)
    trace = tmp_path / "t.parquet"
    write_trace(generate("random", pages=64), trace)
    (tmp_path / "file").write_text("in the way")
    out = tmp_path / "file" / ("r.json" if verb[0] == "sweep" else "t.parquet")
    argv = [str(trace) if a == "TRACE" else a for a in verb]
    argv = argv[:argv.index("--")] + ["-o", str(out)] + argv[argv.index("--"):] if "--" in argv else argv + ["-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be made" in err[0] and str(out) in err[0]


@pytest.mark.parametrize("verb", ["evaluate", "report"])
def test_an_output_folder_that_cannot_be_made_fails_before_the_work_in_one_line(verb, tmp_path, capsys, monkeypatch):
    import cowahead.cli.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("the evaluation started"))
    results = tmp_path / "r.json"
    trace = tmp_path / "t.parquet"
    write_trace(generate("random", pages=64), trace)
    assert main(["sweep", str(trace), "-p", "none", "-o", str(results)]) == 0
    capsys.readouterr()
    out = tmp_path / "r.json" / "report"  # a file in the way
    assert main(["evaluate" if verb == "evaluate" else "report", *([] if verb == "evaluate" else [str(results)]),
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a file is in the way" in err[0]


def test_a_directory_is_not_an_output_file(tmp_path):
    with pytest.raises(CowaheadError, match="is a directory"):
        output_file(tmp_path)
