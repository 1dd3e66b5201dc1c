"""User-space COW-ahead on the running kernel: time against `none`, per generator and policy.

Every generator's stream runs as real processes (cowahead.real), the model
in lockstep telling which pages each policy copies ahead and when, and the
process issuing MADV_POPULATE_WRITE on them. Runs are unmeasured (no
pagemap reads) so the times are the workload's own; memory contents are
still checked after every run. Rounds run side by side: each round runs
every generator under every policy once, so drift on a shared machine hits
all of them alike; medians over the rounds.

Times per run:
- work: the time inside the memory operations (numpy writes/reads and the
  madvise calls), summed over processes: what COW-ahead changes; as CPU
  time (user + system: time other tasks held the CPU left out, the stable
  figure on a shared machine) and as wall time;
- wall: the whole run, fork, process switches and exits included.

A policy's ahead windows cut the stream into more numpy calls, each with
~10 µs of Python overhead that a program issuing the madvise would not pay
in the same way. So `cpu_ratio` and `work_wall_ratio` hold each policy against a
`none` run cut into the very same numpy calls (only the madvise calls
differ); `cpu_ratio_natural` and `wall_ratio` against plain `none`.

    .venv/bin/python benchmarks/userspace_cowahead.py [--pages 4096] [--repeats 5]

writes benchmarks/results/userspace-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cowahead.model.costs import CostModel
from cowahead.real import linux
from cowahead.real.timing import plans_side_by_side, run_rounds, spread
from cowahead.trace.generators import PATTERNS, generate

POLICIES = ["none", "fixed:4", "fixed:16", "fixed:64", "around:16", "adaptive", "ccow", "oracle:16"]
RESULTS = Path(__file__).parent / "results"


def build_plans(pages: int, seed: int) -> dict[tuple[str, str], object]:
    """Per generator: each policy's plan, and for each a `none` plan cut into the same numpy calls."""
    return {(g, key): plan for g in PATTERNS
            for key, plan in plans_side_by_side(generate(g, pages, seed), POLICIES).items()}


def run_all(plans: dict, repeats: int, progress, task) -> dict[tuple[str, str], dict]:
    """Every plan once per round, all generators in one round, so drift hits all alike."""
    times = run_rounds(plans, repeats, lambda n: progress.update(task, advance=n, refresh=True))
    return {key: {"plan": plans[key], **times[key]} for key in plans}


def rows(runs: dict, costs: CostModel) -> list[dict]:
    out = []
    for (pattern, policy), run in runs.items():
        if policy.startswith("none|"):
            continue
        base = runs[(pattern, "none")]
        same_calls = runs.get((pattern, f"none|{policy}"), base)
        c = run["plan"].counters
        cpu, work, wall = (statistics.median(run[k]) for k in ("cpu_us", "work_us", "wall_us"))
        out.append({
            "pattern": pattern, "policy": policy,
            "cpu_us": round(cpu, 1), "work_us": round(work, 1), "wall_us": round(wall, 1),
            "cpu_values_us": [round(v, 1) for v in run["cpu_us"]],
            "work_values_us": [round(v, 1) for v in run["work_us"]],
            "wall_values_us": [round(v, 1) for v in run["wall_us"]],
            "numpy_calls": sum(1 for s in run["plan"].steps if s.op.value in ("write", "read")),
            "madvise_windows": sum(1 for s in run["plan"].steps if s.op.value == "ahead"),
            "none_same_calls_cpu_us": round(statistics.median(same_calls["cpu_us"]), 1),
            "cpu_ratio": round(cpu / statistics.median(same_calls["cpu_us"]), 4),
            "work_wall_ratio": round(work / statistics.median(same_calls["work_us"]), 4),
            "cpu_ratio_natural": round(cpu / statistics.median(base["cpu_us"]), 4),
            "wall_ratio": round(wall / statistics.median(base["wall_us"]), 4),
            "predicted_ratio": round(costs.predict_us(c) / costs.predict_us(base["plan"].counters), 4),
            "cow_faults": c.cow_copy, "ahead_copies": c.ahead_copies, "ahead_reuses": c.ahead_reuses,
            "ahead_hits": c.ahead_hits, "ahead_waste": c.ahead_waste, "extra_pages_peak": c.extra_pages_peak,
            "cpu_spread": round(spread(run["cpu_us"]), 4),
            "same_calls_cpu_spread": round(spread(same_calls["cpu_us"]), 4),
            "work_wall_spread": round(spread(run["work_us"]), 4),
        })
    return out


