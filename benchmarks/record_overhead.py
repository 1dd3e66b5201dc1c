"""What recording costs: wall time recorded / not recorded, per workload.

Workloads: `startup` (recording `true`: perf's fixed cost of opening and
closing its tracepoints, which longer runs amortize), a generator-like program (the `sequential` pattern as a real
process: map N pages, write each, fork, the child writes each again, for R
rounds) and every scenario (cowahead.scenarios). Each round runs every
workload once unrecorded and once recorded, in alternating order, so that
drift on a shared machine hits both alike; one warm-up round is discarded;
medians over the rounds. The goal is a ratio of at most 1.3.

The timed part of a scenario is its `workload` phase (for redis-bgsave the
BGSAVE, with the writer running; perf attached before it). For a command,
the recorded time is the program's own life, exec to exit, from the trace's
CLOCK_MONOTONIC timestamps; perf's start-up before the exec and teardown
after the exit (closing its tracepoints takes ~30 ms each, an RCU grace
period) are reported apart as `perf_s`, and `startup` measures them alone.
Converting (perf script piped into the converter) comes after and is
reported apart too.

    .venv/bin/python benchmarks/record_overhead.py [--repeats 5] [--only NAME ...]

writes benchmarks/results/record-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cowahead.machine import machine_metadata
from cowahead.record import Recorder
from cowahead.scenarios import SCENARIOS

RESULTS = Path(__file__).parent / "results"
GOAL = 1.3
SPREAD_WARNING = 0.2  # (max - min) / median above this: too noisy to trust

SEQUENTIAL = textwrap.dedent("""
    import mmap, os, sys
    import numpy as np
    pages, rounds = int(sys.argv[1]), int(sys.argv[2])
    for _ in range(rounds):
        region = mmap.mmap(-1, pages * 4096, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory = np.frombuffer(region, dtype=np.uint8)
        memory[::4096] = 1                 # zero-fill faults
        child = os.fork()
        if child == 0:
            memory[::4096] = 2             # COW faults, in address order
            os._exit(0)
        os.waitpid(child, 0)
        del memory
        region.close()
    """)


def run_program(command: list[str], output: Path | None) -> dict:
    if output is None:
        t = time.monotonic()
        subprocess.run(command, check=True)
        return {"workload": time.monotonic() - t}
    recorder = Recorder(output)
    recorder.start(command)
    rec = recorder.finish()
    return {"workload": rec.seconds.get("command", rec.seconds["record"]), "perf": rec.seconds["record"],
            "convert": rec.seconds["convert"], "events": len(rec.trace)}


def run_scenario(name: str, output: Path | None) -> dict:
    result = SCENARIOS[name].run(output)
    row = {"workload": result.seconds["workload"]}
    if result.recording is not None:
        row.update({"perf": result.recording.seconds["record"], "convert": result.recording.seconds["convert"],
                    "events": len(result.recording.trace),
                    "agreement": [c.as_dict() for c in result.comparisons]})
    return row


def machine() -> dict:
    perf = subprocess.run(["perf", "--version"], capture_output=True, text=True).stdout.strip()
    return {**machine_metadata(), "perf": perf, "cowahead": version("cowahead")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pages", type=int, default=16384, help="pages per round of the sequential workload")
    parser.add_argument("--rounds", type=int, default=24, help="fork rounds of the sequential workload")
    parser.add_argument("--only", nargs="*", help="workloads to run (sequential and scenario names)")
    args = parser.parse_args()
    workloads = ["startup", "sequential", *SCENARIOS]
    if args.only:
        workloads = [w for w in workloads if w in args.only]
    console = Console(stderr=True)
    samples: dict[str, dict[str, list[dict]]] = {w: {"plain": [], "recorded": []} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="cowahead-overhead-") as tmp:
        workdir = Path(tmp)
        for round_ in range(args.repeats + 1):  # round 0 is the warm-up
            for w in workloads:
                order = ("plain", "recorded") if round_ % 2 else ("recorded", "plain")
                for mode in order:
                    output = workdir / f"{w}.parquet" if mode == "recorded" else None
                    if w == "startup":
                        row = run_program(["true"], output)
                    elif w == "sequential":
                        program = workdir / "sequential.py"
                        program.write_text(SEQUENTIAL)
                        row = run_program([sys.executable, str(program), str(args.pages), str(args.rounds)], output)
                    else:
                        row = run_scenario(w, output)
                    if round_ > 0:
                        samples[w][mode].append(row)
                    console.log(f"round {round_}{' (warm-up)' if round_ == 0 else ''} {w} {mode}: "
                                f"{row['workload']:.3f} s")
    results = {}
    for w, by_mode in samples.items():
        plain = [r["workload"] for r in by_mode["plain"]]
        recorded = [r["workload"] for r in by_mode["recorded"]]
        converted = [r["workload"] + r["convert"] for r in by_mode["recorded"]]
        perf_total = [r.get("perf", r["workload"]) for r in by_mode["recorded"]]
        p, r, c = statistics.median(plain), statistics.median(recorded), statistics.median(converted)
        timed = (perf_total,) if w == "startup" else (plain, recorded)
        spread = max((max(v) - min(v)) / statistics.median(v) for v in timed)
        results[w] = {"plain_s": plain, "recorded_s": recorded, "recorded_and_converted_s": converted,
                      "median_plain_s": p, "median_recorded_s": r, "ratio": r / p,
                      "ratio_with_conversion": c / p, "perf_s": perf_total,
                      "ratio_perf_whole_life": statistics.median(perf_total) / p, "meets_goal": r / p <= GOAL,
                      "spread": spread, "too_noisy": spread > SPREAD_WARNING,
                      "events": statistics.median(x["events"] for x in by_mode["recorded"]),
                      "agreement": by_mode["recorded"][-1].get("agreement")}
    if "startup" in results:
        # `true` lives a millisecond: only perf_s (perf's start-up and teardown) means anything.
        results["startup"].update({k: None for k in ("ratio", "ratio_with_conversion", "ratio_perf_whole_life",
                                                     "meets_goal")})
    table = Table(title=f"recording overhead: median of {args.repeats} (goal ≤ {GOAL}×)")
    for heading in ("workload", "plain s", "recorded s", "ratio", "perf's whole life", "with conversion", "events", "spread"):
        table.add_column(heading, justify="left" if heading == "workload" else "right")
    for w, res in results.items():
        ratios = [f"{res[k]:.2f}" if res[k] is not None else "—"
                  for k in ("ratio", "ratio_perf_whole_life", "ratio_with_conversion")]
        if w == "startup":
            ratios[1] = f"perf {statistics.median(res['perf_s']):.2f} s"
        table.add_row(w, f"{res['median_plain_s']:.3f}", f"{res['median_recorded_s']:.3f}", *ratios, f"{res['events']:,.0f}",
                      f"{res['spread']:.0%}" + (" (noisy)" if res["too_noisy"] else ""))
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    document = {"benchmark": "record_overhead", "version": 1, "date": dt.datetime.now(dt.timezone.utc).isoformat(),
                "goal_ratio": GOAL, "repeats": args.repeats, "warmup_rounds": 1,
                "sequential": {"pages": args.pages, "rounds": args.rounds},
                "machine": machine(), "results": results}
    path = RESULTS / f"record-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
