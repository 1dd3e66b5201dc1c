"""Conversion: ``perf script`` text to a cowahead trace.

The bulk of the text is fault samples, one per line in a fixed layout
(fields ``pid,tid,time,event,trace``, see ``_perf.SCRIPT_FIELDS``)::

    20318/20318   432.215861314:   exceptions:page_fault_user: address=0x7f3c43f2db70 ip=0x7f3c43f2db70 error_code=0x6

They are read with pyarrow's CSV reader (one column) and parsed with
pyarrow's vectorised regex and a numpy hex decoder, never line by line in
Python. The few other lines (perf's MMAP2/COMM/FORK/EXIT side-band records,
process and memory-syscall tracepoints) are parsed one by one: they are
thousands, not millions.

Fault kinds from the x86 page-fault error code (arch/x86/include/asm/trap_pf.h):
bit 0 present (protection fault, e.g. a write to a write-protected COW
page), bit 1 write, bit 2 user mode, bit 4 instruction fetch. A write
fault (bit 1) becomes a WRITE event, any other a READ; the model decides
what the fault was (zero-fill, COW copy, reuse). A COW fault is error code
0x7 (present|write|user); 0x3 is the same from kernel mode (copy_to_user).
The error code is kept in the event's ``arg`` (metadata ``fault_arg``).

Address spaces: a trace ``pid`` is an address space. Threads
(CLONE_THREAD) and vfork-style children (CLONE_VM, until they exec) fault
in their parent's address space and are written under its pid.
"""

from __future__ import annotations

import bisect
import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..trace.events import PAGE_SIZE, Advice, Event, EventKind
from ._procfs import vma_kind

# Few groups and no backtracking: RE2 extracts these fastest. Time has 9 decimals (--ns).
FAULT_PATTERN = (r"^\s*(?P<pid>\d+)/\s*\d+\s+(?P<sec>\d+)\.(?P<nsec>\d+):\s+exceptions:page_fault_(?P<mode>user|kernel): "
                 r"address=0x(?P<address>[0-9a-f]+) ip=\S+ error_code=0x(?P<error_code>[0-9a-f]+)$")
USER_TOP = 1 << 47  # x86-64 user addresses lie below; kernel-mode faults above are not user memory

ERROR_PRESENT, ERROR_WRITE, ERROR_USER = 0x1, 0x2, 0x4
CLONE_VM, CLONE_THREAD = 0x100, 0x10000
MADV_DONTNEED, MADV_REMOVE, MADV_DONTNEED_LOCKED = 4, 9, 24
PR_SET_THP_DISABLE = 41

_HEAD = re.compile(r"^\s*(?P<pid>-?\d+)/\s*(?P<tid>-?\d+)\s+(?P<sec>\d+)\.(?P<nsec>\d{9}):\s+(?P<rest>.*)$")
_MMAP2 = re.compile(r"PERF_RECORD_MMAP2 (?P<pid>-?\d+)/(?P<tid>-?\d+): \[0x(?P<start>[0-9a-f]+)\(0x(?P<len>[0-9a-f]+)\) @ \S+ .*?\]: "
                    r"(?P<perms>[-rwxps]{4}) (?P<name>.*)$")
_COMM_EXEC = re.compile(r"PERF_RECORD_COMM exec: .*:(?P<pid>\d+)/(?P<tid>\d+)$")
_FIELDS = re.compile(r"(\w+)[=:] ?(\S+?),?(?=\s|$)")


