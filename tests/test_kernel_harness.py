"""The kernel harness: virtme-ng under QEMU TCG with Debian's stock kernel, the patch, the guest programs.

The boot tests take about 30 s each under TCG; they skip, saying why, where
QEMU, virtme-ng or the stock kernel (linux-image-amd64) is missing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import requires
from cowahead.errors import CowaheadError
from cowahead.kernel import kbuild
from cowahead.kernel.guestprogs import compile_programs
from cowahead.kernel.validate import child_stream, kernel_counters, model_counters, model_policy
from cowahead.kernel.vm import guest_script, run_in_guest, stock_kernel
from cowahead.kernel.vmstat import parse_vmstat, vmstat_delta
from cowahead.trace.generators import generate


def needs_guest(test):
    """QEMU, a stock kernel and virtme-ng's own needs (a static busybox, which it checks with `file`)."""
    for what, package in [("qemu-system-x86_64", "qemu-system-x86"), ("/boot/vmlinuz-*", "linux-image-amd64"),
                          ("busybox", "busybox-static"), ("file", "file")]:
        test = requires(what, package)(test)
    return pytest.mark.usefixtures("static_busybox")(test)


@pytest.fixture
def static_busybox() -> None:
    """virtme-ng refuses a dynamically linked busybox (Debian's plain busybox, pulled in by initramfs-tools)."""
    from virtme import mkinitramfs
    from virtme.commands.run import is_statically_linked
    busybox = mkinitramfs.find_busybox(root="/", is_native=True)
    if busybox is None or not is_statically_linked(busybox):
        pytest.fail("no statically linked busybox: install Debian package busybox-static (./scripts/setup does)",
                    pytrace=False)


def test_parse_vmstat_and_delta():
    before = parse_vmstat("pgfault 10\npgreuse 2\nnonsense\n")
    after = parse_vmstat("pgfault 25\npgreuse 2\ncow_fault_copy 3\n")
    assert before == {"pgfault": 10, "pgreuse": 2}
    assert vmstat_delta(before, after) == {"pgfault": 15, "pgreuse": 0}


def test_guest_script_sets_sysctls_runs_then_checks_dmesg():
    plain = guest_script(["echo", "a b"], None, None)
    assert plain.startswith("echo 'a b'; rc=$?; dmesg") and plain.endswith("exit $rc")
    script = guest_script(["true"], 16, "around")
    assert "echo around > /proc/sys/vm/cow_ahead_policy && echo 16 > /proc/sys/vm/cow_ahead_pages && true;" in script
    assert "exit 125" in script and script.endswith("exit $rc")
    with pytest.raises(CowaheadError):
        guest_script(["true"], 513, None)
    with pytest.raises(CowaheadError):
        guest_script(["true"], 4, "ccow")


def test_model_side_of_the_comparison():
    trace = generate("sequential", pages=64)
    assert child_stream(trace) == list(range(64))
    assert model_policy("fixed", 0) == "none" and model_policy("around", 16) == "around:16"
    assert model_counters(trace, "none") == {"cow_fault_copy": 64, "cow_ahead_copy": 0, "cow_ahead_reuse": 0,
                                             "cow_ahead_unused": 0}
    output = {"during": {"cow_fault_copy": 4, "cow_ahead_copy": 60, "cow_ahead_reuse": 0, "cow_ahead_unused": 0},
              "unmap": {"cow_fault_copy": 0, "cow_ahead_copy": 0, "cow_ahead_reuse": 0, "cow_ahead_unused": 0}}
    assert kernel_counters(output) == model_counters(trace, "fixed:16")


