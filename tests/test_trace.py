"""The trace file: round trip, metadata, atomic writes, and clear errors on bad files."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowahead.errors import CowaheadError
from cowahead.trace import COLUMNS, EventKind, TraceFile, read_trace, write_trace
from cowahead.trace.generators import PATTERNS, generate
from cowahead.trace.parquet import METADATA_KEY


def test_round_trip_keeps_every_column_and_the_metadata(tmp_path):
    trace = generate("bgsave", pages=64, seed=3)
    write_trace(trace, tmp_path / "t.parquet")
    back = read_trace(tmp_path / "t.parquet")
    for name in COLUMNS:
        assert np.array_equal(back.columns[name], trace.columns[name]), name
        assert back.columns[name].dtype == COLUMNS[name]
    for key in ("format", "version", "page_size", "source", "host", "kernel", "command", "created", "kinds"):
        assert key in back.metadata
    assert back.metadata["source"] == "generate:bgsave" and back.metadata["seed"] == 3


def test_chunks_concatenate_to_the_whole_trace(tmp_path, monkeypatch):
    monkeypatch.setattr("cowahead.trace.parquet.ROW_GROUP_ROWS", 100)
    trace = generate("random", pages=256)
    write_trace(trace, tmp_path / "t.parquet")
    chunks = list(TraceFile(tmp_path / "t.parquet").iter_chunks())
    assert len(chunks) == -(-len(trace) // 100)
    assert np.array_equal(np.concatenate([c["address"] for c in chunks]), trace.columns["address"])


def test_a_read_of_some_columns_gives_those_columns_whole_and_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("cowahead.trace.parquet.ROW_GROUP_ROWS", 100)
    trace = generate("forkexec", pages=64)
    write_trace(trace, tmp_path / "t.parquet")
    file = TraceFile(tmp_path / "t.parquet")
    names = ("kind", "arg")
    whole = file.read_columns(names)
    chunks = list(file.iter_chunks(names))
    assert set(whole) == {"kind", "arg"} and all(set(c) == {"kind", "arg"} for c in chunks)
    for name in names:
        assert np.array_equal(whole[name], trace.columns[name]) and whole[name].dtype == COLUMNS[name]
        assert np.array_equal(np.concatenate([c[name] for c in chunks]), trace.columns[name])


def test_a_file_of_the_earlier_layout_reads_as_one_of_todays(tmp_path, monkeypatch):
    """Files written before address and arg were stored uncompressed (Snappy and dictionaries on every column,
    pyarrow's defaults) read the same, whole, in chunks and as a replay reads them; today's writer stores
    address and arg uncompressed and address without a dictionary."""
    monkeypatch.setattr("cowahead.trace.parquet.ROW_GROUP_ROWS", 100)
    trace = generate("forkexec", pages=64)
    write_trace(trace, tmp_path / "new.parquet")
    table = pq.read_table(tmp_path / "new.parquet")
    pq.write_table(table, tmp_path / "old.parquet", row_group_size=100)  # pyarrow's defaults, as written before
    new, old = TraceFile(tmp_path / "new.parquet"), TraceFile(tmp_path / "old.parquet")
    columns = pq.ParquetFile(tmp_path / "new.parquet").metadata.row_group(0)
    stored = {columns.column(i).path_in_schema: columns.column(i) for i in range(columns.num_columns)}
    assert stored["address"].compression == "UNCOMPRESSED" and "RLE_DICTIONARY" not in stored["address"].encodings
    assert stored["arg"].compression == "UNCOMPRESSED" and stored["kind"].compression == "SNAPPY"
    assert pq.ParquetFile(tmp_path / "old.parquet").metadata.row_group(0).column(3).compression == "SNAPPY"
    assert old.metadata == new.metadata
    for name in COLUMNS:
        assert np.array_equal(old.read().columns[name], trace.columns[name]), name
    for access_args in (True, False):
        a = old.read_columns(access_args=access_args)
        b = new.read_columns(access_args=access_args)
        assert all(np.array_equal(a[k], b[k]) for k in COLUMNS)
        for x, y in zip(old.iter_chunks(access_args=access_args), new.iter_chunks(access_args=access_args)):
            assert all(np.array_equal(x[k], y[k]) for k in COLUMNS)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_generators_are_seeded_and_deterministic(name):
    a, b, c = generate(name, 128, seed=1), generate(name, 128, seed=1), generate(name, 128, seed=2)
    assert all(np.array_equal(a.columns[k], b.columns[k]) for k in COLUMNS)
    if name not in ("sequential", "strided"):
        assert not all(np.array_equal(a.columns[k], c.columns[k]) for k in COLUMNS)


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(CowaheadError, match="could not be written .disk full.; what was there is unchanged"):
        write_trace(generate("sequential", 8), tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_trace_survives_a_failed_overwrite(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_trace(generate("sequential", 8), path)
    before = path.read_bytes()
    monkeypatch.setattr(pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(CowaheadError, match="could not be written"):
        write_trace(generate("random", 8), path)
    assert path.read_bytes() == before


def _error(path) -> str:
    with pytest.raises(CowaheadError) as e:
        read_trace(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_file(tmp_path):
    assert "no such trace file" in _error(tmp_path / "nope.parquet")


def test_truncated_file(tmp_path):
    path = tmp_path / "t.parquet"
    write_trace(generate("sequential", 256), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(path)


def test_foreign_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    assert "not a Parquet file" in _error(path)


def test_foreign_parquet_file(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    assert "not a cowahead trace" in _error(path)


def _rewrite_metadata(src, dst, change):
    table = pq.read_table(src)
    meta = json.loads(table.schema.metadata[METADATA_KEY])
    change(meta)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), dst)


def test_newer_format_version(tmp_path):
    write_trace(generate("sequential", 8), tmp_path / "a.parquet")
    _rewrite_metadata(tmp_path / "a.parquet", tmp_path / "b.parquet", lambda m: m.update(version=99))
    assert "version 99" in _error(tmp_path / "b.parquet")


def test_wrong_column_type(tmp_path):
    write_trace(generate("sequential", 8), tmp_path / "a.parquet")
    table = pq.read_table(tmp_path / "a.parquet")
    table = table.set_column(table.schema.get_field_index("pid"), "pid", table.column("pid").cast(pa.string()))
    pq.write_table(table, tmp_path / "b.parquet")
    assert "column 'pid'" in _error(tmp_path / "b.parquet")


def test_unknown_event_kind(tmp_path):
    trace = generate("sequential", 8)
    trace.columns["kind"][3] = 42
    write_trace(trace, tmp_path / "t.parquet")
    assert "unknown event kind code 42" in _error(tmp_path / "t.parquet")


def test_folio_variants_carry_their_settings_and_madvise_events():
    from cowahead.trace.events import Advice
    from cowahead.trace.generators import FOLIO_VARIANTS
    plain = generate("sequential", pages=1024)
    madvised = generate("sequential+madvise", pages=1024)
    assert madvised.metadata["thp"] == {"enabled": "madvise"} and madvised.metadata["pattern"] == "sequential+madvise"
    kinds = madvised.columns["kind"]
    assert list(kinds[:2]) == [EventKind.MMAP, EventKind.MADVISE] and madvised.columns["arg"][1] == Advice.HUGEPAGE
    assert len(madvised) == len(plain) + 1  # one MADV_HUGEPAGE, the rest the same events
    mthp = generate("random+mthp-64k", pages=1024)
    assert len(mthp) == len(generate("random", pages=1024)) and mthp.metadata["thp"]["hugepages-64kB/enabled"] == "always"
    assert set(FOLIO_VARIANTS) == {"madvise", "always", "mthp-64k", "mthp-mixed"}
    with pytest.raises(CowaheadError, match="unknown folio variant"):
        generate("sequential+huge")


def test_a_replays_read_leaves_out_only_the_args_of_row_groups_of_reads_and_writes(tmp_path, monkeypatch):
    """``access_args=False`` reads the arg of every row group holding an event other than a read or a write, and
    gives zeros for the rest (a write's value, which no replay reads); every other column is read whole."""
    monkeypatch.setattr("cowahead.trace.parquet.ROW_GROUP_ROWS", 50)
    trace = generate("forkexec", pages=256)
    write_trace(trace, tmp_path / "t.parquet")
    # the same file without column statistics: the kinds are then looked at, not the row groups' bounds
    pq.write_table(pq.read_table(tmp_path / "t.parquet"), tmp_path / "bare.parquet", row_group_size=50,
                   write_statistics=False)
    names = ("pid", "kind", "address", "length", "arg")
    kind, arg = trace.columns["kind"], trace.columns["arg"]
    groups = np.arange(len(kind)) // 50
    mixed = np.isin(groups, groups[(kind != EventKind.READ) & (kind != EventKind.WRITE)])
    expected = np.where(mixed, arg, 0)
    assert (~mixed).any() and (expected != arg).any()  # some row groups are left out, and it shows
    for path in (tmp_path / "t.parquet", tmp_path / "bare.parquet"):
        file = TraceFile(path)
        whole = file.read_columns(names, access_args=False)
        chunks = list(file.iter_chunks(names, access_args=False))
        assert np.array_equal(whole["arg"], expected) and whole["arg"].dtype == COLUMNS["arg"]
        assert np.array_equal(np.concatenate([c["arg"] for c in chunks]), expected)
        for name in names[:-1]:
            assert np.array_equal(whole[name], trace.columns[name])
            assert np.array_equal(np.concatenate([c[name] for c in chunks]), trace.columns[name])
        assert np.array_equal(file.read_columns(("kind", "arg"))["arg"], arg)  # by default every arg
    assert pq.ParquetFile(tmp_path / "bare.parquet").metadata.row_group(0).column(2).statistics is None


def _check_events_exactly(path, c):
    """The event checks as they were before the columns' bounds were asked first: the reference."""
    from cowahead.trace.events import VmaKind
    from cowahead.trace.parquet import MAX_ACCESS_BYTES, RANGED, USER_TOP
    kind, address, length, arg = c["kind"], c["address"], c["length"], c["arg"]
    ranged = np.isin(kind, RANGED)
    beyond = ranged & ((address >= USER_TOP) | (length > np.uint64(USER_TOP) - np.minimum(address, USER_TOP)))
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise CowaheadError(f"{path}: a {EventKind(int(kind[i])).name} event covers {int(address[i]):#x} + "
                            f"{int(length[i]):#x} bytes, beyond the user address space (2^47)")
    accesses = (kind == EventKind.READ) | (kind == EventKind.WRITE)
    huge = accesses & (length > MAX_ACCESS_BYTES)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise CowaheadError(f"{path}: a {EventKind(int(kind[i])).name} event covers {int(length[i]):,} bytes in one "
                            f"access; an access event is a fault or a short span (at most {MAX_ACCESS_BYTES >> 30} GiB)")
    mmaps = kind == EventKind.MMAP
    bad_vma = mmaps & ~np.isin(arg, [int(v) for v in VmaKind])
    if bad_vma.any():
        raise CowaheadError(f"{path}: an MMAP event has VMA kind {int(arg[bad_vma][0])}; kinds are "
                            f"{', '.join(f'{int(v)} {v.name.lower()}' for v in VmaKind)}")
    forks = kind == EventKind.FORK
    bad_child = forks & ((arg < 0) | (arg > np.iinfo(np.int32).max))
    if bad_child.any():
        raise CowaheadError(f"{path}: a FORK event names child pid {int(arg[bad_child][0])}, which is no pid")


EDGES = [0, 1, 4095, 1 << 32, (1 << 32) + 1, (1 << 47) - 4096, (1 << 47) - 1, 1 << 47, (1 << 64) - 1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(EventKind)), st.sampled_from(EDGES), st.sampled_from(EDGES),
                          st.sampled_from([-1, 0, 1, 2, 3, 1000, 1 << 31, 1 << 40])), max_size=12))
def test_the_event_checks_by_the_columns_bounds_say_what_the_exact_checks_say(events):
    """A trace is refused with the same one line, or not at all, whether each check asks the columns' bounds
    first (parquet._check_events) or tests every event (the reference above)."""
    from cowahead.trace.parquet import _check_events
    columns = {"kind": np.array([int(e[0]) for e in events], np.int8),
               "address": np.array([e[1] for e in events], np.uint64),
               "length": np.array([e[2] for e in events], np.uint64),
               "arg": np.array([e[3] for e in events], np.int64)}
    outcomes = []
    for check in (_check_events, _check_events_exactly):
        try:
            check("t.parquet", columns)
            outcomes.append(None)
        except CowaheadError as e:
            outcomes.append(str(e))
    assert outcomes[0] == outcomes[1]
