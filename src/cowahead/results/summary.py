"""What a reader wants from many rows: per policy family, its best window against none."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..policies import realizable
from ..trace.events import PAGE_SIZE

# Below this a predicted change is no result: the calibration's constants drift ~10 % with load.
NEGLIGIBLE_PCT = 2.0


def family(policy: str) -> str:
    """The policy family of a policy string: ``fixed:16`` → ``fixed``."""
    return re.split(r"[:]", policy)[0]


def change(value: float, base: float) -> float | None:
    """Relative change in percent, or None where the baseline is 0."""
    return 100.0 * (value - base) / base if base else None


@dataclass(frozen=True)
class Budgets:
    """What a best window may cost: a p99 stall per COW fault (µs) and extra memory at peak (MiB); None: no
    limit. A server that forks to snapshot cannot take any gain at any stall: Linux dropped its 512-page
    COW of a THP for that (5.8). A row without stalls (an older results file) fits any stall budget."""
    stall_p99_us: float | None = 100.0
    extra_mib: float | None = None

    def fits(self, row: dict) -> bool:
        stall = row.get("stall_p99_us")
        if self.stall_p99_us is not None and stall is not None and stall > self.stall_p99_us:
            return False
        return self.extra_mib is None or extra_mib(row) <= self.extra_mib

    def describe(self) -> str:
        parts = [f"p99 stall ≤ {self.stall_p99_us:g} µs" if self.stall_p99_us is not None else "",
                 f"extra memory ≤ {self.extra_mib:g} MiB at peak" if self.extra_mib is not None else ""]
        return " and ".join(p for p in parts if p) or "no budget"


def extra_mib(row: dict) -> float:
    return row["extra_pages_peak"] * PAGE_SIZE / (1 << 20)


def over_budget(rows: list[dict], budgets: "Budgets") -> list[str]:
    """The families that have windows, none of them within the budgets."""
    families = {family(r["policy"]) for r in rows} - {"none"}
    fitting = {family(r["policy"]) for r in rows if budgets.fits(r)}
    return sorted(families - fitting)


def best_per_family(rows: list[dict], budgets: Budgets = Budgets()) -> list[dict]:
    """For each policy family, the window with the lowest predicted time under the headline profile
    (``predicted_us``; ties: fewer extra pages) among those within ``budgets``; a family with none within
    them has no summary (``over_budget`` names it).

    Each summary holds the numbers a kernel developer asks first: faults and
    time against ``none``, pages copied ahead, waste, extra memory, stalls.
    """
    base = next(r for r in rows if r["policy"] == "none")
    best: dict[str, dict] = {}
    for row in rows:
        name = family(row["policy"])
        if name == "none" or not budgets.fits(row):
            continue
        if name not in best or _rank(row) < _rank(best[name]):
            best[name] = row
    return [{
        "family": name,
        "policy": row["policy"],
        "faults_change_pct": change(row["faults"], base["faults"]),
        "ahead_copies": row["ahead_copies"],
        "ahead_waste": row["ahead_waste"],
        "extra_copies": row["pages_copied"] - base["pages_copied"],
        "extra_pages_peak": row["extra_pages_peak"],
        "predicted_change_pct": predicted_change(row, base),
        # over repeated runs (results/repeats.py): the 95 % interval of that median change, and the runs
        "predicted_change_ci_pct": (row.get("repeat") or {}).get("ci95_pct"),
        "runs": (row.get("repeat") or {}).get("runs", 1),
        # the same window under the user-space profile: what it would do without a patched kernel
        "predicted_change_pct_userspace": change(row["predicted_us_userspace"], base["predicted_us_userspace"]),
        # one COW fault's stall, this window against none's (results/stalls.py; absent in older files)
        "stall_p99_us": row.get("stall_p99_us"), "stall_max_us": row.get("stall_max_us"),
        "none_stall_p99_us": base.get("stall_p99_us"),
        # the storm: all COW stalls in the first 100 ms after each fork, and the pages copied while a forked
        # child lived (a snapshot child's COW memory, rdb_last_cow_size's terms; results/intervals.py)
        "stall_after_fork_us": row.get("stall_after_fork_us"), "none_stall_after_fork_us": base.get("stall_after_fork_us"),
        "child_copied_pages": row.get("child_copied_pages"), "none_child_copied_pages": base.get("child_copied_pages"),
        # a Redis scenario's snapshot child, in rdb_last_cow_size's terms (scenarios/redis_bgsave.per_policy)
        "rdb_cow_mib": row.get("rdb_cow_mib"), "none_rdb_cow_mib": base.get("rdb_cow_mib"),
    } for name, row in best.items()]


def predicted_change(row: dict, base: dict) -> float | None:
    """Predicted change against none: the median over repeated runs where the row has them, else this run's."""
    repeat = row.get("repeat")
    if repeat and repeat.get("median_pct") is not None:
        return repeat["median_pct"]
    return change(row["predicted_us"], base["predicted_us"])


