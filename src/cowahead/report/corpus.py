"""The corpus page (issue 21): one row per real program, its verdict and whether its traces agreed.

Built only from a results document, like ``index.html``, beside which it
is written as ``corpus.html``. A row: the scenario, the verdict's first
words, the best realizable window within the budgets with Δ time and its
interval over the recordings, its p99 stall against none's, its extra
memory at peak, and the agreement of every recording with the program's
own counters (the worst difference over all comparisons of all runs).
"""

from __future__ import annotations

import html
from pathlib import Path

from ..results.summary import Budgets, best_acting, best_per_family, over_budget, verdict
from ..trace.events import PAGE_SIZE

COLUMNS = ["program (scenario)", "verdict", "best policy within the budgets", "Δ time, kernel (95% interval)",
           "p99 stall µs (none)", "extra MiB at peak", "trace vs program's own counter"]


def agreement(entry: dict) -> str:
    """"3/3 recordings agree, worst +0.12%": every comparison of every recording within its tolerance."""
    runs = entry.get("scenario_runs") or ([entry["scenario"]] if entry.get("scenario") else [])
    if not runs:
        return "—"
    agreeing = sum(all(c["agrees"] for c in run["comparisons"]) and bool(run["comparisons"]) for run in runs)
    differences = [c["difference"] for run in runs for c in run["comparisons"]]
    worst = max(differences, key=abs) if differences else 0.0
    return f"{agreeing}/{len(runs)} recordings agree, worst {worst:+.2%}"


def corpus_rows(results: dict, budgets: Budgets) -> list[list[str]]:
    """The table's cells, plain text, one list per scenario workload."""
    rows = []
    for w in results["workloads"]:
        if w.get("kind") != "scenario":
            continue
        summaries = best_per_family(w["rows"], budgets)
        best = best_acting(summaries)
        said = verdict(summaries, over_budget(w["rows"], budgets)).split(":")[0]
        if best is None:
            rows.append([w["name"], said, "—", "—", "—", "—", agreement(w)])
            continue
        interval = best.get("predicted_change_ci_pct")
        change = f"{best['predicted_change_pct']:+.1f}%" + (f" ({interval[0]:+.1f}% … {interval[1]:+.1f}%)"
                                                            if interval else "")
        stall = (f"{best['stall_p99_us']:,.1f} ({best['none_stall_p99_us']:,.1f})"
                 if best.get("stall_p99_us") is not None and best.get("none_stall_p99_us") is not None else "—")
        rows.append([w["name"], said, best["policy"], change, stall,
                     f"{best['extra_pages_peak'] * PAGE_SIZE / (1 << 20):,.1f}", agreement(w)])
    return rows


def write_corpus_page(results: dict, out_dir: Path) -> Path:
    """Write ``corpus.html`` into ``out_dir``; return its path."""
    budgets = Budgets(**results.get("budgets", {}))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in corpus_rows(results, budgets))
    page = "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>cowahead corpus</title>",
        "<style>body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }"
        " table { border-collapse: collapse; font-size: 0.9em; } th, td { border: 1px solid #ccc;"
        " padding: 0.25em 0.6em; text-align: right; white-space: nowrap; } th:first-child, td:first-child,"
        " th:nth-child(2), td:nth-child(2) { text-align: left; white-space: normal; } th { background: #f2f2f2;"
        " white-space: normal; }</style></head><body>",
        "<h1>The corpus of real fork-heavy programs</h1>",
        f"<p>{html.escape(results.get('created', ''))} · <code>{html.escape(results.get('command', ''))}</code> · "
        "<a href='index.html'>the full report</a></p>",
        f"<p>Best windows chosen under the budgets: {html.escape(budgets.describe())}. Δ time is predicted against "
        "none under the kernel profile, the median over the recordings with its 95% interval. The last column "
        "holds each recording's trace against the program's own counter (each scenario's module says which): "
        "all within 5%, and the worst difference seen.</p>",
        f"<table id='corpus'><tr>{head}</tr>{body}</table>",
        "</body></html>",
    ])
    path = out_dir / "corpus.html"
    path.write_text(page)
    return path
