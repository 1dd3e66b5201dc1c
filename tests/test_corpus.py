"""The corpus of real fork-heavy programs (issue 21): each scenario run for real, recorded, and held against
its program's own counter.

The recorded tests need perf and root, like tests/test_record.py (they skip, saying why, where tracepoints
are not permitted). Besides each scenario's own comparisons (which must agree within 5 %), each test checks
the trace read back from its file against what the program said, by counts that do not go through the
scenario's code: forks seen by perf, raw COW-type (0x7) faults as a lower bound of COW copies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import requires
from cowahead.errors import CowaheadError
from cowahead.scenarios._servers import failed_requests
from cowahead.scenarios import (DEFAULT_SCENARIOS, SCENARIOS, gunicorn_preload, gunicorn_preload_freeze, redis_periodic,
                                make_build, php_fpm, postgres_pgbench, r_mclapply, redis_thp, ruby_prefork,
                                ruby_prefork_nakayoshi)
from cowahead.trace import PAGE_SIZE, EventKind, VmaKind, read_trace

COW = 0x7


def perf_unavailable() -> str | None:
    """Why perf cannot record page-fault tracepoints here (None: it can, or perf is missing, which requires()
    below fails on). Asked once for the module, not once per test (test_record.py asks per test)."""
    if shutil.which("perf") is None:
        return None
    if os.geteuid() != 0 and Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip() != "-1":
        return "kernel tracepoints need root or sysctl kernel.perf_event_paranoid=-1"
    probe = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "-e", "exceptions:page_fault_user", "--", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"perf cannot record exceptions:page_fault_user here: {probe.stderr.strip()[:120]}"
    return None


PERF_UNAVAILABLE = perf_unavailable()


def needs_perf(test):
    test = pytest.mark.skipif(PERF_UNAVAILABLE is not None, reason=str(PERF_UNAVAILABLE))(test)
    return requires("perf", "linux-perf")(test)


def forks_of(trace, pid: int) -> list[tuple[int, int]]:
    """(event index, child pid) of each FORK by ``pid``."""
    c = trace.columns
    return [(int(i), int(c["arg"][i])) for i in np.flatnonzero((c["kind"] == EventKind.FORK) & (c["pid"] == pid))]


def cow_faults_between(trace, pids, start: int, end: int) -> int:
    """Raw 0x7 faults (present|write|user: a COW copy or a reuse) of ``pids`` between two event indices."""
    c = trace.columns
    index = np.arange(len(trace))
    mask = (c["kind"] == EventKind.WRITE) & (c["arg"] == COW) & np.isin(c["pid"], list(pids))
    return int((mask & (index > start) & (index < end)).sum())


def test_corpus_scenarios_are_listed_but_not_in_the_default_evaluate():
    assert {"redis-periodic", "redis-thp"} <= set(SCENARIOS)
    assert set(DEFAULT_SCENARIOS) == {"redis-bgsave", "python-forkpool", "shell-forkexec"}


# ----- redis-periodic ---------------------------------------------------------------------------


class ScriptedRedis:
    """INFO persistence answers from a script, one per read; CONFIG SET noted."""

    def __init__(self, script: list[dict[str, str]]) -> None:
        self.script = script
        self.reads = 0
        self.rule = None
        self.directory = "/nonexistent"

    def info(self, section: str) -> dict[str, str]:
        answer = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        return dict(answer)

    def cli(self, *args: str) -> str:
        self.rule = args[-1]
        return "OK"


def persistence(saves: int, running: bool, cow: int = 0) -> dict[str, str]:
    return {"rdb_saves": str(saves), "rdb_bgsave_in_progress": "1" if running else "0",
            "rdb_last_cow_size": str(cow), "rdb_last_bgsave_status": "ok", "rdb_last_bgsave_time_sec": "1"}


def test_periodic_notes_each_save_as_it_ends_and_waits_out_a_running_one(monkeypatch):
    monkeypatch.setattr(redis_periodic, "POLL", 0)
    script = [persistence(0, False),                       # before the rule goes on
              persistence(0, True), persistence(1, False, 4096),
              persistence(1, True), persistence(2, False, 8192),
              persistence(2, True),                        # the rule goes off while save 3 runs ...
              persistence(2, True), persistence(3, False, 12288),  # ... which is waited for and counted
              persistence(3, False)]
    redis = ScriptedRedis(script)
    done = redis_periodic._snapshots(redis, 2)
    assert [d["rdb_last_cow_size"] for d in done] == [4096, 8192, 12288]
    assert redis.rule == ""  # the rule is off again


def test_periodic_refuses_to_lose_a_save_between_two_reads(monkeypatch):
    monkeypatch.setattr(redis_periodic, "POLL", 0)
    redis = ScriptedRedis([persistence(0, False), persistence(0, True), persistence(2, False, 4096)])
    with pytest.raises(CowaheadError, match="2 saves ended between two INFO reads"):
        redis_periodic._snapshots(redis, 3)


@needs_perf
@requires("redis-server", "redis-server")
@requires("redis-benchmark", "redis-tools")
def test_redis_periodic_snapshots_three_times_and_agrees_with_rdb_last_cow_size(tmp_path):
    out = tmp_path / "periodic.parquet"
    result = redis_periodic.run(out)
    program = result.details["program_saves"]
    assert len(program) >= 3
    assert len(result.comparisons) == len(program)
    for c in result.comparisons:
        assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    trace = read_trace(out)
    server = trace.metadata["recorded_pid"]
    forks = forks_of(trace, server)
    assert len(forks) == len(program)  # perf saw every fork redis-server said it made
    c = trace.columns
    for (fork, child), said in zip(forks, program):
        exits = np.flatnonzero((c["kind"] == EventKind.EXIT) & (c["pid"] == child))
        assert len(exits) == 1
        pages = said["rdb_last_cow_size"] / PAGE_SIZE
        assert pages > 1000  # the writes really hit the snapshot
        # Every page the child ends up owning was a write fault of server or child (a COW copy) or a
        # child zero-fill: the raw 0x7 faults alone make at least 95 % of it.
        assert cow_faults_between(trace, (server, child), fork, int(exits[0])) >= 0.95 * pages
    assert trace.metadata["scenario"]["name"] == "redis-periodic"


# ----- redis-thp --------------------------------------------------------------------------------


@needs_perf
@requires("redis-server", "redis-server")
@requires("redis-benchmark", "redis-tools")
def test_redis_thp_saves_from_thps_agrees_and_puts_the_knob_back(tmp_path):
    knob = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    before = knob.read_text()
    out = tmp_path / "thp.parquet"
    result = redis_thp.run(out)
    assert knob.read_text() == before
    assert len(result.comparisons) == 2
    for c in result.comparisons:
        assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    trace = read_trace(out)
    assert trace.metadata["thp"]["enabled"] == "always"
    # The heap really was in THPs when the child forked (at least a quarter of Redis's used memory) ...
    assert result.details["server_anon_huge_pages_before_save"] * PAGE_SIZE > result.details["used_memory"] / 4
    # ... and the parent's writes split some (vmstat, machine-wide: other processes can only add to it).
    assert result.details["vmstat_thp_deltas_machine_wide"].get("thp_split_pmd", 0) >= 1
    assert trace.metadata["recorded_pid"] is None  # recorded from the server's exec
    server = result.details["server"]
    [(fork, child)] = forks_of(trace, server)
    c = trace.columns
    [end] = np.flatnonzero((c["kind"] == EventKind.EXIT) & (c["pid"] == child))
    assert cow_faults_between(trace, (server, child), fork, int(end)) >= 0.95 * result.details["rdb_last_cow_size"] / PAGE_SIZE


# ----- gunicorn-preload, with and without gc.freeze() -------------------------------------------


def test_ab_failures_leave_out_length_differences():
    out = "Failed requests:        7\n   (Connect: 0, Receive: 1, Length: 5, Exceptions: 1)\nNon-2xx responses:      3\n"
    assert failed_requests(out) == 5


def _gunicorn_checked(result, out) -> list[int]:
    """The scenario's comparisons agree, perf saw the master fork each worker, no request failed; each
    worker's raw 0x7 faults, from the trace file."""
    assert len(result.comparisons) == gunicorn_preload.WORKERS + 1
    for c in result.comparisons:
        assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    assert result.details["failed_requests"] == 0
    trace = read_trace(out)
    master = result.details["master"]
    workers = sorted(child for _, child in forks_of(trace, master))
    assert workers == sorted(r["pid"] for r in result.details["reports"] if r["role"] == "worker")
    return [cow_faults_between(trace, [w], -1, len(trace)) for w in workers]


