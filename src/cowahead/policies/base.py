"""The policy interface: which pages to break COW on after a COW copy.

A policy is asked once per COW copy on demand (``wp_page_copy``) and
answers with page numbers; the fault path then breaks COW on each of them
that is present and write-protected, with the same exclusivity check as the
faulting page. A policy may read the address space (PTEs, dirty bits) as a
kernel could at fault time; only ``oracle`` is given the future.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable

from ..model.memory import Mm, Vma
from ..trace.events import PTRS_PER_PTE

MAX_WINDOW = PTRS_PER_PTE


@dataclass(frozen=True, slots=True)
class WpFault:
    """The COW fault a policy is asked about, like ``struct vm_fault``."""
    mm: Mm
    vma: Vma
    page: int
    pid: int
    index: int  # the event's position in the trace; only the oracle may use it


class Policy(ABC):
    name: str

    def prepare(self, trace) -> None:
        """Called once with the whole trace before replay; only the oracle looks."""

    def on_fork(self, parent: Mm) -> None:
        """Called when ``parent`` forks, before its PTEs are write-protected."""

    @abstractmethod
    def window(self, fault: WpFault) -> Iterable[int]:
        """Pages other than ``fault.page`` to break COW on now."""


def page_table_span(page: int) -> tuple[int, int]:
    """The pages one 512-entry page table maps around ``page``."""
    start = page - page % PTRS_PER_PTE
    return start, start + PTRS_PER_PTE
