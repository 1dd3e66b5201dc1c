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


# ----- folders that refuse files, a full disk (issue 25) ------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


@pytest.mark.parametrize("verb", [["generate", "random", "--pages", "64", "-o"], ["record", "-o"]])
def test_a_folder_that_refuses_files_is_one_line_before_any_work(verb, capsys):
    # /proc exists and os.access says root may write there, but no file can be made in it
    args = [*verb, "/proc/cowahead-nope.parquet"] + (["--", "true"] if verb[0] == "record" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cowahead: error: /proc/cowahead-nope.parquet: cannot write a file in /proc (No such file or directory)"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, made and removed by the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_mid_write_is_one_line_and_keeps_the_old_file(small_disk, capsys):
    old = small_disk / "t.parquet"
    assert main(["generate", "sequential", "--pages", "64", "-o", str(old)]) == 0
    before = old.read_bytes()
    capsys.readouterr()
    assert main(["generate", "random", "--pages", "200000", "-o", str(old)]) == 2  # ~4 MB of trace: no room
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cowahead: error: {old}: could not be written (No space left on device)") and "\n" not in err
    assert old.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["t.parquet"]  # no temporary left behind


def test_a_full_disk_under_a_sweep_keeps_the_results_file_whole(small_disk, tmp_path, capsys):
    trace = tmp_path / "t.parquet"
    write_trace(generate("sequential", pages=256), trace)
    out = small_disk / "results.json"
    out.write_text("old")
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to its last block
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    assert main(["sweep", str(trace), "-p", "none", "-p", "fixed:1..512", "-o", str(out), "-j", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in err or "cannot write a file" in err
    assert out.read_text() == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "results.json"]
