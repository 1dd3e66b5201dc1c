"""Run a plan as real processes on the running kernel.

The runner forks the trace's first process (the *root*); every FORK step
forks a real child, so trace pids map one to one onto real processes.
Processes take turns as the trace says: each runs its consecutive steps,
then passes a token (the next step's index) through the next process's
pipe and waits on its own. A process that exits passes the token first and
names its real pid; the receiver waits on a pidfd until that process is
gone, so its address space is torn down (and the frames it shared are
exclusive again) before the stream goes on, as in the trace's order.

With ``measure`` each memory step reads /proc/self/pagemap over its pages
before and after, and the minor-fault count (getrusage) around the
operation; right after every fork both processes first break COW on their
own Python heap, so those counts hold the workload's faults only. Without
``measure`` only times are taken (the benchmark).

Large folios make one fault map many pages, some of which the step never
touches, so a measured step reads pagemap over every 2 MiB its pages lie
in, which PMD maps them (PAGEMAP_SCAN) before and after, and for every page
whose mapping changed its new folio (kpageflags: head PFN, size, zero
page), at once, before those PFNs can be freed. At each fork, exec and
exit a process also reads the folio of every span page
(``folio_map.kernel_folio_map``). The span is mapped 2 MiB aligned, as the
generators' traces are, so that the kernel and the model place the same
PMD THPs and the same page tables.

Every process checks its memory against the values it must hold at EXIT
and EXEC (value of the last write at offset 0, every other byte zero).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CowaheadError
from ..trace.events import PAGE_SIZE, PTRS_PER_PTE
from . import linux
from .folio_map import FolioMap, PageKind, kernel_folio_map
from .folios import KPF_THP, KPF_ZERO_PAGE, folio_heads, pmd_mapped, read_kpageflags
from .plan import Op, Plan, Step

TOKEN = struct.Struct("qq")  # (next step index, real pid to wait for or 0)
DONE = -1
FAILED = -2
HUGE_ALIGN = PTRS_PER_PTE * PAGE_SIZE


@dataclass
class OpRecord:
    """One memory step as a process saw it."""
    step: int
    op: str
    pages: np.ndarray              # span offsets, unique, in first-touch order
    indices: np.ndarray            # the event of each page's first touch
    ns: int
    minflt: int = 0
    cpu_ns: int = 0                # user + system time of the step (time other tasks ran left out)
    before: np.ndarray | None = None  # pagemap entries of ``pages`` (measure only)
    after: np.ndarray | None = None
    pmd_before: np.ndarray | None = None  # a PMD maps each of ``pages`` (None: no PAGEMAP_SCAN)
    pmd_after: np.ndarray | None = None
    changes: Changes | None = None        # every page of the step's 2 MiB ranges whose mapping changed


@dataclass
class Changes:
    """The pages of a step's 2 MiB ranges whose mapping changed (appeared, went, or a new PFN), with the
    folio each maps afterwards; read right after the step, while those PFNs are still what they were."""
    pages: np.ndarray        # span offsets, ascending
    was_present: np.ndarray  # bool
    is_present: np.ndarray   # bool
    head: np.ndarray         # uint64: the new folio's head PFN (0: not present)
    size: np.ndarray         # int64: the new folio's pages
    kind: np.ndarray         # uint8 PageKind of the new mapping


@dataclass
class ProcessRecord:
    pid: int
    real_pid: int
    ops: list[OpRecord] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)  # every wrong page, one line each
    error: str | None = None
    folio_maps: list[tuple[int, FolioMap]] = field(default_factory=list)  # (step, map) at FORK, EXEC, EXIT


@dataclass
class RunResult:
    plan: Plan
    measure: bool
    wall_ns: int
    processes: list[ProcessRecord]

    @property
    def work_ns(self) -> int:
        """Time inside the workload's own memory operations, summed over processes."""
        return sum(op.ns for p in self.processes for op in p.ops if op.op != Op.FORK.value)

    @property
    def work_cpu_ns(self) -> int:
        """CPU time (user + system) inside the workload's memory operations, summed over processes."""
        return sum(op.cpu_ns for p in self.processes for op in p.ops if op.op != Op.FORK.value)

    @property
    def integrity(self) -> list[str]:
        return [f"pid {p.pid}: {line}" for p in self.processes for line in p.integrity]


