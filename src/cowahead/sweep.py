"""Policy sweeps: window ranges, a traces × policies grid over a pool of workers, the results document.

``fixed:1..512`` stands for fixed:1, fixed:2, fixed:4, … fixed:512: every
power of two in the range. Each worker replays a group of one trace's
policies with the engine, so the trace is streamed once per group; the
page-space pre-pass, a small trace's decoded chunks, its sample points and
the oracle's future are cached per process and trace, shared by every group
(and every ``oracle:N``) it replays; the local pool makes them in the parent,
so its forked workers share one of each, and each worker makes a group's
states in the arrays of its group before. The pool is this
machine's processes (LocalPool) or a Dask cluster (cluster.py, imported only
when a scheduler is named): both take the same tasks, and one loop here
assembles the same document from either.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Protocol

import numpy as np

from .errors import CowaheadError, EngineUnsupported
from .model.costs import CostModel
from .model.counters import Counters
from .model.kernel import Kernel
from .policies import OraclePolicy, Policy, default_policies, parse_policies
from .results.document import new_results
from .results.heatmap import heatmap as fault_heatmap
from .results.intervals import Sampling, sampling
from .results.rows import result_row
from .results.stalls import batches_from_json, batches_to_json
from .trace import Trace, TraceFile

RANGE = re.compile(r"(\d*)\.\.(\d*)")
DEFAULT_POLICIES = default_policies("sweep")
# Per policy the engine keeps about this many bytes per page of the trace's page space
# (PTEs of a few address spaces, two frames per page): groups stay under MEMORY_PER_WORKER.
BYTES_PER_PAGE = 40
MEMORY_PER_WORKER = 1 << 30


def expand_policies(texts: list[str]) -> list[Policy]:
    """Expand ``A..B`` ranges into the powers of two between A and B; each result parsed once (the specs
    travel on from here), the same policy twice kept once."""
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
    return list(dict.fromkeys(parse_policies(out)))


# Traces the caller already holds (a generated one), by path: never read back from the file.
_IN_MEMORY: dict[str, Trace] = {}


@functools.lru_cache(maxsize=4)
def _source(path: str, mtime_ns: int):
    """A trace's replay columns, read once and kept where small (forked workers inherit them: the file is read
    once in a whole sweep); a big one stays a file, streamed row group by row group. As a replay reads it:
    without time_ns (the heatmap reads it apart) and without the writes' values (prepass.in_memory_if_small)."""
    from .engine.prepass import in_memory_if_small  # numba loads only when a sweep runs
    if path in _IN_MEMORY:
        return _IN_MEMORY[path].columns
    return in_memory_if_small(TraceFile(path))


@functools.lru_cache(maxsize=4)
def _folios(path: str, mtime_ns: int):
    """The trace's folio settings (its columns, cached above, carry none)."""
    from .engine import folio_settings
    return folio_settings(_IN_MEMORY.get(path) or path)


def _key(path: str) -> tuple[str, int]:
    return path, os.stat(path).st_mtime_ns


@functools.lru_cache(maxsize=4)
def _page_space(path: str, mtime_ns: int):
    from .engine import page_space
    return page_space(_source(path, mtime_ns))


@functools.lru_cache(maxsize=2)
def _decoded(path: str, mtime_ns: int) -> list | None:
    """A small trace's chunks, decoded once per worker for every group it replays (a big one: None, each
    group then streams and decodes its row groups, so memory stays bounded)."""
    from .engine import decoded_chunks
    source = _source(path, mtime_ns)
    return list(decoded_chunks(source, _page_space(path, mtime_ns))) if isinstance(source, dict) else None


@functools.lru_cache(maxsize=4)
def _sampling(path: str, mtime_ns: int) -> Sampling:
    """Where the replays of a trace keep their counters (memory over time, storms, child lives): read apart
    from the replay's columns, which leave time_ns out, a row group at a time."""
    return sampling(_IN_MEMORY.get(path) or TraceFile(path))


@functools.lru_cache(maxsize=2)
def _future(path: str, mtime_ns: int):
    """The oracle's future of a trace, made once per worker for every oracle:N of every group it replays."""
    from .engine import future
    return future(_source(path, mtime_ns), _page_space(path, mtime_ns), decoded=_decoded(path, mtime_ns))


# The final states of the group this worker replayed last, and their trace: the next group's states of that
# trace are made in their arrays (engine.replay_states' reuse), which the process already holds. Memory stays
# one group's states.
_SPARE_STATES: dict[str, list] = {}


