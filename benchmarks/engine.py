"""Benchmark of the replay engine (a script, not a test).

    .venv/bin/python benchmarks/engine.py [--pages 5000000] [--patterns random,sequential,hotcold,rewrite] [--runs 5]

For each pattern it generates (once, cached) a trace of about 2 × pages
events — the generators' patterns, whose events are nearly all faults, and
``rewrite``, whose events nearly all need none — and measures, as medians of ``--runs`` runs after one warm-up kept apart:

* per policy, events/s of the engine's replay loop over decoded chunks, on
  a state whose memory is already touched; beside it, in the same repetition,
  making a fresh state plus the loop (the kernel then zeroes the state's pages
  as the loop first touches them, as in one replay in a new process), and end
  to end (``replay_engine`` on the file: Parquet read, page-space pass, decode,
  oracle future, state, replay), with its ratio to the loop;
* the stages of end to end apart: the Parquet read as a replay reads the file,
  the page-space pass, decode, the oracle's future, making a state;
* a numba loop that only reads the trace columns and counts events by kind,
  and the engine's ratio to it;
* for the generators' one-child traces (sequential, random, hotcold, …), a
  *memory floor*: a loop doing only the memory work the trace's faults need
  (zero-fill, fork, the child's copies, both exits: PTEs and frame counts in
  the engine's layout, with its prefetching, no model), and the engine's
  ratio to it. It checks it made as many copies as the engine;
* libCacheSim 0.3.5 (PyPI) replaying the same page stream with LRU. Its
  Python API has no prefetcher (no OBL), so this compares replay speed on
  the same stream, not the same model;
* a full sweep (six families × windows 1..512) through ``cowahead sweep`` on two
  workers, with a digest of its rows (equal digests: equal rows, across commits);
* peak memory (VmHWM) of one replay in a new process against trace length, pages to 16 × pages
  events over the same pages/25 pages (5M to 80M events over 200K pages by default), the trace
  streamed row group by row group and read whole: streamed, it should not grow with the trace;
* ``cowahead simulate`` on a small trace once numba's cache is warm.

Results go to benchmarks/results/engine-<date>[-N].json with the machine, the
versions, the load average at start and end, and every run's value; a
spread (max−min)/median above 10 % is flagged, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from numba import njit

from cowahead.engine import page_space, replay_chunk, replay_engine
from cowahead.engine.layout import (DIRTY, FRAME_AHEAD, FRAME_SHIFT, MAPPED, PRESENT, PTE_AHEAD, WRITABLE,
                                    ZAP_AHEAD, page_range)
from cowahead.engine.prefetch import prefetch, prefetch_item
from cowahead.engine.prepass import decode, future, in_memory_if_small, iter_chunks
from cowahead.engine.replay import finish
from cowahead.engine.state import new_state
from cowahead.machine import machine_metadata, package_versions
from cowahead.policies import OraclePolicy, parse_policy
from cowahead.trace import PAGE_SIZE, EventKind, Trace, TraceFile, write_trace
from cowahead.trace.parquet import ROW_GROUP_ROWS
from cowahead.trace.events import PAGE_SHIFT
from cowahead.trace.generators import BASE, generate

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ["none", "fixed:16", "around:16", "adaptive", "ccow", "oracle:16"]
TARGETS = {"none_fixed_events_per_s": 50e6, "ratio_to_read_only": 0.3, "adaptive_ccow_events_per_s": 20e6,
           "ratio_to_libcachesim": 2.0, "sweep_seconds": 8.0, "simulate_warm_seconds": 2.0,
           # issue 24: end to end against the loop, and the loop against the memory floor
           "end_to_end_ratio_to_loop": 0.5, "end_to_end_ratio_to_loop_oracle": 0.3, "ratio_to_memory_floor": 0.6}
END_TO_END_PATTERNS = ("random", "sequential", "hotcold")  # where the end-to-end and floor targets apply
END_TO_END_POLICIES = ("none", "fixed:16", "adaptive", "ccow", "oracle:16")
FLOOR_PATTERNS = ("random", "hotcold")
WIDE_SPREAD = 0.10


@njit(cache=True)
def read_only_loop(kind, pid, address, length):
    """Read every column a replay reads and count events by kind: the floor of any replay."""
    counts = np.zeros(8, np.int64)
    pages = pids = 0
    for i in range(kind.shape[0]):
        counts[kind[i]] += 1
        pids += pid[i]
        first, end = page_range(address[i], length[i])
        pages += end - first
    return counts, pages, pids


@njit(cache=True)
def one_child_floor(order, npages, ptes, frames, free):
    """The least memory work a one-child trace needs, in the engine's layout and with its prefetching:
    the parent zero-fills pages 0…npages-1, forks, the child writes the dense pages ``order`` (a copy
    when the PTE is write-protected, a dirty bit when not), then both exit. Counts only, no model:
    the engine's speed limit set by memory. Returns the number of copies."""
    top = 0
    for d in range(npages):  # zero-fill faults, frames from the top of the free stack as the engine
        f = free[free.shape[0] - 1 - d]
        ptes[0, d] = (f << FRAME_SHIFT) | PRESENT | WRITABLE | DIRTY
        frames[f] = MAPPED
    for d in range(npages):  # fork: both PTEs write-protected, the frame mapped twice
        pte = ptes[0, d] & ~WRITABLE
        ptes[0, d] = pte
        ptes[1, d] = pte
        frames[pte >> FRAME_SHIFT] += MAPPED
    n, copies, nxt = order.shape[0], 0, free.shape[0] - 1 - npages
    for i in range(n):
        if i + PTE_AHEAD < n:
            prefetch(ptes, 1, order[i + PTE_AHEAD])
        if i + FRAME_AHEAD < n:
            prefetch_item(frames, ptes[1, order[i + FRAME_AHEAD]] >> FRAME_SHIFT)
        d = order[i]
        pte = ptes[1, d]
        if pte & WRITABLE:
            ptes[1, d] = pte | DIRTY
            continue
        frames[pte >> FRAME_SHIFT] -= MAPPED
        new = free[nxt]
        nxt -= 1
        frames[new] = MAPPED
        ptes[1, d] = (new << FRAME_SHIFT) | PRESENT | WRITABLE | DIRTY
        copies += 1
    for s in (1, 0):  # exit: the child, then the parent
        for d in range(npages):
            if d + ZAP_AHEAD < npages:
                prefetch_item(frames, ptes[s, d + ZAP_AHEAD] >> FRAME_SHIFT)
            f = ptes[s, d] >> FRAME_SHIFT
            frames[f] -= MAPPED
            if frames[f] == 0:
                free[top] = f
                top += 1
    return copies