@needs_perf
@requires("ab", "apache2-utils")
def test_gunicorn_preload_agrees_and_gc_freeze_halves_the_workers_cow_faults(tmp_path):
    plain = gunicorn_preload.run(tmp_path / "plain.parquet")
    frozen = gunicorn_preload_freeze.run(tmp_path / "frozen.parquet")
    assert frozen.name == "gunicorn-preload-freeze" and frozen.details["freeze"]
    plain_cow = _gunicorn_checked(plain, tmp_path / "plain.parquet")
    frozen_cow = _gunicorn_checked(frozen, tmp_path / "frozen.parquet")
    assert min(w["frozen"] for w in frozen.details["reports"]) > gunicorn_preload.RECORDS  # the catalog is frozen
    # Without the freeze a worker's full collection writes the GC header of every catalog object: Instagram's
    # finding. Frozen, each worker breaks COW on well under two thirds of what it did.
    assert sum(frozen_cow) < 0.67 * sum(plain_cow)


# ----- postgres-pgbench -------------------------------------------------------------------------

POSTGRES_LOG = """\
14285 1796148718.195 LOG:  QUERY STATISTICS
14285 1796148718.195 DETAIL:  ! system usage stats:
\t!\t0.000366 s user, 0.000000 s system, 0.000366 s elapsed
\t!\t0/4 [0/504] page faults/reclaims, 0 [0] swaps
14285 1796148718.195 STATEMENT:  UPDATE pgbench_tellers SET tbalance = tbalance + 2471 WHERE tid = 7;
14290 1796148718.201 LOG:  QUERY STATISTICS
14290 1796148718.201 DETAIL:  ! system usage stats:
\t!\t0/0 [2/480] page faults/reclaims, 0 [0] swaps
14290 1796148718.201 STATEMENT:  END;
14285 1796148718.199 LOG:  QUERY STATISTICS
14285 1796148718.199 DETAIL:  ! system usage stats:
\t!\t0/3 [0/511] page faults/reclaims, 0 [0] swaps
14285 1796148718.199 STATEMENT:  SELECT pg_sleep(0.003);
14184 1796148718.507 LOG:  received smart shutdown request
"""


