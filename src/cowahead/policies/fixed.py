"""``fixed:N``: the 2003 patch as intended.

"cow-ahead N pages for fault clustering" (linux-kernel, April 2003) looped
``handle_pte_fault`` over the pages after the faulting one inside
``handle_mm_fault``, stopping at ``vma->vm_end``. As posted the loop never
repeated (``i >= 0`` is always true); this is what it meant: after a COW
copy at page p, also break COW on p+1 … p+N−1, clipped to the VMA end only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Policy, parse_window

if TYPE_CHECKING:
    from ..model.fault import VmFault


class FixedPolicy(Policy):
    family = "fixed"
    syntax = "fixed:N"
    summary = "after a COW copy at p, also p+1 … p+N−1, clipped to the VMA end"
    position = 10
    anchor = "the 2003 patch, as intended (as posted its loop never repeats)"
    colour = "tab:blue"
    defaults = {"example": ("fixed:16",), "sweep": ("fixed:1..512",), "evaluate": ("fixed:2..512",),
                "evaluate-quick": ("fixed:4..64",)}

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.name = f"fixed:{pages}"

    @classmethod
    def parse(cls, text: str, args: str) -> "FixedPolicy":
        return cls(parse_window(text, args))

    def engine_params(self) -> tuple[int, int]:
        return self.pages, 0

    def window(self, fault: VmFault) -> range:
        return range(fault.page + 1, min(fault.page + self.pages, fault.vma.end))


POLICY = FixedPolicy
