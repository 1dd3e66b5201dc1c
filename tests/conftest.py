import glob
import shutil

import pytest

from cowahead.trace import Event, EventKind, PAGE_SIZE, Trace, VmaKind
from cowahead.model.folio import LARGE_DESTINATIONS_KEY

BASE = 0x7F0000000000  # page table aligned
BASE_PAGE = BASE // PAGE_SIZE


class Stream:
    """A tiny builder for hand-written event streams, in pages relative to BASE."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.value = 0
        self.waited_ns = 0  # each event's time is its index (ns) plus every wait before it

    def _add(self, pid, kind, first=0, pages=0, arg=0):
        self.events.append(Event(len(self.events) + self.waited_ns, pid, kind, BASE + first * PAGE_SIZE,
                                 pages * PAGE_SIZE, arg))
        return self

    def wait(self, ns):
        self.waited_ns += ns
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

    def madvise(self, pid, first, pages, advice):
        return self._add(pid, EventKind.MADVISE, first, pages, int(advice))

    def thp_disable(self, pid, on=True):
        return self._add(pid, EventKind.THP_DISABLE, arg=int(on))

    def trace(self, thp: dict | None = None, kernel: str = "6.18.0", large_destinations: bool = False) -> Trace:
        """``thp``: the folio settings in machine.thp_settings()'s words (None: 4 KiB pages only);
        ``large_destinations``: replayed under a kernel whose COW-ahead copies into large folios."""
        meta = {"source": "test", "kernel": kernel}
        if thp is not None:
            meta["thp"] = thp
        if large_destinations:
            meta[LARGE_DESTINATIONS_KEY] = True
        return Trace.from_events(self.events, meta)


@pytest.fixture
def stream() -> Stream:
    return Stream()


def requires(what: str, package: str) -> pytest.MarkDecorator:
    """A test needs a program on PATH (or an absolute path, a glob) from a Debian package.

    Where it is missing the test fails, naming the package: scripts/setup installs every package the
    code needs, so a missing one is the set-up's fault and must not hide as a skip."""
    return pytest.mark.requires(what=what, package=package)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "requires(what, package): a program or path from a Debian package")
    config.addinivalue_line("markers", "kernel_ci: builds the patched kernel if needed and boots it (issue 19's "
                                       "fast guest suite, tests/test_kernel_ci.py)")


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("requires"):
        what, package = mark.kwargs["what"], mark.kwargs["package"]
        present = glob.glob(what) if what.startswith("/") else shutil.which(what)
        if not present:
            pytest.fail(f"{what} not found: install Debian package {package} (./scripts/setup does)", pytrace=False)
