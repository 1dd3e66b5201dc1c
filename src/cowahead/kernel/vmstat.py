"""/proc/vmstat: parse it and take differences of the counters COW-ahead cares about."""

from __future__ import annotations

# The patch's counters, then the stock ones that frame them.
COW_COUNTERS = ("cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse", "cow_ahead_unused")
STOCK_COUNTERS = ("pgfault", "pgreuse")


def parse_vmstat(text: str) -> dict[str, int]:
    """``name value`` lines into a dict; anything else is ignored."""
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            counters[name] = int(value)
    return counters


def vmstat_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after − before for every counter both have."""
    return {k: after[k] - before[k] for k in after if k in before}
