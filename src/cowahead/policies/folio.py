"""``folio``: after a COW copy from a large folio, the rest of that folio's pages in this VMA.

The upstream framing of COW-ahead: Ryan Roberts's RFC "mm: Copy large folios
for anonymous memory" proposed copying the whole folio at a COW fault, and
the commit that brought COW reuse to PTE-mapped large folios (1da190f4d0a6)
notes that "faulting around" the folio "might increase COW latency, so it
would need further investigation". Linux 6.x copies one 4 KiB page. This
policy, after that copy, breaks COW on every other page of the old folio
that this process maps by PTE inside the VMA, each with the faulting page's
check: an exclusive page is reused, a shared one copied into its own 4 KiB
page. (The copied-from folio was not this process's alone, or the fault
would have reused it, so in practice every page is copied.) A COW copy from
a 4 KiB page does nothing more. A PMD-mapped THP takes this path once its
PMD is split, at the first write: its other 511 pages then follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..trace.events import PTRS_PER_PTE
from .base import Policy, no_arguments

if TYPE_CHECKING:
    from ..model.fault import VmFault


class FolioPolicy(Policy):
    family = "folio"
    syntax = "folio"
    summary = ("after a COW copy from a large folio, the rest of that folio's pages mapped in the VMA: exclusive "
               "ones reused, shared ones copied")
    position = 50
    anchor = "Roberts's RFC \"mm: Copy large folios for anonymous memory\"; 1da190f4d0a6 (\"faulting around\")"
    colour = "tab:brown"
    name = "folio"

    @classmethod
    def parse(cls, text: str, args: str) -> "FolioPolicy":
        no_arguments(text, args)
        return cls()

    def engine_params(self) -> tuple[int, int]:
        return PTRS_PER_PTE, 0  # the most pages one window breaks: a PMD THP's (the engine sizes its pools by it)

    def window(self, fault: VmFault) -> list[int]:
        folio = fault.folio
        if folio is None:
            return []
        base = fault.page & ~(folio.nr_pages - 1)  # anonymous folios sit naturally aligned
        pages = range(max(base, fault.vma.start), min(base + folio.nr_pages, fault.vma.end))
        return [page for page in pages if page != fault.page and page in fault.mm.ptes
                and fault.mm.ptes[page].frame.folio is folio]


POLICY = FolioPolicy
