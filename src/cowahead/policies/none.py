"""``none``: Linux today. One 4 KiB page per COW fault (mm/memory.c, do_wp_page)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Policy, no_arguments

if TYPE_CHECKING:
    from ..model.fault import VmFault


class NonePolicy(Policy):
    family = "none"
    syntax = "none"
    summary = "Linux today"
    position = 0
    anchor = "mm/memory.c"
    defaults = {"example": ("none",), "sweep": ("none",), "evaluate": ("none",), "evaluate-quick": ("none",)}
    name = "none"

    @classmethod
    def parse(cls, text: str, args: str) -> "NonePolicy":
        no_arguments(text, args)
        return cls()

    def window(self, fault: VmFault) -> tuple[int, ...]:
        return ()


POLICY = NonePolicy