def one_child_order(trace: Trace) -> np.ndarray | None:
    """The child's written pages (page offsets) if the trace has the generators' one-child shape
    (mmap, the parent writes every page in order, fork, the child writes, both exit), else None."""
    c = trace.columns
    kind, npages = c["kind"], int(trace.metadata.get("pages", 0))
    W = int(EventKind.WRITE)
    shape = [int(EventKind.MMAP)] + [W] * npages + [int(EventKind.FORK)]
    if len(kind) < npages + 4 or list(kind[:npages + 2]) != shape or np.any(kind[npages + 2:-2] != W) \
            or list(kind[-2:]) != [int(EventKind.EXIT)] * 2:
        return None
    pages = (c["address"][1:] - BASE) >> PAGE_SHIFT
    if np.any(pages[:npages] != np.arange(npages)):
        return None
    return pages[npages + 1:-2].astype(np.int64)


def bench_floor(trace: Trace, runs: int) -> dict | None:
    order = one_child_order(trace)
    if order is None:
        return None
    npages = int(trace.metadata["pages"])
    frames = 2 * npages + 1024
    arrays = lambda: touched((np.zeros((4, npages), np.uint32),  # noqa: E731
                              np.zeros(frames, np.uint32), np.arange(frames, dtype=np.int32)))
    run_t, copies = timed(lambda a: one_child_floor(order, npages, *a), runs, setup=arrays)
    return {**run_t, "copies": int(copies), "events_per_s": len(trace) / run_t["median"]}


