"""``cowahead evaluate [WORKLOAD|TRACE ...] [--quick] -o DIR``: the main job."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import CowaheadError
from ..model.costs import COSTS_HELP, HEADLINE, cost_profile
from ..output import output_folder
from ..results.summary import Budgets, best_per_family, over_budget, verdict, without_patched_kernel
from ..suite import CORPUS_WORKLOADS, DEFAULT_WORKLOADS, REAL_BY_DEFAULT, Settings, check_workloads, evaluate
from ..sweep import open_pool


@click.command("evaluate", help="Run the built-in workloads (or the given generators, scenarios, traces) under "
                                "every policy and window; write DIR/results.json and DIR/index.html. "
                                f"Default workloads: {', '.join(DEFAULT_WORKLOADS)}.")
@click.argument("workloads", nargs=-1, metavar="[WORKLOAD|TRACE ...]")
@click.option("--corpus", is_flag=True,
              help="Every scenario, the corpus of real programs too (`cowahead scenario list`), after the generators; "
                   "the default runs only the first three scenarios.")
@click.option("--quick", is_flag=True, help="Smaller workloads, fewer windows and real runs (about 2 minutes).")
@click.option("--no-real", is_flag=True, help="Skip timing the best windows for real.")
@click.option("--real", "every_real", is_flag=True,
              help="Time the best windows for real on every workload that can run "
                   f"(default: {', '.join(REAL_BY_DEFAULT)}).")
@click.option("--pages", type=click.IntRange(1, 1 << 22), help="Pages each generator maps (default 16384; 2048 with --quick).")
@click.option("--costs", default=HEADLINE, show_default=True, help=COSTS_HELP)
@click.option("--stall-budget", type=click.FloatRange(min=0), default=Budgets.stall_p99_us, show_default=True,
              help="The p99 stall per COW fault (µs, under --costs) a best window may have.")
@click.option("--memory-budget", type=click.FloatRange(min=0), default=None,
              help="The extra memory at peak (MiB) a best window may hold (default: no limit).")
@click.option("--repeats", "-r", type=click.IntRange(1, 20), default=None,
              help="Runs of each generator (seeds) and scenario (recordings); Δ time is their median with a 95% "
                   "interval (default 3; 1 with --quick).")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--scheduler", envvar="COWAHEAD_SCHEDULER", metavar="ADDRESS",
              help="Replay on a Dask cluster (an address, or local:N), as `sweep --scheduler` does; its workers read "
                   "the traces in DIR/traces, sent to them where small (docs/cluster.md). Also COWAHEAD_SCHEDULER.")
def command(workloads: tuple[str, ...], quick: bool, no_real: bool, every_real: bool, pages: int | None, costs: str,
            stall_budget: float, memory_budget: float | None, repeats: int | None, output: Path,
            scheduler: str | None, corpus: bool) -> None:
    if no_real and every_real:
        raise CowaheadError("--real and --no-real ask for opposite things: give one")
    cost_model = cost_profile(costs)
    settings = Settings.default(quick, real=not no_real, every_real=every_real)
    budgets = Budgets(stall_budget, memory_budget)
    settings = dataclasses.replace(settings, budgets=budgets)
    if repeats:
        settings = dataclasses.replace(settings, repeats=repeats)
    if pages:
        settings = dataclasses.replace(settings, pages=pages)
    if corpus and workloads:
        raise CowaheadError("--corpus names its own workloads: give it or a list of workloads, not both")
    names = CORPUS_WORKLOADS if corpus else list(workloads) or DEFAULT_WORKLOADS
    settings = dataclasses.replace(settings, corpus=corpus)
    check_workloads(names)  # before the progress display takes the terminal
    output_folder(output)
    pool = open_pool(scheduler, 2) if scheduler else None  # an unreachable scheduler is one line, before any work
    err = Console(stderr=True)
    started = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err) as progress:
            def step(description: str, total: int):
                task = progress.add_task(description, total=total)
                return lambda n: progress.advance(task, n)
            results = evaluate(names, settings, output, cost_model, step, pool)
    finally:
        if pool:  # the replay closes it; this is for a failure before it (a scenario's, say)
            pool.close()
    for workload in results["workloads"]:
        summaries = best_per_family(workload["rows"], budgets)
        sentences = [verdict(summaries, over_budget(workload["rows"], budgets)), without_patched_kernel(summaries)]
        click.echo(f"{workload['name']}: {' '.join(s for s in sentences if s)}")
    if corpus:
        click.echo(f"{output / 'corpus.html'}")
    click.echo(f"{output / 'index.html'} ({time.perf_counter() - started:.0f} s)")
