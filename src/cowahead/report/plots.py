"""PNG plots of results: the trade-off per workload, memory over time, and the fault heatmap."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..policies import colours, realizable  # noqa: E402
from ..results.summary import best_per_family, family  # noqa: E402


def tradeoff(rows: list[dict], title: str, path: Path) -> Path:
    """Faults saved (% of none) against extra resident pages (peak), one curve per policy family."""
    base = next(r for r in rows if r["policy"] == "none")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, colour in colours().items():
        points = sorted((r["extra_pages_peak"], _saved(r, base), r["policy"]) for r in rows if family(r["policy"]) == name)
        if not points:
            continue
        xs, ys, labels = zip(*points)
        style = dict(linestyle="--", marker="s", label=f"{name} (frontier)") if not realizable(name) else \
            dict(marker="o", label=name)
        ax.plot(xs, ys, color=colour, **style)
        for x, y, label in points[-1:]:
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_xlabel("extra resident pages, peak (pages copied ahead, not yet written)")
    ax.set_ylabel("faults saved vs none (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def memory(rows: list[dict], title: str, path: Path) -> Path | None:
    """Extra pages (solid) and pages copied (dotted) over the trace's events, for every row that carries its
    memory series (none and each family's best window); None if no row does."""
    shown = [r for r in rows if r.get("memory")]
    if not shown:
        return None
    palette = colours()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for row in shown:
        series, colour = row["memory"], palette.get(family(row["policy"]), "black")
        ax.plot(series["events"], series["extra_pages"], color=colour, label=f"{row['policy']}: extra pages")
        ax.plot(series["events"], series["pages_copied"], color=colour, linestyle=":", linewidth=1,
                label=f"{row['policy']}: pages copied")
    ax.set_xlabel("events replayed")
    ax.set_ylabel("pages")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def change_grid(workloads: list[dict], budgets, path: Path) -> Path | None:
    """Workloads × policy families: Δ predicted time of each family's best window within the budgets (blank:
    no window within them); None without workloads."""
    if not workloads:
        return None
    names = sorted({family(r["policy"]) for w in workloads for r in w["rows"]} - {"none"})
    grid = np.full((len(workloads), len(names)), np.nan)
    for i, w in enumerate(workloads):
        for s in best_per_family(w["rows"], budgets):
            if s["predicted_change_pct"] is not None:
                grid[i, names.index(s["family"])] = s["predicted_change_pct"]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 0.4 * len(workloads) + 1.8), dpi=110)
    limit = max(1.0, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdYlGn_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(workloads)), [w["name"] for w in workloads], fontsize=8)
    ax.set_title("Δ predicted time vs none (%), each family's best window within the budgets", fontsize=9)
    fig.colorbar(image, ax=ax, label="%")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _saved(row: dict, base: dict) -> float:
    return 100.0 * (base["faults"] - row["faults"]) / base["faults"] if base["faults"] else 0.0


def heatmap(data: dict, title: str, path: Path) -> Path:
    """Accesses by time (x) and address (y), on a log colour scale, VMA boundaries marked."""
    counts = np.array(data["counts"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    t0, t1 = data["time_ns"]
    image = ax.imshow(np.log1p(counts), origin="lower", aspect="auto", cmap="magma",
                      extent=[t0 / 1e6, t1 / 1e6, 0, data["pages"]])
    edge = 0
    for start, end in data["vmas"][:-1]:
        edge += end - start
        ax.axhline(edge, color="cyan", linewidth=0.6)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("page offset (VMAs end to end)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=f"log(1 + {data.get('what', 'accesses')})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
