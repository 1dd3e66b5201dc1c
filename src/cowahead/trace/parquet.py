"""The trace file: Parquet, one row per event, metadata under one key.

Schema (see docs/trace-format.md): ``time_ns int64, pid int32, kind int8,
address uint64, length uint64, arg int64``; file metadata key ``cowahead``
holds a JSON object with at least ``format``, ``version``, ``page_size``,
``source``, ``host``, ``kernel``, ``command``, ``created`` and ``kinds``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CowaheadError
from ..output import write_atomically
from ..results.header import check_header, header
from .events import COLUMNS, PAGE_SIZE, EventKind, VmaKind
from .trace import Trace

METADATA_KEY = b"cowahead"
ROW_GROUP_ROWS = 1 << 20
# How columns are stored (docs/trace-format.md, "Layout"). Snappy made `address` the costliest column to
# read: an address is nearly distinct per event, so Snappy halves its size at best and decompressing it
# took most of a replay's read (10M events of the random trace, 2 vCPUs, loaded: the four replay columns
# 0.38–0.50 s with Snappy, 0.15–0.21 s stored plain). `arg` (a write's value: distinct too) is read only
# in row groups holding other events than reads and writes; stored plain, those reads took 0.02 s, not
# 0.07. Both keep Parquet's dictionary where it pays (a column of repeats: pid, kind, length, a recorded
# trace's zero args) but `address`, whose dictionary only ever fills and falls back. Any layout reads:
# a file written before (Snappy everywhere) reads the same, only slower.
COMPRESSION = {"time_ns": "snappy", "pid": "snappy", "kind": "snappy", "address": "none", "length": "snappy",
               "arg": "none"}
DICTIONARY = ["time_ns", "pid", "kind", "length", "arg"]

SCHEMA = pa.schema([(name, pa.from_numpy_dtype(dtype)) for name, dtype in COLUMNS.items()])


def base_metadata(source: str) -> dict:
    """Metadata every trace carries: the common header (results/header.py) and the trace's own fields;
    ``host`` and ``kernel`` repeat the machine's for readers of version 1."""
    return {
        **header("trace"),
        "page_size": PAGE_SIZE,
        "source": source,
        "host": platform.node(),
        "kernel": platform.release(),
        "kinds": {k.name: int(k) for k in EventKind},
    }


def write_trace(trace: Trace, path: str | Path) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    meta = {**base_metadata(trace.metadata.get("source", "unknown")), **trace.metadata}
    table = pa.table({k: trace.columns[k] for k in COLUMNS}, schema=SCHEMA)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    write_atomically(path, lambda tmp: pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS,
                                                                 compression=COMPRESSION,
                                                                 use_dictionary=DICTIONARY))


