"""Sweeps on Dask (src/cowahead/cluster.py), on LocalClusters over loopback: the same document as the local
pool's, a worker killed mid-sweep, Ctrl-C, and the one-line errors."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from cowahead.cli.main import main
from cowahead.errors import CowaheadError
from cowahead.model.costs import HEADLINE, CostModel, cost_profile
from cowahead.results.document import load_results
from cowahead.sweep import expand_policies, open_pool, run_sweep
from cowahead.trace import write_trace
from cowahead.trace.generators import generate

distributed = pytest.importorskip("distributed")  # a dependency (pyproject.toml): a missing one fails below

POLICIES = expand_policies(["none", "fixed:1..64", "around:16", "adaptive", "ccow", "oracle:16"])
UNREACHABLE = "tcp://127.0.0.1:9"  # the discard port: nothing listens there


def test_dask_is_installed():
    """It is a pinned dependency, not an optional one: the importorskip above must never skip."""
    assert distributed.__version__


@pytest.fixture
def cluster():
    """Two worker processes on loopback, one thread each; its address is a 'remote' scheduler to the sweep
    (small traces are sent with the tasks). Closed, with its processes, after the test."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL) as local:
        with distributed.Client(local, set_as_default=False) as client:
            yield local, client
    assert not leftovers(), [p.cmdline() for p in leftovers()]


def leftovers() -> list[psutil.Process]:
    """This process's children still running, but multiprocessing's resource tracker: one per process, for
    its whole life, started by the first spawned worker."""
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != "zombie" and "resource_tracker" not in " ".join(p.cmdline())]


@pytest.fixture
def traces(tmp_path):
    """Three traces: one the engine replays whole, a fork-heavy one, and one with THP (the reference model)."""
    paths = []
    for pattern, pages in [("bgsave", 3000), ("forkexec", 600), ("sequential+madvise", 1024)]:
        paths.append(str(tmp_path / f"{pattern.replace('+', '-')}.parquet"))
        write_trace(generate(pattern, pages=pages, seed=3), paths[-1])
    return paths


def same_sweep(local: dict, remote: dict) -> None:
    """The documents agree but for the wall time and the cluster's entry."""
    assert remote["workloads"] == local["workloads"]
    drop = ("wall_seconds", "cluster")
    assert {k: v for k, v in remote["sweep"].items() if k not in drop} == \
           {k: v for k, v in local["sweep"].items() if k not in drop}
    assert {k for k in local if k != "created"} == {k for k in remote if k != "created"}


def test_a_sweep_on_local_workers_equals_the_local_sweep_row_for_row(traces):
    local = run_sweep(traces, POLICIES, 2, CostModel(), heatmaps=True)
    done = []
    remote = run_sweep(traces, POLICIES, 2, CostModel(), done.append, heatmaps=True, pool=open_pool("local:2", 2))
    assert len(local["workloads"]) == 3 and all(len(w["rows"]) == len(POLICIES) and w["heatmap"]
                                                for w in local["workloads"])
    same_sweep(local, remote)
    assert sum(done) == 3 * len(POLICIES)  # the progress bar was fed every replay, once
    assert remote["sweep"]["cluster"]["scheduler"] == "local:2" and remote["sweep"]["cluster"]["workers"] == 2
    assert not leftovers(), "the sweep's LocalCluster outlived it"


def test_a_remote_scheduler_gets_small_traces_with_the_tasks_or_reads_a_url(traces, cluster):
    local_cluster, client = cluster
    local = run_sweep(traces, POLICIES, 2, CostModel())
    sent = run_sweep(traces, POLICIES, 2, CostModel(), pool=open_pool(local_cluster.scheduler_address, 2))
    same_sweep(local, sent)
    urls = [f"file://{path}" for path in traces]  # fsspec's local files: what s3:// would be on a cluster
    by_url = run_sweep(urls, POLICIES, 2, CostModel(), pool=open_pool(local_cluster.scheduler_address, 2))
    for w_local, w_url, url in zip(local["workloads"], by_url["workloads"], urls):
        assert w_url == {**w_local, "path": url}


def test_a_worker_killed_mid_sweep_leaves_a_complete_and_correct_result(tmp_path, cluster):
    """SIGKILL to a worker process while it replays: the scheduler runs its task again on the other (the nanny
    starts a new worker too), and the document equals the local sweep's, each replay counted once."""
    local_cluster, client = cluster
    paths = []
    for seed in range(4):
        paths.append(str(tmp_path / f"random-{seed}.parquet"))
        write_trace(generate("random", pages=100_000, seed=seed), paths[-1])
    killed = []

    def kill_a_busy_worker(n):
        if killed:
            return
        busy = [address for address, keys in client.processing().items() if keys]
        assert busy, "no worker had a task to lose"
        pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    remote = run_sweep(paths, POLICIES, 2, CostModel(), kill_a_busy_worker, pool=open_pool(local_cluster.scheduler_address, 2))
    assert killed and not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    assert not remote["sweep"]["interrupted"] and remote["sweep"]["replays"] == remote["sweep"]["planned"]
    same_sweep(run_sweep(paths, POLICIES, 2, CostModel()), remote)


