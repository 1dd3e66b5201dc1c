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
@click.option("--large-destinations", is_flag=True,
              help="Replay it (simulate, sweep) under a kernel whose COW-ahead copies each aligned block of shared "
                   "pages into one large folio of an mTHP size the variant allows (e.g. +mthp-64k).")
def command(pattern: str, pages: int, seed: int, output: str, large_destinations: bool) -> None:
    trace = generate(pattern, pages, seed, large_destinations)
    write_trace(trace, output)
    click.echo(f"{output}: {len(trace)} events, pattern {trace.metadata['pattern']}, {pages} pages, seed {seed}")