class TraceFile:
    """An opened, validated trace file; events come in row-group chunks."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = _open_parquet(self.path)
        self.metadata = _check_metadata(self.path, self._file)
        _check_schema(self.path, self._file.schema_arrow)
        self.num_events = self._file.metadata.num_rows

    def iter_chunks(self, columns: Sequence[str] = tuple(COLUMNS),
                    access_args: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """``columns`` of each row group in turn; ``access_args`` False: see read_columns."""
        skip = _skips_access_args(columns, access_args)
        for i in range(self._file.num_row_groups):
            table = self._read(columns, [i], skip)
            chunk = {k: table.column(k).to_numpy() for k in table.column_names}
            if skip:
                chunk["arg"] = self._args_of([i], [0], chunk["kind"])
            yield self._columns(chunk, columns)

    def read(self) -> Trace:
        return Trace(self.read_columns(), self.metadata)

    def read_columns(self, columns: Sequence[str] = tuple(COLUMNS), access_args: bool = True) -> dict[str, np.ndarray]:
        """``columns`` of the whole file, read at once. ``access_args`` False (with ``kind`` and ``arg`` among
        the columns): the arg of a row group holding only reads and writes is not read but zero, since only
        an integrity check reads a write's value (trace/events.py); other events' args are read."""
        # One read of the whole file decodes columns on both cores and copies each column once;
        # row group by row group, then joined, took 1.5–3× as long (10M events: 0.3 s against 0.5–1 s).
        skip = _skips_access_args(columns, access_args)
        table = self._read(columns, None, skip)
        chunk = {k: table.column(k).to_numpy() for k in table.column_names}
        if skip:
            groups = range(self._file.num_row_groups)
            starts = np.cumsum([0] + [self._file.metadata.row_group(i).num_rows for i in groups])
            chunk["arg"] = self._args_of(list(groups), starts, chunk["kind"])
        return self._columns(chunk, columns)

    def _read(self, columns: Sequence[str], groups: list[int] | None, skip_arg: bool) -> pa.Table:
        """``columns`` (less arg when ``skip_arg``) of row ``groups`` (None: all, on both cores)."""
        names = [k for k in columns if not (skip_arg and k == "arg")]
        try:
            if groups is None:
                return self._file.read(columns=names, use_threads=True)
            return self._file.read_row_groups(groups, columns=names, use_threads=len(groups) > 1)
        except (OSError, pa.ArrowException) as e:
            where = "" if groups is None or len(groups) > 1 else f"row group {groups[0]} is "
            raise CowaheadError(f"{self.path}: {where}unreadable ({_one_line(e)}); the file is damaged") from None

    def _args_of(self, groups: list[int], starts, kind: np.ndarray) -> np.ndarray:
        """The arg column of ``groups`` (rows starts[j] … of ``kind`` for group j): read where a group holds
        an event other than a read or a write, zero elsewhere. In a trace of page faults that skips most of
        the column whose decoding costs most (distinct values: 0.63 s of a 1.1 s read of 10M events)."""
        arg = np.zeros(len(kind), np.int64)
        for j, group in enumerate(groups):
            lo, n = int(starts[j]), self._file.metadata.row_group(group).num_rows
            if not self._only_accesses(group, kind[lo:lo + n]):
                arg[lo:lo + n] = self._read(("arg",), [group], False).column("arg").to_numpy()
        return arg

    def _only_accesses(self, group: int, kind: np.ndarray) -> bool:
        """Does row ``group`` (its ``kind`` column) hold only reads and writes? Its statistics say so without a
        pass where the writer kept them (pyarrow does), the column itself where not."""
        assert EventKind.WRITE == EventKind.READ + 1  # one range of kinds
        column = self._file.metadata.row_group(group).column(self._file.schema_arrow.get_field_index("kind"))
        stats = column.statistics
        if stats is not None and stats.has_min_max:
            return bool(stats.min >= EventKind.READ and stats.max <= EventKind.WRITE)
        return bool(((kind == EventKind.READ) | (kind == EventKind.WRITE)).all())

    def _columns(self, chunk: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        columns = {k: chunk[k].astype(COLUMNS[k], copy=False) for k in names}
        if "kind" in columns:
            _check_kinds(self.path, columns["kind"])
            if {"address", "length", "arg"} <= set(columns):
                _check_events(self.path, columns)
        return columns


def _one_line(e: Exception) -> str:
    """pyarrow's messages span lines; a user error is one."""
    return " ".join(str(e).split())


def read_trace(path: str | Path) -> Trace:
    return TraceFile(path).read()


def _open_parquet(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise CowaheadError(f"{path}: no such trace file")
    if path.is_dir():
        raise CowaheadError(f"{path}: is a directory, not a trace file")
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException):
        raise CowaheadError(f"{path}: not a Parquet file, or truncated; make it with `cowahead generate` or `cowahead record`") from None