def run_plan(plan: Plan, measure: bool, timeout_s: float = 300.0) -> RunResult:
    """Run every step for real; raises CowaheadError if a process fails or hangs."""
    pipes = {pid: os.pipe() for pid in plan.pids}
    done_r, done_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="cowahead-real-") as tmp:
        start = time.perf_counter_ns()
        root = os.fork()
        if root == 0:
            try:
                _Process(plan, pipes, done_w, Path(tmp), measure, timeout_s).run_root()
            finally:
                os._exit(1)  # the root never returns into the caller's stack, even if set-up failed
        try:
            index, _ = _wait_token(done_r, timeout_s)
            wall = time.perf_counter_ns() - start
        except TimeoutError:
            _kill_run(root)
            raise CowaheadError(f"real run of {plan.pattern} under {plan.policy} hung for {timeout_s:.0f} s; "
                                "killed") from None
        except BaseException:  # Ctrl-C or SIGTERM here: the run's processes (a group of their own) go too
            _kill_run(root)
            raise
        finally:
            os.waitpid(root, 0)
            for r, w in list(pipes.values()) + [(done_r, done_w)]:
                os.close(r)
                os.close(w)
        records = [pickle.loads(p.read_bytes()) for p in sorted(Path(tmp).glob("*.pkl"))]
    errors = [f"pid {r.pid}: {r.error}" for r in records if r.error]
    if index == FAILED or errors:
        raise CowaheadError(f"real run of {plan.pattern} under {plan.policy} failed: "
                            + ("; ".join(errors) or "a process died"))
    return RunResult(plan, measure, wall, sorted(records, key=lambda r: (r.pid, r.real_pid)))


