"""Recording real programs with perf: exact COW faults, interrupts, crashes.

These run perf on the real kernel. They skip, saying why, where perf is
missing or tracepoints are not permitted; everything else must pass.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import requires
from cowahead.cli.main import main
from cowahead.model import Kernel
from cowahead.policies import parse_policy
from cowahead.record import _convert
from cowahead.trace import PAGE_SIZE, EventKind, read_trace

K, M = 200, 137        # the child writes K known pages of a K+M page mapping
COW = 0x7              # x86 error code: present | write | user

WORKLOAD = textwrap.dedent(f"""
    import mmap, os, sys
    K, M, PAGE = {K}, {M}, {PAGE_SIZE}
    region = mmap.mmap(-1, (K + M) * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(K + M):              # K + M zero-fill faults
        region[page * PAGE] = 1
    written = [page for page in range(K + M) if page % 5 != 4][:K]
    child = os.fork()
    if child == 0:
        for page in written:               # K COW faults, one per page
            region[page * PAGE + 8] = 2
        os._exit(0)
    os.waitpid(child, 0)
    """)
WRITTEN = [page for page in range(K + M) if page % 5 != 4][:K]


def perf_unavailable() -> str | None:
    if shutil.which("perf") is None:
        return None  # requires() below fails the test, naming the package
    if os.geteuid() != 0 and Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip() != "-1":
        return "kernel tracepoints need root or sysctl kernel.perf_event_paranoid=-1"
    probe = subprocess.run(["perf", "record", "-q", "-o", "/dev/null", "-e", "exceptions:page_fault_user", "--", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"perf cannot record exceptions:page_fault_user here: {probe.stderr.strip()[:120]}"
    return None


def needs_perf(test):
    """perf from linux-perf (missing: the test fails), and the right to record tracepoints (else a skip, saying why)."""
    test = pytest.mark.skipif(perf_unavailable() is not None, reason=str(perf_unavailable()))(test)
    return requires("perf", "linux-perf")(test)


def the_region(trace) -> tuple[int, int]:
    """The workload's mapping: the one private anonymous MMAP of exactly K + M pages."""
    c = trace.columns
    mmaps = np.flatnonzero((c["kind"] == EventKind.MMAP) & (c["length"] == (K + M) * PAGE_SIZE) & (c["arg"] == 0))
    assert len(mmaps) == 1, f"expected one {K + M}-page anonymous mapping, found {len(mmaps)}"
    return int(c["address"][mmaps[0]]), int(c["pid"][mmaps[0]])


@pytest.fixture
def workload(tmp_path) -> Path:
    path = tmp_path / "workload.py"
    path.write_text(WORKLOAD)
    return path


# ----- the fixed workload: exactly K COW faults -------------------------------------------------

@needs_perf
def test_child_writes_give_exactly_k_cow_faults(tmp_path, workload):
    out = tmp_path / "fork.parquet"
    assert main(["record", "-o", str(out), "--", sys.executable, str(workload)]) == 0
    trace = read_trace(out)
    start, parent = the_region(trace)
    c = trace.columns
    inside = (c["address"] >= start) & (c["address"] < start + (K + M) * PAGE_SIZE)
    faults = inside & ((c["kind"] == EventKind.WRITE) | (c["kind"] == EventKind.READ))
    forks = c["arg"][(c["kind"] == EventKind.FORK) & (c["pid"] == parent)]
    assert len(forks) == 1
    child = int(forks[0])
    cow = faults & (c["arg"] == COW)
    assert int(cow.sum()) == K
    assert set(c["pid"][cow].tolist()) == {child}
    pages = sorted(((c["address"][cow] - start) // PAGE_SIZE).tolist())
    assert pages == WRITTEN
    # and the parent's fill: one write fault on a not-present page per page
    fill = faults & (c["pid"] == parent) & (c["arg"] == 0x6)
    assert int(fill.sum()) == K + M
    assert trace.metadata["thp"]["enabled"] in ("always", "madvise", "never")
    assert trace.metadata["conversion"]["outside_vma"] == 0


@needs_perf
def test_the_model_classifies_the_recorded_faults(tmp_path, workload):
    out = tmp_path / "fork.parquet"
    assert main(["record", "-o", str(out), "--", sys.executable, str(workload)]) == 0
    trace = read_trace(out)
    start, _ = the_region(trace)
    kernel = Kernel(parse_policy("none"), log_faults=True)
    kernel.replay(trace)
    first = start // PAGE_SIZE
    in_region = [(pid, kind) for _, pid, page, kind in kernel.fault_log if first <= page < first + K + M]
    assert sum(kind == "cow_copy" for _, kind in in_region) == K
    assert sum(kind == "zero_fill" for _, kind in in_region) == K + M


# ----- interrupts and crashes keep a valid trace -------------------------------------------------------

LONG_RUNNING = textwrap.dedent("""
    import mmap, os, sys, time
    region = mmap.mmap(-1, 64 * 4096, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(64):
        region[page * 4096] = 1
    print("ready", flush=True)
    time.sleep(60)
    """)


@needs_perf
def test_sigint_mid_run_keeps_a_valid_trace(tmp_path):
    script = tmp_path / "long.py"
    script.write_text(LONG_RUNNING)
    out = tmp_path / "interrupted.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "cowahead.cli.main", "record", "-o", str(out), "--",
                             sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and str(out) in stderr
    trace = read_trace(out)
    assert trace.metadata["interrupted"] is True
    assert int((trace.columns["kind"] == EventKind.WRITE).sum()) >= 64


@needs_perf
def test_crashing_command_keeps_its_trace_and_fails(tmp_path):
    out = tmp_path / "crash.parquet"
    crash = "import mmap, os, signal; r = mmap.mmap(-1, 16 * 4096); r[0] = 1; os.kill(os.getpid(), signal.SIGSEGV)"
    proc = subprocess.run([sys.executable, "-m", "cowahead.cli.main", "record", "-o", str(out), "--",
                           sys.executable, "-c", crash], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGSEGV, proc.stderr
    assert "signal 11" in proc.stderr and "kept" in proc.stderr
    trace = read_trace(out)
    assert trace.metadata["exit_status"] != 0
    assert int((trace.columns["kind"] == EventKind.EXIT).sum()) >= 1


@needs_perf
def test_exit_status_of_the_command_is_passed_on(tmp_path):
    out = tmp_path / "exit3.parquet"
    proc = subprocess.run([sys.executable, "-m", "cowahead.cli.main", "record", "-o", str(out), "--", "sh", "-c", "exit 3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert read_trace(out).metadata["exit_status"] == 3


# ----- errors: one line, naming the fix ---------------------------------------------------------------

def test_perf_missing_names_the_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["record", "-o", str(tmp_path / "t.parquet"), "--", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "linux-perf" in err


def test_not_permitted_names_the_sysctl(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    paranoid = Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
    if paranoid == "-1":
        pytest.skip("kernel.perf_event_paranoid is -1 here: an unprivileged user may record")
    if shutil.which("perf") is None:
        pytest.fail("perf not found: install Debian package linux-perf (./scripts/setup does)")
    assert main(["record", "-o", str(tmp_path / "t.parquet"), "--", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kernel.perf_event_paranoid" in err


# ----- conversion, without perf ---------------------------------------------------------------------------

def test_hex_decoding_is_exact():
    import pyarrow as pa
    values = [0, 1, 0x7, 0x7F3C43F2DB70, 0x7FFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF]
    decoded = _convert.hex_to_uint64(pa.array([f"{v:x}" for v in values]))
    assert decoded.tolist() == values


def test_converter_follows_fork_vfork_threads_and_layout(tmp_path):
    text = textwrap.dedent("""\
         100/100   1.000000000: PERF_RECORD_COMM exec: prog:100/100
         100/100   1.000000001: PERF_RECORD_MMAP2 100/100: [0x10000(0x4000) @ 0 00:00 0 0]: rw-p //anon
         100/100   1.000000002:   exceptions:page_fault_user: address=0x10008 ip=0x1 error_code=0x6
         100/100   1.000000003: PERF_RECORD_MMAP2 100/100: [0x10000(0x8000) @ 0 00:00 0 0]: rw-p //anon
         100/100   1.000000004:            task:task_newtask: pid=101 comm=prog clone_flags=1200011 oom_score_adj=0
         100/100   1.000000005:            task:task_newtask: pid=102 comm=prog clone_flags=3d0f00 oom_score_adj=0
         100/100   1.000000006:            task:task_newtask: pid=103 comm=prog clone_flags=4111 oom_score_adj=0
         101/101   1.000000007:   exceptions:page_fault_user: address=0x10008 ip=0x1 error_code=0x7
         100/102   1.000000008:   exceptions:page_fault_user: address=0x11000 ip=0x1 error_code=0x6
         103/103   1.000000009:   exceptions:page_fault_user: address=0x12000 ip=0x1 error_code=0x4
         103/103   1.000000010: PERF_RECORD_COMM exec: true:103/103
         101/101   1.000000011:    syscalls:sys_enter_munmap: addr: 0x00014000, len: 0x00004000
         101/101   1.000000012:   exceptions:page_fault_user: address=0x16000 ip=0x1 error_code=0x6
         101/101   1.000000013:   sched:sched_process_exit: comm=prog pid=101 prio=120 group_dead=true
        """)
    path = tmp_path / "perf.txt"
    path.write_text(text)
    conv = _convert.convert(path)
    c = conv.columns
    kinds = [EventKind(k).name for k in c["kind"]]
    assert kinds == ["EXEC", "MMAP", "WRITE", "MMAP", "FORK", "WRITE", "WRITE", "READ", "EXEC", "MUNMAP", "WRITE", "EXIT"]
    # the second MMAP2 grew the VMA: only the new part is mapped, the faulted page stays
    assert (int(c["address"][3]), int(c["length"][3])) == (0x14000, 0x4000)
    assert c["pid"].tolist() == [100, 100, 100, 100, 100, 101, 100, 100, 103, 101, 101, 101]
    assert conv.threads == 1 and conv.vfork_children == 1
    assert conv.outside_vma == 1   # 0x16000 after the child unmapped it
    assert conv.faults_by_error_code == {"0x4": 1, "0x6": 3, "0x7": 1}


# ----- attaching to a running process -------------------------------------------------------------------

ATTACHED = textwrap.dedent(f"""
    import ctypes, mmap, os, sys, time
    K, M, PAGE = {K}, {M}, {PAGE_SIZE}
    region = mmap.mmap(-1, (K + M) * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(K + M):              # before perf attaches: only pagemap knows
        region[page * PAGE] = 1
    # /proc/PID/maps may show the region merged with a neighbour: say where it is
    print("ready", ctypes.addressof(ctypes.c_char.from_buffer(region)), flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    written = [page for page in range(K + M) if page % 5 != 4][:K]
    child = os.fork()
    if child == 0:
        for page in written:
            region[page * PAGE + 8] = 2
        os._exit(0)
    os.waitpid(child, 0)
    """)


def wait_until_perf_writes(folder: Path, timeout: float = 60) -> None:
    """perf has opened its events once it has written its header into the recorder's work folder."""
    deadline = time.monotonic() + timeout
    while not any(p.stat().st_size > 0 for p in folder.glob(".cowahead-record-*/perf.data")):
        assert time.monotonic() < deadline, "perf did not start"
        time.sleep(0.05)
    time.sleep(0.5)


@needs_perf
def test_attach_with_pid_sees_earlier_pages_through_pagemap(tmp_path):
    script, go, out = tmp_path / "attached.py", tmp_path / "go", tmp_path / "attached.parquet"
    script.write_text(ATTACHED)
    workload = subprocess.Popen([sys.executable, str(script), str(go)], stdout=subprocess.PIPE, text=True)
    ready, address = workload.stdout.readline().split()
    assert ready == "ready"
    recorder = subprocess.Popen([sys.executable, "-m", "cowahead.cli.main", "record", "-o", str(out),
                                 "--pid", str(workload.pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_perf_writes(tmp_path)
    go.touch()
    workload.wait(timeout=60)
    stdout, stderr = recorder.communicate(timeout=120)
    assert recorder.returncode == 0, stderr
    trace = read_trace(out)
    assert trace.metadata["attached_pages"] >= K + M
    start = int(address)
    c = trace.columns
    inside = (c["address"] >= start) & (c["address"] < start + (K + M) * PAGE_SIZE)
    cow = inside & (c["kind"] == EventKind.WRITE) & (c["arg"] == COW)
    assert int(cow.sum()) == K
    kernel = Kernel(parse_policy("none"), log_faults=True)
    kernel.replay(trace)
    first = start // PAGE_SIZE
    copies = [page for _, pid, page, kind in kernel.fault_log if kind == "cow_copy" and first <= page < first + K + M]
    assert sorted(page - first for page in copies) == WRITTEN


@needs_perf
def test_unknown_command_is_one_line(tmp_path, capsys):
    assert main(["record", "-o", str(tmp_path / "t.parquet"), "--", "/nonexistent/command"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cowahead: error: /nonexistent/command: command not found"


def test_converter_memory_syscalls(tmp_path):
    text = textwrap.dedent("""\
         100/100   1.000000000: PERF_RECORD_COMM exec: prog:100/100
         100/100   1.000000001: PERF_RECORD_MMAP2 100/100: [0x10000(0x4000) @ 0 00:00 0 0]: rw-p //anon
         100/100   1.000000002:    syscalls:sys_enter_mremap: addr: 0x00010000, old_len: 0x00004000, new_len: 0x00002000, flags: 0x00000000, new_addr: 0x00000000
         100/100   1.000000003:     syscalls:sys_exit_mremap: 0x10000
         100/100   1.000000004:    syscalls:sys_enter_mremap: addr: 0x00010000, old_len: 0x00002000, new_len: 0x00008000, flags: 0x00000001, new_addr: 0x00000000
         100/100   1.000000005:     syscalls:sys_exit_mremap: 0x40000
         100/100   1.000000006:   syscalls:sys_enter_madvise: start: 0x00040000, len_in: 0x00001000, behavior: 0x00000004
         100/100   1.000000007:   syscalls:sys_enter_madvise: start: 0x00041000, len_in: 0x00001000, behavior: 0x00000008
         100/100   1.000000008: PERF_RECORD_MMAP2 100/100: [0x80000(0x3000) @ 0x80000 00:00 0 0]: rw-p [heap]
         100/100   1.000000009:        syscalls:sys_exit_brk: 0x81000
         100/100   1.000000010:   exceptions:page_fault_user: address=0x82000 ip=0x1 error_code=0x6
         100/100   1.000000011: PERF_RECORD_LOST lost 7
        """)
    path = tmp_path / "perf.txt"
    path.write_text(text)
    conv = _convert.convert(path)
    c = conv.columns
    events = [(EventKind(k).name, hex(int(a)), int(n)) for k, a, n in zip(c["kind"], c["address"], c["length"])]
    assert events == [("EXEC", "0x0", 0), ("MMAP", "0x10000", 0x4000),
                      ("MUNMAP", "0x12000", 0x2000),                      # shrink in place
                      ("MUNMAP", "0x10000", 0x2000), ("MMAP", "0x40000", 0x8000),  # moved
                      ("DONTNEED", "0x40000", 0x1000),                    # MADV_FREE left alone
                      ("MMAP", "0x80000", 0x3000), ("MUNMAP", "0x81000", 0x2000),  # brk shrank the heap
                      ("WRITE", "0x82000", 1)]
    assert conv.outside_vma == 1 and conv.lost_samples == 7 and conv.unparsed_lines == 0


def test_converter_thp_advice_prctl_and_khugepaged(tmp_path):
    text = textwrap.dedent("""\
         100/100   1.000000000: PERF_RECORD_COMM exec: prog:100/100
         100/100   1.000000001: PERF_RECORD_MMAP2 100/100: [0x200000(0x400000) @ 0 00:00 0 0]: rw-p //anon
         100/100   1.000000002:   syscalls:sys_enter_madvise: start: 0x00200000, len_in: 0x00400000, behavior: 0x0000000e
         100/100   1.000000003:   syscalls:sys_enter_madvise: start: 0x00400000, len_in: 0x00001001, behavior: 0x0000000f
         100/100   1.000000004:   syscalls:sys_enter_madvise: start: 0x00200000, len_in: 0x00200000, behavior: 0x00000019
         100/100   1.000000005:   syscalls:sys_enter_madvise: start: 0x00200000, len_in: 0x00200000, behavior: 0x00000003
         100/100   1.000000006:     syscalls:sys_enter_prctl: option: 0x00000029, arg2: 0x00000001, arg3: 0x00000000, arg4: 0x00000000, arg5: 0x00000000
         100/100   1.000000007:     syscalls:sys_enter_prctl: option: 0x0000000f, arg2: 0x00000001, arg3: 0x00000000, arg4: 0x00000000, arg5: 0x00000000
          55/55    1.000000008: huge_memory:mm_collapse_huge_page: mm=0xffff8881234, isolated=1, status=succeeded
          55/55    1.000000009: huge_memory:mm_collapse_huge_page: mm=0xffff8881234, isolated=0, status=pmd_mapped
        """)
    path = tmp_path / "perf.txt"
    path.write_text(text)
    conv = _convert.convert(path)
    c = conv.columns
    events = [(EventKind(k).name, hex(int(a)), int(n), int(arg)) for k, a, n, arg in
              zip(c["kind"], c["address"], c["length"], c["arg"])]
    assert events == [("EXEC", "0x0", 0, 0), ("MMAP", "0x200000", 0x400000, 0),
                      ("MADVISE", "0x200000", 0x400000, 14),    # MADV_HUGEPAGE
                      ("MADVISE", "0x400000", 0x2000, 15),      # MADV_NOHUGEPAGE, its length page-rounded
                      ("MADVISE", "0x200000", 0x200000, 25),    # MADV_COLLAPSE; MADV_WILLNEED (3) left out
                      ("THP_DISABLE", "0x0", 0, 1)]             # PR_SET_THP_DISABLE; prctl 15 left out
    assert conv.khugepaged_collapses == 1 and conv.unparsed_lines == 0


# ----- a real program on large folios -------------------------------------------------------------

PROGRAM = Path(__file__).parent / "programs" / "thp_workers.c"
MADV_HUGEPAGE = 14


def record_thp_workers(tmp_path: Path, config: str, advice: int) -> tuple[dict[str, int], object]:
    """Record thp_workers (256 MiB, four workers) under a THP configuration; its own fault counts and the
    trace."""
    from cowahead.real.thp import thp_config
    binary = tmp_path / "thp_workers"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(PROGRAM)], check=True)
    out = tmp_path / "thp_workers.parquet"
    with thp_config(config):
        run = subprocess.run([str(Path(sys.executable).parent / "cowahead"), "record", "-o", str(out), "--", str(binary),
                              "256", "4", str(advice)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-500:]
    own = {"fill": 0, "workers": 0}
    for line in run.stdout.splitlines():
        words = line.split()
        if words[:2] == ["fill", "minflt"]:
            own["fill"] = int(words[2])
        elif words[0] == "worker":
            own["workers"] += int(words[3])
    return own, read_trace(out)


def region_faults(trace) -> dict[str, int]:
    """The model's faults inside the program's 256 MiB region (its 258 MiB mapping, trimmed to the 2 MiB
    aligned 256 MiB inside), by outcome."""
    c = trace.columns
    size, huge = 256 << 20, 2 << 20
    mapped = np.flatnonzero((c["kind"] == EventKind.MMAP) & (c["length"] == size + huge))
    assert len(mapped) == 1, "expected the program's one 258 MiB mapping"
    start = (int(c["address"][mapped[0]]) + huge - 1) & ~(huge - 1)
    kernel = Kernel(parse_policy("none"), log_faults=True)
    kernel.replay(trace)
    first, last = start // PAGE_SIZE, (start + size) // PAGE_SIZE
    counts: dict[str, int] = {}
    for _, _, page, kind in kernel.fault_log:
        if first <= page < last:
            counts[kind] = counts.get(kind, 0) + 1
    counts["thp_fault_alloc"] = kernel.counters.thp_fault_alloc
    counts["mthp_fault_alloc"] = kernel.counters.mthp_fault_alloc
    return counts


@needs_perf
@requires("gcc", "gcc")
@pytest.mark.skipif(os.geteuid() != 0, reason="setting the THP knobs needs root")
def test_madv_hugepage_workers_replay_with_the_kernels_cow_copies(tmp_path):
    own, trace = record_thp_workers(tmp_path, "madvise", MADV_HUGEPAGE)
    # the kernel: one fault per 2 MiB for the fill; every page a worker writes is one COW copy
    assert own == {"fill": 128, "workers": 65536}
    model = region_faults(trace)
    assert model["thp_fault_alloc"] == 128 and model["zero_fill"] == 128
    assert abs(model["cow_copy"] - own["workers"]) <= 0.02 * own["workers"]


@needs_perf
@requires("gcc", "gcc")
@pytest.mark.skipif(os.geteuid() != 0, reason="setting the THP knobs needs root")
def test_mthp_64k_recording_agrees_with_the_programs_own_fault_counts(tmp_path):
    own, trace = record_thp_workers(tmp_path, "mthp-64k", 0)
    assert own == {"fill": 4096, "workers": 65536}  # 16 pages per zero-fill fault, then 4 KiB COW copies
    model = region_faults(trace)
    assert model["zero_fill"] == own["fill"] and model["mthp_fault_alloc"] >= own["fill"]  # each an mTHP in the model too
    faults = sum(v for k, v in model.items() if not k.endswith("alloc") and not k.startswith("ahead"))
    assert abs(faults - (own["fill"] + own["workers"])) <= 0.02 * (own["fill"] + own["workers"])


def test_attach_snapshot_carries_the_processes_thp_state():
    """--pid: a VMA the process madvised (VmFlags hg / nh) and its PR_SET_THP_DISABLE come back as events."""
    from cowahead.record import snapshot
    program = textwrap.dedent("""
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        size = 4 << 20
        hg = libc.mmap(None, size, 3, 0x22, -1, 0)
        nh = libc.mmap(None, size, 3, 0x22, -1, 0)
        assert libc.madvise(hg, size, 14) == 0 and libc.madvise(nh, size, 15) == 0
        assert libc.prctl(41, 1, 0, 0, 0) == 0
        print(hg, nh, flush=True)
        sys.stdin.read()
        """)
    process = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        hg, nh = (int(x) for x in process.stdout.readline().split())
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        events = snapshot(process.pid)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    finally:
        process.stdin.close()
        process.wait(timeout=10)
    advice = {(e.address, e.arg) for e in events if e.kind == EventKind.MADVISE}
    assert (hg, 14) in advice and (nh, 15) in advice
    assert [e.arg for e in events if e.kind == EventKind.THP_DISABLE] == [1]
    assert events.index(next(e for e in events if e.kind == EventKind.MADVISE and e.address == hg)) > \
        events.index(next(e for e in events if e.kind == EventKind.MMAP and e.address == hg))  # after its MMAP
    assert all(before <= e.time_ns <= after for e in events)  # stamped when taken, not at time 0


@needs_perf
def test_perf_killed_mid_recording_is_one_line_keeps_its_data_and_never_hangs(tmp_path):
    out = tmp_path / "killed.parquet"
    program = "import mmap, time\nm = mmap.mmap(-1, 16 << 20)\nfor i in range(0, 16 << 20, 4096): m[i] = 1\ntime.sleep(30)\n"
    recorder = subprocess.Popen([str(Path(sys.executable).parent / "cowahead"), "record", "-o", str(out), "--",
                                 sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_perf_writes(tmp_path)
        time.sleep(1)
        perf = [int(p) for p in subprocess.run(["pgrep", "-P", str(recorder.pid), "-x", "perf"], capture_output=True,
                                               text=True).stdout.split()]
        assert perf, "cowahead record runs perf as its child"
        os.kill(perf[0], signal.SIGKILL)
        _, stderr = recorder.communicate(timeout=60)  # the workload lives on; cowahead must not wait for it
    finally:
        recorder.kill()
        subprocess.run(["pkill", "-f", "time.sleep\\(30\\)"])
    assert recorder.returncode == 2
    assert stderr.strip().splitlines() == [stderr.strip()] and "perf was killed (SIGKILL)" in stderr
    kept = tmp_path / "killed.parquet.perf.data"
    assert kept.stat().st_size > 0 and not out.exists()
    assert not list(tmp_path.glob(".cowahead-record-*"))


@needs_perf
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")
def test_a_recording_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        program = "import mmap\nm = mmap.mmap(-1, 64 << 20)\nfor i in range(0, 64 << 20, 4096): m[i] = 1\n"
        run = subprocess.run([str(Path(sys.executable).parent / "cowahead"), "record", "-o", str(small / "r.parquet"),
                              "--", sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
        leftovers = list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"cowahead: error: perf could not finish its perf.data (the file system holding "
                                  f"{small} is full); no trace written, nothing kept")
    assert leftovers == []
