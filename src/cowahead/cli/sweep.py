"""``cowahead sweep TRACE ... --policy 'fixed:1..512' ... -o RESULTS``: a traces × policies grid."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import CowaheadError
from ..model.costs import COSTS_HELP, HEADLINE, cost_profile
from ..output import output_file
from ..policies import SYNTAX, parse_policy
from ..report.table import KEEP, FittedTable, percent
from ..results.document import save_results
from ..results.summary import best_per_family
from ..sweep import DEFAULT_POLICIES, expand_policies, open_pool, run_sweep
from ..trace import TraceFile


@click.command("sweep", help=f"Replay every TRACE under every --policy ({SYNTAX}); A..B in a policy "
                             "means every power of two from A to B, e.g. fixed:1..512. Default: all six "
                             "families over windows 1..512. Writes RESULTS (.json, or .parquet) and prints the "
                             "best window per family: the lowest predicted time, ties to fewer extra pages.")
@click.argument("traces", metavar="TRACE...", nargs=-1, required=True)
@click.option("--policy", "-p", "policies", multiple=True, help="A policy or a range of them; repeat for more.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Results file: .json (readable by `cowahead report`) or .parquet.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True,
              help="Worker processes on this machine (without --scheduler; a cluster has its own).")
@click.option("--costs", default=HEADLINE, show_default=True, help=COSTS_HELP)
@click.option("--scheduler", envvar="COWAHEAD_SCHEDULER", metavar="ADDRESS",
              help="Run on a Dask cluster: a scheduler's address (tcp://host:8786), or local:N for N worker "
                   "processes here; TRACE may then be an fsspec URL the workers read (docs/cluster.md). "
                   "Default: --jobs processes here. Also COWAHEAD_SCHEDULER.")
def command(traces: tuple[str, ...], policies: tuple[str, ...], output: Path, jobs: int, costs: str,
            scheduler: str | None) -> None:
    cost_model = cost_profile(costs)
    expanded = expand_policies(list(policies) or DEFAULT_POLICIES)
    if all(p.name != "none" for p in expanded):
        expanded.insert(0, parse_policy("none"))  # the baseline every comparison needs
    if output.suffix not in (".json", ".parquet"):
        raise CowaheadError(f"{output}: the results file must end in .json or .parquet")
    output_file(output)
    for trace in traces:
        if not scheduler or Path(trace).exists():  # a cluster's workers read a URL, or a path only they have
            TraceFile(trace)  # a bad trace is one line, before the progress display takes the terminal
    pool = open_pool(scheduler or None, jobs)  # an unreachable scheduler is one line, before the progress display
    err = Console(stderr=True)
    columns = [TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    # Drawn on a terminal only: elsewhere the bar has no reader, and its last refresh would put an empty line
    # before an error a worker raised.
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("sweep", total=len(traces) * len(expanded))
        results = run_sweep(list(traces), expanded, jobs, cost_model, lambda n: bar.advance(task, n), pool=pool)
    save_results(results, output)
    for workload in results["workloads"]:
        tradeoff_table(workload).print()
    sweep = results["sweep"]
    if sweep["interrupted"]:  # what was replayed is kept, as record keeps the trace of what ran
        click.echo(f"cowahead: interrupted; {sweep['replays']} of {sweep['planned']} replays kept in {output} "
                   "(each trace lists its missing policies)", err=True)
        sys.exit(130)
    where = f"the cluster {sweep['cluster']['scheduler']}" if "cluster" in sweep else "this machine"
    err.print(f"{output}: {len(traces)} trace(s) × {len(expanded)} policies in {sweep['wall_seconds']:.1f} s "
              f"on {sweep['jobs']} workers of {where}")


def tradeoff_table(workload: dict) -> FittedTable:
    base = next(r for r in workload["rows"] if r["policy"] == "none")
    headers = ["family", "best window", "faults saved", "Δ faults", "extra pages peak", "ahead waste",
               "predicted µs", "Δ time", "Δ time user space"]
    ranks = [KEEP, KEEP, 2, 5, 4, 3, 1, KEEP, 6]
    rows = [["none", "none", "0", "", "0", "0", f"{base['predicted_us']:,.1f}", "", ""]]
    by_policy = {r["policy"]: r for r in workload["rows"]}
    for s in best_per_family(workload["rows"]):
        r = by_policy[s["policy"]]
        rows.append([s["family"], s["policy"], f"{base['faults'] - r['faults']:,}", percent(s["faults_change_pct"]),
                     f"{r['extra_pages_peak']:,}", f"{r['ahead_waste']:,}", f"{r['predicted_us']:,.1f}",
                     percent(s["predicted_change_pct"]), percent(s["predicted_change_pct_userspace"])])
    return FittedTable(f"{workload['name']} ({workload['events']:,} events): best window per family — "
                       f"lowest predicted µs, ties to fewer extra pages; user space: the same window without a "
                       f"patched kernel", headers, ranks, rows,
                       left=("family", "best window"), elsewhere="read the results file")