def verdicts(table: list[dict]) -> dict[str, list[str]]:
    """Plain sentences: where user-space COW-ahead loses, wins, or the noise hides which."""
    out: dict[str, list[str]] = {"loses": [], "wins": [], "inconclusive": []}
    for r in table:
        if r["policy"] == "none" or not (r["ahead_copies"] or r["ahead_reuses"]):
            continue  # the very same run as none: any difference is noise
        noise = max(r["cpu_spread"], r["same_calls_cpu_spread"], 0.02)
        line = (f"{r['pattern']} under {r['policy']}: {r['cpu_ratio'] - 1:+.0%} CPU time against none in the "
                f"same numpy calls ({r['ahead_copies']} pages copied ahead, {r['ahead_waste']} never written; "
                f"IQR/median {noise:.0%})")
        if r["cpu_ratio"] > 1 + noise:
            out["loses"].append(line)
        elif r["cpu_ratio"] < 1 - noise:
            out["wins"].append(line)
        else:
            out["inconclusive"].append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--costs", help="a calibration file for the predicted ratio (default: CostModel's)")
    parser.add_argument("--output", help="default: benchmarks/results/userspace-<date>.json")
    args = parser.parse_args(argv)
    support = linux.probe_support()
    if not support.populate_write:
        print(f"userspace_cowahead: {support.problems[-1]}", file=sys.stderr)
        return 2
    costs = CostModel.load(args.costs) if args.costs else CostModel()
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, auto_refresh=False, transient=True) as progress:
        progress.print("building plans (the model in lockstep)…")
        plans = build_plans(args.pages, args.seed)
        task = progress.add_task("runs", total=len(plans) * args.repeats)
        runs = run_all(plans, args.repeats, progress, task)
    table = rows(runs, costs)
    now = dt.datetime.now(dt.timezone.utc)
    doc = {
        "format": "cowahead-userspace-benchmark", "version": 1, "created": now.isoformat(timespec="seconds"),
        "metadata": {**linux.machine_metadata(), "cowahead": version("cowahead"), "pages": args.pages,
                     "repeats": args.repeats, "seed": args.seed, "costs_source": costs.source,
                     "command": "benchmarks/userspace_cowahead.py " + " ".join(argv or sys.argv[1:])},
        "rows": table,
        "verdicts": verdicts(table),
    }
    output = Path(args.output) if args.output else RESULTS / f"userspace-{now.date().isoformat()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    out = Console() if Console().is_terminal else Console(width=150)
    show = Table(title=f"user-space COW-ahead, {args.pages} pages, medians of {args.repeats} ({output})")
    for name in ("pattern", "policy", "CPU ms", "CPU/none", "wall/none", "CPU/none natural", "run wall/none",
                 "predicted/none", "cow faults", "ahead copies", "ahead waste", "windows", "CPU IQR"):
        show.add_column(name, justify="left" if name in ("pattern", "policy") else "right")
    for r in table:
        show.add_row(r["pattern"], r["policy"], f"{r['cpu_us'] / 1000:.2f}", f"{r['cpu_ratio']:.3f}",
                     f"{r['work_wall_ratio']:.3f}", f"{r['cpu_ratio_natural']:.3f}", f"{r['wall_ratio']:.3f}",
                     f"{r['predicted_ratio']:.3f}",
                     str(r["cow_faults"]), str(r["ahead_copies"]), str(r["ahead_waste"]), str(r["madvise_windows"]),
                     f"{r['cpu_spread']:.0%}")
    out.print(show)
    for verdict, lines in doc["verdicts"].items():
        out.print(f"User-space COW-ahead {verdict} ({len(lines)}):")
        for line in lines or ["nowhere"]:
            out.print(f"  {line}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
