"""``r-mclapply``: R's ``parallel::mclapply`` over a large list the parent built.

Rscript builds a list of ENTRIES small numeric vectors, then
``mclapply(1:TASKS, work, mc.cores = 2, mc.preschedule = FALSE)`` forks a
child per task (two at a time); each child reads every fourth vector.
R's objects carry no reference count that reading writes, but the
garbage collector's mark phase, which the child's allocations start,
writes a mark bit into the header of every object it reaches, shared
ones included.

The program's own counter, as in ``shell-forkexec``: the minor + major
faults of Rscript, R and the mclapply children (which R waits for), from
wait4()'s rusage, taken by a small wrapper that forks and execs Rscript.
Each child also reads its own minflt + majflt from /proc/self/stat at the
end of its task (kept in ``details``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path


from ..errors import CowaheadError
from ._common import COW, ScenarioResult, add_to_trace, fault_mask
from ._wait4 import run_under_wait4, wait4_comparison

NAME = "r-mclapply"
SUMMARY = "R parallel::mclapply over a list of 200k vectors, a fork per task; checked against wait4() rusage"
ENTRIES = 200_000
TASKS = 4
PACKAGE = "r-base-core"

PROGRAM = """
library(parallel)
args <- commandArgs(TRUE)
n <- as.integer(args[1]); tasks <- as.integer(args[2]); report <- args[3]
data <- lapply(seq_len(n), function(i) c(i, i * 2, i * 3))
faults <- function() {  # minflt + majflt, fields 10 and 12 of /proc/self/stat
    fields <- strsplit(sub("^.*\\\\) ", "", readLines("/proc/self/stat")), " ")[[1]]
    as.numeric(fields[8]) + as.numeric(fields[10])
}
work <- function(k) {
    part <- data[seq(k, length(data), by = tasks)]
    total <- sum(vapply(part, function(v) v[1] + v[3], 0))
    list(pid = Sys.getpid(), total = total, faults = faults())
}
results <- mclapply(seq_len(tasks), work, mc.cores = 2, mc.preschedule = FALSE)
lines <- vapply(results, function(r) sprintf('{"pid": %d, "faults": %.0f, "total": %.0f}', r$pid, r$faults, r$total), "")
writeLines(c("[", paste(lines, collapse = ",\\n"), "]"), report)
"""


def run(output: Path | None, progress=None) -> ScenarioResult:
    if shutil.which("Rscript") is None:
        raise CowaheadError(f"Rscript not found; install the Debian package {PACKAGE} (scripts/setup does)")
    with tempfile.TemporaryDirectory(prefix="cowahead-r-") as tmp:
        directory = Path(tmp)
        program, children = directory / "mclapply.R", directory / "children.json"
        program.write_text(PROGRAM)
        command = ["Rscript", "--vanilla", str(program), str(ENTRIES), str(TASKS), str(children)]
        recording, seconds, usage = run_under_wait4(command, directory, output, progress)
        tasks = json.loads(children.read_text())
    if len(tasks) != TASKS:
        raise CowaheadError(f"mclapply returned {len(tasks)} results, not {TASKS}")
    result = ScenarioResult(NAME, output, recording, seconds={"workload": seconds})
    result.details.update({"rusage": usage, "entries": ENTRIES, "tasks": tasks})
    if recording is None:
        return result
    trace = recording.trace
    comparison, details = wait4_comparison(
        trace, usage, "faults of R and its mclapply children",
        "trace: page_fault_user + page_fault_kernel samples of every process under the wrapper; "
        "program: ru_minflt + ru_majflt from wait4")
    result.comparisons.append(comparison)
    result.details.update(details)
    result.details["trace_cow_0x7_faults_children"] = int(
        fault_mask(trace, [t["pid"] for t in tasks], codes=(COW,)).sum())
    add_to_trace(output, recording, result)
    return result
