"""Rich tables of result rows, with each policy compared to ``none``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.console import Console
from rich.table import Table

from .summary import change


def _delta(value: float, base: float | None) -> str:
    pct = change(value, base) if base is not None else None
    return "" if pct is None else f"{pct:+.1f}%"


def _count(key: str) -> Callable[[dict, dict | None], str]:
    return lambda r, base: f"{r[key]:,}"


# Each column: its header, its cell for a row (given the baseline row), and its rank when the terminal is
# too narrow for all: the lowest-ranked goes first. What COW-ahead saves and costs is kept longest.
COLUMNS: list[tuple[str, Callable[[dict, dict | None], str], int]] = [
    ("policy", lambda r, base: r["policy"], 99),
    ("faults", _count("faults"), 6),
    ("Δ faults", lambda r, base: _delta(r["faults"], base and base["faults"]), 10),
    ("COW copies", _count("cow_copies"), 2),
    ("ahead copies", _count("ahead_copies"), 3),
    ("pages copied", _count("pages_copied"), 5),
    ("ahead hits", _count("ahead_hits"), 4),
    ("ahead waste", _count("ahead_waste"), 8),
    ("zero fills", _count("zero_fills"), 1),
    ("reuses", _count("reuses"), 0),
    ("extra pages peak", _count("extra_pages_peak"), 9),
    ("predicted µs", lambda r, base: f"{r['predicted_us']:,.1f}", 7),
    ("Δ time", lambda r, base: _delta(r["predicted_us"], base and base["predicted_us"]), 11),
]


@dataclass
class ResultsTable:
    rows: list[dict]
    title: str = ""

    def table(self, columns: list[str] | None = None, widths: dict[str, int] | None = None) -> Table:
        """The table with ``columns`` (headers; default all), in COLUMNS order; ``widths`` fixes theirs."""
        base = next((r for r in self.rows if r["policy"] == "none"), None)
        chosen = [c for c in COLUMNS if columns is None or c[0] in columns]
        t = Table(title=self.title)
        for name, _, _ in chosen:
            t.add_column(name, justify="left" if name == "policy" else "right",
                         width=None if widths is None else widths[name])
        for r in self.rows:
            t.add_row(*(cell(r, base) for _, cell, _ in chosen))
        return t

    def fitting(self, width: int) -> tuple[Table, list[str]]:
        """The table with the most columns whose every cell fits ``width`` unclipped, and those left out.
        Where the headers do not fit on one line, each column is as wide as its longest cell and its
        header wraps: rich would otherwise clip numbers to keep headers whole."""
        base = next((r for r in self.rows if r["policy"] == "none"), None)
        cells = {name: max([len(cell(r, base)) for r in self.rows] + [len(w) for w in name.split()])
                 for name, cell, _ in COLUMNS}
        kept = [name for name, _, _ in COLUMNS]
        if 1 + sum(3 + max(cells[k], len(k)) for k in kept) <= width:
            return self.table(kept), []
        dropped = []
        for name, _, _ in sorted(COLUMNS, key=lambda c: c[2])[:-2]:  # policy and Δ time stay
            if 1 + sum(3 + cells[k] for k in kept) <= width:  # a border and a space either side
                break
            kept.remove(name)
            dropped.append(name)
        return self.table(kept, cells), dropped

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        if not console.is_terminal:  # a pipe or a file: do not squeeze columns to 80
            console = Console(width=200)
        table, dropped = self.fitting(console.width)
        console.print(table)
        if dropped:
            console.print(f"(too narrow for {', '.join(dropped)}: widen the terminal, or use --json)")


def results_table(rows: list[dict], title: str = "") -> ResultsTable:
    return ResultsTable(rows, title)
