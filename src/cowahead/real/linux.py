"""The running kernel, through ctypes: mmap, madvise, pagemap, fault counters.

Python's ``mmap.mmap(-1, n)`` maps MAP_SHARED memory, which is never COW,
so the workloads map their memory here with MAP_PRIVATE|MAP_ANONYMOUS.
Every syscall is checked: a failure raises OSError with the real errno.

``/proc/PID/pagemap`` (Documentation/admin-guide/mm/pagemap.rst) gives one
64-bit entry per page: bits 0-54 the PFN (zero without CAP_SYS_ADMIN), 55
soft-dirty, 56 exclusively mapped (map count 1), 61 file-page or
shared-anon, 62 swapped, 63 present. The file is bound to the address
space that opened it, so a process must open its own after fork.
"""

from __future__ import annotations

import ctypes
import errno
import mmap as _mmap
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..machine import machine_metadata  # noqa: F401  (re-exported: real runs record it)
from ..trace.events import PAGE_SIZE

MADV_DONTNEED = 4
MADV_POPULATE_WRITE = 23  # Linux 5.14+
PROT_NONE = 0
PROT_READ_WRITE = _mmap.PROT_READ | _mmap.PROT_WRITE
MAP_PRIVATE_ANON = _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10
MAP_NORESERVE = 0x4000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_THP_DISABLE = 41

PFN_MASK = np.uint64((1 << 55) - 1)
PM_EXCLUSIVE = np.uint64(1 << 56)
PM_PRESENT = np.uint64(1 << 63)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_MAP_FAILED = ctypes.c_void_p(-1).value


def _raise_errno(call: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{call}: {os.strerror(code)}")


def mmap_anon(length: int, address: int = 0, prot: int = PROT_READ_WRITE, flags: int = 0) -> int:
    """mmap private anonymous memory; returns its address."""
    addr = _libc.mmap(address or None, length, prot, MAP_PRIVATE_ANON | flags, -1, 0)
    if addr is None or addr == _MAP_FAILED:
        _raise_errno("mmap")
    return addr


def munmap(address: int, length: int) -> None:
    if _libc.munmap(address, length) != 0:
        _raise_errno("munmap")


def madvise(address: int, length: int, advice: int) -> None:
    if _libc.madvise(address, length, advice) != 0:
        _raise_errno(f"madvise({advice})")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    if _libc.prctl(option, arg2, arg3, 0, 0) != 0:
        _raise_errno(f"prctl({option})")


def populate_write(address: int, length: int) -> None:
    """Break COW on (or zero-fill) every page of the range, as write faults would."""
    madvise(address, length, MADV_POPULATE_WRITE)


def minor_faults() -> int:
    """This process's minor-fault count; GUP faults (MADV_POPULATE_WRITE) count too."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def uint64_pages(address: int, pages: int) -> np.ndarray:
    """A (pages, 512) uint64 view of memory at ``address``; making it touches nothing."""
    buffer = (ctypes.c_uint64 * (pages * PAGE_SIZE // 8)).from_address(address)
    return np.ctypeslib.as_array(buffer).reshape(pages, PAGE_SIZE // 8)


class Pagemap:
    """This process's /proc/self/pagemap; open it after fork, in the process it describes."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/self/pagemap", os.O_RDONLY)

    def entries(self, address: int, pages: int) -> np.ndarray:
        data = os.pread(self.fd, pages * 8, (address // PAGE_SIZE) * 8)
        return np.frombuffer(data, dtype=np.uint64).copy()

    def close(self) -> None:
        os.close(self.fd)


def present(entries: np.ndarray) -> np.ndarray:
    return (entries & PM_PRESENT) != 0


def pfns(entries: np.ndarray) -> np.ndarray:
    return entries & PFN_MASK


def exclusive(entries: np.ndarray) -> np.ndarray:
    return (entries & PM_EXCLUSIVE) != 0


def break_cow_on_own_memory(skip_start: int, skip_end: int) -> None:
    """Make this process's present private pages exclusive, except [skip_start, skip_end).

    After fork, Python's heap is COW-shared: its first writes would add COW
    faults to the minor-fault counts the measurements read. Breaking COW on
    it once, up front, keeps those counts to the workload's own faults.
    """
    pagemap = Pagemap()
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split()
            if fields[1] != "rw-p":
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start < skip_end and skip_start < end:
                continue
            entries = pagemap.entries(start, (end - start) // PAGE_SIZE)
            for first, stop in runs(np.flatnonzero(present(entries) & ~exclusive(entries))):
                try:
                    populate_write(start + first * PAGE_SIZE, (stop - first) * PAGE_SIZE)
                except OSError:
                    pass  # e.g. a guard or special mapping: its faults are noise we can bear
    finally:
        pagemap.close()


def runs(pages) -> list[tuple[int, int]]:
    """Sorted page numbers as [first, stop) runs of consecutive pages."""
    out: list[tuple[int, int]] = []
    for p in pages:
        p = int(p)
        if out and out[-1][1] == p:
            out[-1] = (out[-1][0], p + 1)
        else:
            out.append((p, p + 1))
    return out


# ----- what the machine offers ---------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """What this kernel lets user space see and do; ``problems`` are one-line reasons."""
    pfns_visible: bool
    populate_write: bool
    zero_pfn: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def probe_support() -> Support:
    """Map two pages: read one (zero page) and check PFNs; populate-write the other."""
    problems = []
    addr = mmap_anon(2 * PAGE_SIZE)
    try:
        view = uint64_pages(addr, 2)
        int(view[0, 0])  # a read fault maps the shared zero page
        pagemap = Pagemap()
        try:
            zero_pfn = int(pfns(pagemap.entries(addr, 1))[0])
        finally:
            pagemap.close()
        pfns_visible = zero_pfn != 0
        if not pfns_visible:
            problems.append("pagemap shows PFN 0 (needs root / CAP_SYS_ADMIN): COW copies cannot be told "
                            "from reuses")
        populate = True
        try:
            populate_write(addr + PAGE_SIZE, PAGE_SIZE)
        except OSError as e:
            populate = False
            why = "not supported by this kernel (Linux < 5.14)" if e.errno == errno.EINVAL else e.strerror
            problems.append(f"madvise(MADV_POPULATE_WRITE) failed: {why}: user-space COW-ahead is unavailable")
    finally:
        munmap(addr, 2 * PAGE_SIZE)
    return Support(pfns_visible, populate, zero_pfn, tuple(problems))