@dataclass
class Vmas:
    """One address space's VMAs as sorted, non-overlapping [start, end) byte ranges."""
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)

    def copy(self) -> "Vmas":
        return Vmas(list(self.starts), list(self.ends), list(self.kinds))

    def remove(self, start: int, end: int) -> None:
        keep = [(s, e, k) for s, e, k in zip(self.starts, self.ends, self.kinds) if e <= start or s >= end]
        for s, e, k in zip(self.starts, self.ends, self.kinds):
            if s < start < e:
                keep.append((s, start, k))
            if s < end < e:
                keep.append((end, e, k))
        keep.sort()
        self.starts, self.ends, self.kinds = [list(x) for x in zip(*keep)] if keep else ([], [], [])

    def insert(self, start: int, end: int, kind: int) -> None:
        self.remove(start, end)
        i = bisect.bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        self.kinds.insert(i, kind)

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """Parts of [start, end) no VMA covers."""
        found, at = [], start
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.starts) and self.starts[i] < end:
            if self.ends[i] > at:
                if self.starts[i] > at:
                    found.append((at, self.starts[i]))
                at = max(at, self.ends[i])
            i += 1
        if at < end:
            found.append((at, end))
        return found

    def kinds_over(self, start: int, end: int) -> set[int]:
        return {k for s, e, k in zip(self.starts, self.ends, self.kinds) if s < end and e > start}

    def kind_at(self, address: int) -> int | None:
        i = bisect.bisect_right(self.starts, address) - 1
        return self.kinds[i] if i >= 0 and address < self.ends[i] else None

    def outside(self, addresses: np.ndarray) -> int:
        """How many of ``addresses`` no VMA covers."""
        if not len(self.starts):
            return len(addresses)
        starts = np.array(self.starts, dtype=np.uint64)
        ends = np.array(self.ends, dtype=np.uint64)
        i = np.searchsorted(starts, addresses, side="right").astype(np.int64) - 1
        inside = (i >= 0) & (addresses < ends[np.maximum(i, 0)])
        return int(len(addresses) - inside.sum())


@dataclass
class Conversion:
    """The converted events and what the converter saw on the way."""
    columns: dict[str, np.ndarray]
    faults: int = 0
    faults_by_error_code: dict[str, int] = field(default_factory=dict)
    kernel_faults: int = 0
    kernel_faults_outside_user: int = 0
    outside_vma: int = 0
    processes: int = 0
    threads: int = 0
    vfork_children: int = 0
    lost_samples: int = 0   # perf's ring buffer overflowed: events missing from the trace
    khugepaged_collapses: int = 0  # THPs khugepaged made: its tracepoint names no address, so the replay cannot place them
    unparsed_lines: int = 0
    unparsed_examples: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "columns"}


@dataclass(frozen=True, slots=True)
class Placed(Event):
    """A layout or process event, placed in the trace at a line of the perf text (-1: before it)."""
    line: int = -1


# ----- reading the text ----------------------------------------------------------------------

def read_lines(source: Path | BinaryIO, progress: Callable[[int, int | None], None] | None = None):
    """Yield (first line number, pyarrow string array) batches of the perf text.

    ``source`` is a file or a stream (perf script's stdout, converted while
    perf still prints); a stream has no known total for the progress bar.
    """
    total = source.stat().st_size if isinstance(source, Path) else None
    read_options = pacsv.ReadOptions(column_names=["line"], block_size=16 << 20)
    # No delimiter or quote character occurs in perf's lines: each line is one value.
    parse_options = pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False,
                                       newlines_in_values=False, ignore_empty_lines=True)
    convert_options = pacsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(source, read_options, parse_options, convert_options)
    except pa.ArrowInvalid:  # no text at all (perf script printed nothing): no lines
        return
    first, done = 0, 0
    for batch in reader:
        lines = batch.column(0)
        yield first, lines
        first += len(lines)
        done += int(pc.sum(pc.binary_length(lines)).as_py() or 0) + len(lines)
        if progress:
            progress(min(done, total) if total else done, total)


def hex_to_uint64(strings: pa.Array) -> np.ndarray:
    """Vectorised hex decoding: pad to 16 digits, look every byte up, fold nibbles."""
    if len(strings) == 0:
        return np.empty(0, np.uint64)
    padded = pc.utf8_lpad(strings, width=16, padding="0")
    raw = np.frombuffer(padded.buffers()[2], dtype=np.uint8)
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)[: len(padded) + 1]
    digits = raw[offsets[0]: offsets[-1]].reshape(len(padded), 16)
    table = np.zeros(256, dtype=np.uint64)
    table[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint64)
    table[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint64)
    nibbles = table[digits]
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    return np.bitwise_or.reduce(nibbles << shifts, axis=1)


