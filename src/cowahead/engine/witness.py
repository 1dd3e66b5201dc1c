"""Which policies replay a trace exactly as ``none`` does, told by one replay of ``none``: the witness.

A policy's replay differs from none's only from the first COW fault at which
its window breaks a page (copies or reuses it ahead); until then its memory,
counters, batches and samples are none's, and so its row. Some windows never
break a page: a window of one page is the faulting page alone, already
broken (fixed:1, fixed-behind:1, around:1, oracle:1). For adaptive and ccow
it depends on the trace, and the witness tells: it replays none (counters
equal to none's, ``tests/test_engine.py``) and at each COW fault, where a
window would be asked for, it keeps adaptive's and ccow's bookkeeping as
they would while they had broken nothing (windows.witness_window), noting
where some adaptive:MAX could ramp (a window of 0 is empty; the first
non-empty one needs a COW fault on the page after its VMA's last) and where
some ccow:REGION could copy (a forked process, a region with history). Where
it noted neither, every adaptive:MAX and every ccow of a power-of-two region
(any threshold: at least one page) replays as none.

On the random trace of the benchmark (10M events) that is 23 of the sweep's
51 policies, whose replays the sweep then leaves out (sweep.run_sweep).
The witness sees 4 KiB pages only (a space where large folios may be is
replayed as plain none, and the witness notes everything).
"""

from __future__ import annotations

from ..policies import Policy
from .layout import PP_KIND, SC_WITNESS, WITNESS_ADAPTIVE, WITNESS_CCOW
from .state import State, WITNESS_REGION_PAGES
from .windows import POL_WITNESS

# What a plain none replay, which watched nothing, says: anything may differ.
SAW_EVERYTHING = WITNESS_ADAPTIVE | WITNESS_CCOW
# The families whose one-page window is the faulting page alone.
ONE_PAGE_FAMILIES = ("fixed", "fixed-behind", "around", "oracle")


def witness_saw(st: State) -> int:
    """What the witness state ``st`` noted (WITNESS_* bits); SAW_EVERYTHING for any other state (a plain none,
    as replay_states makes where large folios may be), which watched nothing."""
    if st.policy[PP_KIND] != POL_WITNESS:
        return SAW_EVERYTHING
    return int(st.sc[SC_WITNESS])


def never_breaks_ahead(policy: Policy) -> bool:
    """Does the policy's window break nothing on any trace (a one-page window, or none itself)?"""
    return policy.family == "none" or (policy.family in ONE_PAGE_FAMILIES and policy.engine_params()[0] == 1)


def may_replay_as_none(policy: Policy) -> bool:
    """Can a witness show that this policy replays as none (never_breaks_ahead, adaptive, ccow of a
    power-of-two region)?"""
    if never_breaks_ahead(policy) or policy.family == "adaptive":
        return True
    region = policy.engine_params()[0]
    return policy.family == "ccow" and region <= WITNESS_REGION_PAGES and region & (region - 1) == 0


def replays_as_none(policy: Policy, saw: int) -> bool:
    """Does ``policy`` replay the trace exactly as none, given what its witness ``saw`` (witness_saw)? A one-page
    window is told apart on 4 KiB pages too: where large folios may be (SAW_EVERYTHING), only none is."""
    if saw == SAW_EVERYTHING:
        return policy.family == "none"
    if never_breaks_ahead(policy):
        return True
    if policy.family == "adaptive":
        return not saw & WITNESS_ADAPTIVE
    return may_replay_as_none(policy) and not saw & WITNESS_CCOW
