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
from .stalls import batches_to_json, stall_summary

Progress = Callable[[int], None]  # told how many more events were replayed

# The keys `simulate --json` promises, in table order.
KEYS = ["policy", "faults", "cow_copies", "ahead_copies", "ahead_hits", "ahead_waste", "zero_fills",
        "reuses", "extra_pages_peak", "predicted_us", "pages_copied", "predicted_us_userspace", "stall_p99_us"]


def result_row(policy: str, counters: Counters, costs: CostModel,
               batches: dict[tuple[int, int], int] | None = None, memory: dict | None = None,
               userspace: CostModel = USERSPACE) -> dict:
    """The row; with the COW batch histogram (Kernel.cow_batches, engine.cow_batches), its stalls too, and
    with a memory series (results/memory.py), that under ``memory``."""
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
    row.update({k: v for k, v in c.items() if k not in row})
    return row


def replay_reference(trace: Trace, policy: str | Policy, progress: Progress = lambda events: None) -> Counters:
    """Replay ``trace`` through the plain model under one policy string."""
    return Kernel(parse_policy(policy)).replay(trace, progress=progress)


def reference_row(trace: Trace, policy: Policy, costs: CostModel, progress: Progress = lambda events: None) -> dict:
    kernel = Kernel(policy)
    return result_row(policy.name, kernel.replay(trace, progress=progress), costs, kernel.cow_batches)


def simulate_reference(trace: Trace, policies: list[str | Policy], costs: CostModel,
                       progress: Progress = lambda events: None) -> list[dict]:
    """One row per policy; the model replays the trace once per policy (``progress`` hears every pass)."""
    return [reference_row(trace, p, costs, progress) for p in parse_policies(policies)]


def simulate_engine(source, policies: list[str | Policy], costs: CostModel,
                    progress: Progress = lambda events: None) -> list[dict]:
    """The same rows from the compiled engine; ``source`` is a Trace, a TraceFile or a path. The engine
    replays all policies in one pass (``progress`` hears it once)."""
    from ..engine import cow_batches, replay_states, to_counters  # numba loads only when the engine is used
    specs = parse_policies(policies)
    return [result_row(p.name, to_counters(st), costs, cow_batches(st))
            for p, st in zip(specs, replay_states(source, specs, progress=progress))]
