"""``cowahead validate [--quick] [--folios CONFIG,...]``: the model against the running kernel, page for page.

Every generator runs as real processes and in the model, under each policy
(COW-ahead applied from user space with MADV_POPULATE_WRITE) and under each
THP configuration (``--folios``; default all five: never, madvise, always,
mthp-64k, mthp-mixed; the knobs are set for the run and restored however
it ends). Faults (kind and pages mapped), folio membership at every fork,
exec and exit, and every process's memory must match. Exit 0 when all
match, 1 on any mismatch or allocation fallback, 2 when this machine cannot
tell (not root: PFNs read as zero) or on bad input.
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
from ..real.validate import (
    CONFIG_NAMES,
    check_support,
    config_warnings,
    document,
    parse_configs,
    settings,
    summary,
    validate,
)

SHOWN_MISMATCHES = 20


@click.command("validate", help="Run every generator for real and in the model; compare page for page.")
@click.option("--quick", is_flag=True, help="600 pages and two policies (none, fixed:16).")
@click.option("--pages", "-n", type=click.IntRange(1, 1 << 20), help="Pages each pattern maps (default 1000).")
@click.option("--policy", "-p", "policies", multiple=True, help="A policy; repeat for more. Default: seven.")
@click.option("--folios", "folios", metavar="CONFIG[,CONFIG…]",
              help=f"THP configurations to run under ({', '.join(CONFIG_NAMES)}; default all; 'host': the knobs "
                   "as found, untouched).")
@click.option("--seed", "-s", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
def command(quick: bool, pages: int | None, policies: tuple[str, ...], folios: str | None, seed: int,
            output: str | None) -> None:
    if output:
        output_file(output)
    err = Console(stderr=True)
    configs = parse_configs(folios)
    config = settings(quick, pages, list(policies), seed, configs)
    kept, warnings = check_support(config.policies)
    for line in warnings + config_warnings(config):
        err.print(f"cowahead: warning: {line}", highlight=False)
    config = type(config)(config.patterns, kept, config.pages, config.seed, config.configs)
    total = len(config.patterns) * len(config.policies) * max(1, len(config.configs))
    in_force: dict[str, dict[str, str]] = {}
    # No auto-refresh thread: the runs fork, and a fork should not copy a thread holding a lock.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, auto_refresh=False, transient=True) as progress:
        task = progress.add_task("validate", total=total)

        def done(result: Comparison) -> None:
            progress.update(task, advance=1, description=f"{result.config or 'host'} {result.pattern} "
                                                         f"{result.policy}", refresh=True)

        skipped: list[str] = []
        results = validate(config, done, skipped, in_force)
    for line in skipped:
        err.print(f"cowahead: warning: skipped {line}", highlight=False)
    if not results:
        raise CowaheadError("no pattern could be run for real; nothing was validated")
    if output:
        doc = document(config, results, skipped, in_force)
        write_atomically(output, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)  # a log or a pipe: keep the table's columns whole
    if len(config.configs) <= 1:
        out.print(_table(results, config.pages))
    else:
        out.print(_summary_table(results, config.pages))
    failed = [r for r in results if not r.ok]
    for r in failed:
        lines = r.problems
        why = {"fallback": f"; large-folio allocation fell back ({_counters(r.fallbacks)}): the model allocates "
                           "every folio it asks for",
               "khugepaged": f"; khugepaged collapsed {r.collapsed} meanwhile",
               "knobs": f"; THP knobs changed under the run ({', '.join(r.knobs_changed)})"}.get(r.status, "")
        out.print(f"[bold red]{r.config or 'host'} {r.pattern} {r.policy}[/]: {len(r.mismatches)} fault "
                  f"mismatches, {len(r.folio_mismatches)} folio-map lines, {len(r.unexplained)} unexplained fault "
                  f"counts, {len(r.integrity)} wrong pages{why}", highlight=False)
        for line in lines[:SHOWN_MISMATCHES]:
            out.print(f"  {line}", highlight=False)
        if len(lines) > SHOWN_MISMATCHES:
            out.print(f"  … {len(lines) - SHOWN_MISMATCHES} more")
    spurious = sum(r.spurious for r in results)
    out.print(f"{len(results) - len(failed)} of {len(results)} runs match the model page for page"
              + (f"; {len(failed)} do not" if failed else "")
              + (f"; {len(skipped)} patterns skipped" if skipped else "")
              + (f"; {spurious} spurious faults after whole-PMD reuses (stale TLB entries; not compared)"
                 if spurious else ""))
    if failed:
        raise click.exceptions.Exit(1)


def _counters(moved: dict[str, int]) -> str:
    return ", ".join(f"{name} +{n}" for name, n in sorted(moved.items()))


def _table(results: list[Comparison], pages: int) -> Table:
    table = Table(title=f"model vs kernel, {pages} pages per pattern, THP {results[0].config or 'as found'} "
                        "(faults model=kernel, or model≠kernel)")
    for name in ["pattern", "policy"] + list(COMPARED_KINDS) + ["pages", "folios", "minflt", "noise", "memory",
                                                                 "result"]:
        table.add_column(name, justify="left" if name in ("pattern", "policy") else "right")
    for r in results:
        cells = []
        for kind in COMPARED_KINDS:
            m, k = r.model.get(kind, 0), r.real.get(kind, 0)
            cells.append(str(m) if m == k else f"[red]{m}≠{k}[/]")
        model_pages, real_pages = sum(r.model_pages.values()), sum(r.real_pages.values())
        cells.append(str(model_pages) if model_pages == real_pages else f"[red]{model_pages}≠{real_pages}[/]")
        cells.append(_fraction(r.folio_pages_matched, r.folio_pages_total))
        memory = "ok" if not r.integrity else f"[red]{len(r.integrity)} wrong[/]"
        table.add_row(r.pattern, r.policy, *cells, str(r.minflt), str(r.noise + r.spurious), memory, _status(r.status))
    return table


def _summary_table(results: list[Comparison], pages: int) -> Table:
    table = Table(title=f"model vs kernel, {pages} pages per pattern, per THP configuration × generator "
                        "(matched / compared)")
    for name in ("config", "pattern", "runs", "faults", "folio pages", "result"):
        table.add_column(name, justify="left" if name in ("config", "pattern") else "right")
    for row in summary(results):
        statuses = row["statuses"]
        worst = next((s for s in ("mismatch", "fallback", "khugepaged", "knobs") if s in statuses), "match")
        table.add_row(row["config"] or "host", row["pattern"], _fraction(row["runs_matched"], row["runs"]),
                      _fraction(row["faults_matched"], row["faults_total"]),
                      _fraction(row["folio_pages_matched"], row["folio_pages_total"]), _status(worst))
    return table


def _fraction(matched: int, total: int) -> str:
    text = f"{matched}/{total}"
    return text if matched == total else f"[red]{text}[/]"


def _status(status: str) -> str:
    return "[green]match[/]" if status == "match" else f"[red]{status.upper()}[/]"
