"""What a reader wants from many rows: per policy family, its best window against none."""

from __future__ import annotations

from .plots import family


def change(value: float, base: float) -> float | None:
    """Relative change in percent, or None where the baseline is 0."""
    return 100.0 * (value - base) / base if base else None


def best_per_family(rows: list[dict]) -> list[dict]:
    """For each policy family, the window with the lowest predicted time (ties: fewer extra pages).

    Each summary holds the numbers a kernel developer asks first: faults and
    time against ``none``, pages copied ahead, waste, extra memory.
    """
    base = next(r for r in rows if r["policy"] == "none")
    best: dict[str, dict] = {}
    for row in rows:
        name = family(row["policy"])
        if name == "none":
            continue
        key = (row["predicted_us"], row["extra_pages_peak"])
        if name not in best or key < (best[name]["predicted_us"], best[name]["extra_pages_peak"]):
            best[name] = row
    return [{
        "family": name,
        "policy": row["policy"],
        "faults_change_pct": change(row["faults"], base["faults"]),
        "ahead_copies": row["ahead_copies"],
        "ahead_waste": row["ahead_waste"],
        "extra_copies": row["pages_copied"] - base["pages_copied"],
        "extra_pages_peak": row["extra_pages_peak"],
        "predicted_change_pct": change(row["predicted_us"], base["predicted_us"]),
    } for name, row in best.items()]
