"""``shell-forkexec``: a POSIX shell loop that forks and execs short commands.

Debian's /bin/sh (dash) runs a loop of /bin/true, /bin/echo and ls; each
command is a fork (COW on the shell's pages until exec) then an exec that
drops the address space. The program's own counter: the minor + major
faults of the shell and everything it ran, from wait4()'s rusage, taken by
a small wrapper that forks and execs the shell (the wrapper's own faults
are left out on both sides).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ._common import ScenarioResult, add_to_trace
from ._wait4 import run_under_wait4, wait4_comparison

NAME = "shell-forkexec"  # the generator `forkexec` is the synthetic twin
SUMMARY = "dash loop forking and exec'ing /bin/true, /bin/echo and ls; checked against wait4() rusage"
ITERATIONS = 100

LOOP = (f"i=0; while [ $i -lt {ITERATIONS} ]; do /bin/true; /bin/echo $i >/dev/null; ls / >/dev/null; "
        "i=$((i+1)); done")


def run(output: Path | None, progress=None) -> ScenarioResult:
    with tempfile.TemporaryDirectory(prefix="cowahead-forkexec-") as tmp:
        recording, seconds, usage = run_under_wait4(["/bin/sh", "-c", LOOP], Path(tmp), output, progress)
    result = ScenarioResult(NAME, output, recording, seconds={"workload": seconds})
    result.details["rusage"] = usage
    if recording is None:
        return result
    # exec copies argv/envp into the new stack through get_user_pages: a fault rusage
    # counts and no exception tracepoint sees, one per exec.
    comparison, details = wait4_comparison(recording.trace, usage, "faults of the shell and its commands")
    result.comparisons.append(comparison)
    result.details.update(details)
    add_to_trace(output, recording, result)
    return result
