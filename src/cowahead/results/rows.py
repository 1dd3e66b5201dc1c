"""One result row per trace × policy: the counters, the cost model's time under two profiles, the stalls, and the
policy name.

``predicted_us`` and the stalls are under the profile asked for (``--costs``: the kernel profile unless told
otherwise); ``predicted_us_userspace`` always under the user-space one: what can be done without a patched
kernel.
"""

from __future__ import annotations

from typing import Callable

from ..model.costs import USERSPACE, CostModel
from ..model.counters import Counters
from ..model.kernel import Kernel
from ..policies import Policy, parse_policies, parse_policy
from ..trace.trace import Trace
from .intervals import Sampling, sampling
from .stalls import batches_to_json, stall_summary, storm_stall_us

Progress = Callable[[int], None]  # told how many more events were replayed

# The keys `simulate --json` promises, in table order.
KEYS = ["policy", "faults", "cow_copies", "ahead_copies", "ahead_hits", "ahead_waste", "zero_fills",
        "reuses", "extra_pages_peak", "predicted_us", "pages_copied", "predicted_us_userspace", "stall_p99_us",
        "stall_after_fork_us", "child_copied_pages"]


def result_row(policy: str, counters: Counters, costs: CostModel,
               batches: dict[tuple[int, int], int] | None = None, memory: dict | None = None,
               userspace: CostModel = USERSPACE, intervals: dict | None = None) -> dict:
    """The row; with the COW batch histogram (Kernel.cow_batches, engine.cow_batches), its stalls too; with
    a memory series (results/memory.py), that under ``memory``; with the counters' change across the storm
    windows and the child lives (results/intervals.py, Sampling.measure), the stall after forks
    (``stall_after_fork_us``) and the pages copied while a child lived (``child_copied_pages``)."""
    c = counters.as_dict()
    row = {"policy": policy, "faults": c["faults"], "cow_copies": c["cow_copy"],
           "ahead_copies": c["ahead_copies"], "ahead_hits": c["ahead_hits"], "ahead_waste": c["ahead_waste"],
           "zero_fills": c["zero_fill"], "reuses": c["reuse"], "extra_pages_peak": c["extra_pages_peak"],
           "predicted_us": round(costs.predict_us(counters), 3),
           "pages_copied": c["cow_copy_pages"] + c["ahead_copies"],  # pages, not faults: a fault may copy many
           "predicted_us_userspace": round(userspace.predict_us(counters), 3)}
    if batches is not None:
        row.update(stall_summary(batches, counters, costs))
        row["cow_batches"] = batches_to_json(batches)
    if memory is not None:
        row["memory"] = memory
    if intervals is not None:
        row["stall_after_fork_us"] = round(storm_stall_us(intervals["storm"], costs), 3)
        row["child_copied_pages"] = sum(intervals["child_copies"].values())
        row["intervals"] = intervals
    row.update({k: v for k, v in c.items() if k not in row})
    return row


def replay_reference(trace: Trace, policy: str | Policy, progress: Progress = lambda events: None) -> Counters:
    """Replay ``trace`` through the plain model under one policy string."""
    return Kernel(parse_policy(policy)).replay(trace, progress=progress)


def reference_row(trace: Trace, policy: Policy, costs: CostModel, progress: Progress = lambda events: None,
                  plan: Sampling | None = None) -> dict:
    plan = plan or sampling(trace)
    kernel = Kernel(policy)
    counters = kernel.replay(trace, progress=progress, sample_points=plan.points)
    return result_row(policy.name, counters, costs, kernel.cow_batches,
                      intervals=plan.measure(kernel.samples)["intervals"])


def simulate_reference(trace: Trace, policies: list[str | Policy], costs: CostModel,
                       progress: Progress = lambda events: None) -> list[dict]:
    """One row per policy; the model replays the trace once per policy (``progress`` hears every pass)."""
    plan = sampling(trace)
    return [reference_row(trace, p, costs, progress, plan) for p in parse_policies(policies)]


def simulate_engine(source, policies: list[str | Policy], costs: CostModel,
                    progress: Progress = lambda events: None) -> list[dict]:
    """The same rows from the compiled engine; ``source`` is a Trace, a TraceFile or a path. The engine
    replays all policies in one pass (``progress`` hears it once)."""
    from ..engine import cow_batches, replay_states, samples, to_counters  # numba loads only when the engine is used
    specs, plan = parse_policies(policies), sampling(source)
    return [result_row(p.name, to_counters(st), costs, cow_batches(st),
                       intervals=plan.measure(samples(st))["intervals"])
            for p, st in zip(specs, replay_states(source, specs, progress=progress, sample_points=plan.points))]
