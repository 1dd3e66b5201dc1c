"""``thp-cow``: Linux ≤ 5.7, where a COW fault on a PMD-mapped THP copied all 512 pages into a new THP.

Modelled from the kernel source of that time (``do_huge_pmd_wp_page`` of
5.7: a THP that cannot be reused is copied whole into a newly allocated
THP and mapped by the faulting process's PMD). Commit 3917c80280c9 (5.8)
replaced this with a PMD split and a 4 KiB copy: "we don't necessarily want
to unshare full PMD range from the parent on the first access. This is the
primary reason THP is unusable for some workloads, like Redis". A 512-page
COW-ahead, then, but counted as one COW fault that copied 512 pages
(``cow_copy_pages``), not as ahead copies: a PMD has one dirty bit, so which
of the 511 extra pages were written is not known (no hits or waste).
Unvalidated: no such kernel runs here. Everything else is this host's
kernel: PTE-mapped folios and 4 KiB pages as today.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Policy, no_arguments

if TYPE_CHECKING:
    from ..model.fault import VmFault


class ThpCowPolicy(Policy):
    family = "thp-cow"
    syntax = "thp-cow"
    summary = "Linux <= 5.7: a COW fault on a PMD-mapped THP copies all 512 pages into a new THP (unvalidated)"
    position = 55
    anchor = "commit 3917c80280c9, which removed it in 5.8"
    colour = "tab:olive"
    name = "thp-cow"
    copies_whole_thp = True

    @classmethod
    def parse(cls, text: str, args: str) -> "ThpCowPolicy":
        no_arguments(text, args)
        return cls()

    def window(self, fault: VmFault) -> tuple[int, ...]:
        return ()  # the whole THP is copied in do_huge_pmd_wp_page; a 4 KiB COW copy is Linux's own


POLICY = ThpCowPolicy