def test_ctrl_c_on_a_cluster_sweep_writes_the_partial_document(tmp_path):
    """A real SIGINT to `cowahead sweep --scheduler local:2` while its workers replay: exit 130, no traceback,
    the document says it was interrupted, lists what is missing, holds rows equal to the local sweep's, and
    the LocalCluster's processes are gone."""
    first = tmp_path / "random-0.parquet"
    write_trace(generate("random", pages=250_000, seed=1), first)
    paths = [first] + [tmp_path / f"random-{i}.parquet" for i in range(1, 8)]  # a task each: 51 policies
    for path in paths[1:]:
        shutil.copy(first, path)
    out = tmp_path / "r.json"
    sweep = subprocess.Popen([sys.executable, "-m", "cowahead.cli.main", "sweep", *map(str, paths), "--scheduler",
                              "local:2", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parent = psutil.Process(sweep.pid)
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and sweep.poll() is None:  # until the workers have replayed a while
        workers = parent.children(recursive=True)
        if len(workers) >= 2 and cpu_seconds(workers) > 12:
            break
        time.sleep(0.1)
    assert sweep.poll() is None, "the sweep ended before it could be interrupted"
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cowahead: interrupted; ")
    doc = load_results(out)
    assert doc["sweep"]["interrupted"] and 0 < doc["sweep"]["replays"] < doc["sweep"]["planned"] == 8 * 51
    assert doc["sweep"]["cluster"]["workers"] == 2
    reference = {row["policy"]: row for row in
                 run_sweep([str(first)], expand_policies(doc["sweep"]["policies"]), 2,
                           cost_profile(HEADLINE))["workloads"][0]["rows"]}  # the CLI's default profile
    for workload in doc["workloads"]:  # eight copies of one trace: each kept row is that trace's
        assert all(row == reference[row["policy"]] for row in workload["rows"])
        assert sorted(workload.get("missing", []) + [r["policy"] for r in workload["rows"]]) == sorted(reference)
    assert sum(len(w.get("missing", [])) for w in doc["workloads"]) > 0 or len(doc["workloads"]) < 8
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            total += sum(process.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.mark.parametrize("how, address", [("flag", UNREACHABLE), ("environment", UNREACHABLE),
                                          ("flag", "localhost:9")])  # an address, though it starts with local
def test_an_unreachable_scheduler_is_one_line_and_exit_2(how, address, traces, tmp_path, capsys, monkeypatch):
    args = ["sweep", traces[0], "-p", "fixed:4", "-o", str(tmp_path / "r.json")]
    if how == "flag":
        args += ["--scheduler", address]
    else:
        monkeypatch.setenv("COWAHEAD_SCHEDULER", address)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cowahead: error: scheduler {address}: unreachable")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("bad", ["local", "local:0", "local:", "local:two", "local:2:3"])
def test_a_bad_local_cluster_is_one_line(bad, traces, tmp_path, capsys):
    assert main(["sweep", traces[0], "-p", "fixed:4", "--scheduler", bad, "-o", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cowahead: error: --scheduler {bad}: write local:N")


def test_a_trace_no_worker_can_read_is_one_line(tmp_path, capsys, cluster):
    local_cluster, _ = cluster
    url = f"file://{tmp_path}/nowhere.parquet"
    assert main(["sweep", url, "--scheduler", local_cluster.scheduler_address, "-o", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"cowahead: error: {url}: worker ") and "cannot read it" in err
    from cowahead.cluster import local_copy  # a plain path is checked where the worker stands, too
    with pytest.raises(CowaheadError, match="cannot read it"):
        local_copy(str(tmp_path / "nowhere.parquet"), None)


def test_evaluate_replays_on_the_cluster_as_it_does_here(tmp_path, cluster):
    import dataclasses

    from cowahead.suite import Settings, evaluate

    local_cluster, _ = cluster
    settings = dataclasses.replace(Settings.default(True, real=False), pages=256)
    step = lambda description, total: (lambda n: None)  # noqa: E731
    here = evaluate(["sequential", "hotcold"], settings, tmp_path / "here", CostModel(), step)
    there = evaluate(["sequential", "hotcold"], settings, tmp_path / "there", CostModel(), step,
                     open_pool(local_cluster.scheduler_address, 2))
    for mine, theirs in zip(here["workloads"], there["workloads"]):  # each under its own DIR/traces
        assert theirs == {**mine, "path": str(tmp_path / "there" / mine["trace"])}
    assert len(here["workloads"]) == 2 and len(here["workloads"][1]["rows"]) == len(settings.policies)
    assert there["sweep"]["cluster"]["workers"] == 2 and "cluster" not in here["sweep"]


def test_a_plain_sweep_does_not_load_dask(traces, tmp_path):
    code = ("import sys; from cowahead.cli.main import main; "
            f"status = main(['sweep', {traces[1]!r}, '-p', 'fixed:4', '-j', '1', '-o', {str(tmp_path / 'r.json')!r}]); "
            "print(status, 'distributed' in sys.modules, 'dask' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split()[-3:] == ["0", "False", "False"], done.stderr
