"""``cowahead report RESULTS -o DIR``: rebuild the HTML report from a saved results file."""

from __future__ import annotations

from pathlib import Path

import click

from ..output import output_folder
from ..results.document import load_results


@click.command("report", help="Rebuild DIR/index.html and its plots from a results.json that evaluate wrote.")
@click.argument("results_path", metavar="RESULTS", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), required=True)
def command(results_path: Path, output: Path) -> None:
    from ..report.html import write_report  # matplotlib: imported only when a report is drawn
    results = load_results(results_path)
    page = write_report(results, output_folder(output))
    click.echo(f"{page}")
