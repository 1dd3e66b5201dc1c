"""``php-fpm``: Debian's PHP-FPM 8.2, a static pool of four workers, under FastCGI requests; a negative control.

The master forks its workers at start; each request runs a PHP script
from scratch (PHP shares nothing between requests), and the compiled
script sits in OPcache, a ``MAP_SHARED`` segment where fork makes no COW.
What a worker breaks COW on is the master's private pages it writes.

The master runs under perf from its exec (``php-fpm8.2 -F``, as root
with ``-R``, its socket, pid and log in a temporary directory; OPcache on
with ``-d``); the load is REQUESTS FastCGI requests from CLIENTS threads
of a minimal FastCGI client written here (no web server in between).
The script answers with its worker's ``getmypid()``, ``hrtime(true)``
(CLOCK_MONOTONIC, in ns) and ``getrusage()``'s ``ru_minflt + ru_majflt``:
the program's own counter. Each worker's last answer is held against the
trace's faults of that worker up to that time; the comparison adds them
over the workers that answered.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import CowaheadError
from ..trace import EventKind
from ._common import COW, Clock, Comparison, ScenarioResult, add_to_trace, fault_mask, launched

NAME = "php-fpm"
SUMMARY = "PHP-FPM 8.2 static pool of 4 workers under FastCGI requests, OPcache MAP_SHARED (negative control); vs getrusage"
FPM = "php-fpm8.2"
PACKAGE = "php8.2-fpm"
WORKERS = 4
REQUESTS = 400
CLIENTS = 2

SCRIPT = """<?php
// A page: build a table of rows, render it, answer with this worker's own fault count.
$rows = [];
for ($i = 0; $i < 2000; $i++) {
    $rows[] = ['id' => $i, 'name' => "item-$i", 'price' => $i / 100, 'tags' => ["t" . ($i % 7), "t" . ($i % 11)]];
}
$html = '';
foreach ($rows as $row) {
    $html .= '<tr><td>' . htmlspecialchars($row['name']) . '</td><td>' . number_format($row['price'], 2) . '</td></tr>';
}
$usage = getrusage();
header('Content-Type: application/json');
echo json_encode(['pid' => getmypid(), 'time_ns' => hrtime(true), 'length' => strlen($html),
                  'faults' => $usage['ru_minflt'] + $usage['ru_majflt']]);
"""

CONFIG = """[global]
pid = {dir}/php-fpm.pid
error_log = {dir}/php-fpm.log
daemonize = no

[www]
user = root
group = root
listen = {dir}/php-fpm.sock
pm = static
pm.max_children = {workers}
catch_workers_output = yes
"""


# ----- a minimal FastCGI client (the FastCGI 1.0 specification: records of an 8-byte header) --------------

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6
FCGI_RESPONDER = 1


def _record(kind: int, content: bytes, request: int = 1) -> bytes:
    return struct.pack(">BBHHBx", 1, kind, request, len(content), 0) + content


def _pair(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    assert len(n) < 128 and len(v) < 128
    return bytes([len(n), len(v)]) + n + v


def fastcgi_get(path: Path, script: Path) -> bytes:
    """One GET of ``script`` over the FastCGI socket ``path``: the response's body (headers cut off)."""
    params = b"".join(_pair(k, v) for k, v in {
        "SCRIPT_FILENAME": str(script), "SCRIPT_NAME": "/" + script.name, "REQUEST_METHOD": "GET",
        "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
        "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "localhost", "SERVER_PORT": "80"}.items())
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(_record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", FCGI_RESPONDER, 0)) + _record(FCGI_PARAMS, params)
                  + _record(FCGI_PARAMS, b"") + _record(FCGI_STDIN, b""))
        out, data = b"", b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            while len(data) >= 8:
                _, kind, _, length, padding = struct.unpack(">BBHHB", data[:7])
                if len(data) < 8 + length + padding:
                    break
                content, data = data[8:8 + length], data[8 + length + padding:]
                if kind == FCGI_STDOUT:
                    out += content
                elif kind == FCGI_END_REQUEST:
                    return out.partition(b"\r\n\r\n")[2]
    raise CowaheadError("php-fpm closed the FastCGI connection before the end of the request")


# ----- the scenario ----------------------------------------------------------------------------------------


def _load(sock: Path, script: Path) -> list[dict]:
    answers: list[dict] = []
    errors: list[str] = []

    def client(count: int) -> None:
        try:
            for _ in range(count):
                answers.append(json.loads(fastcgi_get(sock, script)))
        except (OSError, ValueError, CowaheadError) as e:
            errors.append(str(e))

    threads = [threading.Thread(target=client, args=(REQUESTS // CLIENTS,)) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise CowaheadError(f"FastCGI requests to php-fpm failed: {errors[0]}")
    return answers


def run(output: Path | None, progress=None) -> ScenarioResult:
    if shutil.which(FPM) is None:
        raise CowaheadError(f"{FPM} not found; install the Debian package {PACKAGE} (scripts/setup does)")
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="cowahead-php-fpm-") as tmp:
        directory = Path(tmp)
        script, config, sock = directory / "page.php", directory / "php-fpm.conf", directory / "php-fpm.sock"
        script.write_text(SCRIPT)
        config.write_text(CONFIG.format(dir=directory, workers=WORKERS))
        command = [FPM, "-F", "-R", "-y", str(config), "-d", "opcache.enable=1", "-d", "opcache.memory_consumption=32",
                   "-d", "opcache.validate_timestamps=0"]
        with launched(command, output) as (recorder, process):
            if progress:
                progress("record", None, None)
            deadline = time.monotonic() + 30
            while not sock.exists() or not (directory / "php-fpm.pid").exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise CowaheadError(f"php-fpm did not start; see {directory / 'php-fpm.log'}")
                time.sleep(0.05)
            master = int((directory / "php-fpm.pid").read_text())
            with clock.time("workload"):
                answers = _load(sock, script)
            os.kill(master, signal.SIGQUIT)  # graceful stop: workers finish, then the master exits
            recording = None
            if recorder is not None:
                recording = recorder.finish(progress)
            else:
                process.wait(timeout=30)
    last: dict[int, dict] = {}
    for answer in answers:
        if answer["pid"] not in last or answer["time_ns"] > last[answer["pid"]]["time_ns"]:
            last[answer["pid"]] = answer
    result = ScenarioResult(NAME, output, recording, seconds=dict(clock.seconds))
    result.details.update({"master": master, "requests": len(answers), "workers_answering": len(last),
                           "requests_per_worker": {pid: sum(a["pid"] == pid for a in answers) for pid in last},
                           "last_answers": list(last.values())})
    if recording is None:
        return result
    trace = recording.trace
    traced = sum(int(fault_mask(trace, [pid], end_ns=a["time_ns"]).sum()) for pid, a in last.items())
    result.comparisons.append(Comparison(
        f"faults of the {len(last)} workers that answered", traced, sum(a["faults"] for a in last.values()), "faults",
        "trace: each worker's faults from its fork to its last answer's hrtime(); program: getrusage() "
        "ru_minflt + ru_majflt in that request"))
    c = trace.columns
    forks = np.flatnonzero((c["kind"] == EventKind.FORK) & (c["pid"] == master))
    result.details.update({"master_forks": len(forks),
                           "trace_cow_0x7_faults_of_workers": int(fault_mask(trace, list(last), codes=(COW,)).sum())})
    add_to_trace(output, recording, result)
    return result
