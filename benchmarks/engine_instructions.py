"""Instructions per event of the replay loop, two versions side by side, counted by valgrind (a script, not a test).

    .venv/bin/python benchmarks/engine_instructions.py --before REV [--pages 200000]
        [--patterns sequential,hotcold,random,rewrite] [--policies none,fixed:16]

Timings on this shared VM swing by tens of percent between processes, so an
A/B of two engine versions in seconds can hide a 5 % change. valgrind's
callgrind counts the instructions a process executes, the same whatever else
the machine does. Each (version, pattern, policy) runs in two processes under
callgrind: one replays the trace once, the other three times (each replay on
a new state, after the same imports, cache loads and warm-up); the difference
of their totals, halved, is what one replay executes, imports and numba's
cache loading cancelled out. Python's garbage collector is off during the
counted replays: a full collection over the objects numba and llvmlite keep
costs millions of instructions, and where it fell (one process's replays or
not) moved a count by up to ±5 % between runs of the same code. valgrind shows the program a CPU of its own, so
numba would compile anew inside it (for many minutes) rather than load its
cache: both versions are compiled for ``NUMBA_CPU_NAME=generic`` (plain
x86-64), natively first, and valgrind then loads that. Counts are of that
generic code, the same for both versions. ``REV`` is checked out into a temporary git
worktree; both versions read the same trace file, written by ``REV``'s generators (a newer
cowahead reads an older trace format). Results go to
benchmarks/results/engine-instructions-<date>[-N].json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import gc, sys
from cowahead.engine import page_space, replay_chunk
from cowahead.engine.prepass import decode, iter_chunks
from cowahead.engine.state import new_state
from cowahead.policies import parse_policy
from cowahead.trace import TraceFile
trace = TraceFile(sys.argv[1]).read()
policy, replays = parse_policy(sys.argv[2]), int(sys.argv[3])
space = page_space(trace)
decoded = [decode(c, space) for c in iter_chunks(trace)]
def replay():
    st, first = new_state(space, policy, None), 0
    for d in decoded:
        st = replay_chunk(st, d, first)
        first += len(d.kind)
    return st
replay()  # warm: numba's cache loaded, every specialization in use
gc.collect()
gc.disable()  # a collection of the many objects numba and llvmlite keep, falling in one process's replays only, is not the engine's
for _ in range(replays):
    replay()
"""

WRITE_TRACES = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import engine
for pattern in sys.argv[2].split(","):
    engine.trace_file(pattern, int(sys.argv[3]), Path(sys.argv[4]))
"""


def environment(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree / "src"), "NUMBA_CPU_NAME": "generic"}


def instructions(tree: Path, trace: Path, policy: str, replays: int) -> int:
    env = environment(tree)
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c",
                          PROBE, str(trace), policy, str(replays)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"valgrind failed ({tree.name}, {policy}): {out.stderr[-500:]}")
    return int(re.search(r"I\s+refs:\s+([\d,]+)", out.stderr).group(1).replace(",", ""))


def per_replay(tree: Path, trace: Path, policy: str) -> int:
    count = (instructions(tree, trace, policy, 3) - instructions(tree, trace, policy, 1)) // 2
    print(f"  {tree.name} {trace.name} {policy}: {count:,} instructions per replay", flush=True)  # kept if cut short
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--pages", type=int, default=200_000)
    parser.add_argument("--patterns", default="sequential,hotcold,random")
    parser.add_argument("--policies", default="none,fixed:16")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cowahead-bench")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind)")
    before = Path(tempfile.mkdtemp(prefix="cowahead-before-"))
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", args.before], capture_output=True, text=True, check=True).stdout.strip()
    after = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip())
    subprocess.run([*git, "worktree", "add", "--detach", str(before), commit], check=True, capture_output=True)
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import engine
        cache = args.cache / commit[:12]
        cache.mkdir(parents=True, exist_ok=True)
        # Written by the older tree: this one reads an older trace format, not the reverse.
        subprocess.run([sys.executable, "-c", WRITE_TRACES, str(before / "benchmarks"), args.patterns,
                        str(args.pages), str(cache)], env=environment(before), check=True)
        traces = {p: engine.trace_file(p, args.pages, cache) for p in args.patterns.split(",")}
        trees = {"before": before, "after": ROOT}
        policies = args.policies.split(",")
        for tree in trees.values():  # compile each version once, natively, so that valgrind only loads the cache
            for policy in policies:
                subprocess.run([sys.executable, "-c", PROBE, str(next(iter(traces.values()))), policy, "0"],
                               env=environment(tree), check=True)
        jobs = [(name, pattern, policy) for pattern in traces for policy in policies for name in trees]
        with ThreadPoolExecutor(args.jobs) as pool:
            counts = dict(zip(jobs, pool.map(lambda j: per_replay(trees[j[0]], traces[j[1]], j[2]), jobs)))
        doc = {"format": "cowahead-benchmark", "version": 1, "benchmark": "engine-instructions",
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
               "machine": engine.machine(), "before": commit, "after": after, "after_has_uncommitted_src": dirty,
               "pages": args.pages, "method": "callgrind I refs: (3 replays − 1 replay) / 2, each on a new state",
               "patterns": {}}
        for pattern, trace in traces.items():
            events = engine.TraceFile(trace).num_events
            doc["patterns"][pattern] = {"events": events, "policies": {}}
            for policy in policies:
                b, a = counts["before", pattern, policy], counts["after", pattern, policy]
                doc["patterns"][pattern]["policies"][policy] = {
                    "instructions_per_event_before": b / events, "instructions_per_event_after": a / events,
                    "after_over_before": a / b}
                print(f"{pattern:10s} {policy:9s} {b / events:7.2f} → {a / events:7.2f} instructions/event "
                      f"(×{a / b:.4f})", flush=True)
        out = engine.result_path("engine-instructions")  # a day's earlier run is kept: -2, -3, …
        out.write_text(json.dumps(doc, indent=1))
        print(out)
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(before)], capture_output=True)
        shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
