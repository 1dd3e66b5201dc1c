"""``adaptive[:MAX]``: a readahead ramp for COW faults, with a miss counter.

Anchors: mm/readahead.c ``get_init_ra_size``/``get_next_ra_size`` (start at
4× the request when small, then ×4 while under MAX/16, ×2 up to MAX/2, then
MAX) and mm/filemap.c's ``mmap_miss`` (more than ``MMAP_LOTSAMISS`` = 100
misses turn readahead off; hits turn it back down).

Per VMA: a COW fault at the page right after the previous window is
*sequential* and grows the window; any other fault resets it to nothing. At
each fault the policy looks at the dirty bits of the pages it copied ahead
last time — what a kernel can see — and counts the clean ones as misses and
the dirty ones as hits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import Policy, parse_window

if TYPE_CHECKING:
    from ..model.fault import VmFault


MMAP_LOTSAMISS = 100
DEFAULT_MAX = 32  # VM_READAHEAD_PAGES: 128 KiB


@dataclass
class RampState:
    next_expected: int = -1
    window: int = 0
    miss: int = 0
    last_ahead: list[int] = field(default_factory=list)


def next_window(window: int, max_pages: int) -> int:
    if window == 0:
        return min(4, max_pages)  # get_init_ra_size of a one-page request
    if window < max_pages // 16:
        return 4 * window
    if window <= max_pages // 2:
        return 2 * window
    return max_pages


class AdaptivePolicy(Policy):
    family = "adaptive"
    syntax = "adaptive[:MAX]"
    summary = ("per VMA: a COW fault right after the previous window is sequential and grows the window 4, "
               "then ×4 / ×2 up to MAX (default 32); any other fault resets it; pages it copied ahead that are "
               "clean (dirty bit) at the next fault are misses, and more than 100 misses turn it off")
    position = 30
    anchor = "`get_init_ra_size`, `get_next_ra_size`, `mmap_miss`"
    colour = "tab:green"
    defaults = {"example": ("adaptive",), "sweep": ("adaptive:1..512",), "evaluate": ("adaptive:4..512",),
                "evaluate-quick": ("adaptive",)}

    def __init__(self, max_pages: int = DEFAULT_MAX) -> None:
        self.max_pages = max_pages
        self.name = "adaptive" if max_pages == DEFAULT_MAX else f"adaptive:{max_pages}"

    @classmethod
    def parse(cls, text: str, args: str) -> "AdaptivePolicy":
        return cls(parse_window(text, args)) if args else cls()

    def engine_params(self) -> tuple[int, int]:
        return self.max_pages, 0

    def window(self, fault: VmFault) -> range:
        state = fault.vma.policy_state
        if not isinstance(state, RampState):
            state = fault.vma.policy_state = RampState()
        self._learn_from_dirty_bits(state, fault)
        p = fault.page
        if p == state.next_expected:
            state.miss = max(0, state.miss - 1)
            state.window = next_window(state.window, self.max_pages)
        else:
            state.window = 0
        if state.miss > MMAP_LOTSAMISS:
            state.window = 0
        ahead = range(p + 1, min(p + 1 + state.window, fault.vma.end))
        state.next_expected = ahead.stop
        state.last_ahead = list(ahead)
        return ahead

    @staticmethod
    def _learn_from_dirty_bits(state: RampState, fault: VmFault) -> None:
        for q in state.last_ahead:
            pte = fault.mm.ptes.get(q)
            if pte is None or not pte.copied_ahead:
                continue  # unmapped, or not copied ahead (absent, already writable, reused): nothing to learn
            if pte.dirty:
                state.miss = max(0, state.miss - 1)
            else:
                state.miss += 1


POLICY = AdaptivePolicy
