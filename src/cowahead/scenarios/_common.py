"""What every scenario shares: its result, comparisons, and counting faults in a trace."""

from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import CowaheadError
from ..model import Kernel
from ..model.folio import FolioSettings
from ..model.memory import FrameKind
from ..policies import parse_policy
from ..record import Recorder, Recording
from ..trace import EventKind, Trace, write_trace

TOLERANCE = 0.05  # the trace and the program's own counter agree within 5 %
COW = 0x7         # x86 error code of a write to a present, write-protected user page


@dataclass
class Comparison:
    """One number from the trace held against the program's own counter."""
    what: str
    trace: float
    program: float
    unit: str
    note: str = ""

    @property
    def difference(self) -> float:
        """(trace - program) / program; 0 when both are 0."""
        if self.program == 0:
            return 0.0 if self.trace == 0 else float("inf")
        return (self.trace - self.program) / self.program

    @property
    def agrees(self) -> bool:
        return abs(self.difference) <= TOLERANCE

    def as_dict(self) -> dict:
        return {"what": self.what, "trace": self.trace, "program": self.program, "unit": self.unit,
                "difference": self.difference, "agrees": self.agrees, "tolerance": TOLERANCE, "note": self.note}


@dataclass
class ScenarioResult:
    name: str
    output: Path | None
    recording: Recording | None
    comparisons: list[Comparison] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # "workload": the timed part, recorded or not

    def as_dict(self) -> dict:
        return {"name": self.name, "comparisons": [c.as_dict() for c in self.comparisons],
                "details": self.details, "seconds": self.seconds}


def fault_mask(trace: Trace, pids=None, start_ns: int | None = None, end_ns: int | None = None,
               codes: tuple[int, ...] | None = None) -> np.ndarray:
    """Recorded faults (READ/WRITE events that are faults, not --pid snapshot pages) matching the filters."""
    c = trace.columns
    mask = ((c["kind"] == EventKind.READ) | (c["kind"] == EventKind.WRITE)) & (c["arg"] >= 0)
    if pids is not None:
        mask &= np.isin(c["pid"], np.asarray(list(pids), dtype=np.int32))
    if start_ns is not None:
        mask &= c["time_ns"] >= start_ns
    if end_ns is not None:
        mask &= c["time_ns"] <= end_ns
    if codes is not None:
        mask &= np.isin(c["arg"], np.asarray(codes, dtype=np.int64))
    return mask


def model_faults(trace: Trace) -> list[tuple[int, int, int, str]]:
    """The reference model's fault log under policy none: (event index, pid, page, kind)."""
    kernel = Kernel(parse_policy("none"), log_faults=True)
    kernel.replay(trace)
    return kernel.fault_log


def model_with_probes(trace: Trace, probes: dict[int, Callable[[Kernel], None]], log_faults: bool = True) -> Kernel:
    """Replay ``trace`` through the reference model (policy none), calling ``probes[i](kernel)`` just before
    event ``i`` is applied (``i == len(trace)``: after the last one), to read the model's state there."""
    kernel = Kernel(parse_policy("none"), log_faults=log_faults, folios=FolioSettings.from_metadata(trace.metadata))
    kernel.policy.prepare(trace)
    for index, event in enumerate(trace.events()):
        if index in probes:
            probes[index](kernel)
        kernel.apply(event, index)
    if len(trace) in probes:
        probes[len(trace)](kernel)
    kernel.finish()
    return kernel


def private_anon_pages(kernel: Kernel, pid: int) -> int:
    """The process's anonymous pages that no other mapping shares, in the model: what smaps counts as
    Private (a page's precise mapcount, its PTE mappings plus its folio's PMD mappings, is 1)."""
    mm = kernel.processes[pid]
    private = 0
    for pte in mm.ptes.values():
        frame = pte.frame
        pmd_maps = frame.folio.entire_mapcount if frame.folio is not None else 0
        private += frame.kind == FrameKind.ANON and frame.mapcount + pmd_maps == 1
    for pmd in mm.pmds.values():
        if pmd.folio is not None:  # None: the huge zero page
            private += sum(frame.mapcount + pmd.folio.entire_mapcount == 1 for frame in pmd.folio.frames)
    return private


def add_to_trace(output: Path, recording: Recording, result: ScenarioResult) -> None:
    """Keep the scenario's comparisons with its trace."""
    recording.trace.metadata["source"] = f"scenario:{result.name}"
    recording.trace.metadata["scenario"] = result.as_dict()
    write_trace(recording.trace, output)


class Clock:
    """Wall time of named phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str):
        clock = self

        class _Phase:
            def __enter__(self):
                self.t = time.monotonic()

            def __exit__(self, *exc):
                clock.seconds[name] = time.monotonic() - self.t

        return _Phase()


@contextmanager
def launched(command: list[str], output: Path | None) -> Iterator[tuple[Recorder | None, subprocess.Popen]]:
    """A server started for a scenario: recorded with perf when ``output`` names a trace file, else plainly.
    Yields (its recorder or None, its process); whatever still runs when the block ends, by an error or
    early, is stopped, so no server outlives its scenario."""
    recorder, server = None, None
    try:
        if output is not None:
            recorder = Recorder(output)
            recorder.start(command)
            yield recorder, recorder.process
        else:
            server = subprocess.Popen(command)
            yield None, server
    finally:
        if recorder is not None and recorder.process is not None and recorder.process.poll() is None:
            recorder.stop()
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()


__all__ = ["TOLERANCE", "COW", "Comparison", "ScenarioResult", "fault_mask", "model_faults", "model_with_probes",
           "private_anon_pages", "add_to_trace",
           "Clock", "Recorder", "Recording", "launched"]


def run_command(command: list[str], output: Path | None, progress=None) -> tuple[Recording | None, float]:
    """Run ``command`` to the end, recorded into ``output`` if given; (recording, wall seconds of the run)."""

    if output is None:
        t = time.monotonic()
        done = subprocess.run(command)
        seconds = time.monotonic() - t
        if done.returncode != 0:
            raise CowaheadError(f"scenario command failed with exit {done.returncode}: {' '.join(command)}")
        return None, seconds
    recorder = Recorder(output)
    recorder.start(command)
    if progress:
        progress("record", None, None)
    recording = recorder.finish(progress)
    if recording.returncode != 0:
        raise CowaheadError(f"scenario command failed with exit {recording.returncode} (trace kept in {output})")
    # The program's own life (exec to exit, from the trace): perf's start-up and teardown are not the program's.
    return recording, recording.seconds.get("command", recording.seconds["record"])
