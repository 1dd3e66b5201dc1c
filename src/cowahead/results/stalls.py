"""Stalls: what one COW fault costs the process that takes it, from the fault's batch and a cost profile.

A COW-ahead window turns many small faults into fewer long ones; Linux removed its 512-page COW of a THP
in 5.8 because one such fault, right after fork, is one long stall for a server. The replay counts each
4 KiB COW fault by its batch, the pages its window copied and reused ahead (model/counters.py's
``cow_batches``: a histogram, not a list). Under a profile each batch has its stall:

    trap and copy of the faulting page         cow_fault_us
    + each page copied ahead                   ahead_copy_us
    + each exclusive page made writable ahead  ahead_reuse_us
    + the batch itself, where it broke any     ahead_call_us

A fault that copies a whole 512-page folio at once (thp-cow, a write to the huge zero page) has no window
and is priced as ``CostModel.predict_us`` prices it: cow_fault_us + 511 × ahead_copy_us. Summed over every
COW fault, the stalls are exactly the COW part of predict_us.

The storm: the total stall in the first 100 ms after each fork, where the parent's faults crowd
(async-fork and the Redis issues measure the parent's latency there). Its windows are intervals of events
(results/intervals.py), and the stall inside follows from the counters' change across them
(``storm_stall_us``): the same sum as the histogram's, over fewer faults.
"""

from __future__ import annotations

from ..model.costs import CostModel
from ..model.counters import Counters
from ..trace.events import PTRS_PER_PTE

PERCENTILES = (50, 99)


def batch_stall_us(ahead_copies: int, ahead_reuses: int, costs: CostModel) -> float:
    """One 4 KiB COW fault's stall with its batch."""
    batch = costs.ahead_call_us if ahead_copies + ahead_reuses else 0.0
    return costs.cow_fault_us + ahead_copies * costs.ahead_copy_us + ahead_reuses * costs.ahead_reuse_us + batch


def whole_folio_copies(c: Counters) -> int:
    """The COW faults that copied 512 pages at once: each adds 511 pages to cow_copy_pages."""
    return (c.cow_copy_pages - c.cow_copy) // (PTRS_PER_PTE - 1)


def stall_distribution(batches: dict[tuple[int, int], int], c: Counters,
                       costs: CostModel) -> list[tuple[float, int]]:
    """(stall µs, COW faults) pairs, ascending by stall, same stalls merged."""
    stalls: dict[float, int] = {}
    for (copies, reuses), faults in batches.items():
        us = batch_stall_us(copies, reuses, costs)
        stalls[us] = stalls.get(us, 0) + faults
    whole = whole_folio_copies(c)
    if whole:
        us = costs.cow_fault_us + (PTRS_PER_PTE - 1) * costs.ahead_copy_us
        stalls[us] = stalls.get(us, 0) + whole
    return sorted(stalls.items())


def percentile(distribution: list[tuple[float, int]], q: float) -> float:
    """The nearest-rank q-th percentile: the least stall at or below which q % of the faults lie."""
    total = sum(n for _, n in distribution)
    rank, seen = max(1, -(-q * total // 100)), 0  # ceil(q/100 × total), at least the first fault
    for us, n in distribution:
        seen += n
        if seen >= rank:
            return us
    raise ValueError("an empty distribution has no percentile")


def stall_summary(batches: dict[tuple[int, int], int], c: Counters, costs: CostModel) -> dict:
    """COW faults, p50, p99 and max stall, and their total, in µs (None where no COW fault happened)."""
    distribution = stall_distribution(batches, c, costs)
    faults = sum(n for _, n in distribution)
    out: dict = {"cow_faults": faults, "stall_total_us": round(sum(us * n for us, n in distribution), 3)}
    for q in PERCENTILES:
        out[f"stall_p{q}_us"] = round(percentile(distribution, q), 3) if faults else None
    out["stall_max_us"] = round(distribution[-1][0], 3) if faults else None
    return out


def batches_to_json(batches: dict[tuple[int, int], int]) -> list[list[int]]:
    """The histogram as [ahead copies, ahead reuses, faults] rows, sorted: JSON has no tuple keys."""
    return [[a, r, n] for (a, r), n in sorted(batches.items())]


def batches_from_json(rows: list[list[int]]) -> dict[tuple[int, int], int]:
    return {(a, r): n for a, r, n in rows}


def storm_stall_us(delta: dict[str, int], costs: CostModel) -> float:
    """The stall of the COW faults a change of the counters counts (intervals.interval_change): each fault's
    trap and copy, its batch's pages and call, and the 511 further pages of each whole-folio copy (as
    stall_distribution prices them)."""
    return (delta["cow_copy"] * costs.cow_fault_us + delta["ahead_copies"] * costs.ahead_copy_us
            + delta["ahead_reuses"] * costs.ahead_reuse_us + delta["ahead_batches"] * costs.ahead_call_us
            + (delta["cow_copy_pages"] - delta["cow_copy"]) * costs.ahead_copy_us)
