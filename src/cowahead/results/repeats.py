"""Repeats: a workload recorded (or generated with another seed) R times, and what its rows say across runs.

One recording per scenario made verdicts flip: around:64 on redis-bgsave predicted −8.8 %, +1.6 % and
−8.2 % in three runs. So ``evaluate`` makes each workload R times, replays every run, and each row of the
workload (run 0's, whose counters it shows) carries ``repeat``: the predicted change against that run's own
none in every run, their median and a 95 % interval (a percentile bootstrap of the median over runs). A
family's best window is then chosen on the median, and a change whose interval holds 0 is no difference.
"""

from __future__ import annotations

import numpy as np

from .summary import change

LEVEL = 0.95
DRAWS = 2000


def bootstrap_interval(values: list[float], level: float = LEVEL, draws: int = DRAWS,
                       seed: int = 0) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the median of ``values``; None for fewer than two."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    samples = rng.choice(np.asarray(values, float), size=(draws, len(values)), replace=True)
    medians = np.median(samples, axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)


def _changes(runs: list[list[dict]], policy: str, key: str) -> list[float]:
    out = []
    for rows in runs:
        by_policy = {r["policy"]: r for r in rows}
        value = change(by_policy[policy][key], by_policy["none"][key]) if policy in by_policy else None
        if value is not None:
            out.append(value)
    return out


def combine_runs(runs: list[dict]) -> dict:
    """One workload entry from the entries of its runs (run 0 first): run 0's, each row with its ``repeat``."""
    entry = dict(runs[0])
    rows_of_runs = [run["rows"] for run in runs]
    for row in entry["rows"]:
        changes = _changes(rows_of_runs, row["policy"], "predicted_us")
        interval = bootstrap_interval(changes)
        row["repeat"] = {"runs": len(changes), "predicted_change_pct": [round(c, 3) for c in changes],
                         "median_pct": round(float(np.median(changes)), 3) if changes else None,
                         "ci95_pct": None if interval is None else [round(v, 3) for v in interval]}
    entry["runs"] = len(runs)
    entry["run_traces"] = [run.get("trace") for run in runs]
    return entry
