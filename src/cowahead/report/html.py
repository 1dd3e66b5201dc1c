"""The HTML report: one page that opens from disk, PNG plots beside it.

Built only from a results document (``results.json``), so ``cowahead
report`` can rebuild it later without the traces.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from ..results.summary import Budgets, best_acting, best_per_family, over_budget, verdict, without_patched_kernel
from ..trace.events import PAGE_SIZE
from . import plots
from .corpus import write_corpus_page

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots img { max-width: 35em; width: 100%; border: 1px solid #ddd; }
.worse { color: #b00; } .better { color: #070; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""

# (key, header, the key shown beside it in small type: none's value, or the interval over runs)
SUMMARY_COLUMNS = [("policy", "best window", None), ("faults_change_pct", "faults vs none", None),
                   ("ahead_copies", "pages copied ahead", None), ("ahead_waste", "waste (never written)", None),
                   ("extra_copies", "extra copies vs none", None), ("extra_pages_peak", "extra pages, peak", None),
                   ("predicted_change_pct", "Δ time, kernel (95% interval)",
                    "predicted_change_ci_pct"),
                   ("predicted_change_pct_userspace",
                    "Δ time, user space", None),
                   ("real_change_pct", "real Δ time, user space", None),
                   ("stall_p99_us", "p99 stall µs (none)", "none_stall_p99_us"),
                   ("stall_max_us", "max stall µs", None),
                   ("stall_after_fork_us", "stalls ≤100 ms after forks µs (none)",
                    "none_stall_after_fork_us"),
                   ("child_copied_pages", "child's COW pages (none)",
                    "none_child_copied_pages"),
                   ("rdb_cow_mib", "rdb_last_cow_size MiB (none)", "none_rdb_cow_mib")]

OPTIONAL_COLUMNS = {"rdb_cow_mib"}
SUMMARY_LEGEND = (
    "<p class='note'>Δ time: predicted against none under the kernel profile, the median over runs with its 95% "
    "interval; user space: the same window through MADV_POPULATE_WRITE, what can be done without a patched kernel. "
    "A stall is one COW fault's time with its window; ≤100 ms after forks sums every stall in the first 100 ms "
    "after each fork, where a server's latency suffers. Child's COW pages: pages copied, on demand or ahead, "
    "while a forked child lived, which it then owns alone; rdb_last_cow_size adds a Redis child's own new pages "
    "to them, in Redis's INFO terms. In small type: none's value.</p>")

ROW_COLUMNS = ["policy", "faults", "cow_copies", "ahead_copies", "pages_copied", "ahead_hits", "ahead_waste",
               "zero_fills", "reuses", "extra_pages_peak", "predicted_us", "predicted_us_userspace", "cow_faults",
               "stall_p50_us", "stall_p99_us", "stall_max_us", "stall_after_fork_us", "child_copied_pages",
               "rdb_cow_mib"]


def write_report(results: dict, out_dir: Path) -> Path:
    """Write ``index.html`` and its PNGs into ``out_dir``; return the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    budgets = Budgets(**results.get("budgets", {}))
    sections = [_workload_section(w, out_dir, budgets) for w in results["workloads"]]
    corpus = results.get("settings", {}).get("corpus")
    if corpus:  # evaluate --corpus: the page of one row per real program, linked from this one
        write_corpus_page(results, out_dir)
    page = "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'><title>cowahead report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>cowahead report</h1>",
        f"<p>{html.escape(results.get('created', ''))} · <code>{html.escape(results.get('command', ''))}</code></p>",
        "<p><a href='corpus.html'>The corpus of real programs: one row each</a></p>" if corpus else "",
        _overview(results, budgets, out_dir),
        *sections,
        "<h2 id='calibration'>Cost model used</h2>", _key_values(results.get("costs", {})),
        "<h3>User space (MADV_POPULATE_WRITE): what can be done without a patched kernel</h3>",
        _key_values(results.get("costs_userspace", {})),
        "<h2 id='machine'>Machine and versions</h2>", _key_values({**results.get("machine", {}),
                                                                 **results.get("versions", {})}),
        *(["<h2 id='timings'>Where the time went (seconds)</h2>", _key_values(results["timings_s"])]
          if results.get("timings_s") else []),
        # Records each image's loaded width, so a headless browser can tell a broken image.
        "<script>window.addEventListener('load', () => document.querySelectorAll('img')"
        ".forEach(i => i.dataset.width = i.naturalWidth));</script>",
        "</body></html>",
    ])
    path = out_dir / "index.html"
    path.write_text(page)
    return path


