"""Policy sweeps: window ranges, a traces × policies grid over a process pool, the results document.

``fixed:1..512`` stands for fixed:1, fixed:2, fixed:4, … fixed:512: every
power of two in the range. Each worker replays a group of one trace's
policies with the engine, so the trace is streamed once per group; the
page-space pre-pass is cached per worker and trace.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .errors import CowaheadError
from .model.costs import CostModel
from .model.counters import Counters
from .policies import parse_policy
from .report.results_file import new_results
from .results import result_row
from .trace import TraceFile

RANGE = re.compile(r"(\d*)\.\.(\d*)")
WINDOWS = "1..512"
DEFAULT_POLICIES = ["none", f"fixed:{WINDOWS}", f"around:{WINDOWS}", f"adaptive:{WINDOWS}", f"ccow:{WINDOWS}",
                    f"oracle:{WINDOWS}"]
# Per policy the engine keeps about this many bytes per page of the trace's page space
# (PTEs of a few address spaces, two frames per page): groups stay under MEMORY_PER_WORKER.
BYTES_PER_PAGE = 40
MEMORY_PER_WORKER = 1 << 30


def expand_policies(texts: list[str]) -> list[str]:
    """Expand ``A..B`` ranges into the powers of two between A and B; validate every result."""
    out: list[str] = []
    for text in texts:
        found = list(RANGE.finditer(text))
        if len(found) > 1:
            raise CowaheadError(f"policy '{text}': one range per policy, e.g. fixed:1..512")
        if not found:
            out.append(text)
            continue
        m = found[0]
        if not m.group(1) or not m.group(2):
            raise CowaheadError(f"policy '{text}': a range needs two whole numbers, e.g. fixed:1..512")
        lo, hi = int(m.group(1)), int(m.group(2))
        powers = [1 << k for k in range(hi.bit_length()) if lo <= 1 << k <= hi]
        if lo < 1 or lo > hi or not powers:
            raise CowaheadError(f"policy '{text}': range {lo}..{hi} holds no power of two ≥ 1 (write it low..high)")
        out.extend(text[:m.start()] + str(p) + text[m.end():] for p in powers)
    for text in out:
        parse_policy(text)
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=4)
def _page_space(path: str, mtime_ns: int):
    from .engine import page_space
    return page_space(TraceFile(path))


def replay_group(path: str, policies: list[str]) -> list[dict]:
    """One task of the pool: the engine's counters for a group of policies on one trace file."""
    from .engine import replay_engine
    space = _page_space(path, os.stat(path).st_mtime_ns)
    return [asdict(c) for c in replay_engine(TraceFile(path), policies, space=space)]


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the workers of an interrupted sweep rather than wait for their groups. The executor has no public
    way before Python 3.14 (terminate_workers); multiprocessing.Pool's terminate could hang (its task
    thread blocked on a queue lock a killed worker held: 1 run in 100 here)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which keeps what is done and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def plan_groups(pages: int, policies: list[str], jobs: int) -> list[list[str]]:
    """Split one trace's policies into groups: enough to keep every worker busy, small enough to fit."""
    fit = max(1, MEMORY_PER_WORKER // max(1, BYTES_PER_PAGE * pages))
    size = max(1, min(fit, math.ceil(len(policies) / (2 * jobs))))
    return [policies[i:i + size] for i in range(0, len(policies), size)]


def run_sweep(traces: list[str], policies: list[str], jobs: int, costs: CostModel,
              progress: Callable[[int], None] = lambda n: None) -> dict:
    """Replay every trace under every policy; returns a results document (report/results_file.py).

    On Ctrl-C the workers stop and the document holds what was replayed: ``sweep.interrupted`` is
    true, each workload lists its ``missing`` policies (the report notes them), and a trace whose baseline (none) was not
    replayed yet is left out (nothing there can be compared)."""
    opened = {str(path): TraceFile(path) for path in traces}  # fails early on a bad file
    tasks = []
    for path in opened:
        # computed here first, so forked workers inherit the cache
        pages = len(_page_space(path, os.stat(path).st_mtime_ns).pages)
        tasks += [(path, group) for group in plan_groups(pages, policies, jobs)]
    tasks.sort(key=lambda task: "none" not in task[1])  # every trace's baseline first
    rows: dict[tuple[str, str], dict] = {}
    started = time.perf_counter()
    interrupted = False
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_ignore_interrupts)
    try:
        pending = {pool.submit(replay_group, path, group): (path, group) for path, group in tasks}
        for done in as_completed(pending):
            path, group = pending[done]
            for policy, counters in zip(group, done.result()):
                rows[path, policy] = result_row(parse_policy(policy).name, Counters(**counters), costs)
            progress(len(group))
    except KeyboardInterrupt:
        interrupted = True
        _stop_workers(pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    wall = time.perf_counter() - started
    results = new_results(json.loads(costs.to_json()))
    results["sweep"] = {"policies": policies, "jobs": jobs, "wall_seconds": round(wall, 3), "engine": "numba",
                        "interrupted": interrupted, "replays": len(rows), "planned": len(opened) * len(policies)}
    results["workloads"] = [_workload(path, trace, policies, rows) for path, trace in opened.items()
                            if (path, "none") in rows]
    return results


def _workload(path: str, trace: TraceFile, policies: list[str], rows: dict) -> dict:
    missing = [p for p in policies if (path, p) not in rows]
    return {"name": Path(path).stem, "source": trace.metadata.get("source", "?"), "path": path,
            "events": trace.num_events, "description": f"sweep of {len(policies)} policies",
            "rows": [rows[path, p] for p in policies if (path, p) in rows],
            **({"missing": missing} if missing else {})}
