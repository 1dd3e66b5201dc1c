"""``around:N``: the naturally aligned N-page window that holds the fault.

Anchor: ``do_fault_around`` in mm/memory.c maps the page-cache pages of an
aligned ``fault_around_bytes`` window (64 KiB, 16 pages, by default),
clipped to the VMA and to the one page table (512 PTEs) that holds the
fault. N is a power of two, as ``fault_around_bytes`` is.
"""

from .base import Policy, WpFault, page_table_span


class AroundPolicy(Policy):
    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.name = f"around:{pages}"

    def window(self, fault: WpFault) -> list[int]:
        p = fault.page
        table_start, table_end = page_table_span(p)
        start = max(p - p % self.pages, fault.vma.start, table_start)
        end = min(p - p % self.pages + self.pages, fault.vma.end, table_end)
        return [q for q in range(start, end) if q != p]