def _rank(row: dict) -> tuple[float, int]:
    """A window's place in its family: the median change over runs if there are runs, else the time (the same
    order for one run), then fewer extra pages."""
    repeat = row.get("repeat")
    first = repeat["median_pct"] if repeat and repeat.get("median_pct") is not None else row["predicted_us"]
    return first, row["extra_pages_peak"]


def best_acting(summaries: list[dict]) -> dict | None:
    """The realizable family whose best window copies ahead and predicts the lowest time; None if none acts."""
    acting = [s for s in summaries if realizable(s["family"]) and s["ahead_copies"] > 0
              and s["predicted_change_pct"] is not None]
    return min(acting, key=lambda s: s["predicted_change_pct"]) if acting else None


def verdict(summaries: list[dict], over: list[str] = ()) -> str:
    """One sentence: does any realizable policy beat Linux today on predicted time? ``over``: the families
    with no window within the budgets (over_budget), named at the end."""
    idle = sorted(s["family"] for s in summaries if realizable(s["family"]) and s["ahead_copies"] == 0)
    notes = [f"{', '.join(idle)} stayed off: nothing copied ahead" if idle else "",
             f"{', '.join(over)}: every window over the budgets" if over else ""]
    idle_note = "".join(f" ({n})" for n in notes if n)
    best = best_acting(summaries)
    if best is None:
        return f"COW-ahead does not act here: no realizable policy copied a page ahead{idle_note}."
    gain, interval = best["predicted_change_pct"], best.get("predicted_change_ci_pct")
    if interval is not None and interval[0] <= 0 <= interval[1]:
        return (f"COW-ahead makes no real difference here: the best policy that copies ahead, {best['policy']}, "
                f"predicts {gain:+.1f}% time against none, median of {best['runs']} runs, whose 95% interval "
                f"({interval[0]:+.1f}% … {interval[1]:+.1f}%) holds 0{idle_note}.")
    spread = f" (median of {best['runs']} runs, 95% interval {interval[0]:+.1f}% … {interval[1]:+.1f}%)" \
        if interval is not None else ""
    if gain < -NEGLIGIBLE_PCT:
        return (f"COW-ahead helps: {best['policy']} predicts {gain:+.1f}% time{spread}, "
                f"{best['faults_change_pct']:+.1f}% faults{_stall_words(best)}, "
                f"{best['extra_pages_peak']:,} extra pages ({best['extra_pages_peak'] * 4096 / (1 << 20):,.1f} MiB) "
                f"at peak{idle_note}.")
    if gain <= NEGLIGIBLE_PCT:
        return (f"COW-ahead makes no real difference here: the best policy that copies ahead, {best['policy']}, "
                f"predicts {gain:+.1f}% time against none{spread} (within ±{NEGLIGIBLE_PCT:g}%){idle_note}.")
    return (f"COW-ahead does not help here: the best policy that copies ahead, {best['policy']}, "
            f"predicts {gain:+.1f}% time against none{spread}{idle_note}.")


def _stall_words(best: dict) -> str:
    """What the window does to the stalls, none's → its own: one COW fault's p99, and all of them in the
    first 100 ms after the forks (empty where the rows have no stalls)."""
    words = ""
    if best.get("stall_p99_us") is not None and best.get("none_stall_p99_us") is not None:
        words += f", p99 stall {best['none_stall_p99_us']:,.1f} → {best['stall_p99_us']:,.1f} µs"
    if best.get("stall_after_fork_us") is not None and best.get("none_stall_after_fork_us") is not None:
        words += (f", stalls in the 100 ms after forks {best['none_stall_after_fork_us'] / 1000:,.1f} → "
                  f"{best['stall_after_fork_us'] / 1000:,.1f} ms")
    return words


def without_patched_kernel(summaries: list[dict]) -> str:
    """The verdict's policy under the user-space profile (MADV_POPULATE_WRITE, a system call per window); empty
    where no policy acts or none's user-space time is 0."""
    best = best_acting(summaries)
    if best is None or best["predicted_change_pct_userspace"] is None:
        return ""
    return (f"Without a patched kernel (user space, MADV_POPULATE_WRITE) {best['policy']} predicts "
            f"{best['predicted_change_pct_userspace']:+.1f}% time.")
