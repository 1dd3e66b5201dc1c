"""Recording real programs with perf into cowahead traces.

Layering: ``_perf`` and ``_procfs`` face the kernel (perf, /proc, /sys);
``_convert`` turns perf's text into trace columns; this module ties them
together. A recording always ends in a trace of what ran: an interrupt or a
crashing command still has its perf data converted, and the result says so.
"""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from ..errors import CowaheadError
from ..machine import thp_settings
from ..trace import Trace, write_trace
from ..trace.events import PAGE_SHIFT, Advice, EventKind, VmaKind
from . import _perf, _procfs
from ._convert import Conversion, Placed, convert

# progress(stage, done, total): stage is "record" or "convert"; done/total may be None.
Progress = Callable[[str, int | None, int | None], None]


@dataclass
class Recording:
    """A finished recording: the trace (already written) and how it went."""
    trace: Trace
    conversion: Conversion
    returncode: int
    interrupted: bool
    perf_data_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def command_failed(self) -> bool:
        return self.returncode != 0 and not self.interrupted


def stack_reserve() -> int:
    """How far a main-thread stack may grow: RLIMIT_STACK, inherited by the command."""
    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return soft if 0 < soft < 1 << 32 else 8 << 20


def snapshot(pid: int) -> list[Placed]:
    """The address space perf cannot see: VMAs from /proc/PID/maps, present pages from pagemap.

    Present pages become WRITE events (anonymous) or READ events (page
    cache), with arg -1 to mark them as not being faults, so the model
    starts from the pages the process already had. All carry the time the
    snapshot was taken (CLOCK_MONOTONIC, perf's clock): at time 0 they put
    hours of uptime between them and the first fault, on every time axis.
    """
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    try:
        entries = _procfs.read_maps(pid)
    except (FileNotFoundError, ProcessLookupError):
        raise CowaheadError(f"no process {pid} to attach to") from None
    except PermissionError:
        raise CowaheadError(f"not permitted to read /proc/{pid}/maps; run as root") from None
    events: list[Placed] = []
    flags = _procfs.thp_flags(pid)
    if _procfs.thp_disabled(pid):
        events.append(Placed(now, pid, EventKind.THP_DISABLE, arg=1))
    for entry in entries:
        start = entry.start
        if entry.name == "[stack]":
            start = max(entry.end - stack_reserve(), 0)
        events.append(Placed(now, pid, EventKind.MMAP, start, entry.end - start, int(entry.vma_kind)))
        for flag, advice in (("hg", Advice.HUGEPAGE), ("nh", Advice.NOHUGEPAGE)):
            if flag in flags.get(entry.start, ()):
                events.append(Placed(now, pid, EventKind.MADVISE, start, entry.end - start, int(advice)))
    for entry in entries:
        pages, is_file = _procfs.present_pages(pid, entry)
        anon_write = entry.vma_kind == VmaKind.PRIVATE_ANON or entry.vma_kind == VmaKind.PRIVATE_FILE
        for page, file_page in zip(pages.tolist(), is_file.tolist()):
            kind = EventKind.READ if file_page or not anon_write else EventKind.WRITE
            events.append(Placed(now, pid, kind, page << PAGE_SHIFT, 1, -1))
    return events


def metadata(command: list[str] | None, pid: int | None, run: _perf.PerfRun, conv: Conversion,
             attached_pages: int) -> dict:
    return {
        "source": "record",
        "recorded_command": command or [],
        "recorded_pid": pid,
        "tracepoints": list(_perf.TRACEPOINTS),
        "perf_version": _perf_version(),
        "thp": thp_settings(),
        "clock": "CLOCK_MONOTONIC",  # time_ns, as time.clock_gettime_ns(CLOCK_MONOTONIC) reads it
        "fault_arg": "x86_error_code",  # READ/WRITE arg: the page-fault error code; -1 for --pid snapshot pages
        "attached_pages": attached_pages,
        "exit_status": run.returncode,
        "interrupted": run.interrupted,
        "conversion": conv.summary(),
    }


