"""Kernel-facing: what /proc says about a process's memory.

For ``--pid``, the address space that existed before perf attached, with its
THP state (VM_HUGEPAGE, VM_NOHUGEPAGE, PR_SET_THP_DISABLE). (The THP/mTHP
settings recorded with every trace come from ``machine.thp_settings``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..trace.events import PAGE_SHIFT, VmaKind

PAGEMAP_PRESENT = 1 << 63
PAGEMAP_FILE = 1 << 61


@dataclass(frozen=True)
class MapsEntry:
    start: int
    end: int
    perms: str
    offset: int
    name: str

    @property
    def vma_kind(self) -> VmaKind:
        return vma_kind(self.perms, self.name)


def vma_kind(perms: str, name: str) -> VmaKind:
    """The model's VMA kind from protections and the mapping's name.

    Anonymous memory shows as ``//anon`` in perf, as no name in maps, or as
    ``[heap]``/``[stack]``/``[anon:...]``; shared anonymous memory is a shmem
    file (``/dev/zero (deleted)``, ``/SYSV...``, ``/memfd:...``). Shared
    file mappings are never COW either, so they count as shared too.
    """
    shared = perms[3:4] == "s"
    anon = name in ("", "//anon", "[heap]", "[stack]") or name.startswith("[anon")
    if shared:
        return VmaKind.SHARED_ANON
    return VmaKind.PRIVATE_ANON if anon else VmaKind.PRIVATE_FILE


def read_maps(pid: int) -> list[MapsEntry]:
    entries = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        start, end = (int(x, 16) for x in parts[0].split("-"))
        name = parts[5] if len(parts) > 5 else ""
        if name == "[vsyscall]":
            continue  # above the user address range the model covers
        entries.append(MapsEntry(start, end, parts[1], int(parts[2], 16), name))
    return entries


def present_pages(pid: int, entry: MapsEntry) -> tuple[np.ndarray, np.ndarray]:
    """Pages of ``entry`` present now, and which of them are page cache or shmem (not anonymous).

    From /proc/PID/pagemap, 8 bytes a page: bit 63 present, bit 61 file-page or shared-anon.
    """
    first, last = entry.start >> PAGE_SHIFT, entry.end >> PAGE_SHIFT
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as f:
            f.seek(first * 8)
            raw = f.read((last - first) * 8)
    except OSError:
        return np.empty(0, np.uint64), np.empty(0, bool)
    words = np.frombuffer(raw, dtype=np.uint64)
    present = np.flatnonzero(words & np.uint64(PAGEMAP_PRESENT))
    is_file = (words[present] & np.uint64(PAGEMAP_FILE)) != 0
    return (present + first).astype(np.uint64), is_file


def thp_flags(pid: int) -> dict[int, set[str]]:
    """Each VMA's THP flags by start address, from /proc/PID/smaps VmFlags: ``hg`` (VM_HUGEPAGE, asked by
    MADV_HUGEPAGE) and ``nh`` (VM_NOHUGEPAGE)."""
    flags: dict[int, set[str]] = {}
    start = None
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return flags
    for line in text.splitlines():
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):
            start = int(head.split("-")[0], 16)
        elif head == "VmFlags:" and start is not None:
            found = set(line.split()[1:]) & {"hg", "nh"}
            if found:
                flags[start] = found
    return flags


def thp_disabled(pid: int) -> bool:
    """Has the process set PR_SET_THP_DISABLE (/proc/PID/status THP_enabled: 0)?"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("THP_enabled:"):
                return line.split()[1] == "0"
    except OSError:
        pass
    return False


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


__all__ = ["MapsEntry", "vma_kind", "read_maps", "present_pages", "thp_flags", "thp_disabled", "children"]
