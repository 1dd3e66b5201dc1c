"""Event kinds of a trace and the columns that carry them.

One row per event: ``time_ns, pid, kind, address, length, arg``.

| kind      | address, length          | arg                                   |
| --------- | ------------------------ | ------------------------------------- |
| MMAP      | the new VMA              | VMA kind: 0 private anon, 1 shared anon, 2 private file |
| MUNMAP    | the range to unmap       | unused (0)                            |
| DONTNEED  | the range to zap         | unused (0)                            |
| READ      | bytes touched            | unused (0)                            |
| WRITE     | bytes touched            | the value written (for integrity checks) |
| FORK      | unused                   | the child's pid                       |
| EXEC      | unused                   | unused                                |
| EXIT      | unused                   | unused                                |
| MADVISE   | the range advised        | the advice: MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE (Linux's numbers) |
| THP_DISABLE | unused                 | prctl(PR_SET_THP_DISABLE): 1 sets, 0 clears |
| COLLAPSE  | the 2 MiB khugepaged collapsed | unused                          |

Version 2 added the last three and the folio settings in the metadata
(``thp``, ``kernel``); a version-1 trace reads as one without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

PAGE_SIZE = 4096
PAGE_SHIFT = 12
PTRS_PER_PTE = 512  # entries of one x86-64 page table: 2 MiB of 4 KiB pages
HPAGE_PMD_ORDER = 9  # a PMD THP: 2**9 pages
# The trace metadata key that replays a trace under a kernel whose COW-ahead copies into large destination
# folios (model/folio.py FolioSettings.large_destinations): true, or absent. Not a THP knob, so not among the
# ``thp`` words, which a guest writes into /sys/kernel/mm/transparent_hugepage.
LARGE_DESTINATIONS_KEY = "cow_ahead_large_destinations"


class EventKind(IntEnum):
    MMAP = 0
    MUNMAP = 1
    DONTNEED = 2
    READ = 3
    WRITE = 4
    FORK = 5
    EXEC = 6
    EXIT = 7
    MADVISE = 8
    THP_DISABLE = 9
    COLLAPSE = 10


class Advice(IntEnum):
    """The madvise advice a MADVISE event carries: Linux's own numbers (include/uapi/asm-generic/mman-common.h).
    MADV_DONTNEED has its own event kind, DONTNEED."""
    HUGEPAGE = 14
    NOHUGEPAGE = 15
    COLLAPSE = 25


class VmaKind(IntEnum):
    PRIVATE_ANON = 0
    SHARED_ANON = 1
    PRIVATE_FILE = 2


COLUMNS: dict[str, np.dtype] = {
    "time_ns": np.dtype(np.int64),
    "pid": np.dtype(np.int32),
    "kind": np.dtype(np.int8),
    "address": np.dtype(np.uint64),
    "length": np.dtype(np.uint64),
    "arg": np.dtype(np.int64),
}


@dataclass(frozen=True, slots=True)
class Event:
    time_ns: int
    pid: int
    kind: EventKind
    address: int = 0
    length: int = 0
    arg: int = 0

    def pages(self) -> range:
        """Page numbers the event's byte range covers (at least one page)."""
        first = self.address >> PAGE_SHIFT
        last = (self.address + max(self.length, 1) - 1) >> PAGE_SHIFT
        return range(first, last + 1)