def stats(values: list[float]) -> dict:
    median = statistics.median(values)
    spread = (max(values) - min(values)) / median if median else 0.0
    return {"median": median, "min": min(values), "max": max(values), "spread": round(spread, 4),
            "values": values, "wide_spread": spread > WIDE_SPREAD}


def timed(fn, runs: int, setup=None) -> tuple[dict, object]:
    """One warm-up (kept apart, returned separately), then ``runs`` timed calls. With ``setup``, each
    call is ``fn(setup())``, the set-up made before the timer starts."""
    values, out = [], None
    for _ in range(runs + 1):
        args = () if setup is None else (setup(),)
        t = time.perf_counter()
        out = fn(*args)
        values.append(time.perf_counter() - t)
    return {"warmup_s": values[0], **stats(values[1:])}, out


def touched(st):
    """The state (or tuple of arrays) with every page written once, so no page fault lands in the timed loop."""
    for a in st:
        if isinstance(a, np.ndarray) and a.nbytes:
            a.view(np.uint8).reshape(-1)[::4096] += 0
    return st


def replay_chunks(st, decoded):
    first = 0
    for d in decoded:
        st = replay_chunk(st, d, first)
        first += len(d.kind)
    finish(st)


def read_times(path: Path, earlier: Path, runs: int) -> tuple[dict, dict]:
    """The file as a replay reads it (prepass.in_memory_if_small), in today's layout and the earlier one, in
    turn within each run; one warm-up of each kept apart."""
    today, before = [], []
    for _ in range(runs + 1):
        for values, p in ((today, path), (before, earlier)):
            t = time.perf_counter()
            in_memory_if_small(TraceFile(p))
            values.append(time.perf_counter() - t)
    return ({"warmup_s": today[0], **stats(today[1:])}, {"warmup_s": before[0], **stats(before[1:])})


def replay_times(make_state, decoded, runs: int, end_to_end) -> tuple[dict, dict, dict, object]:
    """Per run, side by side: the replay loop alone, on a state made and touched before the timer; making a
    fresh state plus the loop, where the kernel zeroes the state's memory as the loop first touches it
    (what one replay in a new process pays); and ``end_to_end()``, whose last result is returned. In
    turn within each run, so that the shared machine's mood weighs on all three alike."""
    loop, fresh, whole, out = [], [], [], None
    for run in range(runs + 1):  # the first is a warm-up
        st = touched(make_state())
        t = time.perf_counter()
        replay_chunks(st, decoded)
        loop.append(time.perf_counter() - t)
        del st
        t = time.perf_counter()
        replay_chunks(make_state(), decoded)
        fresh.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = end_to_end()
        whole.append(time.perf_counter() - t)
    return ({"warmup_s": loop[0], **stats(loop[1:])}, {"warmup_s": fresh[0], **stats(fresh[1:])},
            {"warmup_s": whole[0], **stats(whole[1:])}, out)


def result_path(benchmark: str) -> Path:
    """benchmarks/results/<benchmark>-<date>.json, or -2, -3, … where a run of the day is there already: kept."""
    day = time.strftime("%Y-%m-%d")
    out = ROOT / "benchmarks" / "results" / f"{benchmark}-{day}.json"
    for n in range(2, 100):
        if not out.exists():
            break
        out = out.with_name(f"{benchmark}-{day}-{n}.json")
    return out


def machine() -> dict:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {**machine_metadata(), "commit": commit,
            "versions": package_versions(["cowahead", "numpy", "numba", "pyarrow", "libcachesim"])}