OVERVIEW_COLUMNS = ["workload", "verdict", "best policy within the budgets", "Δ time (kernel; 95% interval)",
                    "Δ time (user space)", "p99 stall µs (none)", "extra MiB at peak"]


def _overview(results: dict, budgets: Budgets, out_dir: Path) -> str:
    """First: one row per workload (its verdict's policy and what it costs), then Δ time of each family's
    best window across the workloads."""
    rows = []
    for w in results["workloads"]:
        summaries = best_per_family(w["rows"], budgets)
        best = best_acting(summaries)
        link = f"<a href='#{_slug(w['name'])}'>{html.escape(w['name'])}</a>"
        said = html.escape(verdict(summaries, over_budget(w["rows"], budgets)).split(":")[0])
        if best is None:
            rows.append(f"<tr><td>{link}</td><td>{said}</td>" + "<td>—</td>" * 5 + "</tr>")
            continue
        stall = f"{_cell('', best['stall_p99_us'])} ({_cell('', best['none_stall_p99_us'])})"
        rows.append(f"<tr><td>{link}</td><td>{said}</td><td>{html.escape(best['policy'])}</td>"
                    f"<td>{_cell('_pct', best['predicted_change_pct'])}"
                    + (f" <small>({_cell('_ci_pct', best['predicted_change_ci_pct'])})</small>"
                       if best["predicted_change_ci_pct"] else "") + "</td>"
                    f"<td>{_cell('_pct', best['predicted_change_pct_userspace'])}</td><td>{stall}</td>"
                    f"<td>{best['extra_pages_peak'] * PAGE_SIZE / (1 << 20):,.1f}</td></tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in OVERVIEW_COLUMNS)
    grid = plots.change_grid(results["workloads"], budgets, out_dir / "overview-change.png")
    return "\n".join([
        "<h2 id='overview'>Overview</h2>",
        f"<p>Best windows chosen under the budgets: {html.escape(budgets.describe())} (the lowest predicted time "
        "among the windows within them). Δ time is predicted, against none.</p>",
        f"<table class='overview'><tr>{head}</tr>{''.join(rows)}</table>",
        f"<div class='plots'><img src='{grid.name}' alt='{grid.stem}'></div>" if grid else "",
    ])


def _workload_section(workload: dict, out_dir: Path, budgets: Budgets) -> str:
    slug = _slug(workload["name"])
    images = [plots.tradeoff(workload["rows"], f"{workload['name']}: faults saved vs extra memory",
                             out_dir / f"{slug}-tradeoff.png")]
    shown = plots.memory(workload["rows"], f"{workload['name']}: memory over time (none and each best window)",
                         out_dir / f"{slug}-memory.png")
    if shown:
        images.append(shown)
    if workload.get("heatmap"):
        images.append(plots.heatmap(workload["heatmap"], f"{workload['name']}: {workload['heatmap'].get('what', '')}",
                                    out_dir / f"{slug}-heatmap.png"))
    summaries = best_per_family(workload["rows"], budgets)
    real = workload.get("real") or {}
    for s in summaries:
        s["real_change_pct"] = real.get("change_pct", {}).get(s["policy"])
        spreads = [real.get("spread", {}).get(k) for k in (s["policy"], f"none|{s['policy']}")]
        s["real_spread_pct"] = 100.0 * max(v for v in spreads if v is not None) if any(spreads) else None
    return "\n".join([
        f"<h2 id='{slug}'>{html.escape(workload['name'])}</h2>",
        f"<p>{html.escape(workload.get('description', ''))} Source <code>{html.escape(workload.get('source', ''))}</code>, "
        f"{workload.get('events', 0):,} events.</p>",
        _notes(workload),
        f"<p class='verdict'><b>{html.escape(verdict(summaries, over_budget(workload['rows'], budgets)))}</b> "
        f"{html.escape(without_patched_kernel(summaries))}</p>",
        "<h3>Best window per policy</h3>", _summary_table(summaries), _real_note(real),
        "<div class='plots'>" + "".join(f"<img src='{p.name}' alt='{p.stem}'>" for p in images) + "</div>",
        "<details><summary>Every policy and window</summary>", _rows_table(workload["rows"]), "</details>",
    ])


def _notes(workload: dict) -> str:
    notes = list(workload.get("notes") or [])
    if workload.get("missing"):  # an interrupted sweep
        notes.append(f"interrupted: {len(workload['missing'])} of {len(workload['missing']) + len(workload['rows'])} "
                     f"policies were not replayed ({', '.join(workload['missing'])})")
    return "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>" if notes else ""


def _real_note(real: dict) -> str:
    if not real:
        return ""
    return (f"<p class='note'>Real time: {html.escape(real.get('method', ''))}; {real.get('repeats')} rounds; "
            "± is the larger interquartile range over the median of the two sides. User-space COW-ahead pays a "
            "system call per window, which an in-kernel batch (the prediction) does not.</p>")


def _summary_table(summaries: list[dict]) -> str:
    # a column only some workloads have (a Redis scenario's rdb_last_cow_size terms) is left out where empty
    columns = [(key, label, beside) for key, label, beside in SUMMARY_COLUMNS
               if key not in OPTIONAL_COLUMNS or any(s.get(key) is not None for s in summaries)]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in columns)
    body = "".join("<tr><td>" + html.escape(s["family"]) + "</td>" +
                   "".join(f"<td>{_cell(key, s.get(key))}{_beside(beside, s)}{_spread(key, s)}</td>"
                           for key, _, beside in columns)
                   + "</tr>"
                   for s in summaries)
    return f"<table class='summary'><tr><th>policy</th>{head}</tr>{body}</table>" + SUMMARY_LEGEND


