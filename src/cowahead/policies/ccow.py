"""``ccow[:REGION_PAGES,THRESHOLD]``: history-based coverage (CCoW).

Anchor: "CCoW: Optimizing Copy-on-Write Considering the Spatial Locality in
Workloads", Electronics 11(3):461, 2022, and its code (minjong-ha/ccow, Linux
5.7.7). Per VMA, one counter per region (512 PTEs, 2 MiB) of the COW
copies made during the previous fork interval; at a COW fault in a region
whose last count reached the threshold (70 %: 358 of 512), copy every
present shared page of the region at once. Counters roll over at each fork;
only a process that has forked (the parent) copies ahead.

Ahead copies count toward the region's history only if they were written:
at the fork that ends an interval, their dirty bits say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import CowaheadError
from .base import Policy, parse_window

if TYPE_CHECKING:
    from ..model.fault import VmFault
    from ..model.memory import Mm


DEFAULT_REGION = 512
DEFAULT_THRESHOLD = 0.7


@dataclass
class Coverage:
    current: dict[int, int] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)


class CcowPolicy(Policy):
    family = "ccow"
    syntax = "ccow[:REGION_PAGES,THRESHOLD]"
    summary = ("per VMA, per region (512 pages): COW copies during the previous fork interval (ahead copies count "
               "if written); at a COW fault in a region whose count reached THRESHOLD (0.7 → 358), copy every "
               "present shared page of the region; only a process that has forked copies ahead")
    position = 40
    anchor = "CCoW, Electronics 11(3):461, 2022"
    colour = "tab:purple"
    defaults = {"example": ("ccow",), "sweep": ("ccow:1..512",),
                "evaluate": ("ccow:512,0.5", "ccow", "ccow:512,0.9"), "evaluate-quick": ("ccow",)}

    def __init__(self, region_pages: int = DEFAULT_REGION, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.region_pages = region_pages
        self.threshold_pages = max(1, int(threshold * region_pages))
        default = region_pages == DEFAULT_REGION and threshold == DEFAULT_THRESHOLD
        self.name = "ccow" if default else f"ccow:{region_pages},{threshold:g}"

    @classmethod
    def parse(cls, text: str, args: str) -> "CcowPolicy":
        if not args:
            return cls()
        region, _, threshold = args.partition(",")
        pages = parse_window(text, region)
        if not threshold:
            return cls(pages)
        try:
            fraction = float(threshold)
        except ValueError:
            raise CowaheadError(f"policy '{text}': threshold '{threshold}' is not a number") from None
        if not 0 < fraction <= 1:
            raise CowaheadError(f"policy '{text}': threshold is a fraction of the region in (0, 1], not {threshold}")
        return cls(pages, fraction)

    def engine_params(self) -> tuple[int, int]:
        return self.region_pages, self.threshold_pages

    def on_fork(self, parent: Mm) -> None:
        # The two pieces of a VMA split by munmap share one Coverage: count every
        # piece first, then roll each Coverage over once, or one piece's counts are lost.
        coverages: dict[int, Coverage] = {}
        for vma in parent.vmas:
            coverage = coverages.setdefault(id(self._coverage(vma)), self._coverage(vma))
            for page in parent.ptes_in(vma.start, vma.end):
                pte = parent.ptes[page]
                if pte.copied_ahead and pte.dirty:  # an ahead copy written since: it counts as a COW copy
                    region = page // self.region_pages
                    coverage.current[region] = coverage.current.get(region, 0) + 1
        for coverage in coverages.values():
            coverage.last, coverage.current = coverage.current, {}

    def window(self, fault: VmFault) -> range:
        coverage = self._coverage(fault.vma)
        region = fault.page // self.region_pages
        coverage.current[region] = coverage.current.get(region, 0) + 1
        if not fault.mm.has_forked or coverage.last.get(region, 0) < self.threshold_pages:
            return range(0)
        start = region * self.region_pages
        return range(max(start, fault.vma.start), min(start + self.region_pages, fault.vma.end))

    @staticmethod
    def _coverage(vma) -> Coverage:
        if not isinstance(vma.policy_state, Coverage):
            vma.policy_state = Coverage()
        return vma.policy_state


POLICY = CcowPolicy
