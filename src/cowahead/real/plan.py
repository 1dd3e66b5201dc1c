"""A trace turned into the steps real processes run, with the model in lockstep.

The model replays the trace under the policy first; its fault log says, for
every COW fault that made the policy break COW ahead, which pages it broke.
The plan cuts the trace's accesses into batches (consecutive accesses of one
process and one kind, one vectorised numpy operation each) and ends a batch
right after such a fault, so that the real process can issue
``MADV_POPULATE_WRITE`` on the same pages at the same point of the stream.

Pages in a plan are offsets into the *span*: the trace's mmapped range,
which the real processes map at an address of their own choosing.

Large folios: the model replays under the folio settings it is given (for
a real run, the knobs in force), and the plan records how many pages each
fault of the model mapped (``model_pages``: 512 for a PMD THP zero fill or
a whole-PMD reuse, 16 for a 64 KiB mTHP) and, at every fork, exec and exit,
which folio each page of the process belongs to (``Step.folios``), so that
the ground truth can be held against both. MADV_HUGEPAGE and
MADV_NOHUGEPAGE become madvise(2) calls and PR_SET_THP_DISABLE a prctl(2);
MADV_COLLAPSE and khugepaged collapses are refused, since the model does not
place them yet.

EXEC is modelled as the child dropping everything the model knows about
(the whole span becomes an inaccessible PROT_NONE mapping, which unmaps and
frees the pages exactly as exec's exit_mmap would); the Python process
itself stays, because a real exec would end the workload's process. A pid
the trace never exits is exited at the end, children before parents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ..errors import CowaheadError
from ..model.counters import Counters
from ..model.folio import FolioSettings
from ..model.kernel import Kernel
from ..model.memory import pmd_index
from ..policies import parse_policy
from ..trace.events import HPAGE_PMD_ORDER, Advice, Event, EventKind, VmaKind
from ..trace.trace import Trace
from .folio_map import FolioMap, model_folio_map

AHEAD_KINDS = ("ahead_copies", "ahead_reuses")
# The fault kinds a real run can tell apart, named as the model's counters.
COMPARED_KINDS = ("zero_fill", "zero_page", "cow_copy", "reuse") + AHEAD_KINDS


class Op(str, Enum):
    WRITE = "write"
    READ = "read"
    AHEAD = "ahead"        # MADV_POPULATE_WRITE over the model's ahead pages
    FORK = "fork"
    EXEC = "exec"
    EXIT = "exit"
    MMAP = "mmap"
    MUNMAP = "munmap"
    DONTNEED = "dontneed"
    MADVISE = "madvise"          # MADV_HUGEPAGE / MADV_NOHUGEPAGE over the range (Step.advice)
    THP_DISABLE = "thp_disable"  # prctl(PR_SET_THP_DISABLE, Step.advice)


# The advice a real run can give and the model follows (MADV_COLLAPSE is not modelled yet).
RUNNABLE_ADVICE = (Advice.HUGEPAGE, Advice.NOHUGEPAGE)


@dataclass
class Step:
    pid: int
    op: Op
    pages: np.ndarray                 # span offsets: one per access (WRITE/READ), the range otherwise
    indices: np.ndarray               # the trace event of each page (for AHEAD: the faulting event)
    values: np.ndarray | None = None  # WRITE: the value stored at offset 0 of each page
    child: int = 0                    # FORK: the child's trace pid
    expected: np.ndarray | None = None  # EXIT/EXEC: the first uint64 each span page must hold
    mapped: np.ndarray | None = None    # EXIT/EXEC: span pages this process has mapped
    folios: FolioMap | None = None      # FORK/EXIT/EXEC: the model's folio of each span page just before
    advice: int = 0                     # MADVISE: the advice; THP_DISABLE: prctl's argument
    event: int = -1                     # the trace event of a single step (-1: the end of the trace)


@dataclass
class Plan:
    policy: str
    pattern: str
    span_start: int      # first trace page of the span
    span_pages: int
    root_pid: int
    steps: list[Step]
    model_log: list[tuple[int, int, int, str]]
    counters: Counters
    pids: list[int] = field(default_factory=list)
    cuts: set[tuple[int, int]] = field(default_factory=set)  # (event index, page) of each fault copying ahead
    folio_settings: FolioSettings = field(default_factory=FolioSettings)
    model_pages: dict[tuple[int, int, int, str], int] = field(default_factory=dict)  # pages of each logged fault


def build_plan(trace: Trace, policy: str, cuts: set[tuple[int, int]] | frozenset = frozenset(),
               folios: FolioSettings | None = None) -> Plan:
    """The steps of ``trace`` under ``policy``, the model replaying under ``folios`` (None: the trace's own
    settings, as ``Kernel.replay`` takes them; a trace without any: 4 KiB pages).

    ``cuts`` ends batches after these (event index, page) accesses as if a
    window were copied there: another plan's ``cuts`` make a `none` run
    with the very same numpy calls, so that timing compares the madvise
    calls alone and not the harness's per-call overhead.
    """
    events = list(trace.events())
    if not events:
        raise CowaheadError("the trace has no events")
    span_start, span_stop = _span(events)
    _check_runnable(events)
    folios = folios or FolioSettings.from_metadata(trace.metadata)
    span_pages = span_stop - span_start
    builder = _Builder(span_start, span_pages, cuts)
    kernel = Kernel(parse_policy(policy), log_faults=True, folios=folios)
    kernel.policy.prepare(trace)
    model_pages: dict[tuple[int, int, int, str], int] = {}
    for index, event in enumerate(events):
        in_vma = _pages_in_vma(kernel, event)
        seen = len(kernel.fault_log)
        before = None
        if event.kind in (EventKind.FORK, EventKind.EXEC, EventKind.EXIT):
            before = model_folio_map(kernel.processes.get(event.pid), span_start, span_pages)
        kernel.apply(event, index)
        new = kernel.fault_log[seen:]
        for entry in new:
            if entry[3] in COMPARED_KINDS:
                model_pages[entry] = _fault_pages(kernel, entry)
        builder.add(event, index, in_vma, _ahead_by_trigger(new), before)
    counters = kernel.finish()
    builder.exit_survivors(lambda pid: model_folio_map(kernel.processes.get(pid), span_start, span_pages))
    log = [entry for entry in kernel.fault_log if entry[3] in COMPARED_KINDS]
    return Plan(kernel.policy.name, str(trace.metadata.get("pattern", trace.metadata.get("source", "?"))),
                span_start, span_pages, events[0].pid, builder.steps, log, counters,
                builder.created, builder.ahead_points, folios, model_pages)


def _check_runnable(events: list[Event]) -> None:
    """Events a real run cannot reproduce as the model replays them: refused before anything runs."""
    for index, e in enumerate(events):
        if e.kind == EventKind.COLLAPSE:
            raise CowaheadError(f"event {index}: a khugepaged collapse cannot be replayed for real, and the model "
                                "does not place collapses yet")
        if e.kind == EventKind.MADVISE and e.arg not in RUNNABLE_ADVICE:
            name = Advice(e.arg).name if e.arg in Advice._value2member_map_ else str(e.arg)
            raise CowaheadError(f"event {index}: madvise advice {name} is not run for real (only MADV_HUGEPAGE "
                                "and MADV_NOHUGEPAGE; the model does not place MADV_COLLAPSE yet)")


def _fault_pages(kernel: Kernel, entry: tuple[int, int, int, str]) -> int:
    """How many pages the model's fault ``entry`` mapped, read from what maps its page right after it:
    a PMD (a THP zero fill, the huge zero page, a whole-PMD reuse, a THP in place of the huge zero page)
    512; a zero fill the pages of its folio (an mTHP); anything else one page."""
    _, pid, page, kind = entry
    mm = kernel.processes.get(pid)
    if mm is None or kind in AHEAD_KINDS:
        return 1
    if pmd_index(page) in mm.pmds:
        return 1 << HPAGE_PMD_ORDER
    pte = mm.ptes.get(page)
    if kind == "zero_fill" and pte is not None and pte.frame.folio is not None:
        return pte.frame.folio.nr_pages
    return 1


def _span(events: list[Event]) -> tuple[int, int]:
    maps = [e for e in events if e.kind == EventKind.MMAP]
    if not maps:
        raise CowaheadError("the trace maps no memory (no MMAP event): nothing to run for real")
    for e in maps:
        if e.arg != VmaKind.PRIVATE_ANON:
            raise CowaheadError(f"real runs support private anonymous mappings only, not {VmaKind(e.arg).name}")
    start = min(e.pages().start for e in maps)
    stop = max(e.pages().stop for e in maps)
    if stop - start > 1 << 24:
        raise CowaheadError(f"the trace's mappings span {stop - start} pages; real runs take at most {1 << 24}")
    return start, stop


def _pages_in_vma(kernel: Kernel, event: Event) -> list[int]:
    """The accessed pages a VMA covers before the event (the model skips the rest, so do we)."""
    if event.kind not in (EventKind.READ, EventKind.WRITE):
        return []
    mm = kernel.processes.get(event.pid)
    if mm is None:
        return []
    return [p for p in event.pages() if mm.find_vma(p) is not None]


def _ahead_by_trigger(entries: list[tuple[int, int, int, str]]) -> dict[int, list[int]]:
    """Ahead pages by the page whose COW fault broke them.

    The model logs a fault when it returns, so a window's ahead entries come
    just before the entry of the fault that made them.
    """
    out: dict[int, list[int]] = {}
    pending: list[int] = []
    for _, _, page, kind in entries:
        if kind in AHEAD_KINDS:
            pending.append(page)
        elif pending:
            out[page], pending = pending, []
    if pending:
        raise AssertionError(f"ahead pages {pending[:4]} without the fault that made them")
    return out


class _Builder:
    """Appends steps; tracks what each process must hold, independently of the model."""

    def __init__(self, span_start: int, span_pages: int, cuts: set[tuple[int, int]] | frozenset) -> None:
        self.cuts = cuts
        self.ahead_points: set[tuple[int, int]] = set()
        self.span_start = span_start
        self.span_pages = span_pages
        self.steps: list[Step] = []
        self.memory: dict[int, np.ndarray] = {}   # pid -> the value each span page must hold
        self.mapped: dict[int, np.ndarray] = {}   # pid -> span pages mapped
        self.created: list[int] = []
        self.exited: set[int] = set()
        self._batch: tuple[int, Op, list[int], list[int], list[int]] | None = None

    def _offsets(self, pages: range) -> np.ndarray:
        return np.arange(pages.start, pages.stop, dtype=np.int64) - self.span_start

    def _process(self, pid: int) -> None:
        if pid not in self.memory:
            self.memory[pid] = np.zeros(self.span_pages, np.uint64)
            self.mapped[pid] = np.zeros(self.span_pages, bool)
            self.created.append(pid)

    def _flush(self) -> None:
        if self._batch is not None:
            pid, op, pages, indices, values = self._batch
            self.steps.append(Step(pid, op, np.array(pages, np.int64), np.array(indices, np.int64),
                                   np.array(values, np.uint64) if op == Op.WRITE else None))
            self._batch = None

    def _access(self, pid: int, op: Op, page: int, index: int, value: int) -> None:
        if self._batch is None or self._batch[:2] != (pid, op):
            self._flush()
            self._batch = (pid, op, [], [], [])
        self._batch[2].append(page - self.span_start)
        self._batch[3].append(index)
        self._batch[4].append(value)

    def _single(self, pid: int, op: Op, pages: np.ndarray, index: int, **kw) -> None:
        self._flush()
        self.steps.append(Step(pid, op, pages, np.full(len(pages), index, np.int64), event=index, **kw))

    def _exit_step(self, pid: int, op: Op, index: int, folios: FolioMap | None) -> None:
        self._single(pid, op, np.zeros(0, np.int64), index, expected=self.memory[pid].copy(),
                     mapped=self.mapped[pid].copy(), folios=folios)
        self.memory[pid][:] = 0
        self.mapped[pid][:] = False

    def add(self, event: Event, index: int, in_vma: list[int], ahead: dict[int, list[int]],
            folios: FolioMap | None = None) -> None:
        """``folios``: the model's folio map of the process just before a FORK, EXEC or EXIT."""
        pid, kind = event.pid, event.kind
        self._process(pid)
        if kind in (EventKind.WRITE, EventKind.READ):
            op = Op.WRITE if kind == EventKind.WRITE else Op.READ
            for page in in_vma:
                self._access(pid, op, page, index, event.arg)
                if op == Op.WRITE:
                    self.memory[pid][page - self.span_start] = event.arg
                if page in ahead:
                    self._single(pid, Op.AHEAD, np.array(ahead[page], np.int64) - self.span_start, index)
                    self.ahead_points.add((index, page))
                elif (index, page) in self.cuts:
                    self._flush()
        elif kind == EventKind.FORK:
            self._process(pid)
            child = event.arg
            if child in self.memory and child not in self.exited:
                raise CowaheadError(f"event {index}: pid {child} forked while still alive; real runs need an EXIT")
            self.exited.discard(child)
            if child in self.memory:
                self.created.remove(child)
            self.memory.pop(child, None)
            self._process(child)
            self.memory[child][:] = self.memory[pid]
            self.mapped[child][:] = self.mapped[pid]
            self._single(pid, Op.FORK, np.zeros(0, np.int64), index, child=child, folios=folios)
        elif kind in (EventKind.EXEC, EventKind.EXIT):
            self._exit_step(pid, Op.EXEC if kind == EventKind.EXEC else Op.EXIT, index, folios)
            if kind == EventKind.EXIT:
                self.exited.add(pid)
        elif kind == EventKind.MADVISE:
            self._single(pid, Op.MADVISE, self._offsets(event.pages()), index, advice=event.arg)
        elif kind == EventKind.THP_DISABLE:
            self._single(pid, Op.THP_DISABLE, np.zeros(0, np.int64), index, advice=event.arg)
        else:
            pages = self._offsets(event.pages())
            op = {EventKind.MMAP: Op.MMAP, EventKind.MUNMAP: Op.MUNMAP, EventKind.DONTNEED: Op.DONTNEED}[kind]
            self.memory[pid][pages] = 0
            if op != Op.DONTNEED:
                self.mapped[pid][pages] = op == Op.MMAP
            self._single(pid, op, pages, index)

    def exit_survivors(self, folios_of: Callable[[int], FolioMap]) -> None:
        """Exit the processes the trace leaves alive, the youngest first (``folios_of``: the model's map)."""
        self._flush()
        for pid in reversed(self.created):
            if pid not in self.exited:
                self._exit_step(pid, Op.EXIT, -1, folios_of(pid))
                self.exited.add(pid)