def _beside(key: str | None, summary: dict) -> str:
    if key is None or summary.get(key) is None:
        return ""
    return f" <small>({_cell(key, summary[key])})</small>"


def _spread(key: str, summary: dict) -> str:
    if key != "real_change_pct" or summary.get("real_spread_pct") is None or summary.get(key) is None:
        return ""
    spread = summary["real_spread_pct"]
    # as pyperf warns: a spread wider than the change it would show says nothing about the change
    warn = " <span class='worse' title='the spread is wider than the change'>⚠ noise</span>" \
        if spread > abs(summary[key]) else ""
    return f" <small>±{spread:.1f}%</small>{warn}"


def _rows_table(rows: list[dict]) -> str:
    columns = [c for c in ROW_COLUMNS if c not in OPTIONAL_COLUMNS or any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c, r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table class='rows'><tr>{head}</tr>{body}</table>"


def _cell(key: str, value) -> str:
    if value is None:
        return "—"
    if key.endswith("_ci_pct"):  # [low, high]
        return f"{value[0]:+.1f}% … {value[1]:+.1f}%"
    if key.endswith("_pct") or "_pct_" in key:  # predicted_change_pct_userspace too
        css = "better" if value < 0 else "worse" if value > 0 else ""
        return f"<span class='{css}'>{value:+.1f}%</span>"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _key_values(data: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                   for k, v in data.items())
    return f"<table>{rows}</table>"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
