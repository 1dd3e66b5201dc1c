"""Folio membership of a process's virtual memory: which pages share one large folio, of what size.

Three sources, all readable by root for any process:

- ``/proc/PID/pagemap`` (Documentation/admin-guide/mm/pagemap.rst): one
  64-bit entry per virtual page; bits 0-54 the PFN, 56 exclusively mapped,
  61 file or shared-anon, 62 swapped, 63 present. Bit 56 is
  ``__folio_page_mapped_exclusively`` (fs/proc/task_mmu.c, 6.15+): with
  CONFIG_PAGE_MAPCOUNT (this host) the *page's* own map count is 1, so a
  page the child has copied reads exclusive in the parent even while the
  child still maps other pages of the same folio; with CONFIG_NO_PAGE_MAPCOUNT
  it is ``!folio_maybe_mapped_shared``, per folio.
- ``/proc/kpageflags``: one 64-bit word of KPF_* bits per PFN
  (include/uapi/linux/kernel-page-flags.h). A large folio's first page has
  KPF_COMPOUND_HEAD, every other page KPF_COMPOUND_TAIL; an anonymous or
  LRU large folio also KPF_THP (on every page, fs/proc/page.c
  ``stable_page_flags``); the huge zero page has KPF_THP and KPF_ZERO_PAGE,
  the 4 KiB zero page KPF_ZERO_PAGE only. A folio's size is found by
  walking from a page back to its head and forward to the first page that
  is not a tail.
- the ``PAGEMAP_SCAN`` ioctl on the pagemap file (Linux 6.7+): per page
  ``PAGE_IS_HUGE``, set only where a *PMD* maps the page. So it tells a
  PMD-mapped THP from the same folio mapped by 512 PTEs (after a PMD split),
  which pagemap and kpageflags cannot.

``/proc/PID/smaps`` gives, per VMA, ``AnonHugePages`` (PMD-mapped THP
only), ``Rss`` and ``THPeligible``; ``smaps_range`` sums the VMAs a range
overlaps.

Everything is read with a few large ``pread`` calls into numpy arrays: 65,536
pages (256 MiB) read in well under a second.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from dataclasses import dataclass

import numpy as np

from ..trace.events import PAGE_SIZE

KPAGEFLAGS = "/proc/kpageflags"

# pagemap entry bits
PM_PFN_MASK = np.uint64((1 << 55) - 1)
PM_EXCLUSIVE = np.uint64(1 << 56)
PM_FILE_OR_SHARED = np.uint64(1 << 61)
PM_SWAPPED = np.uint64(1 << 62)
PM_PRESENT = np.uint64(1 << 63)

# /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h, as in Linux 6.x)
KPF_LRU = 5
KPF_ANON = 12
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17  # hugetlbfs
KPF_KSM = 21
KPF_THP = 22
KPF_ZERO_PAGE = 24

# PAGEMAP_SCAN (include/uapi/linux/fs.h, Linux 6.7+)
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5
PAGE_IS_HUGE = 1 << 6


class _PmScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(_PmScanArg) << 16) | (ord("f") << 8) | 16  # _IOWR('f', 16, ...)

# The largest anonymous folio is PMD order (512 pages); bigger compound pages (hugetlb's 1 GiB) are
# resolved by widening the window until their head and end are in it.
_FIRST_RADIUS = 512
_MAX_RADIUS = 1 << 18


def _bit(flags: np.ndarray, bit: int) -> np.ndarray:
    return (flags & np.uint64(1 << bit)) != 0


@dataclass
class Folios:
    """Per page of ``[address, address + pages * 4 KiB)`` of one process, in page order.

    Pages not present read False/0 everywhere; ``folio_pages`` is 1 for a
    small (order-0) page, 512 for a page of a PMD-size folio, 0 if not present.
    """
    pid: int | str
    address: int
    entries: np.ndarray       # raw pagemap entries, uint64
    present: np.ndarray       # bool
    pfn: np.ndarray           # uint64, 0 where not present
    exclusive: np.ndarray     # bool: pagemap bit 56
    flags: np.ndarray         # raw kpageflags, uint64, 0 where not present
    is_anon: np.ndarray
    is_thp: np.ndarray        # KPF_THP: the page belongs to a large folio (PMD- or PTE-mapped), or the huge zero page
    is_zero_page: np.ndarray  # the 4 KiB zero page or the huge zero page
    head_pfn: np.ndarray      # uint64: the PFN of the folio's first page (= pfn for a small page)
    folio_pages: np.ndarray   # int64: pages in the page's folio
    pmd_mapped: np.ndarray | None  # bool: a PMD maps the page (PAGEMAP_SCAN PAGE_IS_HUGE); None if unavailable

    @property
    def pages(self) -> int:
        return len(self.entries)

    @property
    def is_huge_zero_page(self) -> np.ndarray:
        return self.is_zero_page & self.is_thp

    def folio_sizes(self) -> dict[int, int]:
        """How many distinct folios of each size (in pages) the range maps, zero pages left out."""
        real = self.present & ~self.is_zero_page
        _, first = np.unique(self.head_pfn[real], return_index=True)
        sizes = self.folio_pages[real][first]
        values, counts = np.unique(sizes, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def summary(self) -> dict:
        """The range in numbers, for reports: present, exclusive, THP, zero, PMD-mapped pages and folio sizes."""
        return {
            "pages": self.pages,
            "present": int(self.present.sum()),
            "exclusive": int(self.exclusive.sum()),
            "thp_pages": int((self.is_thp & ~self.is_zero_page).sum()),
            "zero_pages": int((self.is_zero_page & ~self.is_thp).sum()),
            "huge_zero_pages": int(self.is_huge_zero_page.sum()),
            "pmd_mapped": None if self.pmd_mapped is None else int(self.pmd_mapped.sum()),
            "folios_by_size": self.folio_sizes(),
        }


def read_pagemap(pid: int | str, address: int, pages: int) -> np.ndarray:
    """The raw pagemap entries of ``pages`` pages from ``address`` (page aligned) of process ``pid``."""
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
        data = os.pread(f.fileno(), pages * 8, (address // PAGE_SIZE) * 8)
    if len(data) != pages * 8:
        raise OSError(f"/proc/{pid}/pagemap: short read at {address:#x}")
    return np.frombuffer(data, dtype=np.uint64).copy()


def _runs(sorted_unique: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[first, stop) runs covering sorted numbers, joining neighbours at most ``gap`` apart."""
    if len(sorted_unique) == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_unique) > gap)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(sorted_unique) - 1]))
    return [(int(sorted_unique[s]), int(sorted_unique[e]) + 1) for s, e in zip(starts, ends)]


