"""Programs run under a wrapper that forks them and reports their subtree's rusage from wait4.

``shell-forkexec``, ``make-build`` and ``r-mclapply`` hold the trace's
faults of every process under the wrapper against ``ru_minflt +
ru_majflt`` of the wrapper's child, as wait4 returns them (the child and
all it waited for).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..record import Recording
from ..trace import EventKind, Trace
from ._common import COW, Comparison, fault_mask, run_command

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
NOTE = "trace: page_fault_user + page_fault_kernel samples; program: ru_minflt + ru_majflt from wait4"


def run_under_wait4(command: list[str], directory: Path, output: Path | None,
                    progress=None) -> tuple[Recording | None, float, dict]:
    """Run ``command`` under the wrapper (recorded into ``output`` if given): (recording, seconds, its rusage)."""
    wrapper, report = directory / "wrapper.py", directory / "rusage.json"
    wrapper.write_text(WRAPPER)
    recording, seconds = run_command([sys.executable, str(wrapper), str(report), *command], output, progress)
    return recording, seconds, json.loads(report.read_text())


def wait4_comparison(trace: Trace, usage: dict, what: str, note: str = NOTE) -> tuple[Comparison, dict]:
    """The faults of every traced process but the wrapper against the rusage, and what the trace says of
    them: (the comparison, details: processes, forks, vforks, execs, COW faults, rusage minus trace)."""
    c = trace.columns
    others = set(c["pid"].tolist()) - {usage["wrapper"]}
    faults = int(fault_mask(trace, others).sum())
    program = usage["minflt"] + usage["majflt"]
    ours = np.isin(c["pid"], list(others))
    details = {"trace_cow_0x7_faults": int(fault_mask(trace, others, codes=(COW,)).sum()),
               "processes": len(others),
               "forks": int(((c["kind"] == EventKind.FORK) & ours).sum()),
               "execs": int(((c["kind"] == EventKind.EXEC) & ours).sum()),
               # a vfork child runs in its parent's mm until exec: the trace folds it into the parent
               "vfork_children": trace.metadata.get("conversion", {}).get("vfork_children"),
               "rusage_minus_trace": program - faults}
    return Comparison(what, faults, program, "faults", note), details
