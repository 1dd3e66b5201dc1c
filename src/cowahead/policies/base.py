"""The policy interface: which pages to break COW on after a COW copy.

A policy is asked once per COW copy on demand (``wp_page_copy``) and
answers with page numbers; the fault path then breaks COW on each of them
that is present, write-protected and not the zero page, with the same
exclusivity check as the faulting page. A copy from the zero page (a first
write to a page only read) asks no policy. A policy may read the address space (PTEs, their dirty bit
and copied-ahead flag) as a kernel could at fault time; only ``oracle`` is
given the future.

Each policy file owns everything about its policy: its syntax and parser,
its canonical name, the parameters the compiled engine takes, the windows it
contributes to each default list, and its line in the README's table. The
registry (``policies/__init__.py``) collects the files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Iterable

from ..errors import CowaheadError
from ..trace.events import PTRS_PER_PTE

if TYPE_CHECKING:  # what the model hands a policy; the registry itself needs no model
    from ..model.fault import VmFault
    from ..model.memory import Mm

MAX_WINDOW = PTRS_PER_PTE

# The default lists a policy may join (``Policy.defaults``): what `simulate` and `validate` replay
# without --policy, the grid a `sweep` expands without --policy, and `evaluate`'s grids.
DEFAULT_LISTS = ("example", "sweep", "evaluate", "evaluate-quick")


class Policy(ABC):
    family: ClassVar[str]              # the word before the colon: "fixed"
    syntax: ClassVar[str]              # "fixed:N"
    summary: ClassVar[str]             # what it does, one line (the README's table)
    anchor: ClassVar[str]              # where the idea comes from
    colour: ClassVar[str | None] = None  # its curve in the plots; None: not drawn (the baseline)
    realizable: ClassVar[bool] = True  # False: it sees the future (judged against, never recommended)
    defaults: ClassVar[dict[str, tuple[str, ...]]] = {}  # DEFAULT_LISTS -> its entries there
    copies_whole_thp: ClassVar[bool] = False  # True: a COW fault on a PMD-mapped THP copies it whole (≤ 5.7)
    name: str                          # the canonical string, e.g. "fixed:16"

    @classmethod
    @abstractmethod
    def parse(cls, text: str, args: str) -> "Policy":
        """Build the policy from ``args`` (what follows the colon in ``text``); CowaheadError if bad."""

    def engine_params(self) -> tuple[int, int]:
        """(window pages, threshold pages) for the compiled engine (engine/windows.py)."""
        return 0, 0

    def prepare(self, trace) -> None:
        """Called once with the whole trace before replay; only the oracle looks."""

    def on_fork(self, parent: Mm) -> None:
        """Called when ``parent`` forks, before its PTEs are write-protected."""

    @abstractmethod
    def window(self, fault: VmFault) -> Iterable[int]:
        """Pages other than ``fault.page`` to break COW on now."""

    def __repr__(self) -> str:
        return f"<policy {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def parse_window(text: str, arg: str) -> int:
    """A window of 1 … MAX_WINDOW pages, from the ``N`` of ``text``."""
    if not arg:
        raise CowaheadError(f"policy '{text}' needs a window in pages, e.g. {text.split(':')[0]}:16")
    try:
        pages = int(arg)
    except ValueError:
        raise CowaheadError(f"policy '{text}': window '{arg}' is not a whole number of pages") from None
    if not 1 <= pages <= MAX_WINDOW:
        raise CowaheadError(f"policy '{text}': window must be 1 … {MAX_WINDOW} pages (one page table), not {pages}")
    return pages


def no_arguments(text: str, args: str) -> None:
    if args:
        raise CowaheadError(f"policy '{text}' takes no arguments")


def page_table_span(page: int) -> tuple[int, int]:
    """The pages one 512-entry page table maps around ``page``."""
    start = page - page % PTRS_PER_PTE
    return start, start + PTRS_PER_PTE
