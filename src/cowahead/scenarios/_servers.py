"""What the server scenarios share: a free loopback port, waiting for a server, its children, and ab.

A prefork server (gunicorn, unicorn) runs the same way in every scenario:
started (recorded or plain), waited for until it listens and has forked
its workers, loaded with ``ab``, then stopped gracefully so that every
worker reports before it exits. ``serve_under_ab`` is that run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CowaheadError
from ..record import Recording
from ..trace import Trace
from ._common import COW, Clock, Comparison, ScenarioResult, fault_mask, launched

START_SECONDS = 60  # to listen, and then to fork every worker, on a loaded machine


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, process: subprocess.Popen, deadline: float) -> bool:
    """Waits until something accepts on ``port``: False if ``process`` ends or the deadline passes first."""
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The processes ``pid`` forked that still run (its main thread's children list); none once it is gone."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def failed_requests(ab_output: str) -> int:
    """Requests ab saw fail (connect, receive, exceptions, non-2xx); ab's "Length" failures are only responses
    whose length differs from the first one's, which a dynamic page's do."""
    failed = 0
    for line in ab_output.splitlines():
        line = line.strip()
        if line.startswith("(Connect:"):
            parts = dict(part.strip().split(": ") for part in line.strip("()").split(","))
            failed += sum(int(v) for k, v in parts.items() if k != "Length")
        if line.startswith("Non-2xx responses:"):
            failed += int(line.split()[-1])
    return failed


def requests_per_second(ab_output: str) -> float | None:
    for line in ab_output.splitlines():
        if line.startswith("Requests per second:"):
            return float(line.split()[3])
    return None


@dataclass
class PreforkServer:
    """How to run one prefork server: its command, where it listens and writes its master's pid, its workers."""
    what: str              # the server's name, for errors
    command: list[str]
    port: int
    pidfile: Path
    workers: int
    url: str               # what ab requests
    stop_signal: int       # the master's graceful stop: workers finish, report and exit, then the master
    log: Path | None = None  # the server's own log, named in errors

    def fail(self, what: str) -> CowaheadError:
        return CowaheadError(f"{self.what} {what}" + (f"; see {self.log}" if self.log else ""))


@dataclass
class Served:
    recording: Recording | None
    master: int
    ab_output: str


def serve_under_ab(server: PreforkServer, output: Path | None, clock: Clock, requests: int, concurrency: int,
                   progress=None) -> Served:
    """Start ``server`` (recorded into ``output`` if given), wait for its workers, put ``requests`` through ab
    (timed as the workload), stop it gracefully and wait for it (and its recording) to end."""
    with launched(server.command, output) as (recorder, process):
        if progress:
            progress("record", None, None)
        if not listening(server.port, process, time.monotonic() + START_SECONDS):
            raise server.fail(f"did not start listening on port {server.port}")
        deadline = time.monotonic() + START_SECONDS
        while not server.pidfile.exists() or len(children(int(server.pidfile.read_text()))) < server.workers:
            if time.monotonic() > deadline:
                raise server.fail(f"did not start {server.workers} workers")
            time.sleep(0.05)
        master = int(server.pidfile.read_text())
        with clock.time("workload"):
            load = subprocess.run(["ab", "-q", "-n", str(requests), "-c", str(concurrency), server.url],
                                  capture_output=True, text=True)
        if load.returncode != 0:
            raise CowaheadError(f"ab failed: {(load.stderr or load.stdout).strip().splitlines()[-1:]}")
        os.kill(master, server.stop_signal)
        recording = None
        if recorder is not None:
            recording = recorder.finish(progress)
        else:
            process.wait(timeout=START_SECONDS)
    return Served(recording, master, load.stdout)


def compare_workers(result: ScenarioResult, trace: Trace, workers: list[dict], note: str) -> None:
    """Each worker's faults in the trace, from its fork to the CLOCK_MONOTONIC ``time_ns`` of its report,
    against the ``minflt + majflt`` it reported then; and its COW faults in that span."""
    workers = sorted(workers, key=lambda w: w["pid"])
    for number, w in enumerate(workers, start=1):
        faults = int(fault_mask(trace, [w["pid"]], end_ns=w["time_ns"]).sum())
        result.comparisons.append(Comparison(f"faults of worker {number}", faults, w["minflt"] + w["majflt"],
                                             "faults", note))
    result.details["trace_cow_0x7_faults_per_worker"] = [
        int(fault_mask(trace, [w["pid"]], end_ns=w["time_ns"], codes=(COW,)).sum()) for w in workers]
