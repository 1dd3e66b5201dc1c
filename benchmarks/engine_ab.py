"""Two versions of the replay engine side by side, in one sitting (a script, not a test).

    .venv/bin/python benchmarks/engine_ab.py --before REV [--pages 2000000] [--patterns random,sequential,hotcold,rewrite]
                                             [--rounds 3] [--runs 3]

``REV`` is checked out into a temporary git worktree. Each round runs, for
every pattern, ``bench_engine`` of benchmarks/engine.py once in the old
tree and once in this one, in fresh processes, alternating which goes first,
over the same trace file; numba's cache of each tree is warmed before the
first round. Compared are the loop's events/s and its ratios to the
read-only loop and to the memory floor (both measured in the same process
as the loop, so machine drift between processes cancels in the ratios),
as medians over rounds. Results go to benchmarks/results/engine-ab-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import engine
print("RESULT " + json.dumps(engine.bench_engine(Path(sys.argv[2]), int(sys.argv[3]))))
"""


def run(tree: Path, trace: Path, runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(trace), str(runs)], env=env,
                         capture_output=True, text=True, check=True)
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def summary(result: dict) -> dict:
    return {policy: {"events_per_s": p["replay_loop"]["events_per_s"], "ratio_to_read_only": p["ratio_to_read_only"],
                     "ratio_to_memory_floor": p["ratio_to_memory_floor"]}
            for policy, p in result["policies"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the git revision to compare against")
    parser.add_argument("--pages", type=int, default=2_000_000)
    parser.add_argument("--patterns", default="random,sequential,hotcold,rewrite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cowahead-bench")
    args = parser.parse_args()
    before = Path(tempfile.mkdtemp(prefix="cowahead-before-"))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.before], capture_output=True, text=True,
                            check=True).stdout.strip()
    after = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), commit], check=True,
                   capture_output=True)
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import engine  # this tree's: makes the trace files both versions read
        args.cache.mkdir(parents=True, exist_ok=True)
        traces = {p: engine.trace_file(p, args.pages, args.cache) for p in args.patterns.split(",")}
        trees = {"before": before, "after": ROOT}
        for tree in trees.values():  # warm numba's cache of each tree (compiles once)
            run(tree, traces[next(iter(traces))], 1)
        rounds: dict[str, dict[str, list[dict]]] = {p: {"before": [], "after": []} for p in traces}
        for r in range(args.rounds):
            for pattern, trace in traces.items():
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for name in order:
                    rounds[pattern][name].append(summary(run(trees[name], trace, args.runs)))
                    print(f"round {r + 1} {pattern} {name} done", flush=True)
        doc = {"format": "cowahead-benchmark", "version": 1, "benchmark": "engine-ab",
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
               "machine": engine.machine(), "before": commit, "after": after, "pages": args.pages,
               "rounds": args.rounds, "runs_per_round": args.runs, "patterns": {}}
        for pattern, by_tree in rounds.items():
            doc["patterns"][pattern] = table = {}
            for policy in by_tree["after"][0]:
                row = table[policy] = {}
                for key in ("events_per_s", "ratio_to_read_only", "ratio_to_memory_floor"):
                    values = {name: [rnd[policy][key] for rnd in by_tree[name]] for name in trees}
                    if values["after"][0] is None:
                        continue
                    medians = {name: statistics.median(v) for name, v in values.items()}
                    row[key] = {"before": values["before"], "after": values["after"], "median_before": medians["before"],
                                "median_after": medians["after"], "after_over_before": medians["after"] / medians["before"]}
                print(f"{pattern:10s} {policy:10s} " + "  ".join(
                    f"{key}: {row[key]['median_before']:.3g} → {row[key]['median_after']:.3g} "
                    f"(×{row[key]['after_over_before']:.3f})" for key in row), flush=True)
        out = ROOT / "benchmarks" / "results" / f"engine-ab-{time.strftime('%Y-%m-%d')}.json"
        out.write_text(json.dumps(doc, indent=1))
        print(out)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)
        shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
