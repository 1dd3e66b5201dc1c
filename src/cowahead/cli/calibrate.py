"""``cowahead calibrate -o FILE``: measure this machine's fault costs for the cost model.

Per page: a COW fault, a zero-fill fault, a zero-page read, a shared
anonymous first touch, a reuse fault, MADV_POPULATE_WRITE at windows of 1 …
512 pages (copy) and 512 (reuse), and memcpy; medians of --repeats rounds
run side by side after a warm-up round. The file's ``costs`` holds
CostModel's fields, so `cowahead simulate --costs FILE` predicts with them.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import CowaheadError
from ..output import output_file, write_atomically
from ..real import linux
from ..real.calibration import calibrate, document


@click.command("calibrate", help="Measure per-page fault costs on this machine; write a calibration file.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="calibration.json", show_default=True)
@click.option("--pages", "-n", type=click.IntRange(64, 1 << 20), default=4096, show_default=True,
              help="Pages each measurement touches.")
@click.option("--repeats", "-r", type=click.IntRange(5, 100), default=7, show_default=True,
              help="Rounds after the warm-up; the median is kept.")
def command(output: str, pages: int, repeats: int) -> None:
    output_file(output)
    support = linux.probe_support()
    if not support.populate_write:
        raise CowaheadError(support.problems[-1])
    err = Console(stderr=True)
    if not err.is_terminal:
        err = Console(stderr=True, width=200)  # one warning, one line
    with Progress(TextColumn("calibrate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, auto_refresh=False, transient=True) as progress:
        task = progress.add_task("rounds", total=repeats + 1)
        results = calibrate(pages, repeats, lambda _: progress.update(task, advance=1, refresh=True))
    doc = document(results, pages, repeats)
    write_atomically(output, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    out = Console() if Console().is_terminal else Console(width=120)
    table = Table(title=f"{output}: µs per page, medians of {repeats} ({pages} pages, {doc['machine']['kernel']}); "
                        "CPU time (user+system) is what the costs use")
    for name in ("measurement", "CPU µs (median)", "min", "max", "IQR/median", "wall µs (median)", "faults/page"):
        table.add_column(name, justify="left" if name == "measurement" else "right")
    for name, m in doc["measurements"].items():
        table.add_row(name, f"{m['median_us']:.3f}", f"{min(m['values_us']):.3f}", f"{max(m['values_us']):.3f}",
                      f"{m['spread']:.0%}", f"{m['wall_median_us']:.3f}", f"{m['faults_per_page']:.2f}")
    out.print(table)
    for line in doc["warnings"]:
        err.print(f"cowahead: warning: {line}", highlight=False)
