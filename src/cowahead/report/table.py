"""Rich tables of result rows, with each policy compared to ``none``, that fit the terminal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.console import Console
from rich.table import Table

from ..results.summary import change

KEEP = 99  # the rank of a column never left out


@dataclass
class FittedTable:
    """Text cells under headers. In a terminal too narrow for every column, the lowest-ranked columns
    are left out, and a line says which, rather than rich clipping every number ("163,…")."""
    title: str
    headers: list[str]
    ranks: list[int]          # per column: the lowest goes first when the terminal is too narrow
    rows: list[list[str]]
    left: tuple[str, ...] = ()  # headers whose cells are left-justified (names); numbers go right
    elsewhere: str = "use --json"  # where a narrow terminal's reader finds the columns left out

    def table(self, columns: list[str] | None = None, widths: dict[str, int] | None = None) -> Table:
        """The table with ``columns`` (headers; default all), in order; ``widths`` fixes theirs."""
        chosen = [i for i, h in enumerate(self.headers) if columns is None or h in columns]
        t = Table(title=self.title)
        for i in chosen:
            h = self.headers[i]
            t.add_column(h, justify="left" if h in self.left else "right",
                         width=None if widths is None else widths[h])
        for row in self.rows:
            t.add_row(*(row[i] for i in chosen))
        return t

    def fitting(self, width: int) -> tuple[Table, list[str]]:
        """The table with the most columns whose every cell fits ``width`` unclipped, and those left out.
        Where the headers do not fit on one line, each column is as wide as its longest cell and its
        header wraps: rich would otherwise clip numbers to keep headers whole."""
        cells = {h: max([len(row[i]) for row in self.rows] + [len(w) for w in h.split()])
                 for i, h in enumerate(self.headers)}
        kept = list(self.headers)
        if 1 + sum(3 + max(cells[h], len(h)) for h in kept) <= width:  # a border and a space either side
            return self.table(kept), []
        dropped = []
        for rank, h in sorted(zip(self.ranks, self.headers)):
            if rank >= KEEP or 1 + sum(3 + cells[k] for k in kept) <= width:
                break
            kept.remove(h)
            dropped.append(h)
        return self.table(kept, cells), dropped

    def print(self, console: Console | None = None) -> None:
        console = console or Console()
        if not console.is_terminal:  # a pipe or a file: do not squeeze columns to 80
            console = Console(width=200)
        table, dropped = self.fitting(console.width)
        console.print(table)
        if dropped:
            console.print(f"(too narrow for {', '.join(dropped)}: widen the terminal, or {self.elsewhere})")


def percent(pct: float | None) -> str:
    """A change in percent as the tables print it; empty when there is none."""
    return "" if pct is None else f"{pct:+.1f}%"


def _delta(value: float, base: float | None) -> str:
    return percent(change(value, base) if base is not None else None)


def _count(key: str) -> Callable[[dict, dict | None], str]:
    return lambda r, base: f"{r[key]:,}"


def _us(key: str) -> Callable[[dict, dict | None], str]:
    """A stall in µs; empty where the row has none (no COW fault, or a results file from before stalls)."""
    return lambda r, base: "" if r.get(key) is None else f"{r[key]:,.1f}"


# simulate's columns: header, cell of a row (given the baseline row), rank. What COW-ahead saves and
# costs is kept longest.
COLUMNS: list[tuple[str, Callable[[dict, dict | None], str], int]] = [
    ("policy", lambda r, base: r["policy"], KEEP),
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
    ("p99 stall µs", _us("stall_p99_us"), 11),
    ("max stall µs", _us("stall_max_us"), 5),
    ("stalls ≤100 ms after forks µs", _us("stall_after_fork_us"), 6),
    ("Δ time", lambda r, base: _delta(r["predicted_us"], base and base["predicted_us"]), KEEP),
    # the user-space profile: what the same window does without a patched kernel
    ("Δ time user space",
     lambda r, base: _delta(r["predicted_us_userspace"], base and base["predicted_us_userspace"]), 11),
]


def results_table(rows: list[dict], title: str = "") -> FittedTable:
    base = next((r for r in rows if r["policy"] == "none"), None)
    return FittedTable(title, [h for h, _, _ in COLUMNS], [rank for _, _, rank in COLUMNS],
                       [[cell(r, base) for _, cell, _ in COLUMNS] for r in rows], left=("policy",))
