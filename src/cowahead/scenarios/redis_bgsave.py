"""``redis-bgsave``: Debian's redis-server snapshotting while redis-benchmark writes.

A private redis-server (loopback, a free port, a temporary directory, no
persistence of its own) is filled by redis-benchmark, then recorded by
attaching to it (``record --pid``: its pages so far come from pagemap)
while a second redis-benchmark keeps overwriting values and BGSAVE forks
the child that writes the RDB file. The program's own counter is INFO's
``rdb_last_cow_size``: the child's Private_Dirty bytes (smaps) at the end
of the save, which is one page per COW copy made by either process while
the child lived, plus the child's own new pages.

The trace side therefore replays the recording through the reference model
(policy none) and counts, between the fork and the child's exit, COW
copies by the server and the child plus zero-fill faults of the child.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import CowaheadError
from ..trace import PAGE_SIZE, EventKind
from ._servers import free_port
from ._common import (COW, Clock, Comparison, Recorder, ScenarioResult, add_to_trace, fault_mask, model_with_probes,
                      private_anon_pages)

NAME = "redis-bgsave"
SUMMARY = "Debian redis-server BGSAVE under redis-benchmark writes; checked against INFO rdb_last_cow_size"
KEYS = 300_000
VALUE_BYTES = 256
FILL_REQUESTS = 1_000_000
WRITES_BEFORE_SAVE = 0.5  # seconds of benchmark writes before BGSAVE, so the save runs under load
PACKAGE = "redis-server"


class Redis:
    """A redis-server of our own, on loopback, in a temporary directory."""

    def __init__(self, directory: Path, keys: int = KEYS, config: tuple[str, ...] = (), launch=None) -> None:
        """``config``: more redis-server arguments (``--save``, ``--disable-thp`` ...), after the defaults.
        ``launch(command)``, if given, starts the server and returns its process (or its recorder's)."""
        for tool in ("redis-server", "redis-cli", "redis-benchmark"):
            if shutil.which(tool) is None:
                raise CowaheadError(f"{tool} not found; install the Debian package {PACKAGE} (scripts/setup does)")
        self.port = free_port()
        self.directory = directory
        self.keys = keys
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
                   "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no",
                   "--logfile", str(directory / "redis.log"), *config]
        if launch is None:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self.process = launch(command)
        deadline = time.monotonic() + 20
        while self.cli("PING") != "PONG":
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CowaheadError(f"redis-server did not start on port {self.port}; see {directory / 'redis.log'}")
            time.sleep(0.05)
        self.pid = int(self.info("server")["process_id"])  # the server's own, whoever started it

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip()

    def info(self, section: str) -> dict[str, str]:
        lines = self.cli("INFO", section).splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))

    def benchmark(self, requests: int, wait: bool) -> subprocess.Popen:
        """redis-benchmark SETs of random keys in 0..keys-1, pipelined."""
        process = subprocess.Popen(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(self.port), "-t", "set", "-r", str(self.keys),
             "-d", str(VALUE_BYTES), "-n", str(requests), "-P", "16", "-c", "4", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait:
            process.wait()
        return process

    def bgsave(self) -> dict[str, str]:
        """BGSAVE and wait for the child to finish; INFO persistence afterwards."""
        before = int(self.info("persistence").get("rdb_saves", "0") or 0)
        if "started" not in self.cli("BGSAVE"):
            raise CowaheadError("redis-server refused BGSAVE")
        deadline = time.monotonic() + 300
        while True:
            info = self.info("persistence")
            if info.get("rdb_bgsave_in_progress") == "0" and int(info.get("rdb_saves", "0") or 0) > before:
                return info
            if time.monotonic() > deadline:
                raise CowaheadError("BGSAVE did not finish in 5 minutes")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.cli("SHUTDOWN", "NOSAVE")  # a recorder's perf exits with the server
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run(output: Path | None, progress=None) -> ScenarioResult:
    with tempfile.TemporaryDirectory(prefix="cowahead-redis-") as tmp:
        redis = Redis(Path(tmp))
        clock = Clock()
        recorder = Recorder(output) if output is not None else None
        recording, info, memory = under_writes(redis, recorder, clock, bgsave_under_writes(redis, clock), progress)
    result = ScenarioResult(NAME, output, recording, seconds={"workload": clock.seconds["bgsave"], **clock.seconds})
    cow_bytes = int(info.get("rdb_last_cow_size", "0"))
    result.details.update({"rdb_last_cow_size": cow_bytes, "rdb_last_cow_pages": cow_bytes / PAGE_SIZE,
                           "used_memory": int(memory.get("used_memory", "0")), "keys": KEYS,
                           "value_bytes": VALUE_BYTES, "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status")})
    if recording is None:
        return result
    _compare(result, recording, redis.pid, cow_bytes)
    add_to_trace(output, recording, result)
    return result


def per_policy(row: dict, details: dict) -> dict:
    """In rdb_last_cow_size's terms, the pages the BGSAVE child would own at the end of its save under the
    row's policy: those copied, on demand or ahead, by either process while the child lived (the replay's
    ``child_copied_pages``), and the child's own new pages, which no policy changes (the recording's model
    count)."""
    if row.get("child_copied_pages") is None or "model_child_zero_fills" not in details:
        return {}
    pages = row["child_copied_pages"] + details["model_child_zero_fills"]
    return {"rdb_cow_pages": pages, "rdb_cow_mib": round(pages * PAGE_SIZE / (1 << 20), 3)}