def replay_group(path: str, policies: list[Policy], heatmap: bool = False) -> tuple[list[dict], dict | None]:
    """One task of the pool: the engine's counters for a group of policies on one trace file (each with its
    COW batch histogram under ``cow_batches`` and what its Sampling measured), and, with ``heatmap`` and
    ``none`` among them, the fault heatmap of that replay. ``none`` replays as the witness (engine/witness.py):
    its counters are none's, and under ``witness`` what it saw, which tells the sweep which policies replay as
    none without replaying them."""
    from .engine import cow_batches, fault_log, replay_states, samples, to_counters, witness_saw
    log = ("none",) if heatmap else ()
    plan = _sampling(*_key(path))
    oracles = any(isinstance(p, OraclePolicy) for p in policies)
    spare = _SPARE_STATES.pop(path, [])
    _SPARE_STATES.clear()  # another trace's: a page space of other shapes
    try:
        states = replay_states(_source(*_key(path)), policies, space=_page_space(*_key(path)), log_faults=log,
                               decoded=_decoded(*_key(path)), folios=_folios(*_key(path)), sample_points=plan.points,
                               oracle_future=_future(*_key(path)) if oracles else None, reuse=spare, witness=True)
    except EngineUnsupported:
        return replay_group_reference(path, policies, heatmap)
    _SPARE_STATES[path] = states
    counters = [{**asdict(to_counters(st)), "cow_batches": batches_to_json(cow_batches(st)),
                 **plan.measure(samples(st)), **({"witness": witness_saw(st)} if p.name == "none" else {})}
                for p, st in zip(policies, states)]
    logged = [st for p, st in zip(policies, states) if p.name in log]
    return counters, (fault_heatmap(_heatmap_columns(path), *fault_log(logged[0])) if logged else None)


def replay_group_reference(path: str, policies: list[Policy], heatmap: bool = False) -> tuple[list[dict], dict | None]:
    """replay_group for what the engine cannot replay (a trace past its pools' limits, a policy without a
    compiled window): the reference model, one pass per policy, slower but the same counters and heatmap."""
    trace = _IN_MEMORY.get(path) or TraceFile(path).read()
    counters, heat = [], None
    plan = sampling(trace)
    for policy in policies:
        logging = heatmap and policy.name == "none"
        kernel = Kernel(policy, log_faults=logging)
        counted = asdict(kernel.replay(trace, sample_points=plan.points))
        counters.append({**counted, "cow_batches": batches_to_json(kernel.cow_batches),
                         **plan.measure(kernel.samples)})
        if logging:
            faults = [(index, page) for index, _, page, kind in kernel.fault_log if not kind.startswith("ahead")]
            events, pages = (np.array(column, np.int64) for column in zip(*faults)) if faults else \
                (np.empty(0, np.int64), np.empty(0, np.int64))
            heat = fault_heatmap(trace.columns, events, pages)
    return counters, heat


def _heatmap_columns(path: str) -> dict:
    if path in _IN_MEMORY:
        return _IN_MEMORY[path].columns
    return TraceFile(path).read_columns(("time_ns", "kind", "address", "length"))


@dataclass(frozen=True)
class TraceSummary:
    """What the sweep needs of a trace before replaying it: the document's fields and the page count that
    sizes its groups."""
    source: str
    events: int
    pages: int


def summarize(path: str) -> TraceSummary:
    """Open and check the trace and run its page-space pass (cached: the replays reuse it)."""
    trace = TraceFile(path)  # a bad file fails here, before any replay
    return TraceSummary(trace.metadata.get("source", "?"), trace.num_events, len(_page_space(*_key(path)).pages))


class Pool(Protocol):
    """Where a sweep's tasks run: this machine's processes, or a cluster (cluster.DaskPool)."""
    jobs: int  # tasks it runs at once, which sizes the groups

    def summaries(self, paths: list[str]) -> dict[str, TraceSummary]: ...
    def prepare(self, tasks: list[tuple[str, list[Policy]]]) -> None: ...  # before the first submit
    def submit(self, path: str, group: list[Policy], heatmaps: bool, first: bool) -> Future: ...
    def as_completed(self, futures: Iterable) -> Iterator: ...
    def stop(self) -> None: ...   # on Ctrl-C: drop what is pending, stop what runs
    def close(self) -> None: ...
    def describe(self) -> dict: ...  # what the results document records of it


