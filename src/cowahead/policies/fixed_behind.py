"""``fixed-behind:N``: the window before the fault, for memory written downwards.

``fixed:N`` copies ahead in address order; a program that walks an array
backwards, or a stack that grows down, faults at p, then p−1, p−2, …, so the
pages it is about to write lie behind the fault. After a COW copy at page p
this also breaks COW on p−N+1 … p−1, clipped to the VMA start, the mirror of
``fixed:N``. (Added as the exercise of issue 17: a policy is this file, its
compiled window in engine/windows.py, and its tests.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Policy, parse_window

if TYPE_CHECKING:
    from ..model.fault import VmFault


class FixedBehindPolicy(Policy):
    family = "fixed-behind"
    syntax = "fixed-behind:N"
    summary = "after a COW copy at p, also p−N+1 … p−1, clipped to the VMA start: `fixed:N` for downward writes"
    position = 15
    anchor = "the mirror of `fixed:N`, for stacks and backward walks"
    colour = "tab:cyan"
    defaults = {"example": ("fixed-behind:16",)}  # not in the default sweep: that stays the six families

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.name = f"fixed-behind:{pages}"

    @classmethod
    def parse(cls, text: str, args: str) -> "FixedBehindPolicy":
        return cls(parse_window(text, args))

    def engine_params(self) -> tuple[int, int]:
        return self.pages, 0

    def window(self, fault: VmFault) -> range:
        return range(max(fault.page - self.pages + 1, fault.vma.start), fault.page)


POLICY = FixedBehindPolicy