def _kill_run(root: int) -> None:
    """SIGKILL every process of a run: the root's group, or the root alone if it has not made it yet."""
    try:
        os.killpg(root, signal.SIGKILL)
    except ProcessLookupError:
        try:
            os.kill(root, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_token(fd: int, timeout_s: float | None = None) -> tuple[int, int]:
    ready, _, _ = select.select([fd], [], [], timeout_s)
    if not ready:
        raise TimeoutError
    data = os.read(fd, TOKEN.size)
    if len(data) != TOKEN.size:
        return FAILED, 0
    return TOKEN.unpack(data)


def _wait_exited(real_pid: int) -> None:
    """Until ``real_pid`` has exited: its mm is gone by the time its pidfd reads ready."""
    try:
        fd = os.pidfd_open(real_pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


class _Process:
    """One real process playing one trace pid (a fork turns it into the child's)."""

    def __init__(self, plan: Plan, pipes: dict[int, tuple[int, int]], done_w: int, out: Path,
                 measure: bool, timeout_s: float) -> None:
        self.timeout_s = timeout_s  # a process left waiting longer (its runner died) exits
        self.plan = plan
        self.pipes = pipes
        self.done_w = done_w
        self.out = out
        self.measure = measure
        self.children: list[int] = []
        self._become(plan.root_pid)

    def _become(self, pid: int) -> None:
        if getattr(self, "pagemap", None) is not None:
            self.pagemap.close()  # it describes the parent's address space
        self.pid = pid
        self.record = ProcessRecord(pid, os.getpid())
        self.children = []
        self.pagemap = linux.Pagemap() if self.measure else None

    # ----- control flow -----------------------------------------------------------------

    def run_root(self) -> None:
        try:
            os.setpgid(0, 0)  # so that the runner can kill every process of the run at once
            self._map_span()
            self._serve(0)
        except BaseException:  # a child must never return into the caller's stack
            self._fail()
        os._exit(0)

    def _serve(self, index: int | None) -> None:
        steps = self.plan.steps
        while True:
            if index is None:
                index, wait_pid = _wait_token(self.pipes[self.pid][0], self.timeout_s)
                if index < 0:
                    os._exit(1)
                if wait_pid:
                    _wait_exited(wait_pid)
            step = steps[index]
            if step.op == Op.FORK:
                if self._fork(index, step):
                    index = None  # the child waits for its first turn
                    continue
            elif step.op == Op.EXIT:
                self._exit(index, step)
            else:
                self._execute(index, step)
            index += 1
            if steps[index].pid != self.pid:
                self._pass(index, 0)
                index = None

    def _pass(self, index: int, wait_pid: int) -> None:
        fd = self.done_w if index >= len(self.plan.steps) else self.pipes[self.plan.steps[index].pid][1]
        os.write(fd, TOKEN.pack(index, wait_pid))

    def _dump(self) -> None:
        path = self.out / f"{self.pid}-{self.record.real_pid}.pkl"
        path.write_bytes(pickle.dumps(self.record))

    def _fail(self) -> None:
        try:
            self.record.error = traceback.format_exc(limit=4).strip().splitlines()[-1]
            self._dump()
            os.write(self.done_w, TOKEN.pack(FAILED, os.getpid()))
        finally:
            os._exit(1)

    def _fork(self, index: int, step: Step) -> bool:
        """Fork the trace's child; True in the child."""
        self._snapshot(index)
        start = time.perf_counter_ns()
        real = os.fork()
        if real == 0:
            try:
                self._become(step.child)
                self._after_fork()
            except BaseException:
                self._fail()
            return True
        ns = time.perf_counter_ns() - start
        self.children.append(real)
        empty = np.zeros(0, np.int64)
        self.record.ops.append(OpRecord(index, Op.FORK.value, empty, empty, ns))  # its PTEs are write-protected now
        self._after_fork()
        return False

    def _after_fork(self) -> None:
        if self.measure:
            linux.break_cow_on_own_memory(self.base, self.base + self.plan.span_pages * PAGE_SIZE)

    def _snapshot(self, index: int) -> None:
        """The folio of every span page, now (measure only): at forks, execs and exits."""
        if self.measure:
            self.record.folio_maps.append((index, kernel_folio_map(os.getpid(), self.base, self.plan.span_pages)))

    def _exit(self, index: int, step: Step) -> None:
        self._snapshot(index)  # first: reading a dropped page for the check would map the zero page there
        self._check_memory(step)
        for real in self.children:  # children the trace exited already are zombies by now
            try:
                os.waitpid(real, os.WNOHANG)
            except ChildProcessError:
                pass
        self._dump()
        self._pass(index + 1, os.getpid())
        os._exit(0)

    # ----- memory -------------------------------------------------------------------------

    def _map_span(self) -> None:
        """Reserve the span, 2 MiB aligned so page tables line up as in the model."""
        length = self.plan.span_pages * PAGE_SIZE
        reserved = linux.mmap_anon(length + HUGE_ALIGN, prot=linux.PROT_NONE, flags=linux.MAP_NORESERVE)
        self.base = (reserved + HUGE_ALIGN - 1) // HUGE_ALIGN * HUGE_ALIGN
        self.view = linux.uint64_pages(self.base, self.plan.span_pages)
        if self.measure:
            # A populated private copy of the span's shape: each measured step first runs
            # on it, so that numpy's temporaries are faulted in before the counted run.
            self.scratch = linux.uint64_pages(linux.mmap_anon(length), self.plan.span_pages)
            self.scratch[:, 0] = 1

    def _address(self, page: int) -> int:
        return self.base + int(page) * PAGE_SIZE

    def _drop(self, pages: np.ndarray) -> None:
        """munmap, keeping the address range reserved: a PROT_NONE mapping takes its place."""
        if len(pages):
            linux.mmap_anon(len(pages) * PAGE_SIZE, self._address(pages[0]), prot=linux.PROT_NONE,
                            flags=linux.MAP_FIXED | linux.MAP_NORESERVE)

    def _execute(self, index: int, step: Step) -> None:
        op = step.op
        if op in (Op.WRITE, Op.READ, Op.AHEAD):
            self._memory_step(index, step)
        elif op == Op.MMAP:
            linux.mmap_anon(len(step.pages) * PAGE_SIZE, self._address(step.pages[0]), flags=linux.MAP_FIXED)
        elif op == Op.MUNMAP:
            self._drop(step.pages)
        elif op == Op.DONTNEED:
            linux.madvise(self._address(step.pages[0]), len(step.pages) * PAGE_SIZE, linux.MADV_DONTNEED)
        elif op == Op.MADVISE:
            linux.madvise(self._address(step.pages[0]), len(step.pages) * PAGE_SIZE, step.advice)
        elif op == Op.THP_DISABLE:
            linux.prctl(linux.PR_SET_THP_DISABLE, step.advice)
        elif op == Op.EXEC:
            self._snapshot(index)
            self._check_memory(step)
            self._drop(np.arange(self.plan.span_pages))
        else:
            raise AssertionError(f"step {index}: unexpected {op}")

    def _memory_step(self, index: int, step: Step) -> None:
        pages, indices = step.pages, step.indices
        unique, first = np.unique(pages, return_index=True)
        order = np.argsort(first)
        unique, first_index = unique[order], indices[first[order]]
        view = self.view
        runs = [(self._address(a), (b - a) * PAGE_SIZE) for a, b in linux.runs(np.sort(pages))] if step.op == Op.AHEAD else []
        values = step.values
        low, high = self._huge_range(unique)
        before = pmd_before = None
        if self.measure:
            self._rehearse(step, runs)
            before = self.pagemap.entries(self._address(low), high - low)
            if step.op != Op.READ:  # only a write can reuse a whole PMD
                pmd_before = pmd_mapped("self", self._address(low), high - low)
            linux.minor_faults(), time.process_time_ns(), time.perf_counter_ns()  # first allocations may fault
        faults = linux.minor_faults()
        cpu, start = time.process_time_ns(), time.perf_counter_ns()
        if step.op == Op.WRITE:
            view[pages, 0] = values
        elif step.op == Op.READ:
            view[pages, 0].sum()
        else:
            for address, length in runs:
                linux.populate_write(address, length)
        ns, cpu = time.perf_counter_ns() - start, time.process_time_ns() - cpu
        faults = linux.minor_faults() - faults
        record = OpRecord(index, step.op.value, unique, first_index, ns, faults, cpu)
        if self.measure:
            after = self.pagemap.entries(self._address(low), high - low)
            pmd_after = pmd_mapped("self", self._address(low), high - low) if pmd_before is not None else None
            record.changes = _changes(before, after, low)
            record.before, record.after = before[unique - low], after[unique - low]
            if pmd_before is not None and pmd_after is not None:
                record.pmd_before, record.pmd_after = pmd_before[unique - low], pmd_after[unique - low]
        self.record.ops.append(record)

    def _huge_range(self, pages: np.ndarray) -> tuple[int, int]:
        """[low, high): the 2 MiB ranges holding ``pages``, clipped to the span (a large folio fits in one)."""
        if not len(pages):
            return 0, 0
        low = int(pages.min()) // PTRS_PER_PTE * PTRS_PER_PTE
        high = min(self.plan.span_pages, (int(pages.max()) // PTRS_PER_PTE + 1) * PTRS_PER_PTE)
        return low, high

    def _rehearse(self, step: Step, runs: list[tuple[int, int]]) -> None:
        """The step's own operation on the scratch copy, whose pages never fault."""
        if step.op == Op.WRITE:
            self.scratch[step.pages, 0] = step.values
        elif step.op == Op.READ:
            self.scratch[step.pages, 0].sum()
        else:
            scratch = self.scratch.ctypes.data
            for address, length in runs:
                linux.populate_write(address - self.base + scratch, length)

    def _check_memory(self, step: Step) -> None:
        """Every mapped page holds its last write at offset 0 and zero elsewhere."""
        pages = np.flatnonzero(step.mapped)
        wrong = self.record.integrity
        for chunk in np.array_split(pages, max(1, len(pages) // 1024)):
            if not len(chunk):
                continue
            found = self.view[chunk]
            bad_first = chunk[found[:, 0] != step.expected[chunk]]
            bad_rest = chunk[np.any(found[:, 1:] != 0, axis=1)]
            for page in bad_first:
                wrong.append(f"page +{page}: holds {int(self.view[page, 0])}, must hold {int(step.expected[page])}")
            for page in bad_rest:
                wrong.append(f"page +{page}: bytes after offset 8 are not zero")


def _changes(before: np.ndarray, after: np.ndarray, low: int) -> Changes:
    """The pages of [low, low + len) whose mapping changed between two pagemap reads, with their new folio."""
    was, now = linux.present(before), linux.present(after)
    old, new = linux.pfns(before), linux.pfns(after)
    changed = np.flatnonzero((was != now) | (now & (old != new)))
    if not len(changed):  # most steps of a scattered pattern: nothing to look up
        empty = np.zeros(0, np.int64)
        return Changes(empty, np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.uint64), empty,
                       np.zeros(0, np.uint8))
    pfn = np.where(now[changed], new[changed], np.uint64(0))
    flags = np.zeros(len(changed), np.uint64)
    mapped = pfn != 0
    if mapped.any():
        flags[mapped] = read_kpageflags(pfn[mapped])
    head, size = folio_heads(pfn, flags)
    zero = (flags & np.uint64(1 << KPF_ZERO_PAGE)) != 0
    huge = (flags & np.uint64(1 << KPF_THP)) != 0
    kind = np.where(~now[changed], PageKind.NONE,
                    np.where(zero & huge, PageKind.HUGE_ZERO_PAGE,
                             np.where(zero, PageKind.ZERO_PAGE, PageKind.ANON))).astype(np.uint8)
    return Changes(changed.astype(np.int64) + low, was[changed], now[changed], head, size, kind)
