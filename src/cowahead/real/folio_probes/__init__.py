"""A C probe process driven line by line, for measuring what the kernel does with folios.

``probe.c`` (beside this file) maps, writes, reads, madvises, forks and
execs on command and reports the faults its own loop took; this side reads
the probe's (and its child's) pagemap, kpageflags, smaps and the THP
counters between commands (``cowahead.real.folios``, ``cowahead.real.thp``).
A C program is used instead of Python so that a fault count is the
workload's alone: no interpreter heap shares the COW faults after fork.

The probe is compiled with gcc into a temporary directory at first use.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import CowaheadError

SOURCE = Path(__file__).with_name("probe.c")
_built: Path | None = None


def build_probe(directory: Path | None = None) -> Path:
    """Compile probe.c; returns the binary. Without ``directory``: once per process, in a temporary
    directory removed at exit."""
    global _built
    cached = directory is None
    if cached and _built is not None and _built.exists():
        return _built
    gcc = shutil.which("gcc")
    if gcc is None:
        raise CowaheadError("gcc is missing: the folio probes are C programs compiled at run time")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="cowahead-probe-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    out = Path(directory) / "probe"
    done = subprocess.run([gcc, "-O1", "-Wall", "-o", str(out), str(SOURCE)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise CowaheadError(f"gcc could not build {SOURCE.name}: {done.stderr.strip().splitlines()[-1]}")
    if cached:
        _built = out
    return out


class ProbeError(CowaheadError):
    """The probe replied ``err ...`` or died."""


class Probe:
    """One running probe (the parent) and, after ``fork``, its child; a context manager that ends both."""

    def __init__(self, binary: Path | None = None, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.process = subprocess.Popen([str(binary or build_probe())], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        ready = self._reply()
        self.pid = int(ready["pid"])
        self.thp_disable = int(ready["thp_disable"])
        self.child_pid: int | None = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reply(self) -> dict:
        line = self.process.stdout.readline().strip()
        if not line:
            raise ProbeError(f"the probe died (exit status {self.process.poll()})")
        word, *fields = line.split()
        if word == "err":
            raise ProbeError("probe: " + " ".join(fields))
        reply = dict(f.split("=", 1) for f in fields)
        return {k: int(v, 0) for k, v in reply.items()}

    def cmd(self, line: str) -> dict:
        """Send one command; its reply as numbers (``{"minflt": 1, ...}``)."""
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._reply()

    # ----- the commands -----------------------------------------------------------------------

    def map(self, length: int, align: int, offset: int = 0, child: bool = False) -> int:
        """A new VMA of ``length`` bytes at an ``align``-aligned address plus ``offset``; its address."""
        return self.cmd(self._to(child) + f"map {length} {align} {offset}")["addr"]

    def madvise(self, address: int, length: int, advice: int, child: bool = False) -> dict:
        return self.cmd(self._to(child) + f"madvise {address} {length} {advice}")

    def write(self, address: int, length: int, value: int = 1, child: bool = False) -> dict:
        return self.cmd(self._to(child) + f"write {address} {length} {value}")

    def read(self, address: int, length: int, child: bool = False) -> dict:
        return self.cmd(self._to(child) + f"read {address} {length}")

    def munmap(self, address: int, length: int) -> dict:
        return self.cmd(f"munmap {address} {length}")

    def prctl(self, option: int, arg2: int, arg3: int = 0, child: bool = False) -> dict:
        return self.cmd(self._to(child) + f"prctl {option} {arg2} {arg3}")

    def fork(self) -> int:
        self.child_pid = self.cmd("fork")["child"]
        return self.child_pid

    def exit_child(self) -> None:
        """The child exits; returns once it is reaped, so its address space is torn down."""
        self.cmd("exitchild")
        self.child_pid = None

    def exec(self, child: bool = False) -> dict:
        """execv the probe itself (in the child, or this process); the new image's ``ready`` fields."""
        return self.cmd(self._to(child) + "exec")

    def _to(self, child: bool) -> str:
        if child and self.child_pid is None:
            raise ProbeError("no child: fork first")
        return "child " if child else ""

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=self.timeout_s)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
