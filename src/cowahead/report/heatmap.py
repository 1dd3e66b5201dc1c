"""A fault heatmap: page faults binned by time and by address, per VMA.

Like damo's heatmap, the address axis leaves out what no VMA maps: the
trace's mappings are laid end to end, so a 16 MiB heap and a stack 100 TiB
away both get rows. The faults are those Linux takes today (policy
``none``, from the reference model's fault log); past ``MODEL_LIMIT``
events the plain accesses are binned instead, and the result says so.
"""

from __future__ import annotations

import numpy as np

from ..model.kernel import Kernel
from ..policies.none import NonePolicy
from ..trace.events import PAGE_SHIFT, EventKind
from ..trace.trace import Trace

MODEL_LIMIT = 2_000_000


def mapped_ranges(trace: Trace) -> list[tuple[int, int]]:
    """Merged page ranges any MMAP event covered, or the accessed span if none."""
    c = trace.columns
    is_mmap = c["kind"] == EventKind.MMAP
    starts = (c["address"][is_mmap] >> PAGE_SHIFT).astype(np.int64)
    ends = ((c["address"][is_mmap] + np.maximum(c["length"][is_mmap], 1) - 1) >> PAGE_SHIFT).astype(np.int64) + 1
    if len(starts) == 0:
        pages = _access_pages(trace)
        return [(int(pages.min()), int(pages.max()) + 1)] if len(pages) else []
    merged: list[list[int]] = []
    for s, e in sorted(zip(starts.tolist(), ends.tolist())):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _is_access(trace: Trace) -> np.ndarray:
    kind = trace.columns["kind"]
    return (kind == EventKind.READ) | (kind == EventKind.WRITE)


def _access_pages(trace: Trace) -> np.ndarray:
    return (trace.columns["address"][_is_access(trace)] >> PAGE_SHIFT).astype(np.int64)


def fault_points(trace: Trace) -> tuple[np.ndarray, np.ndarray, str]:
    """Pages and times of the faults under ``none`` (or of every access on huge traces)."""
    c = trace.columns
    if len(trace) <= MODEL_LIMIT:
        kernel = Kernel(NonePolicy(), log_faults=True)
        kernel.replay(trace)
        log = np.array([(index, page) for index, _, page, _ in kernel.fault_log], dtype=np.int64).reshape(-1, 2)
        return log[:, 1], c["time_ns"][log[:, 0]].astype(np.float64), "faults under none"
    return _access_pages(trace), c["time_ns"][_is_access(trace)].astype(np.float64), "accesses"


def heatmap(trace: Trace, time_bins: int = 128, address_bins: int = 64) -> dict:
    """Fault counts, ``address_bins`` × ``time_bins``, on the compacted address axis."""
    pages, times, what = fault_points(trace)
    ranges = mapped_ranges(trace)
    offsets, inside = _compact(pages, ranges)
    span = max(1, sum(e - s for s, e in ranges))
    t0, t1 = (float(times.min()), float(times.max()) + 1.0) if len(times) else (0.0, 1.0)
    counts, _, _ = np.histogram2d(offsets[inside], times[inside], bins=[address_bins, time_bins],
                                  range=[[0, span], [t0, t1]])
    return {"counts": counts.astype(int).tolist(), "time_ns": [t0, t1], "pages": span,
            "vmas": [[s, e] for s, e in ranges], "outside": int((~inside).sum()), "what": what}


def _compact(pages: np.ndarray, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each page's offset on the end-to-end axis, and whether any range holds it."""
    starts = np.array([s for s, _ in ranges], dtype=np.int64)
    ends = np.array([e for _, e in ranges], dtype=np.int64)
    before = np.concatenate([[0], np.cumsum(ends - starts)[:-1]]) if len(ranges) else np.zeros(0, np.int64)
    i = np.searchsorted(starts, pages, side="right") - 1
    inside = (i >= 0) & (pages < ends[np.clip(i, 0, None)]) if len(ranges) else np.zeros(len(pages), bool)
    offsets = np.where(inside, before[np.clip(i, 0, None)] + pages - starts[np.clip(i, 0, None)], 0) \
        if len(ranges) else np.zeros(len(pages), np.int64)
    return offsets, inside