def test_postgres_log_gives_each_backends_last_totals_and_statement():
    stats = postgres_pgbench.last_stats(POSTGRES_LOG, offset_ns=1_000_000_000)
    assert set(stats) == {14285, 14290}
    assert stats[14285] == {"faults": 511, "time_ns": 1796148717_199_000_000, "statement": "SELECT pg_sleep(0.003);"}
    assert stats[14290] == {"faults": 482, "time_ns": 1796148717_201_000_000, "statement": "END;"}


@needs_perf
@requires("/usr/lib/postgresql/15/bin/postgres", "postgresql-15")
def test_postgres_pgbench_agrees_with_each_backends_rusage(tmp_path):
    out = tmp_path / "pg.parquet"
    result = postgres_pgbench.run(out)
    [c] = result.comparisons
    assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    backends = postgres_pgbench.CLIENTS * postgres_pgbench.TRANSACTIONS
    assert result.details["backends"] == backends
    trace = read_trace(out)
    postmaster = trace.metadata["recorded_pid"]
    assert len(forks_of(trace, postmaster)) >= backends  # a fork per connection, seen by perf
    # The negative control's premise: the buffer pool (shared_buffers, 32 MB) is one MAP_SHARED mapping.
    col = trace.columns
    shared = (col["kind"] == EventKind.MMAP) & (col["pid"] == postmaster) & (col["arg"] == int(VmaKind.SHARED_ANON))
    assert col["length"][shared].max() >= 32 << 20