@requires("gcc", "build-essential")
def test_guest_programs_run_on_the_host(tmp_path):
    """The workload and the vmsplice check run on any kernel; without the patch its counters read -1."""
    programs = compile_programs(tmp_path)
    stream = tmp_path / "stream"
    stream.write_text("\n".join(map(str, range(32))))
    done = subprocess.run([programs["cow_workload"], "32", stream], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["writes"] == 32 and report["during"]["pgfault"] >= 32
    assert subprocess.run([programs["vmsplice_leak"], "15"], capture_output=True).returncode == 0


@requires(str(kbuild.SOURCE_TARBALL), "linux-source-6.1")
def test_patch_applies_to_linux_source_6_1(tmp_path):
    files = [line[len("+++ b/"):].split("\t")[0] for line in kbuild.PATCH.read_text().splitlines()
             if line.startswith("+++ b/")]
    assert "mm/memory.c" in files
    subprocess.run(["tar", "xf", kbuild.SOURCE_TARBALL, "-C", tmp_path]
                   + [f"{kbuild.TREE_NAME}/{f}" for f in files], check=True)
    ok, output = kbuild.patch_applies(tmp_path / kbuild.TREE_NAME)
    assert ok, output
    assert "FAILED" not in output and "fuzz" not in output.lower() and "offset" not in output.lower()


@needs_guest
def test_stock_kernel_boots_runs_a_command_and_reads_vmstat(tmp_path):
    """Debian's stock 6.1 under TCG: a command's output and exit status come back, /proc/vmstat is read."""
    programs = compile_programs(tmp_path)
    stream = tmp_path / "stream"
    stream.write_text("\n".join(map(str, range(64))))
    script = f"cat /proc/vmstat; echo '#'; {programs['cow_workload']} 64 {stream}; exit 3"
    result = run_in_guest(stock_kernel(), ["sh", "-c", script], timeout=600)
    assert result.returncode == 3, result.stderr[-2000:]
    vmstat_text, _, workload = result.stdout.partition("#\n")
    vmstat = parse_vmstat(vmstat_text)
    assert vmstat["pgfault"] > 0 and "pgreuse" in vmstat
    assert "cow_fault_copy" not in vmstat  # the stock kernel has no COW-ahead
    report = json.loads(workload.strip().splitlines()[-1])
    assert report["during"]["pgfault"] >= 64  # one COW fault per page the child writes
    assert report["during"]["cow_fault_copy"] == -1


def _patched_kernel() -> Path | None:
    return kbuild.built_kernel()


@needs_guest
@pytest.mark.skipif(_patched_kernel() is None,
                    reason=f"no patched kernel built in {kbuild.DEFAULT_BUILD_DIR} (cowahead kernel build; "
                           "COWAHEAD_KBUILD chooses the directory)")
def test_patched_kernel_has_the_controls_and_counters():
    script = "cat /proc/sys/vm/cow_ahead_pages /proc/sys/vm/cow_ahead_policy; grep -E '^cow_' /proc/vmstat"
    result = run_in_guest(_patched_kernel(), ["sh", "-c", script], cow_ahead=16, policy="around", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.split()
    assert lines[:2] == ["16", "around"]
    assert {"cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse", "cow_ahead_unused"} <= set(lines)


def test_kernel_run_verb_rejects_bad_input_in_one_line(capsys):
    from cowahead.cli.main import main
    assert main(["kernel", "run", "--kernel", "/nonexistent/bzImage", "--", "true"]) == 2
    assert main(["kernel", "run", "--kernel", "/dev/null", "--cow-ahead", "999", "--", "true"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 2 and all(line.startswith("cowahead: error: ") for line in errors)


@requires("patch", "patch")
def test_swapping_patch_versions_keeps_mtimes_of_unchanged_files(tmp_path):
    """A new patch version must not make make rebuild files whose content did not change."""
    import os
    import time
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d/one").write_text("a\nb\nc\n")
    (tree / "d/two").write_text("x\ny\n")

    def hunk(name, old, new):
        return f"--- a/d/{name}\n+++ b/d/{name}\n@@ -1,{len(old)} +1,{len(new)} @@\n" + \
            "".join(f" {o}\n" if o == n else f"-{o}\n+{n}\n" for o, n in zip(old, new))
    first = tmp_path / "first.patch"
    first.write_text(hunk("one", "abc", "aBc") + hunk("two", "xy", "xY"))
    second = tmp_path / "second.patch"
    second.write_text(hunk("one", "abc", "aZc") + hunk("two", "xy", "xY"))
    assert kbuild.apply_patch(tree, first)
    two_mtime = (tree / "d/two").stat().st_mtime_ns
    time.sleep(0.05)
    os.utime(tree / "d/one")
    assert kbuild.apply_patch(tree, second) and not kbuild.apply_patch(tree, second)
    assert (tree / "d/one").read_text() == "a\nZ\nc\n" and (tree / "d/two").read_text() == "x\nY\n"
    assert (tree / "d/two").stat().st_mtime_ns == two_mtime


def test_predicted_time_per_page_from_instruction_counts():
    from cowahead.kernel.validate import predicted_times
    from cowahead.model.costs import CostModel
    # a hand-made calibration: trap_us = cow_fault_us − ahead_copy_us = 3.0 − 2.0 = 1.0, work_us = 2.0
    costs = CostModel(cow_fault_us=3.0, ahead_copy_us=2.0, ahead_call_us=0.5)
    rows = [{"pattern": "sequential", "policy": "fixed", "window": w, "pages_written": 2048, "cow_broken_pages": 2048,
             "faults": f, "cow_fault_copy": f, "cow_ahead_copy": 2048 - f, "model_ahead_batches": f if w else 0,
             "kernel_instructions_per_written_page": ipp, "kernel_instructions_per_cow_page": ipp}
            for w, f, ipp in ((0, 2048, 6400.0), (16, 128, 4825.0))]
    out = predicted_times(rows, costs, trap_instructions=400)
    assert out["trap_us"] == 1.0 and out["work_us"] == 2.0
    w0, w16 = out["rows"]
    # window 0: 2048/2048 faults × 1.0 + (6400/6400) × 2.0 = 3.0, the COW fault itself
    assert w0["predicted_us_per_page"] == pytest.approx(3.0, abs=1e-3)
    # window 16: 128/2048 = 0.0625 faults × 1.0 + (4825/6400 = 0.75390625) × 2.0 = 0.0625 + 1.5078125 = 1.5703125
    assert w16["predicted_us_per_page"] == pytest.approx(1.5703125, abs=1e-3)
    # the trap's 400 instructions out first: (4825 − 0.0625 × 400) / (6400 − 1 × 400) = 4800 / 6000 = 0.8,
    # so 0.0625 × 1.0 + 0.8 × 2.0 = 1.6625; window 0 stays 1 × 1.0 + (6000 / 6000) × 2.0 = 3.0
    assert w16["predicted_us_per_page_trap_excluded"] == pytest.approx(1.6625, abs=1e-3)
    assert w0["predicted_us_per_page_trap_excluded"] == pytest.approx(3.0, abs=1e-3)
    # the cost model for contrast: (128 × 3.0 + 1920 × 2.0 + 128 × 0.5) / 2048 = 4288 / 2048 = 2.09375
    assert w16["model_us_per_page"] == pytest.approx(2.09375, abs=1e-3) and w0["model_us_per_page"] == 3.0
    assert w16["faults_per_page"] == 0.0625 and w16["instructions_ratio"] == pytest.approx(0.75390625, abs=1e-4)
    # against window 0, from the figures rounded to 3 places: 1.570 / 3.0 − 1 = −0.4767; 1.6625 (1.662 or
    # 1.663) / 3.0 − 1 = −0.4460 or −0.4457
    assert w16["vs_window_0"] == pytest.approx(-0.4767, abs=1e-4) and w0["vs_window_0"] == 0
    assert w16["trap_excluded_vs_window_0"] == pytest.approx(-0.4458, abs=3e-4)
    # whatever the calibration, window 0 costs one COW fault per page: trap_us + work_us = cow_fault_us
    shipped = CostModel()
    assert predicted_times(rows)["rows"][0]["predicted_us_per_page"] == pytest.approx(shipped.cow_fault_us, abs=1e-3)


def test_ftrace_parse_counts_nested_traced_calls():
    from cowahead.kernel.ftrace import child_of, parse
    trace = """\
 0)   cow_wor-87   |               |  handle_mm_fault() {
 0)   cow_wor-87   |   0.700 us    |    vma_alloc_folio();
 0)   cow_wor-87   | + 12.000 us   |  } /* handle_mm_fault */
 0)   cow_wor-90   |   1.000 us    |  handle_mm_fault();
"""
    out = parse(trace)
    assert child_of(out) == "cow_wor-90"
    assert out["cow_wor-87"]["handle_mm_fault"][:2] == [1, 12000.0]
    assert out["cow_wor-87"]["handle_mm_fault"][3] == 1  # one traced call inside it
    assert out["cow_wor-87"]["vma_alloc_folio"][3] == 0


def test_a_boot_that_ends_with_no_status_is_repeated_once_with_the_console(tmp_path, monkeypatch):
    """vng says 255 when QEMU ended without the command's status (a panic): the second boot keeps the
    kernel console on stderr (vng --verbose), so what killed the first one can be read; it is not repeated twice."""
    from cowahead.kernel import vm
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"")
    calls = []

    def fake_run(args, **kw):
        calls.append(args)
        console = "--verbose" in args
        return subprocess.CompletedProcess(args, 255, "", "Kernel panic - not syncing\n" if console else "")

    monkeypatch.setattr(vm.subprocess, "run", fake_run)
    monkeypatch.setattr(vm, "qemu_available", lambda: True)
    result = vm.run_in_guest(kernel, ["true"])
    assert [("--verbose" in a) for a in calls] == [False, True]
    assert result.returncode == 255 and "Kernel panic" in result.stderr

    calls.clear()
    monkeypatch.setattr(vm.subprocess, "run", lambda args, **kw: calls.append(args) or
                        subprocess.CompletedProcess(args, 3, "", ""))
    assert vm.run_in_guest(kernel, ["false"]).returncode == 3 and len(calls) == 1


def _group(name: str, lines: list[str]) -> str:
    body = "\n".join(f" 0)   cow_wor-90   | {line}" for line in lines)
    return (f"GROUP {name}\n{{\"child_ns\": 1}}\nOVERRUN overrun:0 commitoverrun:0\nTRACE\n"
            f" 0)   cow_wor-88   |   9.000 us    |  handle_mm_fault();\n{body}\nENDTRACE\n")


def test_ftrace_account_splits_the_untraced_total_into_steps():
    """Two pages broken (a fault and an ahead copy), 20,000 kernel instructions untraced: the steps come
    from the traced functions less the calibrated tracer overhead (10 per call, _raw_spin_unlock's least)."""
    from cowahead.kernel.ftrace import parse_setting
    report = ('{"child_ns": 30000, "rewrite_ns": 10000, "during": {"cow_fault_copy": 1, "cow_ahead_copy": 1, '
              '"cow_ahead_reuse": 0, "pgfault": 1, "cow_large_alloc": 0}}')
    chunk = ("UNTRACED\n" + report + "\nENDUNTRACED\n"
             + _group("root", ["  8.000 us    |  handle_mm_fault();"] * 2)
             + _group("copy", ["              |  handle_mm_fault() {", "  4.110 us    |    copy_mc_to_kernel();",
                               "  4.110 us    |    copy_mc_to_kernel();", "+ 20.000 us   |  } /* handle_mm_fault */"])
             + _group("alloc", ["  0.510 us    |  vma_alloc_folio_noprof();"] * 2)
             + _group("small", ["  0.010 us    |  _raw_spin_unlock();", "  0.030 us    |  _raw_spin_unlock();"]))
    s = parse_setting(chunk, {"pattern": "p", "policy": "fixed", "window": 16})
    assert s["pattern"] == "p" and s["window"] == 16
    assert s["cow_broken_pages"] == 2 and s["tracer_inner_overhead_per_call"] == 10
    assert s["kernel_instructions_per_page_untraced"] == 10000
    a = s["account"]
    # handle_mm_fault: (16,000 − 2 × 10) / 2 = 7,990; the copy (8,220 − 20) / 2 = 4,100; alloc (1,020 − 20) / 2
    assert (a["trap"], a["copy"], a["alloc"], a["charge"], a["flush"]) == (2010, 4100, 500, 0, 0)
    assert a["rest"] == 7990 - 4100 - 500 and a["overhead"] == 10000 - 4100
    assert "handle_mm_fault" not in {f for f, v in s["per_page"].items() if v["group"] == "copy"}
    # with the copy loop's own count (4,120 per 4 KiB) the overhead is the total less one copy per page
    # (both broken pages were copies); ftrace's figure stays beside it
    s = parse_setting(chunk, {"pattern": "p"}, copy_loop=4120.0)
    assert s["account"]["overhead"] == 10000 - 4120 and s["account"]["overhead_ftrace_copy"] == 10000 - 4100


def test_ftrace_guest_script_names_settings_by_index_and_restores_the_knobs():
    """The shell strips double quotes from an echoed JSON line: a setting is named by its index only."""
    from cowahead.kernel.ftrace import guest_script, thp_knobs
    setting = {"index": 3, "pattern": "ld-mthp-sequential", "policy": "fixed", "window": 16,
               "thp": thp_knobs("mthp-64k"), "large_destinations": 1}
    lines = guest_script([(setting, "/bin/w")], {"copy": ["copy_mc_to_kernel"]}).splitlines()
    assert "echo SETTING 3" in lines
    assert "echo never > /sys/kernel/mm/transparent_hugepage/hugepages-16kB/enabled" in lines
    at = lines.index("echo 1 > /proc/sys/vm/cow_ahead_large_destinations")
    assert at < lines.index("echo UNTRACED") and lines[-1] == "echo 0 > /proc/sys/vm/cow_ahead_large_destinations"
    assert lines.count("/bin/w") == 3  # untraced, root, copy
