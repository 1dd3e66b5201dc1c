"""Fuzz the trace reader, the engine and the model with atheris, coverage-guided (a script, not a test).

    .venv/bin/python benchmarks/fuzz_trace.py [-runs=N] [-seed=S] [-max_total_time=SECONDS] [CORPUS_DIR]

Each input is read as a list of mutations applied to a small real trace (a
generated one, and a recorded-looking one with a fork and an exec): values of
any column (negative or huge addresses, lengths past the address space,
unknown kinds, pids that never forked, fork children reused), the metadata
(keys dropped, version, page size, THP settings, garbage), the schema (a
column dropped or of another type) and the row groups (the file cut short).
Every input must either read, or fail with the one-line CowaheadError; a
trace that reads must replay the same in the engine and the model, or be
refused by both, never one of each. Anything else is a crash: atheris stops
and writes the input (crash-…); the test suite keeps each one found as a
regression (tests/test_fuzz.py). A summary goes to
benchmarks/results/fuzz-trace-<date>.json (or $FUZZ_SUMMARY), every 200 inputs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import atheris

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Coverage of the reader, the model and the policies; the engine is imported after, uninstrumented, since numba
# compiles from bytecode that instrumentation would have rewritten.
with atheris.instrument_imports(include=["cowahead"]):
    from cowahead.errors import CowaheadError
    from cowahead.model import Kernel
    from cowahead.policies import parse_policy
    from cowahead.trace import COLUMNS, TraceFile
    from cowahead.trace.generators import generate
    from cowahead.trace.parquet import METADATA_KEY, base_metadata
from cowahead.engine import replay_engine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ["none", "fixed:4", "adaptive", "ccow:8,0.5"]
MAX_EVENTS = 80  # small traces: the model replays each input too
MAX_TOUCHED_BYTES = 64 << 20  # reads and writes of more are not replayed (libFuzzer's 2 GB memory limit)
NAMES = list(COLUMNS)


def base_trace() -> tuple[dict[str, np.ndarray], dict]:
    trace = generate("forkexec", pages=24, seed=3)
    columns = {k: v[:MAX_EVENTS].copy() for k, v in trace.columns.items()}
    return columns, {**base_metadata("fuzz"), **trace.metadata}


def mutate(fdp: atheris.FuzzedDataProvider, columns: dict[str, np.ndarray], meta: dict) -> tuple[dict, dict, str]:
    """Apply up to 8 mutations chosen by the input; returns columns, metadata and how the file is cut."""
    cut = "none"
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        what = fdp.ConsumeIntInRange(0, 7)
        n = len(next(iter(columns.values()))) if columns else 0
        if what <= 2 and n:  # a value in a column, often at the edges of its type
            name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
            row = fdp.ConsumeIntInRange(0, n - 1)
            if name not in columns or columns[name].dtype.kind not in "iu":
                continue  # dropped or retyped by an earlier mutation
            info = np.iinfo(columns[name].dtype)
            edges = [info.min, info.max, 0, -1 if info.min < 0 else 1, 1 << 47, (1 << 47) - 4096, 4096]
            pick = fdp.ConsumeIntInRange(0, len(edges))
            value = edges[pick] if pick < len(edges) else fdp.ConsumeIntInRange(int(info.min), int(info.max))
            if info.min <= value <= info.max:
                columns[name][row] = value
        elif what == 3 and n:  # events dropped or duplicated
            rows = np.sort(np.array([fdp.ConsumeIntInRange(0, n - 1) for _ in range(fdp.ConsumeIntInRange(1, n))]))
            columns = {k: v[rows] for k, v in columns.items()}
        elif what == 4:  # metadata
            key = fdp.PickValueInList(["format", "version", "page_size", "thp", "kernel", "kinds", "source"])
            choice = fdp.ConsumeIntInRange(0, 3)
            if choice == 0:
                meta.pop(key, None)
            elif choice == 1:
                meta[key] = fdp.ConsumeUnicodeNoSurrogates(12)
            elif choice == 2:
                meta[key] = fdp.ConsumeIntInRange(-2, 1 << 20)
            else:
                meta["thp"] = {"enabled": fdp.PickValueInList(["always", "madvise", "never", "x"]),
                               f"hugepages-{fdp.PickValueInList([8, 16, 64, 12, 2048, 4096])}kB/enabled":
                                   fdp.PickValueInList(["always", "inherit", "never", "madvise", ""])}
        elif what == 5:  # schema: a column dropped or retyped
            name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
            if fdp.ConsumeBool():
                columns.pop(name, None)
            elif name in columns:
                columns[name] = columns[name].astype(fdp.PickValueInList([np.float64, np.int16, np.uint32]))
        elif what == 6:
            cut = fdp.PickValueInList(["half", "footer", "header"])
        else:  # an event of any kind at any place
            if n and "kind" in columns and columns["kind"].dtype.kind in "iu":
                row = fdp.ConsumeIntInRange(0, n - 1)
                columns["kind"][row] = fdp.ConsumeIntInRange(-2, 12)
    return columns, meta, cut


def write(path: Path, columns: dict, meta: dict, cut: str) -> None:
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta, default=str).encode()})
    pq.write_table(table, path, row_group_size=32)
    data = path.read_bytes()
    if cut == "half":
        path.write_bytes(data[:len(data) // 2])
    elif cut == "footer":
        path.write_bytes(data[:-9])
    elif cut == "header":
        path.write_bytes(data[4:])


STATS = {"inputs": 0, "read": 0, "refused_by_reader": 0, "too_big_to_replay": 0, "replayed_equal": 0,
         "refused_by_both": 0, "engine_unsupported": 0}


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    columns, meta = base_trace()
    columns, meta, cut = mutate(fdp, columns, meta)
    STATS["inputs"] += 1
    if STATS["inputs"] % 200 == 0:
        summary()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.parquet"
        write(path, columns, meta, cut)
        try:
            trace = TraceFile(path).read()
        except CowaheadError as e:
            assert "\n" not in str(e), f"a reader error of more than one line: {e!r}"
            STATS["refused_by_reader"] += 1
            return
        STATS["read"] += 1
        c = trace.columns
        touched = int(c["length"][(c["kind"] == 3) | (c["kind"] == 4)].astype(np.float64).sum())
        if touched > MAX_TOUCHED_BYTES:  # valid, but a replay of it would outgrow the fuzzer's memory limit
            STATS["too_big_to_replay"] += 1
            return
        outcome = {}
        for side in ("engine", "model"):
            try:
                if side == "engine":
                    outcome[side] = replay_engine(trace, POLICIES)
                else:
                    outcome[side] = [Kernel(parse_policy(p)).replay(trace) for p in POLICIES]
            except CowaheadError as e:
                outcome[side] = ("refused", type(e).__name__)
        engine, model = outcome["engine"], outcome["model"]
        if isinstance(engine, tuple) and engine[1] == "EngineUnsupported":
            STATS["engine_unsupported"] += 1
            return  # large folios, madvise: the engine says so by design, the model replays (issue 18)
        assert (isinstance(engine, tuple)) == (isinstance(model, tuple)), f"engine {engine!r:.200} vs model {model!r:.200}"
        if isinstance(engine, tuple):
            STATS["refused_by_both"] += 1
        else:
            assert engine == model, "engine and model counters differ"
            STATS["replayed_equal"] += 1


STARTED = time.time()


def summary() -> None:
    """Written every 200 inputs: libFuzzer leaves through C's exit(), past Python's atexit and finally."""
    out = Path(os.environ.get("FUZZ_SUMMARY", ROOT / "benchmarks" / "results" / f"fuzz-trace-{time.strftime('%Y-%m-%d')}.json"))
    out.write_text(json.dumps({"format": "cowahead-benchmark", "version": 1, "benchmark": "fuzz-trace",
                               "command": " ".join(sys.argv), "seconds": round(time.time() - STARTED, 1),
                               **STATS}, indent=1) + "\n")


def main() -> None:
    replay_engine(generate("sequential", pages=8), POLICIES)  # compile (or load) the engine before the clock runs
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
