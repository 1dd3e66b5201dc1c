"""``gunicorn-preload``: a Flask app preloaded by gunicorn's master, four forked workers under ab's HTTP load.

The prefork web server of Instagram's report: the master imports the app
(``--preload``: a realistic module set and a warm in-memory catalog of
RECORDS records), then forks four sync workers that inherit it all
copy-on-write. Each request reads a few catalog records: reading a CPython
object writes its reference count, and the cyclic GC, when it runs a full
collection in a worker, writes the GC header of every tracked object it
walks, so shared pages are copied. ``gunicorn-preload-freeze`` is the same
run with ``gc.freeze()`` in gunicorn's ``pre_fork`` hook, which moves every
object the master has into the permanent generation, where no collection
looks.

Load: ``ab -n REQUESTS -c 4`` (apache2-utils) on loopback; then SIGTERM to
the master, a graceful stop. The program's own counter: each worker's
``worker_exit`` hook reads getrusage(RUSAGE_SELF) (minor + major faults
since its fork) and the smaps_rollup Private_Dirty of itself, with the
CLOCK_MONOTONIC time; the trace's faults of that worker up to that time
must match the rusage faults. The master's ``on_exit`` hook does the same
for the master, from its exec.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from ..errors import CowaheadError
from ._common import Clock, Comparison, ScenarioResult, add_to_trace, fault_mask
from ._servers import PreforkServer, compare_workers, failed_requests, free_port, requests_per_second, serve_under_ab

NAME = "gunicorn-preload"
SUMMARY = "gunicorn --preload Flask app, 4 sync workers under ab; checked against each worker's getrusage"
WORKERS = 4
RECORDS = 60_000
WALK = 40            # records a request reads
REQUESTS = 2000
CONCURRENCY = 4
PACKAGE = "apache2-utils"

APP = """
# A Flask app with the modules such apps import and a warm in-memory catalog, built at import (--preload).
import collections, datetime, decimal, email.utils, hashlib, html, http.cookies, json, logging, os, random
import re, sqlite3, urllib.parse, uuid, xml.etree.ElementTree
from flask import Flask, jsonify, request

RECORDS, WALK = int(os.environ["COWAHEAD_RECORDS"]), int(os.environ["COWAHEAD_WALK"])
catalog = [{"id": i, "name": f"item-{i}", "price": decimal.Decimal(i) / 100, "tags": [f"t{i % 7}", f"t{i % 11}"],
            "added": datetime.date(2020, 1, 1) + datetime.timedelta(days=i % 1000)} for i in range(RECORDS)]
by_name = {record["name"]: record for record in catalog}
app = Flask(__name__)


class Node:
    # A view-model node that knows its parent, as ORM and template objects do: each page is a reference cycle.

    def __init__(self, parent, record=None):
        self.parent, self.record, self.children = parent, record, []
        if parent is not None:
            parent.children.append(self)


@app.route("/search")
def search():
    tag = request.args.get("tag", "t3")
    start = random.randrange(RECORDS - WALK)
    page = Node(None)
    for r in catalog[start:start + WALK]:
        node = Node(page, r)
        for t in r["tags"]:
            Node(node, t)
    found = [n.record for n in page.children if tag in n.record["tags"]]
    return jsonify(start=start, count=len(found), total=str(sum(r["price"] for r in found)),
                   names=[r["name"] for r in found])
"""

CONFIG = """
# gunicorn hooks: gc.freeze() before each fork when asked; each process reports its own rusage as it exits.
import gc, json, os, resource, time

REPORTS, FREEZE = os.environ["COWAHEAD_REPORTS"], os.environ["COWAHEAD_FREEZE"] == "1"
accesslog = None
errorlog = "-"
loglevel = "warning"


def private_dirty_kb():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))


def report(role):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    data = {"role": role, "pid": os.getpid(), "time_ns": now, "minflt": usage.ru_minflt, "majflt": usage.ru_majflt,
            "private_dirty_kb": private_dirty_kb(), "gc_counts": gc.get_count(), "gc_stats": gc.get_stats(),
            "frozen": gc.get_freeze_count()}
    with open(os.path.join(REPORTS, f"{role}-{os.getpid()}.json"), "w") as f:
        json.dump(data, f)


def pre_fork(server, worker):
    if FREEZE:
        gc.freeze()


def worker_exit(server, worker):
    report("worker")


def on_exit(server):
    report("master")
"""


def run(output: Path | None, progress=None, freeze: bool = False, name: str = NAME) -> ScenarioResult:
    if shutil.which("ab") is None:
        raise CowaheadError(f"ab not found; install the Debian package {PACKAGE} (scripts/setup does)")
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="cowahead-gunicorn-") as tmp:
        directory = Path(tmp)
        (directory / "app.py").write_text(APP)
        (directory / "gunicorn_conf.py").write_text(CONFIG)
        reports = directory / "reports"
        reports.mkdir()
        port, pidfile = free_port(), directory / "gunicorn.pid"
        env = {"COWAHEAD_RECORDS": str(RECORDS), "COWAHEAD_WALK": str(WALK), "COWAHEAD_REPORTS": str(reports),
               "COWAHEAD_FREEZE": "1" if freeze else "0"}
        command = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "gunicorn", "--preload", "--workers", str(WORKERS), "--worker-class", "sync",
                   "--bind", f"127.0.0.1:{port}", "--config", str(directory / "gunicorn_conf.py"),
                   "--chdir", str(directory), "--pid", str(pidfile), "app:app"]
        server = PreforkServer("gunicorn", command, port, pidfile, WORKERS, f"http://127.0.0.1:{port}/search?tag=t3",
                               signal.SIGTERM)  # graceful: workers finish, run worker_exit, exit; then the master
        served = serve_under_ab(server, output, clock, REQUESTS, CONCURRENCY, progress)
        reported = [json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))]
    result = ScenarioResult(name, output, served.recording, seconds=dict(clock.seconds))
    workers = [r for r in reported if r["role"] == "worker"]
    masters = [r for r in reported if r["role"] == "master"]
    if len(workers) != WORKERS or len(masters) != 1:
        raise CowaheadError(f"expected {WORKERS} worker reports and one master's, got {len(workers)} and {len(masters)}")
    failed = failed_requests(served.ab_output)
    result.details.update({"freeze": freeze, "records": RECORDS, "requests": REQUESTS, "failed_requests": failed,
                           "requests_per_second": requests_per_second(served.ab_output), "master": served.master,
                           "workers_private_dirty_kb": [w["private_dirty_kb"] for w in workers],
                           "workers_rusage_faults": [w["minflt"] + w["majflt"] for w in workers],
                           "frozen_objects": [w["frozen"] for w in workers], "reports": reported})
    if served.recording is None:
        return result
    _compare(result, served.recording, served.master, workers, masters[0])
    add_to_trace(output, served.recording, result)
    return result


def _compare(result: ScenarioResult, recording, master: int, workers: list[dict], master_report: dict) -> None:
    trace = recording.trace
    compare_workers(result, trace, workers,
                    "trace: the worker's faults from its fork to its worker_exit hook's CLOCK_MONOTONIC time; "
                    "program: its getrusage(RUSAGE_SELF) ru_minflt + ru_majflt in that hook")
    faults = int(fault_mask(trace, [master], end_ns=master_report["time_ns"]).sum())
    result.comparisons.append(Comparison(
        "faults of the master", faults, master_report["minflt"] + master_report["majflt"], "faults",
        "trace: the master's faults from its exec to its on_exit hook; program: its getrusage in that hook"))