def _perf_version() -> str:
    try:
        out = subprocess.run([_perf.perf_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Recorder:
    """One recording: start perf, wait or stop, then convert and write the trace."""

    def __init__(self, output: str | Path, keep_perf_data: str | Path | None = None) -> None:
        self.output = Path(output)
        if self.output.is_dir():
            raise CowaheadError(f"{self.output}: is a directory, give a trace file name")
        if not self.output.parent.exists():
            raise CowaheadError(f"{self.output.parent}: no such directory for the trace")
        self.keep_perf_data = Path(keep_perf_data) if keep_perf_data else None
        self._workdir = tempfile.TemporaryDirectory(prefix=".cowahead-record-", dir=self.output.parent)
        self.perf_data = Path(self._workdir.name) / "perf.data"
        self.process: subprocess.Popen | None = None
        self.command: list[str] | None = None
        self.pid: int | None = None
        self.initial: list[Placed] = []
        self.started = 0.0

    def start(self, command: list[str] | None = None, pid: int | None = None) -> None:
        if (command is None) == (pid is None):
            raise CowaheadError("give either --pid PID or a command after --, not both")
        self.command, self.pid = command, pid
        _perf.perf_binary()  # a missing perf is the first thing to say
        _perf.check_permission()
        if command is not None and shutil.which(command[0]) is None:
            raise CowaheadError(f"{command[0]}: command not found")
        if pid is not None:
            self.initial = snapshot(pid)
        self.started = time.monotonic()
        try:
            self.process = _perf.start_record(self.perf_data, pid, command or [])
        except FileNotFoundError:
            raise CowaheadError(f"perf not found; install the Debian package {_perf.PERF_PACKAGE}") from None

    def stop(self) -> None:
        """End an attached (--pid) recording, or cut a command's short."""
        if self.process is not None:
            _perf.stop_record(self.process)

    def finish(self, progress: Progress | None = None) -> Recording:
        """Wait for perf, convert what it captured, write the trace (even after an interrupt)."""
        assert self.process is not None
        try:
            run = _perf.wait_record(self.process)
            seconds = {"record": time.monotonic() - self.started}
            if not _perf.header_complete(self.perf_data):
                if run.returncode < 0:  # perf itself died
                    self._perf_killed(-run.returncode)
                self._perf_unfinished(run)
            if not self.perf_data.exists() or self.perf_data.stat().st_size == 0:
                raise CowaheadError(f"perf wrote no data (exit {run.returncode}): {_first_line(run.stderr)}")
            if self.keep_perf_data:
                shutil.copyfile(self.perf_data, self.keep_perf_data)
            t = time.monotonic()
            with tempfile.TemporaryFile() as errors:
                script = _perf.start_script(self.perf_data, errors)
                try:
                    conv = convert(script.stdout, self.initial, stack_reserve(),
                                   (lambda done, total: progress("convert", done, total)) if progress else None)
                except BaseException:
                    script.kill()
                    script.wait()
                    raise
                _perf.finish_script(script, errors, self.perf_data)
            seconds["convert"] = time.monotonic() - t  # perf script and the converter, side by side
            command_seconds = _command_life(conv.columns)
            if command_seconds is not None:
                seconds["command"] = command_seconds
            meta = metadata(self.command, self.pid, run, conv, sum(1 for e in self.initial if e.arg == -1))
            meta["seconds"] = seconds
            trace = Trace(conv.columns, meta)
            write_trace(trace, self.output)
            return Recording(trace, conv, run.returncode, run.interrupted, self.perf_data.stat().st_size, seconds)
        finally:
            self._workdir.cleanup()


    def _perf_killed(self, signum: int) -> None:
        """perf died by a signal it could not handle (SIGKILL, the OOM killer): its perf.data never got its
        header, so perf script cannot read any of it. (A workload killed by a signal also makes perf exit
        with that signal, but after perf finished its file.) Keep the file beside the output for whoever wants it,
        and say so in one line."""
        kept = self.output.with_name(self.output.name + ".perf.data")
        where = "nothing was written"
        if self.perf_data.exists() and self.perf_data.stat().st_size:
            try:
                shutil.move(self.perf_data, kept)
                where = f"its {kept.stat().st_size} bytes are kept in {kept}"
            except OSError as e:
                where = f"it could not be kept ({e.strerror})"
        raise CowaheadError(f"perf was killed ({signal.Signals(signum).name}) mid-recording: perf.data has no "
                            f"header, so perf script can read none of it; no trace written; {where}")


    def _perf_unfinished(self, run: _perf.PerfRun) -> None:
        """perf exited but could not finish its file: most often the disk filled under it."""
        folder = self.perf_data.parent
        if shutil.disk_usage(folder).free < 1 << 20:
            reason = f"the file system holding {self.output.parent} is full"
        else:
            reason = _first_line(run.stderr) or f"exit {run.returncode}"
        raise CowaheadError(f"perf could not finish its perf.data ({reason}); no trace written, nothing kept")


def _command_life(columns: dict) -> float | None:
    """Seconds from the command's exec to its exit, from the trace itself.

    This is the recorded program's own wall time: perf's start-up before the
    exec and its teardown after the exit (closing tracepoints, ~30 ms each
    here) are not in it.
    """
    kind, pid, time_ns = columns["kind"], columns["pid"], columns["time_ns"]
    execs = (kind == EventKind.EXEC).nonzero()[0]
    if not len(execs):
        return None
    root = pid[execs[0]]
    exits = ((kind == EventKind.EXIT) & (pid == root)).nonzero()[0]
    if not len(exits):
        return None
    return float(time_ns[exits[-1]] - time_ns[execs[0]]) / 1e9


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def record(output: str | Path, command: list[str] | None = None, pid: int | None = None,
           progress: Progress | None = None, keep_perf_data: str | Path | None = None) -> Recording:
    """Record a command (or an existing process until it exits or SIGINT) into a trace file."""
    recorder = Recorder(output, keep_perf_data)
    recorder.start(command, pid)
    if progress:
        progress("record", None, None)
    return recorder.finish(progress)


__all__ = ["Recorder", "Recording", "record", "snapshot", "Conversion"]
