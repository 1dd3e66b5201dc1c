import pytest

from cowahead.trace import Event, EventKind, PAGE_SIZE, Trace, VmaKind

BASE = 0x7F0000000000  # page table aligned
BASE_PAGE = BASE // PAGE_SIZE


class Stream:
    """A tiny builder for hand-written event streams, in pages relative to BASE."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.value = 0

    def _add(self, pid, kind, first=0, pages=0, arg=0):
        self.events.append(Event(len(self.events), pid, kind, BASE + first * PAGE_SIZE, pages * PAGE_SIZE, arg))
        return self

    def mmap(self, pid, first, pages, kind=VmaKind.PRIVATE_ANON):
        return self._add(pid, EventKind.MMAP, first, pages, int(kind))

    def munmap(self, pid, first, pages):
        return self._add(pid, EventKind.MUNMAP, first, pages)

    def dontneed(self, pid, first, pages):
        return self._add(pid, EventKind.DONTNEED, first, pages)

    def write(self, pid, *pages):
        for p in pages:
            self.value += 1
            self._add(pid, EventKind.WRITE, p, 1, self.value)
        return self

    def read(self, pid, *pages):
        for p in pages:
            self._add(pid, EventKind.READ, p, 1)
        return self

    def fork(self, pid, child):
        return self._add(pid, EventKind.FORK, arg=child)

    def exec(self, pid):
        return self._add(pid, EventKind.EXEC)

    def exit(self, pid):
        return self._add(pid, EventKind.EXIT)

    def trace(self) -> Trace:
        return Trace.from_events(self.events, {"source": "test"})


@pytest.fixture
def stream() -> Stream:
    return Stream()
