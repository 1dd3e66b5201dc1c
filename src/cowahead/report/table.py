"""Rich tables of result rows, with each policy compared to ``none``."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from .summary import change


def _delta(value: float, base: float | None) -> str:
    pct = change(value, base) if base is not None else None
    return "" if pct is None else f"{pct:+.1f}%"


@dataclass
class ResultsTable:
    table: Table

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        if not console.is_terminal:  # a pipe or a file: do not squeeze columns to 80
            console = Console(width=200)
        console.print(self.table)


def results_table(rows: list[dict], title: str = "") -> ResultsTable:
    base = next((r for r in rows if r["policy"] == "none"), None)
    t = Table(title=title)
    for name in ["policy", "faults", "Δ faults", "COW copies", "ahead copies", "pages copied", "ahead hits", "ahead waste",
                 "zero fills", "reuses", "extra pages peak", "predicted µs", "Δ time"]:
        t.add_column(name, justify="left" if name == "policy" else "right")
    for r in rows:
        t.add_row(r["policy"], f"{r['faults']:,}", _delta(r["faults"], base and base["faults"]),
                  f"{r['cow_copies']:,}", f"{r['ahead_copies']:,}", f"{r['pages_copied']:,}", f"{r['ahead_hits']:,}", f"{r['ahead_waste']:,}",
                  f"{r['zero_fills']:,}", f"{r['reuses']:,}", f"{r['extra_pages_peak']:,}",
                  f"{r['predicted_us']:,.1f}", _delta(r["predicted_us"], base and base["predicted_us"]))
    return ResultsTable(t)
