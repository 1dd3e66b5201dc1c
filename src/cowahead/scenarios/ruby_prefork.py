"""``ruby-prefork``: Debian's unicorn serving a preloaded Rack app from four forked workers under ab.

The Ruby app server of the issue: unicorn with ``preload_app true``
builds the app (a catalog of RECORDS hashes) in the master, then forks
WORKERS workers. Ruby marks in bitmaps apart from the objects, but an
object's age lives in its header: a young object the master left behind
is written by a worker's GC when it is aged and promoted. Each request
reads a few records and makes some garbage. ``ruby-prefork-nakayoshi``
is the same run with ``require "nakayoshi_fork"`` (Debian
``ruby-nakayoshi-fork``): before each fork, up to four minor GCs promote
the young objects, so the workers find them old.

Load: ``ab -n REQUESTS -c 4`` on loopback; then SIGQUIT to the master, a
graceful stop. The program's own counter: each worker, as it exits
(``at_exit``, set in unicorn's ``after_fork`` hook), reads its own minflt
+ majflt from /proc/self/stat (the kernel's counts that getrusage
reports; Ruby has no getrusage) and its CLOCK_MONOTONIC time; the
trace's faults of that worker up to that time must match.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import CowaheadError
from ._common import COW, Clock, Comparison, ScenarioResult, add_to_trace, fault_mask, launched
from .gunicorn_preload import _failed_requests, _free_port, _requests_per_second, _wait_listening

NAME = "ruby-prefork"
SUMMARY = "unicorn preload_app Rack app, 4 workers under ab; checked against each worker's /proc/self/stat faults"
WORKERS = 4
RECORDS = 60_000
WALK = 40
REQUESTS = 2000
CONCURRENCY = 4
PACKAGE = "unicorn"

APP = """
require "json"
RECORDS, WALK = Integer(ENV["COWAHEAD_RECORDS"]), Integer(ENV["COWAHEAD_WALK"])
CATALOG = Array.new(RECORDS) { |i| {id: i, name: "item-#{i}", price: i / 100.0, tags: ["t#{i % 7}", "t#{i % 11}"]} }

run(lambda do |env|
  start = rand(RECORDS - WALK)
  rows = CATALOG[start, WALK].map { |r| {name: r[:name], price: format("%.2f", r[:price]), tags: r[:tags].dup} }
  found = rows.select { |r| r[:tags].include?("t3") }
  [200, {"content-type" => "application/json"}, [JSON.generate(start: start, count: found.size, names: found.map { |r| r[:name] })]]
end)
"""

CONFIG = """
require "json"
require "nakayoshi_fork" if ENV["COWAHEAD_NAKAYOSHI"] == "1"
worker_processes Integer(ENV["COWAHEAD_WORKERS"])
preload_app true
listen "127.0.0.1:#{ENV["COWAHEAD_PORT"]}"
pid File.join(ENV["COWAHEAD_DIR"], "unicorn.pid")
stderr_path File.join(ENV["COWAHEAD_DIR"], "unicorn.log")

def cowahead_report
  fields = File.read("/proc/self/stat").sub(/\\A.*\\) /, "").split(" ")  # from field 3, state
  now = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
  data = {pid: Process.pid, time_ns: now, minflt: Integer(fields[7]), majflt: Integer(fields[9]),
          gc: GC.stat.slice(:count, :major_gc_count, :minor_gc_count, :old_objects)}
  File.write(File.join(ENV["COWAHEAD_DIR"], "reports", "worker-#{Process.pid}.json"), JSON.generate(data))
end

after_fork do |server, worker|
  at_exit { cowahead_report }
end
"""


def run(output: Path | None, progress=None, nakayoshi: bool = False, name: str = NAME) -> ScenarioResult:
    for tool, package in (("unicorn", PACKAGE), ("ab", "apache2-utils")):
        if shutil.which(tool) is None:
            raise CowaheadError(f"{tool} not found; install the Debian package {package} (scripts/setup does)")
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="cowahead-unicorn-") as tmp:
        directory = Path(tmp)
        (directory / "config.ru").write_text(APP)
        (directory / "unicorn.conf.rb").write_text(CONFIG)
        (directory / "reports").mkdir()
        port, pidfile = _free_port(), directory / "unicorn.pid"
        env = {"COWAHEAD_RECORDS": str(RECORDS), "COWAHEAD_WALK": str(WALK), "COWAHEAD_WORKERS": str(WORKERS),
               "COWAHEAD_PORT": str(port), "COWAHEAD_DIR": str(directory), "COWAHEAD_NAKAYOSHI": "1" if nakayoshi else "0"}
        command = ["env", *(f"{k}={v}" for k, v in env.items()), "unicorn", "-E", "none", "-c",
                   str(directory / "unicorn.conf.rb"), str(directory / "config.ru")]
        with launched(command, output) as (recorder, process):
            if progress:
                progress("record", None, None)
            _wait_listening(port, process, time.monotonic() + 60)
            deadline = time.monotonic() + 60
            while not pidfile.exists() or len(_children(int(pidfile.read_text()))) < WORKERS:
                if time.monotonic() > deadline:
                    raise CowaheadError(f"unicorn did not start {WORKERS} workers; see {directory / 'unicorn.log'}")
                time.sleep(0.05)
            master = int(pidfile.read_text())
            with clock.time("workload"):
                load = subprocess.run(["ab", "-q", "-n", str(REQUESTS), "-c", str(CONCURRENCY),
                                       f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
            if load.returncode != 0:
                raise CowaheadError(f"ab failed: {(load.stderr or load.stdout).strip().splitlines()[-1:]}")
            os.kill(master, signal.SIGQUIT)  # graceful: workers finish their request and exit, then the master
            recording = None
            if recorder is not None:
                recording = recorder.finish(progress)
            else:
                process.wait(timeout=60)
        workers = [json.loads(p.read_text()) for p in sorted((directory / "reports").glob("*.json"))]
    if len(workers) != WORKERS:
        raise CowaheadError(f"expected {WORKERS} worker reports, got {len(workers)}")
    result = ScenarioResult(name, output, recording, seconds=dict(clock.seconds))
    result.details.update({"nakayoshi": nakayoshi, "records": RECORDS, "requests": REQUESTS, "master": master,
                           "failed_requests": _failed_requests(load.stdout),
                           "requests_per_second": _requests_per_second(load.stdout),
                           "workers_faults": [w["minflt"] + w["majflt"] for w in workers], "reports": workers})
    if recording is None:
        return result
    trace = recording.trace
    for number, w in enumerate(sorted(workers, key=lambda w: w["pid"]), start=1):
        faults = int(fault_mask(trace, [w["pid"]], end_ns=w["time_ns"]).sum())
        result.comparisons.append(Comparison(
            f"faults of worker {number}", faults, w["minflt"] + w["majflt"], "faults",
            "trace: the worker's faults from its fork to its at_exit report's CLOCK_MONOTONIC time; "
            "program: minflt + majflt of /proc/self/stat in that report"))
    result.details["trace_cow_0x7_faults_per_worker"] = [
        int(fault_mask(trace, [w["pid"]], end_ns=w["time_ns"], codes=(COW,)).sum()) for w in workers]
    add_to_trace(output, recording, result)
    return result


def _children(master: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []
