"""``cowahead generate PATTERN -o TRACE``: write a synthetic workload's trace."""

from __future__ import annotations

import click

from ..trace import write_trace
from ..trace.generators import DEFAULT_PAGES, SYNTAX, generate


@click.command("generate", help=f"Write the trace of a named pattern: {SYNTAX}.")
@click.argument("pattern")
@click.option("--pages", "-n", type=int, default=DEFAULT_PAGES, show_default=True, help="Pages the parent maps.")
@click.option("--seed", "-s", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="Trace file to write.")
def command(pattern: str, pages: int, seed: int, output: str) -> None:
    trace = generate(pattern, pages, seed)
    write_trace(trace, output)
    click.echo(f"{output}: {len(trace)} events, pattern {trace.metadata['pattern']}, {pages} pages, seed {seed}")
