"""``around:N``: the naturally aligned N-page window that holds the fault.

Anchor: ``do_fault_around`` in mm/memory.c maps the page-cache pages of an
aligned ``fault_around_bytes`` window (64 KiB, 16 pages, by default),
clipped to the VMA and to the one page table (512 PTEs) that holds the
fault. N is a power of two, as ``fault_around_bytes`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CowaheadError
from .base import Policy, page_table_span, parse_window

if TYPE_CHECKING:
    from ..model.fault import VmFault


class AroundPolicy(Policy):
    family = "around"
    syntax = "around:N"
    summary = ("the naturally aligned N-page window holding p (N a power of two), clipped to the VMA and the "
               "512-entry page table")
    position = 20
    anchor = "`do_fault_around`, `fault_around_bytes`"
    colour = "tab:orange"
    defaults = {"example": ("around:16",), "sweep": ("around:1..512",), "evaluate": ("around:2..512",),
                "evaluate-quick": ("around:4..64",)}

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.name = f"around:{pages}"

    @classmethod
    def parse(cls, text: str, args: str) -> "AroundPolicy":
        pages = parse_window(text, args)
        if pages & (pages - 1):
            raise CowaheadError(f"policy '{text}': around:N needs a power of two, as fault_around_bytes is")
        return cls(pages)

    def engine_params(self) -> tuple[int, int]:
        return self.pages, 0

    def window(self, fault: VmFault) -> list[int]:
        p = fault.page
        table_start, table_end = page_table_span(p)
        start = max(p - p % self.pages, fault.vma.start, table_start)
        end = min(p - p % self.pages + self.pages, fault.vma.end, table_end)
        return [q for q in range(start, end) if q != p]


POLICY = AroundPolicy
