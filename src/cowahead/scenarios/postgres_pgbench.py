"""``postgres-pgbench``: Debian's PostgreSQL 15 under pgbench with a new connection per transaction.

A negative control: the postmaster forks a backend per connection, but
the data every backend shares, the buffer pool (``shared_buffers``), is a
``MAP_SHARED`` mapping, where fork makes no copy-on-write; a backend
breaks COW only on the postmaster's private pages it writes (globals,
its caches' first pages), and faults the shared pages in as it touches
them.

A private cluster (initdb in a temporary directory, as the ``postgres``
user through ``setpriv``; loopback, a free port, fsync off) is filled by
``pgbench -i``, then the postmaster is recorded by attaching to it
(``record --pid``) while ``pgbench -C -c CLIENTS -t TRANSACTIONS`` runs:
CLIENTS × TRANSACTIONS backends, each forked for one transaction.

The program's own counter: with ``log_statement_stats = on`` each
statement logs its backend's getrusage, and the bracketed numbers of
``page faults/reclaims`` are the backend's totals since its fork. Each
backend's last such line (pid ``%p`` and epoch milliseconds ``%n`` in the
log line prefix, turned into CLOCK_MONOTONIC with the offset between the
two clocks read at the start) is held against the trace's faults of that
backend up to that time; the comparison adds them over every backend.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import CowaheadError
from ..trace import EventKind
from ._servers import free_port
from ._common import COW, Clock, Comparison, Recorder, ScenarioResult, add_to_trace, fault_mask, model_faults

NAME = "postgres-pgbench"
SUMMARY = "PostgreSQL 15 under pgbench -C, a fork per connection (negative control); checked against each backend's getrusage"
BIN = Path("/usr/lib/postgresql/15/bin")
PACKAGE = "postgresql-15"
USER = "postgres"
SCALE = 1
CLIENTS = 2
TRANSACTIONS = 30  # per client: one backend each
# pgbench's built-in TPC-B-like transaction, then a think time: the backend's last statement report (with its
# rusage) is logged THINK seconds after its last other work, so the report's millisecond-rounded time cuts the
# trace where the backend is asleep, before the faults of its exit.
THINK = "0.003"
SCRIPT = f"""\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
SELECT pg_sleep({THINK});
"""
LAST_STATEMENT = f"SELECT pg_sleep({THINK});"
SETTINGS = {"shared_buffers": "32MB", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "log_statement_stats": "on", "log_line_prefix": "%p %n ", "log_destination": "stderr",
            "logging_collector": "off", "autovacuum": "off", "huge_pages": "off", "max_connections": "20"}
PREFIX = re.compile(r"^(\d+) (\d+)\.(\d{3}) ")  # log_line_prefix "%p %n "
FAULTS = re.compile(r"\d+/\d+ \[(\d+)/(\d+)\] page faults/reclaims")  # this statement's, [the process's totals]


class Postgres:
    """A PostgreSQL cluster of our own, run as the postgres user, on loopback, in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        if not (BIN / "postgres").exists():
            raise CowaheadError(f"{BIN / 'postgres'} not found; install the Debian package {PACKAGE} (scripts/setup does)")
        try:
            self.user = pwd.getpwnam(USER)
        except KeyError:
            raise CowaheadError(f"no user {USER!r}; the Debian package {PACKAGE} creates it") from None
        if os.geteuid() != 0:
            raise CowaheadError("postgres-pgbench runs the cluster as the postgres user: run as root")
        self.directory, self.data, self.log = directory, directory / "data", directory / "postgres.log"
        os.chown(directory, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self._as_user([str(BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync"])
        options = [item for key, value in SETTINGS.items() for item in ("-c", f"{key}={value}")]
        with open(self.log, "wb") as log:  # the server log is the postmaster's stderr, inherited by every backend
            self.process = subprocess.Popen(
                self._user_command([str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                                    "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}",
                                    *options]),
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while subprocess.run([str(BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CowaheadError(f"postgres did not start on port {self.port}; see {self.log}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid  # setpriv execs postgres: the postmaster itself

    def _user_command(self, command: list[str]) -> list[str]:
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups", "--", *command]

    def _as_user(self, command: list[str]) -> None:
        done = subprocess.run(self._user_command(command), capture_output=True, text=True, cwd=self.directory)
        if done.returncode != 0:
            raise CowaheadError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")

    def pgbench(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, *args,
                               "postgres"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise CowaheadError(f"pgbench failed: {done.stderr.strip().splitlines()[-1:]}")
        return done.stdout

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: smart shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def last_stats(log: str, offset_ns: int) -> dict[int, dict]:
    """Each pid's last ``log_statement_stats`` report: its total minor + major faults, the statement, and the
    CLOCK_MONOTONIC time of the report (the prefix's epoch milliseconds, less ``offset_ns``, CLOCK_REALTIME -
    CLOCK_MONOTONIC; at most 1 ms early). The report's lines after the prefixed one carry no prefix; the
    statement follows them on a prefixed ``STATEMENT:`` line."""
    found: dict[int, dict] = {}
    pid = when = None
    for line in log.splitlines():
        prefixed = PREFIX.match(line)
        if prefixed:
            pid = int(prefixed.group(1))
            when = int(prefixed.group(2)) * 10**9 + int(prefixed.group(3)) * 10**6 - offset_ns
            statement = line.partition(" STATEMENT:  ")[2]
            if statement and pid in found:
                found[pid]["statement"] = statement
            continue
        faults = FAULTS.search(line)
        if faults and pid is not None:
            majflt, minflt = int(faults.group(1)), int(faults.group(2))
            found[pid] = {"faults": majflt + minflt, "time_ns": when, "statement": None}
    return found


def run(output: Path | None, progress=None) -> ScenarioResult:
    if shutil.which("setpriv") is None:
        raise CowaheadError("setpriv not found; install the Debian package util-linux")
    clock = Clock()
    offset_ns = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    with tempfile.TemporaryDirectory(prefix="cowahead-postgres-") as tmp:
        postgres = None
        recorder = None
        try:
            with clock.time("setup"):
                postgres = Postgres(Path(tmp))
                postgres.pgbench("-i", "-q", "-s", str(SCALE))
            if output is not None:
                recorder = Recorder(output)
                recorder.start(pid=postgres.pid)
                time.sleep(1.0)  # perf attaches before the load starts
            if progress:
                progress("record", None, None)
            with clock.time("workload"):
                script = Path(tmp) / "tpcb-think.sql"
                script.write_text(SCRIPT)
                report = postgres.pgbench("-C", "-n", "-c", str(CLIENTS), "-j", "1", "-t", str(TRANSACTIONS),
                                          "-f", str(script))
            time.sleep(0.5)  # the last backends exit
            recording = None
            if recorder is not None:
                recorder.stop()
                recording = recorder.finish(progress)
            postmaster = postgres.pid
        finally:
            if recorder is not None and recorder.process is not None and recorder.process.poll() is None:
                recorder.stop()
            if postgres is not None:
                postgres.stop()
        log = postgres.log.read_text(errors="replace")
    drift_ns = (time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) - offset_ns
    stats = last_stats(log, offset_ns)
    result = ScenarioResult(NAME, output, recording, seconds=dict(clock.seconds))
    tps = re.search(r"tps = ([\d.]+)", report)
    result.details.update({"clients": CLIENTS, "transactions_per_client": TRANSACTIONS, "scale": SCALE,
                           "shared_buffers": SETTINGS["shared_buffers"], "tps": float(tps.group(1)) if tps else None,
                           "postmaster": postmaster, "processes_with_stats": len(stats),
                           "clock_offset_drift_us": drift_ns / 1e3})
    if recording is None:
        return result
    _compare(result, recording, postmaster, stats)
    add_to_trace(output, recording, result)
    return result


def _compare(result: ScenarioResult, recording, postmaster: int, stats: dict[int, dict]) -> None:
    trace = recording.trace
    c = trace.columns
    forks = np.flatnonzero((c["kind"] == EventKind.FORK) & (c["pid"] == postmaster))
    children = [int(c["arg"][i]) for i in forks]
    backends = [pid for pid in children if pid in stats and stats[pid]["statement"] == LAST_STATEMENT]
    if len(backends) < CLIENTS * TRANSACTIONS:
        raise CowaheadError(f"{len(backends)} backends with statement stats in the trace, expected "
                            f"{CLIENTS * TRANSACTIONS} or more")
    per_backend = []
    for pid in backends:
        traced = int(fault_mask(trace, [pid], end_ns=stats[pid]["time_ns"]).sum())
        per_backend.append((traced, stats[pid]["faults"]))
    traced_total = sum(t for t, _ in per_backend)
    program_total = sum(p for _, p in per_backend)
    result.comparisons.append(Comparison(
        f"faults of the {len(backends)} backends", traced_total, program_total, "faults",
        "trace: each pgbench transaction's backend's faults from its fork to its last statement's log time; "
        "program: the totals (bracketed) of log_statement_stats' page faults/reclaims in that statement's report"))
    differences = [(t - p) / p for t, p in per_backend if p]
    log = model_faults(trace)
    kinds: dict[str, int] = {}
    backend_set = set(backends)
    for _, pid, _, kind in log:
        if pid in backend_set:
            kinds[kind] = kinds.get(kind, 0) + 1
    result.details.update({
        "backends": len(backends), "postmaster_children_in_trace": len(children),
        "worst_backend_difference": max(differences, key=abs) if differences else None,
        "backend_faults_mean": program_total / len(backends),
        "model_backend_faults_by_kind": kinds,
        "trace_backend_cow_0x7_faults": int(fault_mask(trace, backends, codes=(COW,)).sum())})
