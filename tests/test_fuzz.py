"""The trace fuzzer's findings stay fixed, and a short seeded fuzz run finds nothing new (issue 25).

benchmarks/fuzz_trace.py turns each input into mutations of a small real trace; every input must read or
fail in one line, and a trace that reads must replay alike in the engine and the model. Each file in
tests/fuzz/ is an input that once broke that rule (named for what it found).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOUND = sorted((Path(__file__).parent / "fuzz").glob("*.bin"))


def fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_trace", ROOT / "benchmarks" / "fuzz_trace.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("found", FOUND, ids=[p.stem for p in FOUND])
def test_each_input_the_fuzzer_found_now_reads_or_fails_in_one_line(found):
    fuzz = fuzz_module()
    before = dict(fuzz.STATS)
    fuzz.one_input(found.read_bytes())  # raises (AssertionError, a traceback) if the finding came back
    after = fuzz.STATS
    assert after["inputs"] == before["inputs"] + 1
    assert sum(after[k] - before[k] for k in ("refused_by_reader", "replayed_equal", "refused_by_both",
                                               "engine_unsupported", "too_big_to_replay")) == 1


def test_a_short_seeded_fuzz_run_finds_nothing(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_trace.py"), "-runs=300", "-seed=7",
                          f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={**os.environ, "FUZZ_SUMMARY": str(tmp_path / "summary.json")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Done 300 runs" in run.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("oom-*"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["inputs"] >= 200 and summary["replayed_equal"] > 0  # it got past the reader, too
