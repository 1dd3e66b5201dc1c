"""Page frames, PTEs, VMAs and address spaces: the state the fault path works on.

Names follow Linux: a *frame* is a struct page of 4 KiB, its
*mapcount* counts the PTEs that map it and its *refcount* adds the
references the page cache or a shmem object hold. A frame is *exclusive*
to one address space when both are 1 (``wp_can_reuse_anon_folio``).
A frame of a large folio (folio.py) keeps its PTE mapcount; the references
and the PMD mappings are counted on its folio.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import IntEnum

from ..trace.events import HPAGE_PMD_ORDER, VmaKind
from .folio import Folio


class FrameKind(IntEnum):
    ANON = 0
    ZERO = 1     # the shared zero page: mapped by read faults, never freed
    FILE = 2     # a page-cache page of a privately mapped file
    SHMEM = 3    # a page of a shared anonymous mapping


class Ahead(IntEnum):
    """What COW-ahead did to a PTE since the last fork: the model's waste bookkeeping. A kernel (and so a
    policy) sees only ``Pte.copied_ahead``, a page flag, and the PTE's dirty bit."""
    NONE = 0
    PENDING = 1  # copied ahead, not written yet: an extra resident page
    HIT = 2      # copied ahead, then written without a fault


@dataclass(slots=True, eq=False)
class Frame:
    pfn: int
    kind: FrameKind
    content: int
    mapcount: int = 0
    refcount: int = 0
    folio: Folio | None = None  # the large folio it belongs to; None: a folio of its own (order 0)

    def is_exclusive(self) -> bool:
        """Only an anonymous frame mapped once and referenced once may be reused."""
        return self.kind == FrameKind.ANON and self.mapcount == 1 and self.refcount == 1


@dataclass(slots=True, eq=False)
class Pte:
    frame: Frame
    writable: bool
    dirty: bool = False
    ahead: Ahead = Ahead.NONE

    @property
    def copied_ahead(self) -> bool:
        """The page flag a kernel would set on a page COW-ahead copied, until the next fork."""
        return self.ahead != Ahead.NONE


@dataclass(eq=False)
class Backing:
    """A shmem object or a file's page cache: frames by page offset.

    ``users`` counts the VMAs that map it; when it drops to 0 the object and
    its frames go away (the model keeps no page cache beyond its mappings).
    """
    ident: int
    kind: VmaKind
    pages: dict[int, Frame] = field(default_factory=dict)
    users: int = 0


@dataclass(eq=False)
class Vma:
    start: int        # first page number
    end: int          # one past the last page number
    kind: VmaKind
    pgoff: int = 0    # page offset into the backing object of ``start``
    backing: Backing | None = None
    anon_vma: bool = False   # set at the first anonymous page, as anon_vma_prepare does
    policy_state: object = None  # a COW-ahead policy's per-VMA state
    hugepage: bool = False   # VM_HUGEPAGE: MADV_HUGEPAGE asked for THP here
    nohugepage: bool = False  # VM_NOHUGEPAGE: MADV_NOHUGEPAGE forbade it

    def __contains__(self, page: int) -> bool:
        return self.start <= page < self.end

    @property
    def is_private(self) -> bool:
        return self.kind != VmaKind.SHARED_ANON

    def backing_offset(self, page: int) -> int:
        return self.pgoff + page - self.start


@dataclass(slots=True, eq=False)
class Pmd:
    """A PMD mapping a whole 2 MiB: a THP, or the huge zero page (``folio`` None)."""
    folio: Folio | None
    writable: bool
    dirty: bool = False


def pmd_index(page: int) -> int:
    """The 2 MiB (one PMD, one page table) a page lies in."""
    return page >> HPAGE_PMD_ORDER


class Mm:
    """An address space: VMAs sorted by start, a PTE per page mapped by a page table, a PMD per 2 MiB
    mapped whole, and which 2 MiB have a page table (a PMD fault needs none there: ``pmd_none``)."""

    def __init__(self) -> None:
        self.vmas: list[Vma] = []
        self.ptes: dict[int, Pte] = {}
        self.pmds: dict[int, Pmd] = {}
        self.page_tables: set[int] = set()
        self.has_forked = False  # true once this mm was the parent of a fork
        self.thp_disabled = False  # MMF_DISABLE_THP: prctl(PR_SET_THP_DISABLE), kept across fork and exec

    def find_vma(self, page: int) -> Vma | None:
        i = bisect.bisect_right([v.start for v in self.vmas], page) - 1
        if i >= 0 and page in self.vmas[i]:
            return self.vmas[i]
        return None

    def insert_vma(self, vma: Vma) -> None:
        bisect.insort(self.vmas, vma, key=lambda v: v.start)

    def vmas_overlapping(self, start: int, end: int) -> list[Vma]:
        return [v for v in self.vmas if v.start < end and start < v.end]

    def ptes_in(self, start: int, end: int) -> list[int]:
        """Mapped page numbers in [start, end), in address order."""
        if end - start <= len(self.ptes):
            return [p for p in range(start, end) if p in self.ptes]
        return sorted(p for p in self.ptes if start <= p < end)