def _check_metadata(path: Path, file: pq.ParquetFile) -> dict:
    raw = (file.schema_arrow.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise CowaheadError(f"{path}: a Parquet file but not a cowahead trace (no '{METADATA_KEY.decode()}' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise CowaheadError(f"{path}: the cowahead metadata is not valid JSON; the file is damaged") from None
    check_header(meta, "trace", str(path))
    if meta.get("page_size") != PAGE_SIZE:
        raise CowaheadError(f"{path}: page size {meta.get('page_size')!r}, the model knows only {PAGE_SIZE}")
    return meta


def _check_schema(path: Path, schema: pa.Schema) -> None:
    for field in SCHEMA:
        if field.name not in schema.names:
            raise CowaheadError(f"{path}: column '{field.name}' is missing")
        if schema.field(field.name).type != field.type:
            raise CowaheadError(f"{path}: column '{field.name}' is {schema.field(field.name).type}, expected {field.type}")


def _check_kinds(path: Path, kinds: np.ndarray) -> None:
    if len(kinds) and (kinds.min() < 0 or kinds.max() > max(EventKind)):
        bad = int(kinds[(kinds < 0) | (kinds > max(EventKind))][0])
        raise CowaheadError(f"{path}: unknown event kind code {bad}")


USER_TOP = 1 << 47  # x86-64 user addresses lie below: no event of a process can reach past it
MAX_ACCESS_BYTES = 1 << 32  # one READ or WRITE event: a fault, or a memset-like span; 4 GiB is plenty
RANGED = [int(k) for k in (EventKind.MMAP, EventKind.MUNMAP, EventKind.DONTNEED, EventKind.READ, EventKind.WRITE,
                           EventKind.MADVISE, EventKind.COLLAPSE)]


def _skips_access_args(columns: Sequence[str], access_args: bool) -> bool:
    return not access_args and "arg" in columns and "kind" in columns


def _check_events(path: Path, c: dict[str, np.ndarray]) -> None:
    """What a replay would trip over, refused in one line: a range beyond the user address space, one access
    of gigabytes (a replay walks it page by page), an MMAP of no VMA kind, a FORK child that is no pid (each
    found by benchmarks/fuzz_trace.py). Each test over every event first asks the columns' bounds, which
    rule most traces out in one reduction; the exact tests make several temporaries of the columns' length
    (0.36–0.47 s of a 10M-event read on the loaded benchmark VM)."""
    kind, address, length, arg = c["kind"], c["address"], c["length"], c["arg"]
    if len(kind) == 0:
        return
    top, longest = int(address.max()), int(length.max())
    if not (top < USER_TOP and longest <= USER_TOP - top):  # some event may reach past 2^47: look closer
        _check_ranges(path, kind, address, length)
    if longest > MAX_ACCESS_BYTES:  # an mmap may be this long (every generated trace's is); an access may not
        accesses = (kind == EventKind.READ) | (kind == EventKind.WRITE)
        if np.max(length, where=accesses, initial=0) > MAX_ACCESS_BYTES:
            _check_accesses(path, kind, length)
    mmaps = np.flatnonzero(kind == EventKind.MMAP)
    bad_vma = ~np.isin(arg[mmaps], [int(v) for v in VmaKind])
    if bad_vma.any():
        raise CowaheadError(f"{path}: an MMAP event has VMA kind {int(arg[mmaps][bad_vma][0])}; kinds are "
                            f"{', '.join(f'{int(v)} {v.name.lower()}' for v in VmaKind)}")
    children = arg[kind == EventKind.FORK]
    bad_child = (children < 0) | (children > np.iinfo(np.int32).max)
    if bad_child.any():
        raise CowaheadError(f"{path}: a FORK event names child pid {int(children[bad_child][0])}, which is no pid")


def _check_ranges(path: Path, kind: np.ndarray, address: np.ndarray, length: np.ndarray) -> None:
    ranged = np.isin(kind, RANGED)
    beyond = ranged & ((address >= USER_TOP) | (length > np.uint64(USER_TOP) - np.minimum(address, USER_TOP)))
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise CowaheadError(f"{path}: a {EventKind(int(kind[i])).name} event covers {int(address[i]):#x} + "
                            f"{int(length[i]):#x} bytes, beyond the user address space (2^47)")


def _check_accesses(path: Path, kind: np.ndarray, length: np.ndarray) -> None:
    accesses = (kind == EventKind.READ) | (kind == EventKind.WRITE)
    huge = accesses & (length > MAX_ACCESS_BYTES)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise CowaheadError(f"{path}: a {EventKind(int(kind[i])).name} event covers {int(length[i]):,} bytes in one "
                            f"access; an access event is a fault or a short span (at most {MAX_ACCESS_BYTES >> 30} GiB)")
