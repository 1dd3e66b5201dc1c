"""Kernel-facing: what /proc and /sys say about memory.

The machine's THP/mTHP settings (recorded with every trace: where mTHP is
enabled one zero-fill fault maps a whole folio), and, for ``--pid``, the
address space that existed before perf attached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..trace.events import PAGE_SHIFT, VmaKind

THP = Path("/sys/kernel/mm/transparent_hugepage")
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_FILE = 1 << 61


def thp_settings() -> dict[str, str]:
    """Every THP knob as the selected word (``madvise``), and each mTHP size's ``enabled``."""
    settings: dict[str, str] = {}
    for name in ("enabled", "defrag", "shmem_enabled", "use_zero_page"):
        settings[name] = _selected(THP / name)
    for size_dir in sorted(THP.glob("hugepages-*kB")):
        settings[f"{size_dir.name}/enabled"] = _selected(size_dir / "enabled")
    return {k: v for k, v in settings.items() if v}


def _selected(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return ""
    chosen = re.search(r"\[(\w[\w+-]*)\]", text)
    return chosen.group(1) if chosen else text


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


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


__all__ = ["thp_settings", "MapsEntry", "vma_kind", "read_maps", "present_pages", "children"]
