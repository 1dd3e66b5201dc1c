"""``cowahead simulate TRACE --policy P ...``: replay one trace under policies."""

from __future__ import annotations

import json

import click

from ..model.costs import CostModel
from ..policies import SYNTAX
from ..report.table import results_table
from ..results import simulate_reference
from ..trace import read_trace

DEFAULT_POLICIES = ["none", "fixed:16", "around:16", "adaptive", "ccow", "oracle:16"]


@click.command("simulate", help=f"Replay TRACE under each --policy ({SYNTAX}).")
@click.argument("trace_path", metavar="TRACE")
@click.option("--policy", "-p", "policies", multiple=True, help="A policy; repeat for more. Default: a set of six.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of result objects instead of a table.")
@click.option("--costs", type=click.Path(dir_okay=False), help="A calibration file from `cowahead calibrate`.")
def command(trace_path: str, policies: tuple[str, ...], as_json: bool, costs: str | None) -> None:
    cost_model = CostModel.load(costs) if costs else CostModel()
    trace = read_trace(trace_path)
    rows = simulate_reference(trace, list(policies) or DEFAULT_POLICIES, cost_model)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        results_table(rows, title=f"{trace_path} ({len(trace)} events, {trace.metadata.get('source', '?')})").print()