# ----- make-build -------------------------------------------------------------------------------


@needs_perf
@requires("make", "build-essential")
def test_make_build_agrees_with_wait4_rusage(tmp_path):
    out = tmp_path / "make.parquet"
    result = make_build.run(out)
    [c] = result.comparisons
    assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    trace = read_trace(out)
    col = trace.columns
    wrapper = result.details["rusage"]["wrapper"]
    execs = int(((col["kind"] == EventKind.EXEC) & (col["pid"] != wrapper)).sum())
    # make, then per source gcc, cc1 and as; then gcc, collect2 and ld for the link
    assert execs >= 1 + 3 * (make_build.SOURCES + 1) + 3


# ----- r-mclapply -------------------------------------------------------------------------------


@needs_perf
@requires("Rscript", "r-base-core")
def test_r_mclapply_agrees_with_wait4_rusage_and_children_break_cow(tmp_path):
    out = tmp_path / "r.parquet"
    result = r_mclapply.run(out)
    [c] = result.comparisons
    assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    trace = read_trace(out)
    children = [t["pid"] for t in result.details["tasks"]]
    assert len(set(children)) == r_mclapply.TASKS  # a fork per task (mc.preschedule = FALSE)
    forked = {child for pid in set(trace.columns["pid"].tolist()) for _, child in forks_of(trace, pid)}
    assert set(children) <= forked
    for task in result.details["tasks"]:
        # the child's own /proc/self/stat count at its task's end: its trace faults are at least that many
        # (the trace runs on to its exit), and most of them break COW on the parent's list
        traced = cow_faults_between(trace, [task["pid"]], -1, len(trace))
        assert traced > 0.5 * task["faults"]


# ----- php-fpm ----------------------------------------------------------------------------------


@needs_perf
@requires("php-fpm8.2", "php8.2-fpm")
def test_php_fpm_agrees_with_each_workers_getrusage(tmp_path):
    out = tmp_path / "php.parquet"
    result = php_fpm.run(out)
    [c] = result.comparisons
    assert c.agrees, f"{c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
    assert result.details["requests"] == php_fpm.REQUESTS
    trace = read_trace(out)
    master = result.details["master"]
    workers = {child for _, child in forks_of(trace, master)}
    assert len(workers) == php_fpm.WORKERS
    assert {a["pid"] for a in result.details["last_answers"]} <= workers  # every answer came from a forked worker
    # OPcache's segment (opcache.memory_consumption = 32 MB) is MAP_SHARED: no COW there
    col = trace.columns
    shared = (col["kind"] == EventKind.MMAP) & (col["pid"] == master) & (col["arg"] == int(VmaKind.SHARED_ANON))
    assert col["length"][shared].max() >= 32 << 20


# ----- ruby-prefork, with and without nakayoshi_fork ---------------------------------------------


@needs_perf
@requires("unicorn", "unicorn")
@requires("ab", "apache2-utils")
def test_ruby_prefork_agrees_with_and_without_nakayoshi_fork(tmp_path):
    cow = {}
    for module in (ruby_prefork, ruby_prefork_nakayoshi):
        out = tmp_path / f"{module.NAME}.parquet"
        result = module.run(out)
        assert len(result.comparisons) == ruby_prefork.WORKERS
        for c in result.comparisons:
            assert c.agrees, f"{module.NAME} {c.what}: trace {c.trace} vs program {c.program} ({c.difference:+.2%})"
        assert result.details["failed_requests"] == 0
        trace = read_trace(out)
        workers = sorted(child for _, child in forks_of(trace, result.details["master"]))
        assert workers == sorted(r["pid"] for r in result.details["reports"])
        cow[module.NAME] = max(cow_faults_between(trace, [w], -1, len(trace)) for w in workers)
    # nakayoshi_fork's promotion before fork leaves the workers fewer objects to age: fewer COW faults in the
    # busiest worker (ab's requests spread unevenly, and a worker that served few ages little either way)
    assert cow["ruby-prefork-nakayoshi"] < cow["ruby-prefork"]


