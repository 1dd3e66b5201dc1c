"""``cowahead simulate TRACE --policy P ...``: replay one trace under policies."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..model.costs import COSTS_HELP, HEADLINE, cost_profile
from ..policies import SYNTAX, default_policies, parse_policies
from ..report.table import results_table
from ..results.rows import simulate_engine, simulate_reference
from ..trace import TraceFile

PROGRESS_COLUMNS = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn()]


@click.command("simulate", help=f"Replay TRACE under each --policy ({SYNTAX}).")
@click.argument("trace_path", metavar="TRACE")
@click.option("--policy", "-p", "policies", multiple=True, help="A policy; repeat for more. Default: a set of six.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of result objects instead of a table.")
@click.option("--costs", default=HEADLINE, show_default=True, help=COSTS_HELP)
@click.option("--reference", is_flag=True,
              help="Replay through the plain Python model instead of the compiled engine (same counters, slower).")
def command(trace_path: str, policies: tuple[str, ...], as_json: bool, costs: str, reference: bool) -> None:
    cost_model = cost_profile(costs)
    trace = TraceFile(trace_path)
    policies = parse_policies(list(policies) or default_policies("example"))  # a bad one fails before any replay
    # The model replays once per policy; the engine all policies in one pass.
    total = trace.num_events * (len(policies) if reference else 1)
    with Progress(*PROGRESS_COLUMNS, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay (model)" if reference else "replay (engine)", total=total)
        advance = lambda events: bar.advance(task, events)  # noqa: E731
        if reference:
            rows = simulate_reference(trace.read(), policies, cost_model, advance)
        else:
            rows = simulate_engine(trace, policies, cost_model, advance)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        results_table(rows, title=f"{trace_path} ({trace.num_events} events, {trace.metadata.get('source', '?')})").print()
