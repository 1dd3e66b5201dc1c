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
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

PAGE_SIZE = 4096
PAGE_SHIFT = 12
PTRS_PER_PTE = 512  # entries of one x86-64 page table: 2 MiB of 4 KiB pages


class EventKind(IntEnum):
    MMAP = 0
    MUNMAP = 1
    DONTNEED = 2
    READ = 3
    WRITE = 4
    FORK = 5
    EXEC = 6
    EXIT = 7


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
