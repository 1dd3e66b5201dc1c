"""``ccow-published[:REGION_PAGES]``: CCoW as its authors' code runs, not as the paper describes it.

The published code (github minjong-ha/ccow, commit 094577f34, Linux 5.7.7,
``mm/memory.c`` ``do_wp_page``, about lines 3400–3460) computes the
region's access count from the VMA's history and then sets ``nr_access =
MAX_ENTRY`` right after. So the threshold never decides: once a VMA has
history (COW copies counted in an earlier fork interval, which first exist
from the second fork on), every COW fault in it copies its whole region.
``ccow`` stays the paper's rule; this is the code's. History is kept as
``ccow`` keeps it (written ahead copies count); only the test differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import parse_window
from .ccow import DEFAULT_REGION, CcowPolicy

if TYPE_CHECKING:
    from ..model.fault import VmFault


class CcowPublishedPolicy(CcowPolicy):
    family = "ccow-published"
    syntax = "ccow-published[:REGION_PAGES]"
    summary = ("ccow as its published code runs (nr_access = MAX_ENTRY right after it is computed): once a VMA "
               "has history, from the second fork on, every COW fault in it copies its whole region")
    position = 45
    anchor = "minjong-ha/ccow, commit 094577f34, mm/memory.c do_wp_page"
    colour = "tab:pink"
    defaults = {}

    def __init__(self, region_pages: int = DEFAULT_REGION) -> None:
        super().__init__(region_pages, 1.0)
        self.name = "ccow-published" if region_pages == DEFAULT_REGION else f"ccow-published:{region_pages}"

    @classmethod
    def parse(cls, text: str, args: str) -> "CcowPublishedPolicy":
        return cls(parse_window(text, args)) if args else cls()

    def engine_params(self) -> tuple[int, int]:
        return self.region_pages, 0

    def window(self, fault: VmFault) -> range:
        coverage = self._coverage(fault.vma)
        region = fault.page // self.region_pages
        coverage.current[region] = coverage.current.get(region, 0) + 1
        if not fault.mm.has_forked or not any(coverage.last.values()):  # no history in this VMA yet
            return range(0)
        start = region * self.region_pages
        return range(max(start, fault.vma.start), min(start + self.region_pages, fault.vma.end))


POLICY = CcowPublishedPolicy