class LocalPool:
    """A process pool on this machine. The parent summarizes every trace before the first task, so the forked
    workers inherit the trace reads and page spaces (a small file is read once in a whole sweep)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def summaries(self, paths: list[str]) -> dict[str, TraceSummary]:
        return {path: summarize(path) for path in paths}

    def prepare(self, tasks: list[tuple[str, list[Policy]]]) -> None:
        """Make here, once, what every worker would otherwise make of each trace for itself: its decoded
        chunks, its sample points and, where a group holds an oracle, its future; the workers fork with them.
        On the random trace over 5M pages each worker spent about 3 s of CPU on these (the future 1.0–2.8 s),
        twice over. The sample points are read from the file on a thread while the future is made."""
        oracles = {path for path, group in tasks if any(isinstance(p, OraclePolicy) for p in group)}
        with ThreadPoolExecutor(1, thread_name_prefix="cowahead-sampling") as reader:
            sampled = [reader.submit(_sampling, *_key(path)) for path in dict.fromkeys(p for p, _ in tasks)]
            for path in dict.fromkeys(p for p, _ in tasks):
                _decoded(*_key(path))
                if path in oracles:
                    _future(*_key(path))
            for done in sampled:
                done.result()

    def submit(self, path: str, group: list[Policy], heatmaps: bool, first: bool) -> Future:
        if self._pool is None:  # made after the summaries, so that its workers fork with them
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, initializer=_ignore_interrupts)
        return self._pool.submit(replay_group, path, group, heatmaps)

    def as_completed(self, futures: Iterable) -> Iterator:
        return as_completed(futures)

    def stop(self) -> None:
        """Kill the workers of an interrupted sweep rather than wait for their groups. The executor has no
        public way before Python 3.14 (terminate_workers); multiprocessing.Pool's terminate could hang (its
        task thread blocked on a queue lock a killed worker held: 1 run in 100 here)."""
        for process in (getattr(self._pool, "_processes", None) or {}).values():
            process.terminate()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict:
        return {}


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which keeps what is done and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def plan_groups(pages: int, policies: list[Policy], jobs: int, share: float = 1.0) -> list[list[Policy]]:
    """Split one trace's policies into groups: as many as its ``share`` of the sweep's events asks for to give
    every worker two tasks' worth of the whole sweep (a trace alone: 2 × jobs groups), small enough to fit.
    Each group is one pass over the trace, so a corpus of many traces is replayed in few passes per trace, and
    a cluster's many workers do not cut every trace into one-policy tasks."""
    fit = max(1, MEMORY_PER_WORKER // max(1, BYTES_PER_PAGE * pages))
    groups = max(1, math.ceil(2 * jobs * share))
    size = max(1, min(fit, math.ceil(len(policies) / groups)))
    return [policies[i:i + size] for i in range(0, len(policies), size)]


def open_pool(scheduler: str | None, jobs: int) -> Pool:
    """``jobs`` processes here, or, with ``scheduler`` (a Dask scheduler's address, or ``local:N``), a Dask
    cluster (cluster.py): connected now, so an unreachable one is an error before any work."""
    if scheduler is None:
        return LocalPool(jobs)
    from .cluster import connect  # dask loads only for a sweep on a cluster
    return connect(scheduler)


def run_sweep(traces: list[str], policies: list[Policy], jobs: int, costs: CostModel,
              progress: Callable[[int], None] = lambda n: None, heatmaps: bool | Collection[str] = False,
              in_memory: dict[str, Trace] | None = None, pool: Pool | None = None) -> dict:
    """Replay every trace under every policy; returns a results document (results/document.py).

    On Ctrl-C the workers stop and the document holds what was replayed: ``sweep.interrupted`` is
    true, each workload lists its ``missing`` policies (the report notes them), and a trace whose baseline (none) was not
    replayed yet is left out (nothing there can be compared). With ``heatmaps`` each workload gets the fault
    heatmap of its ``none`` replay (True: every trace; a collection of paths: those only). ``in_memory`` holds traces the caller has already (by path): not read back
    by the local pool (a cluster's workers read the file, which must hold the same trace). ``pool``: where the
    tasks run (open_pool), closed when the sweep ends; by default ``jobs`` processes on this machine."""
    from .engine import SAW_EVERYTHING, may_replay_as_none, replays_as_none  # numba loads only for a sweep
    paths = list(dict.fromkeys(str(path) for path in traces))
    for cache in (_source, _page_space, _decoded, _folios, _future, _sampling):  # a sweep starts from what it is given
        cache.cache_clear()
    _IN_MEMORY.clear()
    _SPARE_STATES.clear()
    _IN_MEMORY.update({str(path): trace for path, trace in (in_memory or {}).items()})
    pool = pool or LocalPool(jobs)
    rows: dict[tuple[str, str], dict] = {}
    maps: dict[str, dict] = {}
    started = time.perf_counter()
    interrupted = False
    summaries: dict[str, TraceSummary] = {}
    try:
        summaries = pool.summaries(paths)  # fails early on a bad file
        events = sum(summary.events for summary in summaries.values())
        # Policies that none's replay, as the witness, may show replay as none: left for after it (engine/witness.py)
        held = [p for p in policies if p.name != "none" and may_replay_as_none(p)] \
            if any(p.name == "none" for p in policies) else []
        replayed = [p for p in policies if p not in held]
        share = {path: summary.events / events if events else 1 for path, summary in summaries.items()}
        tasks = [(path, group) for path, summary in summaries.items()
                 for group in plan_groups(summary.pages, replayed, pool.jobs, share[path])]
        tasks.sort(key=_task_order)
        pool.prepare(tasks)
        mapped = set(paths) if heatmaps is True else {str(path) for path in heatmaps or ()}
        pending = {pool.submit(path, group, path in mapped, any(p.name == "none" for p in group)): (path, group)
                   for path, group in tasks}
        while pending:  # in rounds: a baseline's witness may submit the held policies it could not tell apart
            for done in pool.as_completed(list(pending)):
                path, group = pending.pop(done)
                counted, heatmap = done.result()
                for policy, counters in zip(group, counted):
                    saw = counters.pop("witness", SAW_EVERYTHING)
                    rows[path, policy.name] = _row(policy, counters, costs)
                    if policy.name == "none":
                        as_none = [p for p in held if replays_as_none(p, saw)]
                        for p in as_none:
                            rows[path, p.name] = {**copy.deepcopy(rows[path, "none"]), "policy": p.name}
                        progress(len(as_none))
                        rest = [p for p in held if p not in as_none]
                        for later in plan_groups(summaries[path].pages, rest, pool.jobs, share[path]) if rest else []:
                            pending[pool.submit(path, later, False, False)] = (path, later)
                if heatmap is not None:
                    maps[path] = heatmap
                progress(len(group))
    except KeyboardInterrupt:
        interrupted = True
        pool.stop()
    finally:
        pool.close()
        _IN_MEMORY.clear()
    wall = time.perf_counter() - started
    results = new_results(json.loads(costs.to_json()))
    names = [p.name for p in policies]
    results["sweep"] = {"policies": names, "jobs": pool.jobs, "wall_seconds": round(wall, 3), "engine": "numba",
                        "interrupted": interrupted, "replays": len(rows), "planned": len(paths) * len(policies),
                        **pool.describe()}
    results["workloads"] = [_workload(path, summaries[path], names, rows, maps.get(path)) for path in paths
                            if (path, "none") in rows]
    return results


def _task_order(task: tuple[str, list[Policy]]) -> tuple[bool, bool]:
    """Every trace's baseline first (its witness may hold back work), then groups holding an oracle, the longest
    (random, 10M events: about 1 s a policy against 0.2–0.5 s), so that no worker is left with one at the end
    while the others idle (there a worker's last oracle group ran 9 s, alone for its last 2 s)."""
    group = task[1]
    return all(p.name != "none" for p in group), not any(isinstance(p, OraclePolicy) for p in group)


def _row(policy: Policy, counters: dict, costs: CostModel) -> dict:
    """One policy's row from what replay_group counted for it."""
    batches, memory = batches_from_json(counters.pop("cow_batches")), counters.pop("memory")
    intervals = counters.pop("intervals")
    return result_row(policy.name, Counters(**counters), costs, batches, memory, intervals=intervals)


def _workload(path: str, trace: TraceSummary, policies: list[str], rows: dict, heatmap: dict | None) -> dict:
    missing = [p for p in policies if (path, p) not in rows]
    return {"name": Path(path).stem, "source": trace.source, "path": path, "events": trace.events, "description": f"sweep of {len(policies)} policies",
            "rows": [rows[path, p] for p in policies if (path, p) in rows],
            **({"missing": missing} if missing else {}), **({"heatmap": heatmap} if heatmap else {})}
