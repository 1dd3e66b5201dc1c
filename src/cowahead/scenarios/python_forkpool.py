"""``python-forkpool``: a CPython multiprocessing fork pool over a large dict.

The parent builds a dict of N small objects; a ``fork`` pool's workers each
iterate over all of it. Reading an object in CPython writes its reference
count, so every page the workers walk is a COW fault. The program's own
counter: each task reads its ru_minflt + ru_majflt (getrusage RUSAGE_SELF)
before and after the walk and its CLOCK_MONOTONIC times; the trace's faults
of that worker between those times must match. The parent also reports
RUSAGE_CHILDREN for the workers' whole lives.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ._common import COW, Comparison, ScenarioResult, add_to_trace, fault_mask, run_command

NAME = "python-forkpool"
SUMMARY = "multiprocessing fork pool walking a dict built by the parent; checked against getrusage"
ENTRIES = 300_000
WORKERS = 2

PROGRAM = """
import json, multiprocessing, os, resource, sys, time

ENTRIES, WORKERS, REPORT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data = {f"key-{i}": (i, str(i) * 3) for i in range(ENTRIES)}


def faults(usage):
    return usage.ru_minflt + usage.ru_majflt


def walk(task):
    start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    before = faults(resource.getrusage(resource.RUSAGE_SELF))
    total = 0
    for key, (number, text) in data.items():   # each object's refcount is written
        total += number + len(text)
    after = faults(resource.getrusage(resource.RUSAGE_SELF))
    end = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return {"pid": os.getpid(), "start_ns": start, "end_ns": end, "faults": after - before, "total": total}


if __name__ == "__main__":
    pool = multiprocessing.get_context("fork").Pool(WORKERS)
    tasks = pool.map(walk, range(WORKERS), chunksize=1)
    pool.close()
    pool.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(REPORT, "w") as f:
        json.dump({"parent": os.getpid(), "tasks": tasks, "children_faults": faults(children)}, f)
"""


def run(output: Path | None, progress=None, entries: int = ENTRIES) -> ScenarioResult:
    with tempfile.TemporaryDirectory(prefix="cowahead-forkpool-") as tmp:
        program, report = Path(tmp) / "forkpool.py", Path(tmp) / "report.json"
        program.write_text(PROGRAM)
        command = [sys.executable, str(program), str(entries), str(WORKERS), str(report)]
        recording, seconds = run_command(command, output, progress)
        reported = json.loads(report.read_text())
    result = ScenarioResult(NAME, output, recording, seconds={"workload": seconds})
    result.details["program"] = reported
    if recording is None:
        return result
    trace = recording.trace
    walked = sum(int(fault_mask(trace, [t["pid"]], t["start_ns"], t["end_ns"]).sum()) for t in reported["tasks"])
    walked_cow = sum(int(fault_mask(trace, [t["pid"]], t["start_ns"], t["end_ns"], (COW,)).sum()) for t in reported["tasks"])
    program_walk = sum(t["faults"] for t in reported["tasks"])
    result.comparisons.append(Comparison(
        "faults of the workers' dict walks", walked, program_walk, "faults",
        "trace: the worker's faults between its CLOCK_MONOTONIC start and end; program: RUSAGE_SELF delta"))
    workers = set(np.unique(trace.columns["pid"]).tolist()) - {reported["parent"]}
    result.comparisons.append(Comparison(
        "faults of the workers, whole lives", int(fault_mask(trace, workers).sum()), reported["children_faults"], "faults",
        "program: RUSAGE_CHILDREN of the parent after join"))
    result.details.update({"walk_cow_0x7_faults": walked_cow, "workers": sorted(workers), "entries": entries})
    add_to_trace(output, recording, result)
    return result
