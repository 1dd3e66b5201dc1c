"""``cowahead record -o TRACE [--pid PID | -- CMD ARGS...]``: record a real program's faults.

perf records page faults, fork/exec/exit and the memory layout of the
command and every descendant (or of a running process, until it exits or
Ctrl-C); the capture is converted to a trace. Ctrl-C or a crashing command
still leaves a valid trace of what ran, and the exit code says what
happened: the command's own on a crash, 130 on an interrupt.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..errors import CowaheadError
from ..output import output_file
from ..record import Recorder, Recording

STAGES = {"record": "recording", "convert": "converting"}


class _Bar:
    """A rich progress bar fed by the recorder's progress(stage, done, total) callback.

    Recording has no known end (a spinner and the time); converting counts the
    bytes of perf's text read so far.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int | None, total: int | None) -> None:
        for other, task in self.tasks.items():
            if other != stage:
                self.progress.update(task, total=1, completed=1)
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(STAGES.get(stage, stage), total=total, amount="")
        amount = f"{done / 1e6:,.1f} MB of perf text" if done else ""
        self.progress.update(self.tasks[stage], completed=done or 0, total=total, amount=amount)


COLUMNS = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
           TimeElapsedColumn())


def summary(output: str, rec: Recording) -> str:
    conv = rec.conversion
    cow = conv.faults_by_error_code.get("0x7", 0)
    return (f"{output}: {len(rec.trace)} events, {conv.faults} faults ({cow} COW-type 0x7), "
            f"{conv.processes} process starts, {conv.outside_vma} faults outside every known VMA"
            + (f", {conv.unparsed_lines} perf lines not understood" if conv.unparsed_lines else ""))


@click.command("record", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True, help="Trace file to write.")
@click.option("--pid", "-p", type=int, help="Attach to a running process (until it exits or Ctrl-C).")
@click.option("--keep-perf-data", type=click.Path(dir_okay=False), help="Also keep perf's raw perf.data here.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def command(output: str, pid: int | None, keep_perf_data: str | None, command: tuple[str, ...]) -> None:
    """Record the page faults of CMD (and all its descendants), or of process PID, into TRACE.

    Ctrl-C stops the recording and still writes the trace of what ran (exit
    130; 0 with --pid, where Ctrl-C is the normal end). A failing command
    keeps its trace too, and cowahead exits with the command's code.
    Needs perf (Debian linux-perf) and root or kernel.perf_event_paranoid=-1.
    """
    if pid is None and not command:
        raise CowaheadError("nothing to record: give --pid PID or a command after --")
    if pid is not None and command:
        raise CowaheadError("give either --pid PID or a command, not both")
    output_file(output)
    if keep_perf_data:
        output_file(keep_perf_data)
    recorder = Recorder(output, keep_perf_data)
    recorder.start(list(command) or None, pid)
    console = Console(stderr=True)
    with Progress(*COLUMNS, console=console, transient=True) as progress:
        bar = _Bar(progress)
        bar("record", None, None)
        rec = recorder.finish(bar)
    click.echo(summary(output, rec))
    if rec.conversion.khugepaged_collapses:
        click.echo(f"warning: khugepaged collapsed {rec.conversion.khugepaged_collapses} THPs during the run; "
                   "its tracepoint names no address, so the replay cannot place them (counted in the metadata)",
                   err=True)
    if rec.conversion.outside_vma:
        click.echo(f"note: {rec.conversion.outside_vma} faults fall outside every VMA the recording saw; "
                   "they stay in the trace and the model counts them as outside_vma", err=True)
    if rec.conversion.lost_samples:
        click.echo(f"warning: perf lost {rec.conversion.lost_samples} samples (ring buffer overflow); "
                   "the trace misses those faults", err=True)
    if rec.interrupted and pid is not None:
        click.echo(f"cowahead: recording of process {pid} stopped (Ctrl-C); trace kept in {output}", err=True)
        return  # Ctrl-C is how an attached recording normally ends
    if rec.interrupted:
        click.echo(f"cowahead: interrupted; the trace of what ran is kept in {output}", err=True)
        sys.exit(130)
    if rec.returncode != 0:
        click.echo(f"cowahead: the recorded command failed ({_status(rec.returncode)}); "
                   f"the trace of what ran is kept in {output}", err=True)
        sys.exit(_exit_code(rec.returncode))


def _exit_code(returncode: int) -> int:
    """The command's own exit code; a signal as the shell shows it (128 + signal)."""
    return 128 - returncode if returncode < 0 else min(returncode, 255)


def _status(returncode: int) -> str:
    if returncode > 128:
        return f"killed by signal {returncode - 128}"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