def under_writes(redis: Redis, recorder: Recorder | None, clock: Clock, action, progress=None,
                 attach: bool = True, fill: int = FILL_REQUESTS):
    """Fill ``redis``, run ``action()`` while redis-benchmark writes, then stop the recording and the server:
    (recording or None, what ``action`` returned, INFO memory before the writes).

    With ``attach`` the recorder attaches to the filled server; without, it was started with the server (at
    its exec) and perf ends when the server shuts down."""
    writer = None
    try:
        with clock.time("fill"):
            redis.benchmark(fill, wait=True)
        memory = redis.info("memory")
        if recorder is not None and attach:
            recorder.start(pid=redis.pid)
            time.sleep(1.0)  # perf attaches to every thread before the load starts
        if progress:
            progress("record", None, None)
        with clock.time("workload"):
            writer = redis.benchmark(100_000_000, wait=False)
            outcome = action()
        writer.terminate()
        writer.wait()
        recording = None
        if recorder is not None:
            if attach:
                recorder.stop()
            else:
                redis.cli("SHUTDOWN", "NOSAVE")  # perf ends with the server it started
            recording = recorder.finish(progress)
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        if recorder is not None and recorder.process is not None and recorder.process.poll() is None:
            recorder.stop()
        redis.stop()
    return recording, outcome, memory


def bgsave_under_writes(redis: Redis, clock: Clock, before_save=None):
    """The action of a BGSAVE run: writes alone for a moment, ``before_save()`` if given, then BGSAVE under
    the writes; INFO persistence after."""
    def action():
        time.sleep(WRITES_BEFORE_SAVE)
        if before_save is not None:
            before_save()
        with clock.time("bgsave"):
            return redis.bgsave()
    return action


def _compare(result: ScenarioResult, recording, server: int, cow_bytes: int) -> None:
    trace = recording.trace
    saves = saves_in_trace(trace, server)
    if len(saves) != 1:
        raise CowaheadError(f"expected one fork of redis-server in the trace, found {len(saves)}")
    [save] = model_saves(trace, server)[0]
    result.comparisons.append(Comparison(
        "pages the BGSAVE child ends up owning", save["model_private_pages"], cow_bytes / PAGE_SIZE, "pages",
        COUNTER_NOTE))
    result.details.update({"child": save["child"], "model_cow_copies": save["model_cow_copies"],
                           "model_copies_and_child_zero_fills": save["pages"],
                           "model_child_zero_fills": save["model_child_zero_fills"],
                           "trace_cow_0x7_faults_during_save": save["trace_cow_0x7_faults"],
                           "bgsave_child_life_ms": save["child_life_ms"]})


COUNTER_NOTE = ("trace: the child's anonymous pages no other mapping shares, in the reference model (policy none) "
                "just before the child's exit; program: INFO rdb_last_cow_size / 4096 (the child's Private_Dirty at "
                "the end of the save)")


def model_saves(trace, server: int, probes: dict | None = None):
    """One replay of the reference model (policy none) for every save of the server: (save_pages' dict plus
    ``model_private_pages``, the child's private anonymous pages just before its exit, per save; the Kernel).
    Private pages are what the child's smaps counts: its COW copies and zero-fills, the pages the server
    copied away from it, and the pages the server unmapped or MADV_DONTNEED'd (jemalloc's purging) while the
    child still mapped them, which no fault shows. ``probes``: more model_with_probes probes."""
    saves = saves_in_trace(trace, server)
    private: dict[int, int] = {}
    probes = dict(probes or {})
    for _, child, end in saves:
        probes[end] = lambda kernel, child=child: private.__setitem__(child, private_anon_pages(kernel, child))
    kernel = model_with_probes(trace, probes)
    return [{**save_pages(trace, kernel.fault_log, server, save), "model_private_pages": private[save[1]]}
            for save in saves], kernel


def saves_in_trace(trace, server: int) -> list[tuple[int, int, int]]:
    """Each fork of the server as (fork event index, child pid, index of the child's exit or the trace's end)."""
    c = trace.columns
    saves = []
    for fork in np.flatnonzero((c["kind"] == EventKind.FORK) & (c["pid"] == server)).tolist():
        child = int(c["arg"][fork])
        exits = np.flatnonzero((c["kind"] == EventKind.EXIT) & (c["pid"] == child))
        saves.append((fork, child, int(exits[0]) if len(exits) else len(trace)))
    return saves


def save_pages(trace, log, server: int, save: tuple[int, int, int]) -> dict:
    """What the trace says of one save: the model's (``log``: model_faults) COW copies by server and child
    and the child's zero-fills between the fork and the child's exit; ``pages`` is their sum, the trace's
    side of rdb_last_cow_size."""
    fork, child, end = save
    during = [(pid, kind) for index, pid, _, kind in log if fork < index < end]
    copies = sum(kind == "cow_copy" and pid in (server, child) for pid, kind in during)
    child_new = sum(kind == "zero_fill" and pid == child for pid, kind in during)
    c = trace.columns
    t0, t1 = int(c["time_ns"][fork]), int(c["time_ns"][end - 1])
    raw = int(fault_mask(trace, [server, child], t0, t1, (COW,)).sum())
    return {"child": child, "pages": copies + child_new, "model_cow_copies": copies,
            "model_child_zero_fills": child_new, "trace_cow_0x7_faults": raw, "child_life_ms": (t1 - t0) / 1e6}