def rewrite(pages: int, events: int | None = None) -> Trace:
    """``events`` (2 × pages) events that mostly need no fault: map pages/5, write each, then rewrite
    them at random."""
    mapped = max(1, pages // 5)
    events = 2 * pages if events is None else events
    rng = np.random.default_rng(0)
    targets = np.concatenate([np.arange(mapped), rng.integers(0, mapped, events - mapped)])
    n = len(targets) + 1
    cols = {"time_ns": np.arange(n, dtype=np.int64), "pid": np.full(n, 1000, np.int32),
            "kind": np.full(n, int(EventKind.WRITE), np.int8), "length": np.ones(n, np.uint64),
            "arg": np.arange(n, dtype=np.int64),
            "address": np.concatenate([[BASE], BASE + targets * PAGE_SIZE]).astype(np.uint64)}
    cols["kind"][0], cols["length"][0], cols["arg"][0] = int(EventKind.MMAP), mapped * PAGE_SIZE, 0
    return Trace(cols, {"source": "benchmarks/engine.py:rewrite", "pattern": "rewrite", "pages": mapped})


def trace_file(pattern: str, pages: int, cache: Path) -> Path:
    """The pattern's trace in today's layout (trace/parquet.py: COMPRESSION), generated once; a cached file
    of the earlier layout (Snappy on every column) is kept beside it as ``earlier_layout`` and written anew
    from its own events, so that both layouts of the same events can be read side by side."""
    path = cache / f"{pattern.replace(':', '_')}-{pages}.parquet"
    if not path.exists():
        print(f"generating {path} …", flush=True)
        write_trace(rewrite(pages) if pattern == "rewrite" else generate(pattern, pages=pages, seed=0), path)
    elif _compression(path, "address") != "UNCOMPRESSED":  # trace/parquet.py: COMPRESSION["address"]
        print(f"rewriting {path} in today's layout …", flush=True)
        path.rename(earlier_layout(path))
        write_trace(TraceFile(earlier_layout(path)).read(), path)
    return path


def earlier_layout(path: Path) -> Path:
    """The same events as ``path`` in the layout written before (pyarrow's defaults: Snappy and a dictionary
    on every column), made from it if missing."""
    old = path.with_name(path.stem + "-snappy.parquet")
    if not old.exists():
        table = pq.read_table(path)
        pq.write_table(table, old, row_group_size=ROW_GROUP_ROWS)
    return old


def _compression(path: Path, column: str) -> str:
    group = pq.ParquetFile(path).metadata.row_group(0)
    return next(group.column(i).compression for i in range(group.num_columns)
                if group.column(i).path_in_schema == column)


def bench_engine(path: Path, runs: int) -> dict:
    # The file as a replay reads it (replay columns, no write's value; prepass.in_memory_if_small): the
    # first stage of end to end. The file is in the page cache after the first read: Parquet's decoding,
    # not the disk.
    # Beside it, in turn within each run, the same events in the layout written before (Snappy everywhere).
    file_t, earlier_t = read_times(path, earlier_layout(path), runs)
    trace = TraceFile(path).read()  # in memory: the loop's speed, not the disk's
    events = len(trace)
    space_t, space = timed(lambda: page_space(trace), runs)
    decode_t, decoded = timed(lambda: [decode(c, space) for c in iter_chunks(trace)], runs)
    columns = [(c["kind"], c["pid"], c["address"], c["length"]) for c in iter_chunks(trace)]
    read_t, _ = timed(lambda: [read_only_loop(*c) for c in columns], runs)
    read_rate = events / read_t["median"]
    floor = bench_floor(trace, runs)
    out = {"events": events, "pages": len(space.pages), "read": file_t,
           "read_earlier_layout": {**earlier_t, "file_bytes": earlier_layout(path).stat().st_size},
           "file_bytes": path.stat().st_size, "page_space": space_t, "decode": decode_t,
           "read_only_loop": {**read_t, "events_per_s": read_rate},
           "memory_floor": floor or {"note": "not a one-child trace: no memory floor"}, "policies": {}}
    for policy in POLICIES:
        parsed = parse_policy(policy)
        future_t, oracle_future = (timed(lambda: future(trace, space, decoded=decoded), runs)
                                   if isinstance(parsed, OraclePolicy) else (None, None))
        state_t, _ = timed(lambda: new_state(space, parsed, oracle_future), runs)
        loop_t, fresh_t, end_t, (counters,) = replay_times(lambda: new_state(space, parsed, oracle_future), decoded,
                                                           runs, lambda: replay_engine(path, [policy]))
        if floor and policy == "none" and counters.cow_copy != floor["copies"]:
            raise SystemExit(f"the memory floor made {floor['copies']} copies, the engine {counters.cow_copy}: "
                             "the floor no longer does the trace's work")
        rate = events / loop_t["median"]
        out["policies"][policy] = {"replay_loop": {**loop_t, "events_per_s": rate},
                                   "fresh_state_and_loop": {**fresh_t, "events_per_s": events / fresh_t["median"]},
                                   "ratio_to_read_only": rate / read_rate,
                                   "ratio_to_memory_floor": rate / floor["events_per_s"] if floor else None,
                                   "end_to_end_from_file": {**end_t, "events_per_s": events / end_t["median"]},
                                   "end_to_end_ratio_to_loop": loop_t["median"] / end_t["median"],
                                   "new_state": state_t, **({"future": future_t} if future_t else {})}
        print(f"  {policy:10s} {rate / 1e6:7.1f} M events/s loop (spread {loop_t['spread']:.0%}), "
              f"{events / fresh_t['median'] / 1e6:6.1f} M/s with a fresh state, "
              f"{events / end_t['median'] / 1e6:6.1f} M/s end to end ({loop_t['median'] / end_t['median']:.2f} "
              f"of the loop), {rate / read_rate:.3f} of read-only"
              + (f", {rate / floor['events_per_s']:.2f} of the memory floor" if floor else ""), flush=True)
        print(f"  {'':10s} stages (s): read {file_t['median']:.3f}, page space {space_t['median']:.3f}, decode "
              f"{decode_t['median']:.3f}, " + (f"future {future_t['median']:.3f}, " if future_t else "")
              + f"state {state_t['median']:.3f}, loop {loop_t['median']:.3f}, fresh state and loop "
              f"{fresh_t['median']:.3f}; end to end {end_t['median']:.3f}", flush=True)
    print(f"  read {file_t['median']:.3f} s ({path.stat().st_size / 1e6:.0f} MB), earlier layout "
          f"{earlier_t['median']:.3f} s ({earlier_layout(path).stat().st_size / 1e6:.0f} MB)", flush=True)
    print(f"  read-only loop {read_rate / 1e6:.0f} M events/s"
          + (f"; memory floor {floor['events_per_s'] / 1e6:.0f} M events/s" if floor else ""), flush=True)
    return out


def bench_libcachesim(path: Path, runs: int) -> dict:
    """LRU over the trace's page stream (one request per page of each read and write)."""
    try:
        import libcachesim as lcs
    except ImportError:
        print("  libCacheSim is not installed (pip install -e '.[bench]'): no comparison", flush=True)
        return {"installed": False, "note": "libcachesim is not installed: pip install -e '.[bench]'"}
    trace = TraceFile(path).read()
    c = trace.columns
    rw = (c["kind"] == 3) | (c["kind"] == 4)
    first = (c["address"][rw] >> PAGE_SHIFT).astype(np.int64)
    last = ((c["address"][rw] + np.maximum(c["length"][rw], 1) - 1) >> PAGE_SHIFT).astype(np.int64)
    if np.any(last != first):
        raise SystemExit("the libCacheSim comparison expects one page per event")
    rec = np.zeros(len(first), np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")]))
    rec["t"] = np.arange(len(first))
    rec["id"] = first
    rec["size"] = 4096
    rec["next"] = -1
    unique = len(np.unique(first))
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "pages.oracleGeneral"
        rec.tofile(stream)

        # Reader and cache are made before the timer, as the engine's state is: making the LRU (its
        # hash table) took up to 0.9 s of a 3.5 s run.
        run_t, miss = timed(lambda made: made[1].process_trace(made[0]), runs,
                            setup=lambda: (lcs.TraceReader(str(stream), lcs.TraceType.ORACLE_GENERAL_TRACE),
                                           lcs.LRU(cache_size=unique // 2 * 4096)))
    rate = len(first) / run_t["median"]
    print(f"  libCacheSim LRU {rate / 1e6:.1f} M requests/s (miss ratio {miss[0]:.3f})", flush=True)
    return {"requests": int(len(first)), "cache_pages": unique // 2, "miss_ratio": miss[0],
            **run_t, "requests_per_s": rate,
            "note": "libCacheSim's Python API has no prefetcher (no OBL): LRU on the same page stream, "
                    "C trace reader (oracleGeneral); process_trace timed, reader and cache made before"}


def cowahead(*args: str) -> float:
    """Wall seconds of one ``cowahead`` command: the venv's script beside this Python (so that PYTHONPATH, a
    worktree's sources, applies as to the benchmark itself)."""
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "cowahead"), *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def rows_digest(doc: dict) -> str:
    """SHA-256 of a sweep's rows (every workload's, in order; timings are not in them): equal digests from two
    commits say their rows are equal."""
    rows = [[w["name"], w["rows"]] for w in doc["workloads"]]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def bench_sweep(path: Path, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        values, digests = [], set()
        for _ in range(runs):
            values.append(cowahead("sweep", str(path), "-o", f"{tmp}/sweep.json", "-j", "2"))
            doc = json.loads(Path(f"{tmp}/sweep.json").read_text())
            digests.add(rows_digest(doc))
        policies = len(doc["sweep"]["policies"])
    if len(digests) != 1:
        raise SystemExit(f"the sweep's rows differ between runs: {sorted(digests)}")
    print(f"  sweep of {policies} policies: {statistics.median(values):.1f} s (rows {min(digests)[:12]})", flush=True)
    return {"policies": policies, "jobs": 2, "rows_sha256": digests.pop(), **stats(values)}


# Peak memory of one replay in a new process, the trace read whole or streamed row group by row group.
PEAK_RSS_SCRIPT = r"""
import re, sys
import cowahead.engine.prepass as prepass
from cowahead.engine import replay_engine
def peak():  # VmHWM, not ru_maxrss: exec keeps the forking parent's high-water mark in the latter
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
if sys.argv[2] == "streamed":
    prepass.IN_MEMORY_SHARE = 0.0  # as a trace too big for memory
before = peak()
counters = replay_engine(sys.argv[1], ["fixed:16"])[0]
print(before, peak(), counters.events)
"""


def bench_streaming(cache: Path, events: int) -> dict:
    """Peak memory against trace length at a fixed live state (rewrite over events/25 pages; 1, 4 and 16
    times ``events`` events): streamed, it should stay flat; read whole, it grows with the trace."""
    rows, pages = [], max(5, events // 5)  # rewrite maps a fifth of its pages
    for n in (events, 4 * events, 16 * events):
        path = cache / f"rewrite-{pages}-{n}.parquet"
        if not path.exists():
            print(f"generating {path} …", flush=True)
            write_trace(rewrite(pages, n), path)
        for mode in ("streamed", "in_memory"):
            out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(path), mode], check=True,
                                 capture_output=True, text=True).stdout.split()
            before, peak, replayed = (int(x) for x in out)
            rows.append({"events": n, "mapped_pages": pages // 5, "file_bytes": path.stat().st_size,
                         "mode": mode, "rss_after_import_bytes": before, "peak_rss_bytes": peak,
                         "replayed_events": replayed})
            print(f"  streaming: {n:>11,} events {mode:>9}: peak RSS {peak / 2**20:,.0f} MiB "
                  f"({before / 2**20:,.0f} MiB after import)", flush=True)
    return {"policy": "fixed:16", "note": "peak RSS of one replay_engine call in a new process; "
            "'streamed' forces the row-group path (prepass.IN_MEMORY_SHARE = 0)", "runs": rows}


def bench_simulate(runs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        small = f"{tmp}/bgsave.parquet"
        cowahead("generate", "bgsave", "-o", small)
        warmup = cowahead("simulate", small)
        values = [cowahead("simulate", small) for _ in range(runs)]
    print(f"  simulate (bgsave, 4096 pages, six policies) warm: {statistics.median(values):.2f} s", flush=True)
    return {"trace": "bgsave, 4096 pages (22,534 events)", "warmup_s": warmup, **stats(values)}


def verdict(doc: dict) -> dict:
    """Each target against each pattern's medians: met or missed, with the figure."""
    out = {}
    for pattern, result in doc["patterns"].items():
        engine, rows = result["engine"], {}
        for policy, r in engine["policies"].items():
            rate = r["replay_loop"]["events_per_s"]
            family = policy.split(":")[0]
            goal = (TARGETS["none_fixed_events_per_s"] if family in ("none", "fixed")
                    else TARGETS["adaptive_ccow_events_per_s"] if family in ("adaptive", "ccow") else None)
            fresh = r["fresh_state_and_loop"]["events_per_s"]
            ratio = r.get("end_to_end_ratio_to_loop")
            ratio_goal = (None if pattern not in END_TO_END_PATTERNS or policy not in END_TO_END_POLICIES
                          else TARGETS["end_to_end_ratio_to_loop_oracle"] if family == "oracle"
                          else TARGETS["end_to_end_ratio_to_loop"])
            floor = r["ratio_to_memory_floor"]
            floor_goal = TARGETS["ratio_to_memory_floor"] if pattern in FLOOR_PATTERNS and family != "oracle" \
                and floor is not None else None
            rows[policy] = {"events_per_s": rate, "events_per_s_met": None if goal is None else rate >= goal,
                            "end_to_end_ratio_to_loop": ratio,
                            "end_to_end_ratio_to_loop_met": None if ratio_goal is None or ratio is None
                            else ratio >= ratio_goal,
                            "ratio_to_memory_floor_met": None if floor_goal is None else floor >= floor_goal,
                            "events_per_s_fresh_state": fresh,
                            "events_per_s_fresh_state_met": None if goal is None else fresh >= goal,
                            "ratio_to_read_only": r["ratio_to_read_only"],
                            "ratio_to_read_only_met": r["ratio_to_read_only"] >= TARGETS["ratio_to_read_only"],
                            "ratio_to_memory_floor": r["ratio_to_memory_floor"],
                            "ratio_to_libcachesim": None, "ratio_to_libcachesim_met": None}
            if result["libcachesim_lru"].get("installed", True):
                ratio = rate / result["libcachesim_lru"]["requests_per_s"]
                rows[policy].update(ratio_to_libcachesim=ratio,
                                    ratio_to_libcachesim_met=ratio >= TARGETS["ratio_to_libcachesim"])
        out[pattern] = rows
    out["sweep_met"] = doc["sweep"]["median"] <= TARGETS["sweep_seconds"]
    streamed = [r["peak_rss_bytes"] for r in doc["streaming_memory"]["runs"] if r["mode"] == "streamed"]
    out["streamed_peak_rss_flat"] = max(streamed) <= 1.25 * min(streamed)  # 16× the events, same live state
    out["simulate_warm_met"] = doc["simulate_warm"]["median"] <= TARGETS["simulate_warm_seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=5_000_000)
    parser.add_argument("--patterns", default="random,sequential,hotcold,rewrite")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sweep-runs", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cowahead-bench")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/engine-<date>.json)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    doc = {"format": "cowahead-benchmark", "version": 1, "benchmark": "engine",
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "machine": {**machine(), "load_average_start": os.getloadavg()}, "runs": args.runs, "targets": TARGETS,
           "patterns": {}}
    doc["simulate_warm"] = bench_simulate(args.runs)
    for pattern in args.patterns.split(","):
        path = trace_file(pattern, args.pages, args.cache)
        print(f"{pattern}: {path}", flush=True)
        doc["patterns"][pattern] = {"engine": bench_engine(path, args.runs),
                                    "libcachesim_lru": bench_libcachesim(path, args.runs)}
    first = args.patterns.split(",")[0]
    doc["sweep"] = {"pattern": first, **bench_sweep(trace_file(first, args.pages, args.cache), args.sweep_runs)}
    doc["streaming_memory"] = bench_streaming(args.cache, args.pages)
    doc["machine"]["load_average_end"] = os.getloadavg()
    doc["verdict"] = verdict(doc)
    out = args.out or result_path("engine")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(out)


if __name__ == "__main__":
    main()
