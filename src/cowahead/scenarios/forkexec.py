"""``shell-forkexec``: a POSIX shell loop that forks and execs short commands.

Debian's /bin/sh (dash) runs a loop of /bin/true, /bin/echo and ls; each
command is a fork (COW on the shell's pages until exec) then an exec that
drops the address space. The program's own counter: the minor + major
faults of the shell and everything it ran, from wait4()'s rusage, taken by
a small wrapper that forks and execs the shell (the wrapper's own faults
are left out on both sides).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..trace import EventKind
from ._common import COW, Comparison, ScenarioResult, add_to_trace, fault_mask, run_command

NAME = "shell-forkexec"  # the generator `forkexec` is the synthetic twin
SUMMARY = "dash loop forking and exec'ing /bin/true, /bin/echo and ls; checked against wait4() rusage"
ITERATIONS = 100

LOOP = (f"i=0; while [ $i -lt {ITERATIONS} ]; do /bin/true; /bin/echo $i >/dev/null; ls / >/dev/null; "
        "i=$((i+1)); done")

# Forks (not vfork: the child's faults before exec are its own on both sides) and
# reports the child subtree's rusage; the wrapper's own pid is told apart in the trace.
WRAPPER = """
import json, os, sys
child = os.fork()
if child == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(child, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wrapper": os.getpid(), "child": child, "status": status,
               "minflt": usage.ru_minflt, "majflt": usage.ru_majflt}, f)
sys.exit(0 if status == 0 else 1)
"""


def run(output: Path | None, progress=None) -> ScenarioResult:
    with tempfile.TemporaryDirectory(prefix="cowahead-forkexec-") as tmp:
        wrapper, report = Path(tmp) / "wrapper.py", Path(tmp) / "rusage.json"
        wrapper.write_text(WRAPPER)
        command = [sys.executable, str(wrapper), str(report), "/bin/sh", "-c", LOOP]
        recording, seconds = run_command(command, output, progress)
        usage = json.loads(report.read_text())
    result = ScenarioResult(NAME, output, recording, seconds={"workload": seconds})
    result.details["rusage"] = usage
    if recording is None:
        return result
    trace = recording.trace
    others = set(trace.columns["pid"].tolist()) - {usage["wrapper"]}
    faults = int(fault_mask(trace, others).sum())
    cow = int(fault_mask(trace, others, codes=(COW,)).sum())
    program = usage["minflt"] + usage["majflt"]
    result.comparisons.append(Comparison(
        "faults of the shell and its commands", faults, program, "faults",
        "trace: page_fault_user + page_fault_kernel samples; program: ru_minflt + ru_majflt from wait4"))
    execs = int(((trace.columns["kind"] == EventKind.EXEC) & np.isin(trace.columns["pid"], list(others))).sum())
    # exec copies argv/envp into the new stack through get_user_pages: a fault rusage
    # counts and no exception tracepoint sees, one per exec.
    result.details.update({"trace_cow_0x7_faults": cow, "processes": len(others), "execs": execs,
                           "rusage_minus_trace": program - faults})
    add_to_trace(output, recording, result)
    return result
