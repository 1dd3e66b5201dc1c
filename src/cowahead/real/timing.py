"""Real time of policies side by side: user-space COW-ahead against `none` in one run.

Each policy's plan (cowahead.real.plan) runs as real processes with the
model in lockstep issuing MADV_POPULATE_WRITE on the ahead windows. A
policy's windows cut the stream into more numpy calls, each with Python
overhead a program issuing the madvise itself would not pay the same way,
so each policy is held against a `none` run cut into the very same calls:
only the madvise calls differ. Rounds run every plan once, so drift on a
shared machine hits all alike; the figure is CPU time (user + system) in
the workload's memory operations, medians over rounds, with the spread.
"""

from __future__ import annotations

import statistics
from typing import Callable

from ..errors import CowaheadError
from ..trace.trace import Trace
from .plan import Plan, build_plan
from .runner import run_plan

METHOD = ("CPU time (user+system) in the workload's memory operations, user-space COW-ahead "
          "(MADV_POPULATE_WRITE) against none cut into the same numpy calls; medians over rounds")


def plans_side_by_side(trace: Trace, policies: list[str]) -> dict[str, Plan]:
    """Each policy's plan, and for each other than none a `none` plan cut into the same calls."""
    plans = {p: build_plan(trace, p) for p in policies}
    for p in policies:
        if p != "none":
            plans[f"none|{p}"] = build_plan(trace, "none", plans[p].cuts)
    return plans


def run_rounds(plans: dict, repeats: int, advance: Callable[[int], None] = lambda n: None
               ) -> dict[object, dict[str, list[float]]]:
    """Per plan: CPU, work-wall and whole-run wall µs over ``repeats`` rounds of every plan once.

    A broken memory content stops everything.
    """
    times = {key: {"cpu_us": [], "work_us": [], "wall_us": []} for key in plans}
    for _ in range(repeats):
        for key, plan in plans.items():
            result = run_plan(plan, measure=False)
            if result.integrity:
                raise CowaheadError(f"{plan.pattern} under {plan.policy}: memory integrity broken: {result.integrity[0]}")
            times[key]["cpu_us"].append(result.work_cpu_ns / 1000)
            times[key]["work_us"].append(result.work_ns / 1000)
            times[key]["wall_us"].append(result.wall_ns / 1000)
            advance(1)
    return times


def spread(values: list[float]) -> float:
    """Interquartile range over the median: how far to trust a median of these."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(values)


def time_policies(trace: Trace, policies: list[str], repeats: int,
                  advance: Callable[[int], None] = lambda n: None) -> dict:
    """Per policy: real CPU time change against none (%), medians and spreads."""
    cpu_us = {key: t["cpu_us"] for key, t in run_rounds(plans_side_by_side(trace, policies), repeats, advance).items()}
    out = {"method": METHOD, "repeats": repeats, "change_pct": {}, "cpu_us": {}, "spread": {}}
    for p in policies:
        out["cpu_us"][p] = round(statistics.median(cpu_us[p]), 1)
        out["spread"][p] = round(spread(cpu_us[p]), 4)
        if p != "none":
            base = statistics.median(cpu_us[f"none|{p}"])
            out["change_pct"][p] = round(100.0 * (statistics.median(cpu_us[p]) / base - 1.0), 2)
            out["spread"][f"none|{p}"] = round(spread(cpu_us[f"none|{p}"]), 4)
    return out
