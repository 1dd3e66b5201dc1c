"""``make-build``: ``make -j2`` of a small C project, fork and exec from make, the shell and gcc's driver.

The scenario writes a small C project (SOURCES files of a few functions
each, a header, a Makefile that compiles each to an object and links a
program) into a temporary directory and runs ``make -j2`` there: make
starts gcc per rule, gcc's driver starts cc1 and as, then collect2 and ld.
Measured here, none of them forks an address space: GNU make 4.3 starts
recipes with posix_spawn and gcc's driver its passes with vfork (both
CLONE_VM: the child runs in the parent's memory until it execs), so there
is no COW after fork at all, and the run's COW-type (0x7) faults are
copies of private file pages (relocations, .data). A negative control
for COW-ahead, by measurement rather than by design; ``details`` counts
the forks, vfork children and execs.

The program's own counter, as in ``shell-forkexec``: the minor + major
faults of make and everything it ran, from wait4()'s rusage, taken by a
small wrapper that forks and execs make (the wrapper's own faults are
left out on both sides). exec copies argv and envp into the new stack
through get_user_pages: a fault rusage counts and no exception tracepoint
sees, about one per exec (reported beside the comparison).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


from ..errors import CowaheadError
from ._common import ScenarioResult, add_to_trace
from ._wait4 import run_under_wait4, wait4_comparison

NAME = "make-build"
SUMMARY = "make -j2 of a small C project (make posix_spawns, gcc vforks: no COW after fork); checked against wait4() rusage"
SOURCES = 12
FUNCTIONS = 6  # per source file
JOBS = 2
PACKAGE = "build-essential"

MAKEFILE = """\
CC = gcc
CFLAGS = -O2 -Wall
OBJECTS = $(patsubst %.c,%.o,$(wildcard part*.c)) main.o

program: $(OBJECTS)
\t$(CC) -o $@ $(OBJECTS)

%.o: %.c parts.h
\t$(CC) $(CFLAGS) -c -o $@ $<
"""


def write_project(directory: Path) -> None:
    """SOURCES files part00.c ... of FUNCTIONS small functions each, their header, main.c and the Makefile."""
    declarations, calls = [], []
    for s in range(SOURCES):
        lines = ['#include "parts.h"', ""]
        for f in range(FUNCTIONS):
            name = f"part{s:02d}_{f}"
            declarations.append(f"long {name}(long n);")
            calls.append(f"    total += {name}(argc + {f});")
            lines += [f"long {name}(long n) {{", "    long acc = 0;",
                      f"    for (long i = 0; i < n * {s + f + 3}; i++)", f"        acc += (i * {f + 1}) ^ (acc >> 3);",
                      "    return acc;", "}", ""]
        (directory / f"part{s:02d}.c").write_text("\n".join(lines))
    (directory / "parts.h").write_text("\n".join(declarations) + "\n")
    (directory / "main.c").write_text('#include <stdio.h>\n#include "parts.h"\n\nint main(int argc, char **argv) {\n'
                                      "    long total = 0;\n" + "\n".join(calls) +
                                      '\n    printf("%ld\\n", total);\n    return 0;\n}\n')
    (directory / "Makefile").write_text(MAKEFILE)


def run(output: Path | None, progress=None) -> ScenarioResult:
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise CowaheadError(f"{tool} not found; install the Debian package {PACKAGE} (scripts/setup does)")
    with tempfile.TemporaryDirectory(prefix="cowahead-make-") as tmp:
        directory = Path(tmp)
        project = directory / "project"
        project.mkdir()
        write_project(project)
        recording, seconds, usage = run_under_wait4(["make", "-s", "-C", str(project), f"-j{JOBS}"], directory,
                                                    output, progress)
        built = (project / "program").exists()
    if not built:
        raise CowaheadError("make ran but left no program")
    result = ScenarioResult(NAME, output, recording, seconds={"workload": seconds})
    result.details.update({"rusage": usage, "sources": SOURCES, "jobs": JOBS})
    if recording is None:
        return result
    comparison, details = wait4_comparison(recording.trace, usage, "faults of make and everything it ran")
    result.comparisons.append(comparison)
    result.details.update(details)
    add_to_trace(output, recording, result)
    return result