# ----- evaluate --corpus and the corpus page ----------------------------------------------------


def _row(policy: str, predicted_us: float, ahead: int, extra: int, stall: float) -> dict:
    return {"policy": policy, "faults": 100, "ahead_copies": ahead, "ahead_waste": 0, "pages_copied": 100 + ahead,
            "extra_pages_peak": extra, "predicted_us": predicted_us, "predicted_us_userspace": predicted_us,
            "stall_p99_us": stall}


def _comparison(difference: float) -> dict:
    return {"what": "x", "trace": 1.0, "program": 1.0, "difference": difference, "agrees": abs(difference) <= 0.05}


def test_corpus_page_has_a_row_per_scenario_with_its_agreement(tmp_path):
    from cowahead.report.corpus import agreement, write_corpus_page
    rows = [_row("none", 1000.0, 0, 0, 2.0), _row("fixed:16", 800.0, 50, 256, 20.0)]
    results = {"workloads": [
        {"name": "sequential", "kind": "generator", "rows": rows},
        {"name": "redis-periodic", "kind": "scenario", "rows": rows,
         "scenario_runs": [{"comparisons": [_comparison(0.001), _comparison(-0.03)]},
                           {"comparisons": [_comparison(0.002)]}, {"comparisons": [_comparison(0.07)]}]}]}
    assert agreement(results["workloads"][1]) == "2/3 recordings agree, worst +7.00%"
    page = write_corpus_page(results, tmp_path).read_text()
    assert page.count("<tr>") == 2  # the header and the one scenario; the generator has no row
    assert "redis-periodic" in page and "sequential" not in page
    assert "fixed:16" in page and "-20.0%" in page and "20.0 (2.0)" in page and ">1.0<" in page  # 256 pages = 1 MiB


def test_evaluate_corpus_takes_every_scenario_and_no_list(tmp_path, capsys):
    from cowahead.cli.main import main
    from cowahead.suite import CORPUS_WORKLOADS, check_workloads
    assert set(SCENARIOS) <= set(CORPUS_WORKLOADS)
    check_workloads(CORPUS_WORKLOADS)
    assert main(["evaluate", "--corpus", "redis-bgsave", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--corpus" in err and "Traceback" not in err


# ----- the model's private pages of a snapshot child (the Redis scenarios' trace side) ------------


def test_private_pages_count_copies_both_ways_drops_and_new_pages(stream):
    from cowahead.scenarios._common import model_with_probes, private_anon_pages
    parent, child = 1, 2
    stream.mmap(parent, 0, 16).write(parent, *range(10))
    stream.fork(parent, child)
    stream.write(parent, 0, 1, 2)        # the server copies: the child's originals become its own
    stream.write(child, 5)               # the child copies: its copy is its own
    stream.dontneed(parent, 7, 2)        # jemalloc purges: the child's frames become its own, no fault
    stream.write(child, 12)              # a new page of the child's
    stream.exit(child)
    trace = stream.trace()
    seen = {}
    exit_index = len(trace) - 1
    model_with_probes(trace, {exit_index: lambda k: seen.update(child=private_anon_pages(k, child),
                                                                 parent=private_anon_pages(k, parent))})
    assert seen["child"] == 3 + 1 + 2 + 1
    # the server: its 3 copies and the original of page 5, which only it maps now
    assert seen["parent"] == 3 + 1
