"""Measure this machine's per-page fault costs; the numbers CostModel predicts time with.

Each measurement runs in a freshly forked worker (so no state leaks from one
to the next), touches N pages with one vectorised numpy operation or
madvise calls, and reports µs per page and minor faults per page (which
must be 1 where a fault per page is meant: a THP or mTHP mapping would show
fewer). Repetitions run side by side: every round takes each measurement
once, so drift on a shared machine hits them all alike; the first round is a
warm-up, kept apart from the values.
"""

from __future__ import annotations

import mmap
import os
import statistics
import struct
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np

from ..model.costs import CostModel
from ..results.header import header
from ..trace.events import PAGE_SIZE
from . import linux

WINDOWS = [1 << k for k in range(10)]  # 1 … 512 pages: up to one page table
SPREAD_WARN = 0.20  # interquartile range / median above this: too noisy to trust
_RESULT = struct.Struct("ddd")  # CPU µs per page, wall µs per page, faults per page


@dataclass
class Measurement:
    name: str
    values_us: list[float] = field(default_factory=list)   # CPU time per page, one per round
    wall_values_us: list[float] = field(default_factory=list)  # wall time per page, one per round
    warmup_us: float | None = None
    faults_per_page: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float:
        return statistics.median(self.values_us)

    @property
    def spread(self) -> float:
        """Interquartile range over the median: robust to the odd preempted round."""
        q1, _, q3 = statistics.quantiles(self.values_us, n=4, method="inclusive")
        return (q3 - q1) / self.median_us

    def as_dict(self) -> dict:
        return {"median_us": round(self.median_us, 4), "values_us": [round(v, 4) for v in self.values_us],
                "wall_median_us": round(statistics.median(self.wall_values_us), 4),
                "wall_values_us": [round(v, 4) for v in self.wall_values_us],
                "warmup_us": None if self.warmup_us is None else round(self.warmup_us, 4),
                "spread": round(self.spread, 4),
                "faults_per_page": round(statistics.median(self.faults_per_page), 3)}


# ----- one measurement: runs in a forked worker, returns (µs per page, faults per page) ---------


def _timed(pages: int, action: Callable[[], object]) -> tuple[float, float, float]:
    """CPU and wall µs per page, and minor faults per page, of ``action``.

    CPU time (user + system of this single-threaded worker) leaves out the
    time other tasks held the CPU: on a shared machine it is the stabler
    figure, and on an idle one the two agree.
    """
    faults = linux.minor_faults()
    cpu, start = time.process_time_ns(), time.perf_counter_ns()
    action()
    wall, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
    return cpu / 1000 / pages, wall / 1000 / pages, (linux.minor_faults() - faults) / pages


def _filled(pages: int) -> tuple[int, np.ndarray]:
    address = linux.mmap_anon(pages * PAGE_SIZE)
    view = linux.uint64_pages(address, pages)
    view[:, 0] = 1
    return address, view


def _after_fork_in_child(pages: int, measure: Callable[[int, np.ndarray], tuple[float, float, float]]):
    """Map and fill N pages, fork; the child measures on the shared pages and reports."""
    address, view = _filled(pages)
    return _in_worker(lambda _: measure(address, view), pages)


def _after_child_exit(pages: int, measure: Callable[[int, np.ndarray], tuple[float, float, float]]):
    """Map and fill N pages, fork a child that exits at once: the parent's PTEs are
    write-protected but every frame is exclusive again (a reuse on write)."""
    address, view = _filled(pages)
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    return measure(address, view)


def cow_fault(pages: int) -> tuple[float, float, float]:
    values = np.arange(pages, dtype=np.uint64)
    return _after_fork_in_child(pages, lambda a, view: _timed(pages, lambda: view.__setitem__((slice(None), 0),
                                                                                                values)))


def zero_fill(pages: int) -> tuple[float, float, float]:
    view = linux.uint64_pages(linux.mmap_anon(pages * PAGE_SIZE), pages)
    return _timed(pages, lambda: view.__setitem__((slice(None), 0), 2))


def zero_page(pages: int) -> tuple[float, float, float]:
    view = linux.uint64_pages(linux.mmap_anon(pages * PAGE_SIZE), pages)
    return _timed(pages, lambda: view[:, 0].sum())


