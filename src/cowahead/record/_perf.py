"""Kernel-facing: drive ``perf record`` and ``perf script``.

Nothing here knows the trace format; it starts perf, forwards an interrupt
to it, and turns perf's failures into one-line user errors.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import CowaheadError

# What perf records. Faults: the x86 exception tracepoints (user mode, and
# kernel mode for copy_to_user and friends touching user pages). Processes:
# fork/exec/exit, and task_newtask for its clone_flags (threads and vfork
# children share their parent's address space). Layout: perf's own MMAP2
# side-band records (-d adds data and anonymous mmaps), plus the syscalls
# that remove or move memory, which perf has no side-band record for.
TRACEPOINTS = (
    "exceptions:page_fault_user",
    "exceptions:page_fault_kernel",
    "sched:sched_process_fork",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
    "task:task_newtask",
    "syscalls:sys_enter_munmap",
    "syscalls:sys_enter_brk",
    "syscalls:sys_exit_brk",
    "syscalls:sys_enter_mremap",
    "syscalls:sys_exit_mremap",
    "syscalls:sys_enter_madvise",
    "syscalls:sys_enter_prctl",             # PR_SET_THP_DISABLE
    "huge_memory:mm_collapse_huge_page",    # khugepaged's collapses, counted (no address to place them)
)

# Fixed fields for `perf script`: the converter parses exactly this layout.
SCRIPT_FIELDS = "pid,tid,time,event,trace"

# Timestamps on CLOCK_MONOTONIC, so that a workload can tell the trace, through
# time.clock_gettime_ns(CLOCK_MONOTONIC), when its phases began and ended.
CLOCK = "monotonic"

# Ring buffer pages per CPU: faults come in bursts of tens of thousands.
MMAP_PAGES = "1024"

PERF_PACKAGE = "linux-perf"
PARANOID_SYSCTL = "kernel.perf_event_paranoid"


@dataclass
class PerfRun:
    """How one ``perf record`` ended."""
    returncode: int
    interrupted: bool
    stderr: str


def perf_binary() -> str:
    path = shutil.which("perf")
    if path is None:
        raise CowaheadError(f"perf not found; install the Debian package {PERF_PACKAGE} (apt-get install {PERF_PACKAGE})")
    return path


def check_permission() -> None:
    """Tracepoints need root (CAP_PERFMON) or kernel.perf_event_paranoid = -1."""
    if os.geteuid() == 0:
        return
    try:
        level = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return
    if level > -1:
        raise CowaheadError(f"not permitted to record kernel tracepoints: run as root or set sysctl {PARANOID_SYSCTL}=-1 (now {level})")


def record_args(perf_data: Path, pid: int | None, command: list[str]) -> list[str]:
    args = [perf_binary(), "record", "--quiet", "--data", "--no-buildid", "--no-buildid-cache",
            "--no-bpf-event", "--clockid", CLOCK, "--mmap-pages", MMAP_PAGES, "-o", str(perf_data)]
    for tracepoint in TRACEPOINTS:
        args += ["-e", tracepoint]
    if pid is not None:
        return args + ["--pid", str(pid)]
    return args + ["--", *command]


def start_record(perf_data: Path, pid: int | None, command: list[str]) -> subprocess.Popen:
    """Start perf record; the caller waits with :func:`wait_record`."""
    check_permission()
    args = record_args(perf_data, pid, command)
    # perf gets its own stderr pipe so that its errors can be translated;
    # the workload's stdout stays the user's.
    return subprocess.Popen(args, stderr=subprocess.PIPE, text=True, errors="replace")


def wait_record(process: subprocess.Popen) -> PerfRun:
    """Wait for perf; a SIGINT to us is forwarded to perf, which flushes and stops.

    perf on SIGINT stops its workload (SIGTERM) and still writes a complete
    perf.data, so an interrupted run is converted like any other.
    """
    interrupted = False

    def forward(signum, frame):
        nonlocal interrupted
        interrupted = True
        if process.poll() is None:
            process.send_signal(signal.SIGINT)

    # perf's stderr is read by a thread and perf itself is waited for: the workload inherits that pipe, and a
    # workload that outlives a killed perf would keep it open, so reading to its end could wait for ever.
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGINT, forward)
    try:
        while process.poll() is None:
            try:
                process.wait()
            except KeyboardInterrupt:  # forwarded to perf above; keep waiting for it to finish its file
                continue
    finally:
        signal.signal(signal.SIGINT, previous)
    reader.join(timeout=2)
    run = PerfRun(process.returncode, interrupted, "".join(lines))
    _raise_setup_errors(run)
    return run


def stop_record(process: subprocess.Popen) -> None:
    """For --pid recordings the caller decides when to stop: SIGINT, as perf expects."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)


def _raise_setup_errors(run: PerfRun) -> None:
    """perf's own failures (before any workload ran) become one-line errors."""
    text = run.stderr
    if "perf_event_paranoid" in text or "No permission" in text or "Permission denied" in text and "perf" in text:
        raise CowaheadError(f"not permitted to record kernel tracepoints: run as root or set sysctl {PARANOID_SYSCTL}=-1")
    if "event syntax error" in text or "unknown tracepoint" in text:
        first = next((line for line in text.splitlines() if line.strip()), "")
        raise CowaheadError(f"perf cannot open a tracepoint this kernel should have: {first.strip()}")
    if "Couldn't run the workload" in text or "failed to exec" in text.lower():
        first = next((line for line in text.splitlines() if line.strip()), "")
        raise CowaheadError(f"perf could not start the command: {first.strip()}")
    if "No such process" in text or "Couldn't find" in text and "pid" in text.lower():
        raise CowaheadError(f"no such process to attach to ({_first_line(text)})")


def header_complete(perf_data: Path) -> bool:
    """Did perf finish its file? It writes the header's data size (struct perf_file_header: magic, size,
    attr_size, attrs and then data as {offset, size}: the size at byte 48) only when it exits; a perf
    killed by a signal it cannot catch leaves 0 there, and perf script then reads nothing."""
    try:
        with open(perf_data, "rb") as f:
            head = f.read(56)
    except OSError:
        return False
    return len(head) == 56 and head[:8] == b"PERFILE2" and int.from_bytes(head[48:56], "little") != 0


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def start_script(perf_data: Path, errors) -> subprocess.Popen:
    """``perf script`` printing every sample with fixed fields, and perf's side-band records, to a pipe.

    The converter reads the pipe while perf still prints, so the two overlap.
    perf's warnings go to ``errors`` (a file: a second pipe could fill and block).
    """
    args = [perf_binary(), "script", "-i", str(perf_data), "--ns", "-F", SCRIPT_FIELDS,
            "--show-mmap-events", "--show-task-events", "--show-lost-events"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors)


def finish_script(process: subprocess.Popen, errors, perf_data: Path) -> None:
    """Wait for perf script; its failure becomes one line."""
    process.stdout.close()
    if process.wait() != 0:
        errors.seek(0)
        text = errors.read().decode(errors="replace")
        first = next((line for line in text.splitlines() if "not valid for" not in line and line.strip()), "")
        raise CowaheadError(f"perf script failed on {perf_data}: {first.strip() or f'exit {process.returncode}'}")