def _read_flag_runs(fd: int, runs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """kpageflags over each [first, stop) run: (pfns, flags), concatenated in run order."""
    pfns, flags = [], []
    for first, stop in runs:
        data = os.pread(fd, (stop - first) * 8, first * 8)
        words = np.frombuffer(data, dtype=np.uint64)
        pfns.append(np.arange(first, first + len(words), dtype=np.uint64))
        flags.append(words)
    if not pfns:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(pfns), np.concatenate(flags)


def read_kpageflags(pfns: np.ndarray) -> np.ndarray:
    """The kpageflags word of every PFN in ``pfns`` (any order, repeats allowed)."""
    pfns = np.asarray(pfns, dtype=np.uint64)
    unique = np.unique(pfns)
    fd = os.open(KPAGEFLAGS, os.O_RDONLY)
    try:
        # Neighbouring PFNs are read in one call: reading a few words too many is cheaper than a syscall.
        got_pfns, got_flags = _read_flag_runs(fd, _runs(unique, gap=64))
    finally:
        os.close(fd)
    return got_flags[np.searchsorted(got_pfns, pfns)]


def _folio_extent(fd: int, pfns: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For compound PFNs (unique, sorted): head PFN, folio pages, and whether the window resolved them.

    Reads kpageflags over [p - radius, p + radius] for every p (merged), then
    per PFN: its head is the last page at or before it that is not a tail,
    which must be a head; its folio ends at the first page after the head
    that is not a tail. Either beyond the window: unresolved.
    """
    windows = [(max(first - radius, 0), stop + radius + 1) for first, stop in _runs(pfns, gap=2 * radius + 1)]
    got_pfns, got_flags = _read_flag_runs(fd, windows)
    n = len(got_pfns)
    index = np.arange(n)
    is_tail = _bit(got_flags, KPF_COMPOUND_TAIL)
    is_head = _bit(got_flags, KPF_COMPOUND_HEAD)
    # A window boundary acts as a break too: a walk must not run from one window into the next.
    window_start = np.zeros(n, dtype=bool)
    window_end = np.zeros(n, dtype=bool)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(got_pfns.astype(np.int64)) != 1) + 1))
    window_start[starts] = True
    window_end[np.concatenate((starts[1:] - 1, [n - 1]))] = True

    last_non_tail = np.maximum.accumulate(np.where(~is_tail | window_start, index, -1))
    next_non_tail = np.minimum.accumulate(np.where(~is_tail, index, n)[::-1])[::-1]
    # the first non-tail strictly after each position, or n
    after = np.append(next_non_tail[1:], n)
    window_last = np.minimum.accumulate(np.where(window_end, index, n)[::-1])[::-1]

    at = np.searchsorted(got_pfns, pfns)
    head_at = last_non_tail[at]
    end_at = after[head_at]
    resolved = is_head[head_at] & (end_at <= window_last[at])
    head = got_pfns[head_at]
    size = (end_at - head_at).astype(np.int64)
    return head, size, resolved


def folio_heads(pfns: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head PFN and folio size in pages for each page (``pfns`` with their ``flags``); 0, 0 where pfn is 0."""
    head = pfns.copy()
    size = np.where(pfns != 0, 1, 0).astype(np.int64)
    compound = (pfns != 0) & (_bit(flags, KPF_COMPOUND_HEAD) | _bit(flags, KPF_COMPOUND_TAIL))
    todo = np.unique(pfns[compound])
    if len(todo) == 0:
        return head, size
    found_head = np.zeros(len(todo), np.uint64)
    found_size = np.zeros(len(todo), np.int64)
    left = np.arange(len(todo))
    fd = os.open(KPAGEFLAGS, os.O_RDONLY)
    try:
        radius = _FIRST_RADIUS
        while len(left) and radius <= _MAX_RADIUS:
            h, s, ok = _folio_extent(fd, todo[left], radius)
            found_head[left[ok]] = h[ok]
            found_size[left[ok]] = s[ok]
            left = left[~ok]
            radius *= 8
    finally:
        os.close(fd)
    if len(left):
        raise OSError(f"kpageflags: no compound head within {_MAX_RADIUS} pages of PFN {int(todo[left[0]]):#x}")
    at = np.searchsorted(todo, pfns[compound])
    head[compound] = found_head[at]
    size[compound] = found_size[at]
    return head, size


def pmd_mapped(pid: int | str, address: int, pages: int) -> np.ndarray | None:
    """Per page: a PMD maps it (PAGEMAP_SCAN's PAGE_IS_HUGE). None where the kernel has no PAGEMAP_SCAN."""
    result = np.zeros(pages, dtype=bool)
    end = address + pages * PAGE_SIZE
    regions = (_PageRegion * 256)()
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
        start = address
        while start < end:
            arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), start=start, end=end,
                             vec=ctypes.addressof(regions), vec_len=len(regions),
                             category_anyof_mask=PAGE_IS_PRESENT, return_mask=PAGE_IS_HUGE | PAGE_IS_PRESENT)
            try:
                count = fcntl.ioctl(f.fileno(), PAGEMAP_SCAN, arg)
            except OSError:
                return None  # Linux < 6.7, or the ioctl refused: PMD mapping cannot be told
            for region in regions[:count]:
                if region.categories & PAGE_IS_HUGE:
                    first = (region.start - address) // PAGE_SIZE
                    result[first:(region.end - address) // PAGE_SIZE] = True
            if arg.walk_end <= start:
                break
            start = arg.walk_end
    return result


def read_folios(pid: int | str, address: int, pages: int) -> Folios:
    """Folio membership of ``pages`` pages from ``address`` of process ``pid`` (root: PFNs read 0 otherwise)."""
    entries = read_pagemap(pid, address, pages)
    present = (entries & PM_PRESENT) != 0
    pfn = np.where(present, entries & PM_PFN_MASK, np.uint64(0))
    flags = np.zeros(pages, dtype=np.uint64)
    mapped = pfn != 0
    if mapped.any():
        flags[mapped] = read_kpageflags(pfn[mapped])
    head, size = folio_heads(pfn, flags)
    return Folios(
        pid=pid, address=address, entries=entries, present=present, pfn=pfn,
        exclusive=(entries & PM_EXCLUSIVE) != 0, flags=flags,
        is_anon=_bit(flags, KPF_ANON), is_thp=_bit(flags, KPF_THP), is_zero_page=_bit(flags, KPF_ZERO_PAGE),
        head_pfn=head, folio_pages=size, pmd_mapped=pmd_mapped(pid, address, pages),
    )


# ----- smaps ----------------------------------------------------------------------------------


def smaps_range(pid: int | str, address: int, length: int) -> dict:
    """The ``/proc/PID/smaps`` fields (kB) summed over the VMAs that overlap the range, with their count.

    smaps is per VMA, not per page: a range inside one VMA gets that whole
    VMA's figures. ``AnonHugePages`` counts PMD-mapped THP only; a THP
    mapped by PTEs counts in ``Rss``/``Anonymous`` alone. ``THPeligible``
    is 1 if any of the VMAs may get THPs.
    """
    totals: dict = {"vmas": 0}
    end = address + length
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    for line in text.splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):
            lo, hi = (int(x, 16) for x in first.split("-"))
            inside = lo < end and address < hi
            totals["vmas"] += inside
            continue
        if not inside:
            continue
        name, _, value = line.partition(":")
        fields = value.split()
        if name == "THPeligible":
            totals["THPeligible"] = max(totals.get("THPeligible", 0), int(fields[0]))
        elif len(fields) == 2 and fields[1] == "kB":
            totals[name] = totals.get(name, 0) + int(fields[0])
    return totals