def parse_faults(lines: pa.Array) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(mask of fault lines, their columns, mask of lines left for the slow path).

    One vectorised regex pass over every line: other lines fail on their
    first characters after the timestamp and come back as nulls.
    """
    fields = pc.extract_regex(lines, FAULT_PATTERN)
    mask = np.asarray(fields.is_valid().to_numpy(zero_copy_only=False))
    fields = fields.filter(pa.array(mask))
    col = {name: fields.field(name) for name in ("pid", "sec", "nsec", "mode", "address", "error_code")}
    out = {
        "pid": pc.cast(col["pid"], pa.int32()).to_numpy(),
        "time_ns": (pc.cast(col["sec"], pa.int64()).to_numpy() * 1_000_000_000
                    + pc.cast(col["nsec"], pa.int64()).to_numpy()),
        "user": np.asarray(pc.equal(col["mode"], "user").to_numpy(zero_copy_only=False)),
        "address": hex_to_uint64(col["address"]),
        "error_code": hex_to_uint64(col["error_code"]).astype(np.int64),
    }
    return mask, out, ~mask


# ----- the slow path: side-band records and process/memory tracepoints ---------------------------

def parse_other(line: str) -> tuple[int, int, int, str, dict] | None:
    """(pid, tid, time_ns, what, fields) of a non-fault line, or None if unknown."""
    head = _HEAD.match(line)
    if head is None:
        return None
    pid, tid = int(head["pid"]), int(head["tid"])
    time_ns = int(head["sec"]) * 1_000_000_000 + int(head["nsec"])
    rest = head["rest"]
    if rest.startswith("PERF_RECORD_MMAP2"):
        m = _MMAP2.search(rest)
        if m is None:
            return None
        # The record's own pid: perf's synthesized records (--pid) carry none in the sample header.
        return int(m["pid"]), int(m["tid"]), time_ns, "mmap2", {"start": int(m["start"], 16), "len": int(m["len"], 16),
                                             "perms": m["perms"], "name": m["name"]}
    if rest.startswith("PERF_RECORD_COMM exec"):
        m = _COMM_EXEC.search(rest)
        return (int(m["pid"]), int(m["tid"]), time_ns, "exec", {}) if m else None
    if rest.startswith("PERF_RECORD_LOST"):
        numbers = re.findall(r"(?:lost|LOST)[^0-9]*(\d+)", rest)
        return pid, tid, time_ns, "lost", {"lost": int(numbers[-1]) if numbers else 1}
    if rest.startswith("PERF_RECORD_"):
        return pid, tid, time_ns, "sideband", {}
    name, _, args = rest.partition(": ")
    what = name.split(":")[-1].strip()
    fields = {k: v for k, v in _FIELDS.findall(args)}
    if what.startswith("sys_exit_"):
        fields = {"ret": args.strip()}
    return pid, tid, time_ns, what, fields


def _int(text: str, base: int = 0) -> int:
    return int(text, base)


class _Processes:
    """Who faults in which address space, and the layout events of each space."""

    def __init__(self, stack_reserve: int) -> None:
        self.space: dict[int, int] = {}           # tgid -> the address space (trace pid) it runs in
        self.vmas: dict[int, Vmas] = {}
        self.heap_end: dict[int, int] = {}
        self.pending: dict[int, tuple] = {}       # tid -> a memory syscall's entry arguments
        self.aliases: list[list[int]] = []        # [tgid, space, first line, last line) of CLONE_VM children
        self.open_alias: dict[int, list[int]] = {}
        self.events: list[Placed] = []
        self.stack_reserve = stack_reserve
        self.threads = 0
        self.collapses = 0  # khugepaged's, from mm_collapse_huge_page (it names an mm, no address)

    def space_of(self, tgid: int) -> int:
        return self.space.get(tgid, tgid)

    def vmas_of(self, space: int) -> Vmas:
        return self.vmas.setdefault(space, Vmas())

    def emit(self, line: int, time_ns: int, pid: int, kind: EventKind, address: int = 0, length: int = 0, arg: int = 0) -> None:
        self.events.append(Placed(time_ns, pid, kind, address, length, arg, line=line))

    def mmap(self, line: int, t: int, space: int, start: int, end: int, kind: int) -> None:
        self.vmas_of(space).insert(start, end, kind)
        self.emit(line, t, space, EventKind.MMAP, start, end - start, kind)

    def munmap(self, line: int, t: int, space: int, start: int, end: int) -> None:
        if end > start:
            self.vmas_of(space).remove(start, end)
            self.emit(line, t, space, EventKind.MUNMAP, start, end - start)

    def handle(self, line: int, pid: int, tid: int, t: int, what: str, f: dict) -> None:
        space = self.space_of(pid)
        if what == "mmap2":
            self.on_mmap2(line, t, space, f)
        elif what == "task_newtask":
            self.on_newtask(line, t, pid, int(f["pid"]), int(f["clone_flags"], 16))
        elif what == "exec":
            self.close_alias(pid, line)
            self.space[pid] = pid
            self.vmas[pid] = Vmas()
            self.heap_end.pop(pid, None)
            self.emit(line, t, pid, EventKind.EXEC)
        elif what == "sched_process_exit":
            if f.get("group_dead") == "true":
                self.close_alias(pid, line)
                if space == pid:
                    self.vmas.pop(pid, None)
                    self.emit(line, t, pid, EventKind.EXIT)
        elif what == "sys_enter_munmap":
            start, length = _int(f["addr"]), _int(f["len"])
            self.munmap(line, t, space, start, start + _page_up(length))
        elif what == "sys_enter_madvise":
            behavior, start, length = _int(f["behavior"]), _int(f["start"]), _page_up(_int(f["len_in"]))
            if length and behavior in (MADV_DONTNEED, MADV_REMOVE, MADV_DONTNEED_LOCKED):
                self.emit(line, t, space, EventKind.DONTNEED, start, length)
            elif length and behavior in tuple(Advice):  # the THP advice the model follows
                self.emit(line, t, space, EventKind.MADVISE, start, length, behavior)
        elif what == "sys_enter_prctl":
            if _int(f["option"]) == PR_SET_THP_DISABLE:
                self.emit(line, t, space, EventKind.THP_DISABLE, arg=int(_int(f["arg2"]) != 0))
        elif what == "mm_collapse_huge_page":
            if f.get("status", "").rstrip(",") in ("succeeded", "1"):
                self.collapses += 1
        elif what == "sys_exit_brk":
            self.on_brk(line, t, space, _int(f["ret"]))
        elif what == "sys_enter_mremap":
            self.pending[tid] = (_int(f["addr"]), _int(f["old_len"]), _int(f["new_len"]))
        elif what == "sys_exit_mremap":
            if tid in self.pending:
                self.on_mremap(line, t, space, *self.pending.pop(tid), _int(f["ret"]) & ((1 << 64) - 1))

    def on_newtask(self, line: int, t: int, parent_tgid: int, child: int, flags: int) -> None:
        parent_space = self.space_of(parent_tgid)
        if flags & CLONE_THREAD:
            self.threads += 1
        elif flags & CLONE_VM:
            # vfork/posix_spawn: the child runs in the parent's mm until it execs.
            self.space[child] = parent_space
            alias = [child, parent_space, line, -1]
            self.aliases.append(alias)
            self.open_alias[child] = alias
        else:
            self.space[child] = child
            self.vmas[child] = self.vmas_of(parent_space).copy()
            if parent_space in self.heap_end:
                self.heap_end[child] = self.heap_end[parent_space]
            self.emit(line, t, parent_space, EventKind.FORK, arg=child)

    def close_alias(self, tgid: int, line: int) -> None:
        alias = self.open_alias.pop(tgid, None)
        if alias is not None:
            alias[3] = line

    def on_mmap2(self, line: int, t: int, space: int, f: dict) -> None:
        start, end, name = f["start"], f["start"] + f["len"], f["name"]
        if start >= USER_TOP:
            return
        kind = int(vma_kind(f["perms"], name))
        vmas = self.vmas_of(space)
        if name == "[stack]":
            # perf reports the stack at exec only; it grows down on faults without a
            # record, so the model gets the whole reservation (RLIMIT_STACK) at once.
            start = min(start, max(end - self.stack_reserve, 0))
        if name == "[heap]":
            self.heap_end[space] = end
        if vmas.kinds_over(start, end) == {kind}:
            # Over VMAs of the same kind: mprotect, brk or mremap growing a VMA. Keep
            # their pages; only the part no VMA covered yet is new.
            for gap_start, gap_end in vmas.gaps(start, end):
                self.mmap(line, t, space, gap_start, gap_end, kind)
            return
        self.mmap(line, t, space, start, end, kind)

    def on_brk(self, line: int, t: int, space: int, new_brk: int) -> None:
        """Heap growth comes as an MMAP2 [heap] record; a shrink only here."""
        end = self.heap_end.get(space)
        new_end = _page_up(new_brk)
        if end is not None and new_end < end:
            self.munmap(line, t, space, new_end, end)
            self.heap_end[space] = new_end

    def on_mremap(self, line: int, t: int, space: int, addr: int, old_len: int, new_len: int, ret: int) -> None:
        if ret >= 1 << 63:
            return  # failed: -errno
        old_len, new_len = _page_up(old_len), _page_up(new_len)
        kind = self.vmas_of(space).kind_at(addr)
        if ret == addr:
            if new_len < old_len:
                self.munmap(line, t, space, addr + new_len, addr + old_len)
            elif kind is not None:
                for gap_start, gap_end in self.vmas_of(space).gaps(addr + old_len, addr + new_len):
                    self.mmap(line, t, space, gap_start, gap_end, kind)
            return
        # Moved: the trace format has no move, so the pages are dropped and mapped anew
        # (the model then sees zero-fill faults where the kernel moved page tables).
        self.munmap(line, t, space, addr, addr + old_len)
        if kind is not None:
            self.mmap(line, t, space, ret, ret + new_len, kind)


def _page_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


# ----- putting it together ----------------------------------------------------------------------

def _parsed_batches(source: Path | BinaryIO, progress):
    """(first line, lines, parse_faults(lines)) in file order, batches parsed on every core.

    pyarrow's compute kernels release the GIL, so threads parse batches side by
    side; a bounded window keeps memory at a few batches.
    """
    workers = max(os.cpu_count() or 1, 1)
    with ThreadPoolExecutor(workers) as pool:
        window: deque = deque()
        for first, lines in read_lines(source, progress):
            window.append((first, lines, pool.submit(parse_faults, lines)))
            if len(window) > workers:
                first_done, lines_done, future = window.popleft()
                yield first_done, lines_done, future.result()
        while window:
            first_done, lines_done, future = window.popleft()
            yield first_done, lines_done, future.result()


def convert(source: Path | BinaryIO, initial: list[Placed] | None = None, stack_reserve: int = 8 << 20,
            progress: Callable[[int, int | None], None] | None = None) -> Conversion:
    """Convert ``perf script`` output (a file or a stream); ``initial`` events come first (--pid snapshot)."""
    procs = _Processes(stack_reserve)
    for event in initial or []:
        procs.events.append(event)
        if event.kind == EventKind.MMAP:
            procs.vmas_of(event.pid).insert(event.address, event.address + event.length, event.arg)
    fault_parts: list[dict[str, np.ndarray]] = []
    unparsed, examples, lost, symbolic = 0, [], 0, 0
    for first, lines, (mask, faults, rest) in _parsed_batches(source, progress):
        faults["line"] = np.flatnonzero(mask) + first
        fault_parts.append(faults)
        for offset, text in zip(np.flatnonzero(rest), pc.filter(lines, pa.array(rest)).to_pylist()):
            parsed = parse_other(text)
            if parsed is not None and parsed[3] == "lost":
                lost += parsed[4]["lost"]
                continue
            if parsed is None:
                unparsed += 1
                if len(examples) < 3:
                    examples.append(text.strip()[:160])
                continue
            pid, tid, t, what, f = parsed
            if what == "page_fault_kernel" and not f.get("address", "").startswith("0x"):
                symbolic += 1  # a kernel address, printed as a symbol: not user memory
                continue
            try:
                procs.handle(first + int(offset), pid, tid, t, what, f)
            except (KeyError, ValueError):
                unparsed += 1
                if len(examples) < 3:
                    examples.append(text.strip()[:160])
    faults = {k: np.concatenate([p[k] for p in fault_parts]) if fault_parts else np.empty(0)
              for k in ("pid", "time_ns", "user", "address", "error_code", "line")}
    conv = _assemble(procs, faults, unparsed, examples)
    conv.lost_samples = lost
    conv.kernel_faults += symbolic
    conv.kernel_faults_outside_user += symbolic
    return conv


def _assemble(procs: _Processes, faults: dict[str, np.ndarray], unparsed: int, examples: list[str]) -> Conversion:
    pid = faults["pid"].astype(np.int32)
    line = faults["line"].astype(np.int64)
    for tgid, space, start, end in procs.aliases:
        inside = (pid == tgid) & (line >= start) & ((line < end) if end >= 0 else True)
        pid[inside] = space
    address = faults["address"].astype(np.uint64)
    error_code = faults["error_code"].astype(np.int64)
    user = faults["user"].astype(bool)
    # Kernel-mode faults on kernel addresses (vmalloc, ...) are not user memory.
    keep = user | (address < USER_TOP)
    conv = Conversion(columns={})
    conv.kernel_faults = int((~user).sum())
    conv.kernel_faults_outside_user = int((~keep).sum())
    pid, line, address, error_code = pid[keep], line[keep], address[keep], error_code[keep]
    time_ns = faults["time_ns"].astype(np.int64)[keep]
    conv.faults = len(pid)
    codes, counts = np.unique(error_code, return_counts=True)
    conv.faults_by_error_code = {f"0x{int(c):x}": int(n) for c, n in zip(codes, counts)}
    conv.outside_vma = _count_outside(procs, pid, line, address)
    conv.khugepaged_collapses = procs.collapses

    layout = procs.events
    n = len(layout)
    columns = {
        "time_ns": np.concatenate([np.array([e.time_ns for e in layout], np.int64), time_ns]),
        "pid": np.concatenate([np.array([e.pid for e in layout], np.int32), pid]),
        "kind": np.concatenate([np.array([int(e.kind) for e in layout], np.int8),
                                np.where(error_code & ERROR_WRITE, int(EventKind.WRITE), int(EventKind.READ)).astype(np.int8)]),
        "address": np.concatenate([np.array([e.address for e in layout], np.uint64), address]),
        "length": np.concatenate([np.array([e.length for e in layout], np.uint64), np.ones(len(pid), np.uint64)]),
        "arg": np.concatenate([np.array([e.arg for e in layout], np.int64), error_code]),
    }
    # perf script prints in time order; the line number keeps that order and puts a
    # layout event before the faults that follow it on the same nanosecond.
    order = np.argsort(np.concatenate([np.array([e.line for e in layout], np.int64), line]), kind="stable")
    conv.columns = {k: v[order] for k, v in columns.items()}
    conv.processes = int(sum(1 for e in layout if e.kind in (EventKind.FORK, EventKind.EXEC)))
    conv.threads = procs.threads
    conv.vfork_children = len(procs.aliases)
    conv.unparsed_lines = unparsed
    conv.unparsed_examples = examples
    assert n + len(pid) == len(conv.columns["pid"])
    return conv


def _count_outside(procs: _Processes, pid: np.ndarray, line: np.ndarray, address: np.ndarray) -> int:
    """Faults no VMA known at that moment covers: replay the layout, check faults between changes."""
    if not len(pid):
        return 0
    by_space = {int(s): np.flatnonzero(pid == s) for s in np.unique(pid)}
    checked = {s: 0 for s in by_space}  # per space: faults (in line order) already checked
    vmas: dict[int, Vmas] = {}
    outside = 0

    def check_until(space: int, upto_line: int) -> int:
        rows = by_space.get(space)
        if rows is None:
            return 0
        end = int(np.searchsorted(line[rows], upto_line, side="left"))
        done = checked[space]
        checked[space] = max(done, end)
        if end <= done:
            return 0
        return vmas.setdefault(space, Vmas()).outside(address[rows[done:end]])

    layout_kinds = (EventKind.MMAP, EventKind.MUNMAP, EventKind.EXEC, EventKind.EXIT, EventKind.FORK)
    for event in procs.events:
        if event.kind not in layout_kinds:
            continue  # --pid snapshot pages and DONTNEED leave the VMAs as they are
        space = event.pid
        outside += check_until(space, event.line)
        if event.kind == EventKind.MMAP:
            vmas.setdefault(space, Vmas()).insert(event.address, event.address + event.length, event.arg)
        elif event.kind == EventKind.MUNMAP:
            vmas.setdefault(space, Vmas()).remove(event.address, event.address + event.length)
        elif event.kind in (EventKind.EXEC, EventKind.EXIT):
            vmas[space] = Vmas()
        elif event.kind == EventKind.FORK:
            outside += check_until(event.arg, event.line)
            vmas[event.arg] = vmas.setdefault(space, Vmas()).copy()
    for space in by_space:
        outside += check_until(space, np.iinfo(np.int64).max)
    return outside


__all__ = ["Conversion", "Vmas", "convert", "hex_to_uint64", "parse_faults", "parse_other"]
