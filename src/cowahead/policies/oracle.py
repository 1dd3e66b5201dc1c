"""``oracle:N``: knows the future; the limit a realizable policy is judged by.

Within the ``fixed:N`` window it breaks COW only on pages this process will
write next, before it forks, execs, exits or drops the page: exactly the
ahead copies that will be hits, so it never wastes a page.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import TYPE_CHECKING

from ..trace.events import EventKind
from .base import Policy, parse_window

if TYPE_CHECKING:
    from ..model.fault import VmFault


class Future:
    """Per process, when each page is written next and when it stops counting."""

    def __init__(self, trace) -> None:
        self.writes: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.barriers: dict[int, list[int]] = defaultdict(list)     # fork, exec, exit
        self.drops: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # (index, first, stop)
        for index, e in enumerate(trace.events()):
            if e.kind == EventKind.WRITE:
                for page in e.pages():
                    self.writes[e.pid][page].append(index)
            elif e.kind in (EventKind.FORK, EventKind.EXEC, EventKind.EXIT):
                self.barriers[e.pid].append(index)
                if e.kind == EventKind.FORK:
                    self.barriers[e.arg].append(index)  # a reused child pid starts afresh
            elif e.kind in (EventKind.MUNMAP, EventKind.DONTNEED, EventKind.MMAP):
                pages = e.pages()
                self.drops[e.pid].append((index, pages.start, pages.stop))

    def written_next(self, pid: int, page: int, now: int) -> bool:
        """Is ``page`` written by ``pid`` at or after event ``now`` before anything drops it?"""
        writes = self.writes.get(pid, {}).get(page, [])
        i = bisect.bisect_left(writes, now)
        if i == len(writes):
            return False
        when = writes[i]
        barriers = self.barriers.get(pid, [])
        b = bisect.bisect_right(barriers, now)
        if b < len(barriers) and barriers[b] < when:
            return False
        return not any(now < index < when and first <= page < stop
                       for index, first, stop in self.drops.get(pid, []))


class OraclePolicy(Policy):
    family = "oracle"
    syntax = "oracle:N"
    summary = "`fixed:N`, but only pages the process writes next"
    position = 90
    anchor = "the limit a realizable policy is judged by"
    colour = "black"
    realizable = False
    defaults = {"example": ("oracle:16",), "sweep": ("oracle:1..512",), "evaluate": ("oracle:2..512",),
                "evaluate-quick": ("oracle:4..64",)}

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.name = f"oracle:{pages}"
        self.future: Future | None = None

    @classmethod
    def parse(cls, text: str, args: str) -> "OraclePolicy":
        return cls(parse_window(text, args))

    def engine_params(self) -> tuple[int, int]:
        return self.pages, 0

    def prepare(self, trace) -> None:
        self.future = Future(trace)

    def window(self, fault: VmFault) -> list[int]:
        pages = range(fault.page + 1, min(fault.page + self.pages, fault.vma.end))
        return [q for q in pages if self.future.written_next(fault.pid, q, fault.index)]


POLICY = OraclePolicy
