"""COW-ahead policies, one per file, and the parser for their names.

| string                            | policy                                 |
| --------------------------------- | -------------------------------------- |
| ``none``                          | Linux today                            |
| ``fixed:N``                       | the 2003 patch: p+1 … p+N−1            |
| ``around:N``                      | aligned N-page window (fault-around)   |
| ``adaptive[:MAX]``                | readahead ramp with a miss counter     |
| ``ccow[:REGION_PAGES,THRESHOLD]`` | CCoW region coverage history           |
| ``oracle:N``                      | fixed:N, only pages written next       |

N, MAX and REGION_PAGES are pages, 1 … 512 (one page table);
THRESHOLD is a fraction of the region in (0, 1].
"""

from __future__ import annotations

from ..errors import CowaheadError
from .adaptive import AdaptivePolicy
from .around import AroundPolicy
from .base import MAX_WINDOW, Policy, WpFault
from .ccow import CcowPolicy
from .fixed import FixedPolicy
from .none import NonePolicy
from .oracle import OraclePolicy

SYNTAX = "none, fixed:N, around:N, adaptive[:MAX], ccow[:REGION_PAGES,THRESHOLD], oracle:N"


def parse_policy(text: str) -> Policy:
    """Build a policy from its string; a bad string raises one clear CowaheadError."""
    name, _, args = text.strip().partition(":")
    name = name.lower()
    if name == "none" and not args:
        return NonePolicy()
    if name == "fixed":
        return FixedPolicy(_pages(text, args))
    if name == "around":
        pages = _pages(text, args)
        if pages & (pages - 1):
            raise CowaheadError(f"policy '{text}': around:N needs a power of two, as fault_around_bytes is")
        return AroundPolicy(pages)
    if name == "oracle":
        return OraclePolicy(_pages(text, args))
    if name == "adaptive":
        return AdaptivePolicy(_pages(text, args)) if args else AdaptivePolicy()
    if name == "ccow":
        return _ccow(text, args)
    raise CowaheadError(f"unknown policy '{text}'; policies are {SYNTAX}")


def _pages(text: str, arg: str) -> int:
    if not arg:
        raise CowaheadError(f"policy '{text}' needs a window in pages, e.g. {text.split(':')[0]}:16")
    try:
        pages = int(arg)
    except ValueError:
        raise CowaheadError(f"policy '{text}': window '{arg}' is not a whole number of pages") from None
    if not 1 <= pages <= MAX_WINDOW:
        raise CowaheadError(f"policy '{text}': window must be 1 … {MAX_WINDOW} pages (one page table), not {pages}")
    return pages


def _ccow(text: str, args: str) -> CcowPolicy:
    if not args:
        return CcowPolicy()
    region, _, threshold = args.partition(",")
    pages = _pages(text, region)
    if not threshold:
        return CcowPolicy(pages)
    try:
        fraction = float(threshold)
    except ValueError:
        raise CowaheadError(f"policy '{text}': threshold '{threshold}' is not a number") from None
    if not 0 < fraction <= 1:
        raise CowaheadError(f"policy '{text}': threshold is a fraction of the region in (0, 1], not {threshold}")
    return CcowPolicy(pages, fraction)


__all__ = ["Policy", "WpFault", "parse_policy", "SYNTAX", "NonePolicy", "FixedPolicy", "AroundPolicy",
           "AdaptivePolicy", "CcowPolicy", "OraclePolicy"]
