"""``cowahead validate [--quick]``: the model against the running kernel, page for page.

Every generator runs as real processes and in the model, under each policy
(COW-ahead applied from user space with MADV_POPULATE_WRITE). Zero-fills,
zero-page reads, COW copies, reuses, ahead copies and ahead reuses must
match page for page, and every process's memory must hold exactly what it
wrote. Exit 0 when all match, 1 on any mismatch, 2 when this machine cannot
tell (not root: PFNs read as zero).
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import CowaheadError
from ..output import output_file, write_atomically
from ..real.plan import COMPARED_KINDS
from ..real.truth import Comparison
from ..real.validate import check_support, document, settings, validate

SHOWN_MISMATCHES = 20


@click.command("validate", help="Run every generator for real and in the model; compare page for page.")
@click.option("--quick", is_flag=True, help="Fewer pages and policies (256 pages; none, fixed:16, adaptive).")
@click.option("--pages", "-n", type=click.IntRange(1, 1 << 20), help="Pages each pattern maps (default 1024).")
@click.option("--policy", "-p", "policies", multiple=True, help="A policy; repeat for more. Default: six.")
@click.option("--seed", "-s", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
def command(quick: bool, pages: int | None, policies: tuple[str, ...], seed: int, output: str | None) -> None:
    if output:
        output_file(output)
    err = Console(stderr=True)
    config = settings(quick, pages, list(policies), seed)
    kept, warnings = check_support(config.policies)
    for line in warnings:
        err.print(f"cowahead: warning: {line}", highlight=False)
    config = type(config)(config.patterns, kept, config.pages, config.seed)
    total = len(config.patterns) * len(config.policies)
    # No auto-refresh thread: the runs fork, and a fork should not copy a thread holding a lock.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, auto_refresh=False, transient=True) as progress:
        task = progress.add_task("validate", total=total)

        def done(result: Comparison) -> None:
            progress.update(task, advance=1, description=f"{result.pattern} {result.policy}", refresh=True)

        skipped: list[str] = []
        results = validate(config, done, skipped)
    for line in skipped:
        err.print(f"cowahead: warning: skipped {line}", highlight=False)
    if not results:
        raise CowaheadError("no pattern could be run for real; nothing was validated")
    if output:
        doc = document(config, results, skipped)
        write_atomically(output, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a log or a pipe: keep the table's columns whole
    out.print(_table(results, config.pages))
    failed = [r for r in results if not r.ok]
    for r in failed:
        lines = r.mismatches + r.unexplained + r.integrity
        out.print(f"[bold red]{r.pattern} {r.policy}[/]: {len(r.mismatches)} page mismatches, "
                  f"{len(r.unexplained)} unexplained fault counts, {len(r.integrity)} wrong pages")
        for line in lines[:SHOWN_MISMATCHES]:
            out.print(f"  {line}", highlight=False)
        if len(lines) > SHOWN_MISMATCHES:
            out.print(f"  … {len(lines) - SHOWN_MISMATCHES} more")
    out.print(f"{len(results) - len(failed)} of {len(results)} runs match the model page for page"
              + (f"; {len(failed)} do not" if failed else "")
              + (f"; {len(skipped)} patterns skipped" if skipped else ""))
    if failed:
        raise click.exceptions.Exit(1)


def _table(results: list[Comparison], pages: int) -> Table:
    table = Table(title=f"model vs kernel, {pages} pages per pattern (model=kernel, or model≠kernel)")
    for name in ["pattern", "policy"] + list(COMPARED_KINDS) + ["minflt", "noise", "memory", "result"]:
        table.add_column(name, justify="left" if name in ("pattern", "policy") else "right")
    for r in results:
        cells = []
        for kind in COMPARED_KINDS:
            m, k = r.model.get(kind, 0), r.real.get(kind, 0)
            cells.append(str(m) if m == k else f"[red]{m}≠{k}[/]")
        memory = "ok" if not r.integrity else f"[red]{len(r.integrity)} wrong[/]"
        result = "[green]match[/]" if r.ok else "[red]MISMATCH[/]"
        table.add_row(r.pattern, r.policy, *cells, str(r.minflt), str(r.noise), memory, result)
    return table
