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
import shutil
import signal
import tempfile
from pathlib import Path

from ..errors import CowaheadError
from ._common import Clock, ScenarioResult, add_to_trace
from ._servers import PreforkServer, compare_workers, failed_requests, free_port, requests_per_second, serve_under_ab

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
        port, pidfile = free_port(), directory / "unicorn.pid"
        env = {"COWAHEAD_RECORDS": str(RECORDS), "COWAHEAD_WALK": str(WALK), "COWAHEAD_WORKERS": str(WORKERS),
               "COWAHEAD_PORT": str(port), "COWAHEAD_DIR": str(directory), "COWAHEAD_NAKAYOSHI": "1" if nakayoshi else "0"}
        command = ["env", *(f"{k}={v}" for k, v in env.items()), "unicorn", "-E", "none", "-c",
                   str(directory / "unicorn.conf.rb"), str(directory / "config.ru")]
        server = PreforkServer("unicorn", command, port, pidfile, WORKERS, f"http://127.0.0.1:{port}/",
                               signal.SIGQUIT,  # graceful: workers finish their request and exit, then the master
                               log=directory / "unicorn.log")
        served = serve_under_ab(server, output, clock, REQUESTS, CONCURRENCY, progress)
        workers = [json.loads(p.read_text()) for p in sorted((directory / "reports").glob("*.json"))]
    if len(workers) != WORKERS:
        raise CowaheadError(f"expected {WORKERS} worker reports, got {len(workers)}")
    result = ScenarioResult(name, output, served.recording, seconds=dict(clock.seconds))
    result.details.update({"nakayoshi": nakayoshi, "records": RECORDS, "requests": REQUESTS, "master": served.master,
                           "failed_requests": failed_requests(served.ab_output),
                           "requests_per_second": requests_per_second(served.ab_output),
                           "workers_faults": [w["minflt"] + w["majflt"] for w in workers], "reports": workers})
    recording = served.recording
    if recording is None:
        return result
    compare_workers(result, recording.trace, workers,
                    "trace: the worker's faults from its fork to its at_exit report's CLOCK_MONOTONIC time; "
                    "program: minflt + majflt of /proc/self/stat in that report")
    add_to_trace(output, recording, result)
    return result