def shared_first_touch(pages: int) -> tuple[float, float, float]:
    shared = mmap.mmap(-1, pages * PAGE_SIZE)  # MAP_SHARED|MAP_ANONYMOUS: shmem, never COW
    view = np.frombuffer(shared, dtype=np.uint64).reshape(pages, PAGE_SIZE // 8)
    return _timed(pages, lambda: view.__setitem__((slice(None), 0), 2))


def reuse_fault(pages: int) -> tuple[float, float, float]:
    return _after_child_exit(pages, lambda a, view: _timed(pages, lambda: view.__setitem__((slice(None), 0), 3)))


def populate_write_copy(window: int) -> Callable[[int], tuple[float, float, float]]:
    def measure(pages: int) -> tuple[float, float, float]:
        def calls(address: int) -> None:
            for first in range(0, pages, window):
                linux.populate_write(address + first * PAGE_SIZE, min(window, pages - first) * PAGE_SIZE)
        return _after_fork_in_child(pages, lambda address, view: _timed(pages, lambda: calls(address)))
    return measure


def populate_write_reuse(pages: int) -> tuple[float, float, float]:
    window = WINDOWS[-1]

    def calls(address: int) -> None:
        for first in range(0, pages, window):
            linux.populate_write(address + first * PAGE_SIZE, min(window, pages - first) * PAGE_SIZE)
    return _after_child_exit(pages, lambda address, view: _timed(pages, lambda: calls(address)))


def memcpy(pages: int) -> tuple[float, float, float]:
    source = np.ones(pages * PAGE_SIZE // 8, np.uint64)
    target = np.ones_like(source)
    return _timed(pages, lambda: np.copyto(target, source))


def measurements() -> dict[str, Callable[[int], tuple[float, float, float]]]:
    table = {"cow_fault": cow_fault, "zero_fill": zero_fill, "zero_page": zero_page,
             "shared_first_touch": shared_first_touch, "reuse_fault": reuse_fault}
    for window in WINDOWS:
        table[f"populate_write_{window}"] = populate_write_copy(window)
    table["populate_write_reuse_512"] = populate_write_reuse
    table["memcpy"] = memcpy
    return table


def _in_worker(measure: Callable[[int], tuple[float, float, float]], pages: int) -> tuple[float, float, float]:
    read_fd, write_fd = os.pipe()
    worker = os.fork()
    if worker == 0:
        try:
            os.write(write_fd, _RESULT.pack(*measure(pages)))
        finally:
            os._exit(0)
    data = os.read(read_fd, _RESULT.size)
    os.waitpid(worker, 0)
    os.close(read_fd)
    os.close(write_fd)
    if len(data) != _RESULT.size:
        raise RuntimeError("a calibration worker died")
    return _RESULT.unpack(data)


# ----- a calibration run ----------------------------------------------------------------------


def calibrate(pages: int, repeats: int, on_round: Callable[[int], None] | None = None) -> dict[str, Measurement]:
    """A warm-up round, then ``repeats`` rounds of every measurement side by side."""
    table = measurements()
    results = {name: Measurement(name) for name in table}
    for round_ in range(repeats + 1):
        for name, measure in table.items():
            us, wall_us, faults = _in_worker(measure, pages)
            if round_ == 0:
                results[name].warmup_us = us
            else:
                results[name].values_us.append(us)
                results[name].wall_values_us.append(wall_us)
                results[name].faults_per_page.append(faults)
        if on_round:
            on_round(round_)
    return results


EXPECTED_FAULTS = {"memcpy": 0.0, "populate_write_reuse_512": 1.0}


def warnings(results: dict[str, Measurement]) -> list[str]:
    out = []
    for m in results.values():
        if m.spread > SPREAD_WARN:
            out.append(f"{m.name}: interquartile spread {m.spread:.0%} of the median (values "
                       f"{min(m.values_us):.3f}-{max(m.values_us):.3f} µs/page) is too wide to trust; "
                       "rerun on a quieter machine or with more --repeats")
        faults = statistics.median(m.faults_per_page)
        expected = EXPECTED_FAULTS.get(m.name, 1.0)
        if abs(faults - expected) > 0.05:
            out.append(f"{m.name}: {faults:.2f} minor faults per page, expected {expected:g} "
                       "(THP/mTHP or reclaim at work?)")
    return out


def cost_model(results: dict[str, Measurement], machine: str, date: str) -> CostModel:
    m = {name: r.median_us for name, r in results.items()}
    fit = populate_write_fit(results)
    return CostModel(
        cow_fault_us=round(m["cow_fault"], 3), zero_fill_us=round(m["zero_fill"], 3),
        zero_page_us=round(m["zero_page"], 3), map_us=round(m["shared_first_touch"], 3),
        reuse_us=round(m["reuse_fault"], 3), ahead_copy_us=round(fit["per_page_us"], 3),
        ahead_call_us=round(fit["per_call_us"], 3), ahead_reuse_us=round(m["populate_write_reuse_512"], 3),
        source=(f"cowahead calibrate on {machine}, {date}: medians of {len(results['cow_fault'].values_us)}, "
                "CPU time (user+system) per page, numpy one write per page; ahead_copy/call = MADV_POPULATE_WRITE "
                "fit per page + per call over windows 1..512, ahead_reuse in 512-page calls (user space)"))


def populate_write_fit(results: dict[str, Measurement]) -> dict:
    """Least squares of µs per page = per_page + per_call / window over the windows measured.

    From user space every madvise call adds a fixed cost on top of the
    per-page work, which small windows pay often: CostModel charges both.
    """
    windows = np.array(WINDOWS, dtype=float)
    us = np.array([results[f"populate_write_{w}"].median_us for w in WINDOWS])
    (per_page, per_call), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(windows), 1 / windows]), us,
                                               rcond=None)
    worst = float(np.max(np.abs(per_page + per_call / windows - us) / us))
    return {"per_page_us": round(float(per_page), 4), "per_call_us": round(float(per_call), 4),
            "worst_relative_error": round(worst, 4)}


def document(results: dict[str, Measurement], pages: int, repeats: int) -> dict:
    """The calibration file: versioned, with machine metadata; ``costs`` holds CostModel's fields."""
    doc = header("calibration")
    meta = doc["machine"]
    machine = f"{meta['cpus']}-CPU {meta['cpu']} ({meta['hostname']}), Linux {meta['kernel']}"
    costs = cost_model(results, machine, doc["created"][:10])
    return {
        **doc,
        "settings": {"pages": pages, "repeats": repeats, "warmup_rounds": 1},
        "costs": {f.name: getattr(costs, f.name) for f in fields(CostModel)},
        "populate_write_us_per_page": {str(w): round(results[f"populate_write_{w}"].median_us, 4)
                                       for w in WINDOWS},
        "populate_write_fit": populate_write_fit(results),
        "memcpy_us_per_page": round(results["memcpy"].median_us, 4),
        "measurements": {name: r.as_dict() for name, r in results.items()},
        "warnings": warnings(results),
    }
