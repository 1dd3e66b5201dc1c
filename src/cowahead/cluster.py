"""Sweeps on a Dask distributed cluster: the local pool's tasks, run by a cluster's workers.

``connect("tcp://host:8786")`` joins a running ``dask scheduler``; ``connect("local:N")`` starts a
LocalCluster of N worker processes on this machine. Either gives a DaskPool, which ``sweep.run_sweep``
drives exactly as it drives the local process pool: one task per trace and group of policies
(``sweep.replay_group``, streamed on the worker), the same assembly into the same document.

Where a task's trace comes from (docs/cluster.md):

- an fsspec URL (``s3://…``, ``file://…``): each worker copies it once into its own folder and replays
  the copy, so any storage fsspec reads serves, and memory stays bounded by the streamed replay;
- a local path on ``local:N``: the workers are on this machine and read it in place;
- a local path on a remote scheduler: a file up to SEND_LIMIT travels with the tasks (sent once);
  a bigger one must be at the same path on every worker (a shared mount).

A lost worker's tasks are run again by the scheduler elsewhere; each task's future completes once, and the
rows are keyed by trace and policy, so a re-run counts once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import distributed
import fsspec
from distributed import Client, Future, LocalCluster, as_completed
from distributed.worker import get_worker

from .errors import CowaheadError
from .policies import Policy
from .sweep import TraceSummary, replay_group, summarize

LOCAL = re.compile(r"local:(\d+)")
CONNECT_TIMEOUT_S = 5  # an unreachable scheduler is an error within this, not the 30 s Dask waits by default
WORKERS_TIMEOUT_S = 30  # a scheduler without workers: how long to wait for the first one
# The scheduler's HTTP server (health, and the dashboard where bokeh is installed): even with no dashboard
# (dashboard_address=None) it takes port 8787, and warns on stderr where another cluster has it.
LOOPBACK_ANY_PORT = "127.0.0.1:0"
SEND_LIMIT = 16 << 20  # a local trace up to this size is sent with the tasks to a remote cluster (the scheduler
# holds what it sends until the sweep ends: a big corpus belongs on storage the workers share)


def connect(scheduler: str) -> "DaskPool":
    """A pool on the cluster ``scheduler`` names (an address, or ``local:N``); a CowaheadError if there is
    none to be had."""
    if scheduler == "local" or scheduler.startswith("local:"):  # not localhost:8786, an address
        return DaskPool(*_local_cluster(scheduler), scheduler)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise CowaheadError(f"scheduler {scheduler}: unreachable within {CONNECT_TIMEOUT_S} s ({_one_line(e)})") from None
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (TimeoutError, OSError):
        client.close()
        raise CowaheadError(f"scheduler {scheduler}: no worker joined within {WORKERS_TIMEOUT_S} s "
                            "(start some with `dask worker ADDRESS`)") from None
    return DaskPool(client, None, scheduler)


def _local_cluster(scheduler: str) -> tuple[Client, LocalCluster]:
    match = LOCAL.fullmatch(scheduler)
    if not match or int(match.group(1)) < 1:
        raise CowaheadError(f"--scheduler {scheduler}: write local:N, N ≥ 1 worker processes (e.g. local:2)")
    # One thread per worker process: a replay holds the GIL, so more threads would only wait for it. Logs
    # silenced: these workers write to this terminal, and what goes wrong in a task comes back as its error.
    cluster = LocalCluster(n_workers=int(match.group(1)), threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=LOOPBACK_ANY_PORT, silence_logs=logging.CRITICAL)
    return Client(cluster, set_as_default=False), cluster


class DaskPool:
    """sweep.Pool on a Dask cluster, closing ``client`` when the sweep ends; ``cluster`` is the LocalCluster it
    started (closed with it), if any. ``send``: small local traces go with the tasks (by default where the
    cluster is not this machine's own)."""

    def __init__(self, client: Client, cluster: LocalCluster | None, scheduler: str, send: bool | None = None):
        self.client, self._cluster, self.scheduler = client, cluster, scheduler
        self._send = cluster is None if send is None else send
        self.address = client.scheduler.address
        workers = client.scheduler_info(n_workers=-1)["workers"]
        self.workers = len(workers)
        self.jobs = sum(w["nthreads"] for w in workers.values())
        self._sent: dict[str, Future | None] = {}
        self._submitted: list[Future] = []

    def summaries(self, paths: list[str]) -> dict[str, TraceSummary]:
        """Each trace summarized by a worker, where it is read: the parent needs no access to a URL."""
        futures = {path: self.client.submit(summarize_remote, path, self._data(path), pure=False, priority=2)
                   for path in paths}
        self._submitted += futures.values()
        return {path: future.result() for path, future in futures.items()}

    def prepare(self, tasks: list[tuple[str, list[Policy]]]) -> None:
        """Nothing: each worker makes its own decoded chunks, sample points and futures (sweep's caches)."""

    def submit(self, path: str, group: list[Policy], heatmaps: bool, first: bool) -> Future:
        future = self.client.submit(replay_remote, path, self._data(path), group, heatmaps, pure=False,
                                    priority=1 if first else 0)  # every trace's baseline first, as locally
        self._submitted.append(future)
        return future

    def as_completed(self, futures: Iterable) -> Iterator[Future]:
        for future in as_completed(list(futures), loop=self.client.loop):
            if future.status == "error" and isinstance(future.exception(), distributed.KilledWorker):
                raise CowaheadError(f"a task killed every worker that ran it ({_one_line(future.exception())}); "
                                    "the workers may be short of memory (docs/cluster.md)")
            yield future

    def stop(self) -> None:
        """Drop what is pending. A task already running on a remote worker finishes there, unread: Dask
        cannot interrupt a running task; a LocalCluster's workers are stopped with it by close."""
        self.client.cancel(self._submitted, force=True)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def describe(self) -> dict:
        return {"cluster": {"scheduler": self.scheduler, "address": self.address,
                            "workers": self.workers, "threads": self.jobs, "distributed": distributed.__version__}}

    def _data(self, path: str) -> Future | None:
        """The trace's bytes, sent once, where a remote cluster's workers may not see the file. They travel as
        a task's input, not scattered: the scheduler keeps a task's input, so a worker lost with the only copy
        of the result is no loss (it is made again); scattered data would be gone with it."""
        if path not in self._sent:
            send = self._send and os.path.isfile(path) and os.path.getsize(path) <= SEND_LIMIT
            self._sent[path] = self.client.submit(_bytes, Path(path).read_bytes(), pure=False, priority=3) \
                if send else None
        return self._sent[path]


def _bytes(data: bytes) -> bytes:
    return data


def replay_remote(path: str, data: bytes | None, group: list[Policy], heatmaps: bool) -> tuple[list[dict], dict | None]:
    """The task a worker runs: sweep.replay_group on its own copy of the trace (or the path itself)."""
    return replay_group(local_copy(path, data), group, heatmaps)


def summarize_remote(path: str, data: bytes | None) -> TraceSummary:
    local = local_copy(path, data)
    try:
        return summarize(local)
    except CowaheadError as e:  # named as the user named it, not as the worker's copy
        raise CowaheadError(str(e).replace(local, path)) from None


def local_copy(path: str, data: bytes | None) -> str:
    """A path this worker can read holding the trace: the bytes sent with the task, a copy of an fsspec URL
    (made once per worker), or a local path as it is."""
    if data is not None:
        return _keep(hashlib.sha256(data).hexdigest()[:24], lambda tmp: Path(tmp).write_bytes(data))
    if _is_url(path):
        try:
            fs, inner = fsspec.core.url_to_fs(path)
            info = fs.info(inner)
            version = f"{path} {info.get('size')} {info.get('mtime') or info.get('ETag') or info.get('etag')}"
            return _keep(hashlib.sha256(version.encode()).hexdigest()[:24], lambda tmp: fs.get_file(inner, tmp))
        except (ImportError, OSError, ValueError) as e:
            raise CowaheadError(f"{path}: worker {socket.gethostname()} cannot read it ({_one_line(e)})") from None
    if not os.access(path, os.R_OK):
        raise CowaheadError(f"{path}: worker {socket.gethostname()} cannot read it; give the workers a path they "
                            "share or an fsspec URL (docs/cluster.md)")
    return path


def _keep(name: str, write) -> str:
    """``name``.parquet in this worker's folder (Dask removes it with the worker), written once."""
    try:
        folder = Path(get_worker().local_directory) / "cowahead-traces"
    except ValueError:  # not on a worker (called in process)
        folder = Path(tempfile.gettempdir()) / "cowahead-traces"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        write(str(tmp))
        os.replace(tmp, path)  # whole or absent: two tasks on one worker may fetch it at once
    return str(path)


def _is_url(path: str) -> bool:
    return "://" in path


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
