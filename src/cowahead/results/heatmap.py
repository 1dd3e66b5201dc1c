"""A fault heatmap: page faults binned by time and by address, per VMA.

Like damo's heatmap, the address axis leaves out what no VMA maps: the
trace's mappings are laid end to end, so a 16 MiB heap and a stack 100 TiB
away both get rows. The faults are those Linux takes today (policy
``none``), from the engine's fault log of the replay that counted them
(``engine.fault_log``): no second replay.
"""

from __future__ import annotations

import numpy as np

from ..trace.events import PAGE_SHIFT, EventKind

Columns = dict[str, np.ndarray]  # a trace's columns: time_ns, kind, address, length at least


def mapped_ranges(columns: Columns) -> list[tuple[int, int]]:
    """Merged page ranges any MMAP event covered, or the accessed span if none."""
    is_mmap = columns["kind"] == EventKind.MMAP
    address, length = columns["address"][is_mmap], columns["length"][is_mmap]
    starts = (address >> PAGE_SHIFT).astype(np.int64)
    ends = ((address + np.maximum(length, 1) - 1) >> PAGE_SHIFT).astype(np.int64) + 1
    if len(starts) == 0:
        kind = columns["kind"]
        pages = (columns["address"][(kind == EventKind.READ) | (kind == EventKind.WRITE)] >> PAGE_SHIFT).astype(np.int64)
        return [(int(pages.min()), int(pages.max()) + 1)] if len(pages) else []
    merged: list[list[int]] = []
    for s, e in sorted(zip(starts.tolist(), ends.tolist())):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def heatmap(columns: Columns, fault_events: np.ndarray, fault_pages: np.ndarray, time_bins: int = 128,
            address_bins: int = 64) -> dict:
    """Fault counts, ``address_bins`` × ``time_bins``, on the compacted address axis; the faults are given
    as the index of their event and their page (engine.fault_log)."""
    times = columns["time_ns"][fault_events].astype(np.float64)
    ranges = mapped_ranges(columns)
    offsets, inside = _compact(np.asarray(fault_pages, np.int64), ranges)
    span = max(1, sum(e - s for s, e in ranges))
    t0, t1 = (float(times.min()), float(times.max()) + 1.0) if len(times) else (0.0, 1.0)
    counts, _, _ = np.histogram2d(offsets[inside], times[inside], bins=[address_bins, time_bins],
                                  range=[[0, span], [t0, t1]])
    return {"counts": counts.astype(int).tolist(), "time_ns": [t0, t1], "pages": span,
            "vmas": [[s, e] for s, e in ranges], "outside": int((~inside).sum()), "what": "faults under none"}


def _compact(pages: np.ndarray, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each page's offset on the end-to-end axis, and whether any range holds it."""
    if not ranges:
        return np.zeros(len(pages), np.int64), np.zeros(len(pages), bool)
    starts = np.array([s for s, _ in ranges], dtype=np.int64)
    ends = np.array([e for _, e in ranges], dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
    i = np.clip(np.searchsorted(starts, pages, side="right") - 1, 0, None)
    inside = (pages >= starts[i]) & (pages < ends[i])
    return np.where(inside, before[i] + pages - starts[i], 0), inside
