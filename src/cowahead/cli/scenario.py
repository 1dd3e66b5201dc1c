"""``cowahead scenario list`` and ``cowahead scenario run NAME -o TRACE``: real programs, recorded.

Each scenario starts a real program, loads it, records it with perf and
stops it, then holds the trace's faults against the program's own counters
(rusage, Redis INFO) and says whether they agree within 5 %.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ..output import output_file
from ..scenarios import SCENARIOS, TOLERANCE, scenario
from .record import COLUMNS, _Bar, summary


@click.group("scenario")
def command() -> None:
    """Record real third-party programs and check the traces against their own counters."""


@command.command("list")
def list_scenarios() -> None:
    """The scenarios, one a line."""
    for name, module in SCENARIOS.items():
        click.echo(f"{name:24} {module.SUMMARY}")


@command.command("run")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="Trace file to write.")
def run(name: str, output: str) -> None:
    """Run scenario NAME, recording it into TRACE; print the trace against the program's counters."""
    module = scenario(name)
    output_file(output)
    console = Console(stderr=True)
    with Progress(*COLUMNS, console=console, transient=True) as progress:
        result = module.run(Path(output), _Bar(progress))
    click.echo(summary(output, result.recording))
    table = Table(title=f"{name}: trace against the program's own counters (agree within {TOLERANCE:.0%})")
    for heading in ("what", "trace", "program", "unit", "difference", "agree"):
        table.add_column(heading, justify="left" if heading in ("what", "unit") else "right")
    for c in result.comparisons:
        table.add_row(c.what, f"{c.trace:,.0f}", f"{c.program:,.0f}", c.unit, f"{c.difference:+.2%}",
                      "yes" if c.agrees else "NO")
    Console().print(table)
    for c in result.comparisons:
        click.echo(f"  {c.what}: {c.note}")
    for key, value in result.details.items():
        if not isinstance(value, (dict, list)):
            click.echo(f"  {key}: {value}")
