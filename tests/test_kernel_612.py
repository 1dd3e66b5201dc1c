"""The 6.12 port (issue 19): the patch, the build's config, the dmesg check, the reproducers, the selftest table.

Tests that boot the patched 6.12 kernel skip, saying why, when it has not been
built (``cowahead kernel build``, default ~/.cache/cowahead/kernel-6.12).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from conftest import requires
from cowahead.kernel import kbuild
from cowahead.kernel.guestprogs import compile_programs
from cowahead.kernel.repro import outcome
from cowahead.kernel import inguest, selftests
from cowahead.kernel.selftests import parse_tap, settings_for, table
from cowahead.kernel.validate import compare, kernel_counters
from cowahead.kernel.vm import DMESG_MARK, GuestResult, guest_script, run_in_guest
from cowahead.trace.generators import generate

SOURCE = kbuild.SOURCES["6.12"]


def patch_text() -> str:
    return SOURCE.patch.read_text()


def test_the_612_patch_adds_no_page_flag_and_touches_only_mm():
    """Issue 19: no PG_cow_ahead, no zap hunk; and no header outside mm/, so stock ↔ patched rebuilds mm/ only."""
    text = patch_text()
    files = kbuild.patched_files(text)
    assert "mm/memory.c" in files
    assert all(f.startswith("mm/") for f in files), files
    added = [line for line in text.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert not any("PG_cow_ahead" in line or "PageCowAhead" in line for line in added)
    assert not any("zap_pte_range" in line for line in added)


def test_the_612_patch_states_the_reviewer_rules():
    """Each rule issue 19 lists is in the code (a call or flag a reviewer would look for); a page of a large
    folio is taken by its own page, not its folio's head (its rmap dropped for that page)."""
    added = "\n".join(line[1:] for line in patch_text().splitlines() if line.startswith("+"))
    for needle in ("pte_offset_map_lock", "__GFP_NORETRY | __GFP_NOWARN", "cond_resched()",
                   "fatal_signal_pending(current)", "pte_uffd_wp(pte)", "folio_test_ksm(folio)",
                   "is_zero_pfn(pte_pfn(pte))", "pte_protnone(pte)", "folio_remove_rmap_pte(page_folio(p->old), p->old, vma)",
                   "vma_soft_dirty_enabled(vma)", "mmu_notifier_invalidate_range_start",
                   "userfaultfd_wp(vma)", "char name[16] = \"\"",
                   # a window never takes a memory cgroup's last window of headroom below memory.max
                   "if (!cow_ahead_room(w, n))", "if (cow_ahead_room(w, nr))",
                   "page_counter_read(&c->memory) + nr + reserve > READ_ONCE(c->memory.max)"):
        assert needle in added, needle
    assert "pmd_trans_unstable" not in added  # the 6.1 check that is constant 0 without THP


def test_the_612_patch_has_large_destinations_off_by_default():
    """Issue 23: a sysctl, off unless set; a block's folio of an order alloc_anon_folio would take, allocated
    and charged as optional memory, one rmap and LRU addition, its PTEs set together, every old page's
    mapping dropped after the ranged flush; counted in /proc/cow_ahead_stat."""
    added = "\n".join(line[1:] for line in patch_text().splitlines() if line.startswith("+"))
    for needle in ('"cow_ahead_large_destinations"', "static int sysctl_cow_ahead_large_destinations __read_mostly;",
                   "TVA_IN_PF | TVA_ENFORCE_SYSFS", "userfaultfd_armed(vma)",
                   "vma_alloc_folio(GFP_HIGHUSER_MOVABLE | gfp, order, vma, base, true)",
                   "mem_cgroup_charge(folio, mm, GFP_KERNEL | gfp)",
                   "folio_add_new_anon_rmap(folio, vma, base, RMAP_EXCLUSIVE)", "folio_add_lru_vma(folio, vma)",
                   "set_ptes(mm, addr,", "flush_tlb_range(vma, start, end)",
                   "folio_remove_rmap_ptes(old, runs[i].page, runs[i].nr, vma)",
                   '"cow_large_alloc"', '"cow_large_pages"', '"cow_large_fallback"'):
        assert needle in added, needle


@requires(str(SOURCE.tarball), "linux-source-6.12")
def test_612_patch_applies_without_fuzz(tmp_path):
    files = kbuild.patched_files(patch_text())
    subprocess.run(["tar", "xf", SOURCE.tarball, "-C", tmp_path] + [f"{SOURCE.tree_name}/{f}" for f in files],
                   check=True)
    ok, output = kbuild.patch_applies(tmp_path / SOURCE.tree_name, SOURCE.patch)
    assert ok, output
    assert "fuzz" not in output.lower() and "offset" not in output.lower()


def test_missing_config_names_what_olddefconfig_dropped():
    config = "CONFIG_KSM=y\n# CONFIG_MEMCG is not set\nCONFIG_DEBUG_VM=m\nCONFIG_PROVE_LOCKING=y\n"
    assert kbuild.missing_config(config, ("KSM", "MEMCG", "DEBUG_VM", "PROVE_LOCKING")) == ["MEMCG", "DEBUG_VM"]


def test_distro_debug_config_enables_what_it_requires():
    enabled = {SOURCE.config[i + 1] for i, flag in enumerate(SOURCE.config) if flag == "--enable"}
    assert set(SOURCE.required) <= enabled
    assert {"TRANSPARENT_HUGEPAGE", "KSM", "USERFAULTFD", "MEMCG", "MEM_SOFT_DIRTY", "NUMA_BALANCING",
            "DEBUG_VM", "PAGE_TABLE_CHECK", "PROVE_LOCKING"} <= set(SOURCE.required)


def test_guest_script_checks_dmesg_and_keeps_the_status():
    script = guest_script(["sh", "-c", "exit 3"], 16, "fixed")
    assert script.index("echo 16 >") < script.index("sh -c 'exit 3'") < script.index("dmesg")
    assert script.endswith("exit $rc")
    result = GuestResult([], 0, "", f"noise\n{DMESG_MARK}BUG: Bad page map in process x\n", 1.0)
    assert result.dmesg_problems == ["BUG: Bad page map in process x"]


def test_a_run_with_a_dmesg_problem_does_not_match():
    trace = generate("sequential", pages=64)
    output = {"during": {"cow_fault_copy": 64, "cow_ahead_copy": 0, "cow_ahead_reuse": 0},
              "unmap": {"cow_ahead_unused": -1}}
    assert kernel_counters(output) == {"cow_fault_copy": 64, "cow_ahead_copy": 0, "cow_ahead_reuse": 0}
    row = {"kind": "workload", "pattern": "sequential", "policy": "fixed", "window": 0, "output": output,
           "child_ns": 0}
    row["output"]["child_ns"] = 0
    clean = compare([dict(row, dmesg=[])], {"sequential": trace})[0]
    dirty = compare([dict(row, dmesg=["WARNING: CPU: 0 PID: 1 at mm/memory.c"])], {"sequential": trace})[0]
    assert clean["match"] and clean["not_measured"] == ["cow_ahead_unused"]
    assert not dirty["match"]


def test_parse_tap_and_the_table_against_stock():
    tap = "TAP version 13\n1..3\nok 1 first\nnot ok 2 second\nok 3 # SKIP third (no THP)\n# Totals: pass:1\n"
    assert parse_tap(tap) == {"001 first": "pass", "002 second": "fail", "003 third (no THP)": "skip"}
    stock = {"runs": [{"test": "cow", "cases": parse_tap(tap), "returncode": 1}]}
    same = {"test": "cow", "policy": "fixed", "window": 16, "cases": parse_tap(tap), "returncode": 1, "dmesg": []}
    worse = dict(same, window=512, cases={**parse_tap(tap), "001 first": "fail"})
    rows = table(stock, {"runs": [same, worse]})
    assert rows[0]["equal_to_stock"] and rows[0]["pass"] == 1 and rows[0]["skip"] == 1
    assert not rows[1]["equal_to_stock"] and rows[1]["differs_from_stock"] == ["001 first: stock pass, patched fail"]


def test_measured_figures_in_a_case_name_do_not_make_it_differ():
    stock = {"runs": [{"test": "pagemap_ioctl", "returncode": 0,
                       "cases": parse_tap("ok 100 transact_test Extra pages 392 (0.8%)\nok 101 4MB x\n")}]}
    patched = {"test": "pagemap_ioctl", "policy": "fixed", "window": 16, "returncode": 0, "dmesg": [],
               "cases": parse_tap("ok 100 transact_test Extra pages 338 (0.7%)\nnot ok 101 4MB x\n")}
    (row,) = table(stock, {"runs": [patched]})
    assert row["differs_from_stock"] == ["101 NMB x: stock pass, patched fail"]


def test_parse_uffd_unit_tests_lines():
    out = ("Testing wp-fork on anon... done\nTesting sigbus on hugetlb... skipped [reason: memory allocation failed]\n"
           "Testing events on shmem... failed [reason: x]\nUserfaults unit tests: pass=1, skip=1, fail=1 (total=3)\n")
    assert parse_tap(out) == {"uffd wp-fork on anon": "pass", "uffd sigbus on hugetlb": "skip",
                              "uffd events on shmem": "fail"}


def test_selftest_settings_run_window_0_once():
    assert settings_for(False) == [(None, None)]
    got = settings_for(True, policies=("fixed", "around", "adaptive"))
    assert got[0] == ("fixed", 0) and len(got) == 7 and ("adaptive", 512) in got
    # by default every candidate, folio included (the guest runs only those the kernel takes)
    assert {("folio", 16), ("folio", 512), ("around", 16)} <= set(settings_for(True))
    assert [w for _, w in settings_for(True)].count(0) == 1


def test_a_reproducer_passes_only_when_ok_exit_0_and_dmesg_clean():
    row = {"case": "oom", "finding": 4, "policy": "fixed", "window": 512, "returncode": 0,
           "output": {"ok": True}, "dmesg": []}
    assert outcome(row)["passed"]
    assert not outcome(dict(row, dmesg=["BUG: kernel NULL pointer dereference"]))["passed"]
    assert not outcome(dict(row, returncode=1))["passed"]
    assert not outcome(dict(row, output={"ok": False}))["passed"]


@requires("gcc", "build-essential")
@pytest.mark.parametrize("case", ["missing_table", "thp_tail", "zero_page", "adaptive_munmap", "adaptive_mremap"])
def test_reproducers_pass_on_the_host_kernel(tmp_path, case):
    """Without COW-ahead every case must pass (the host's kernel has none); harmless ones only (no KSM, cgroups)."""
    binary = compile_programs(tmp_path)["issue19"]
    done = subprocess.run([binary, case], capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["case"] == case
    assert done.returncode == 0 and report["ok"] is True, done.stdout + done.stderr


def _patched_612():
    return kbuild.built_kernel(None, SOURCE) if (SOURCE.build_dir / kbuild.PATCHED_IMAGE).exists() else None


@pytest.mark.skipif(_patched_612() is None,
                    reason=f"no patched 6.12 kernel in {SOURCE.build_dir} (cowahead kernel build; "
                           "COWAHEAD_KBUILD_612 chooses the directory)")
@requires("qemu-system-x86_64", "qemu-system-x86")
def test_patched_612_has_controls_counters_and_a_clean_log():
    script = "cat /proc/sys/vm/cow_ahead_pages /proc/sys/vm/cow_ahead_policy /proc/cow_ahead_stat"
    result = run_in_guest(_patched_612(), ["sh", "-c", script], cow_ahead=16, policy="adaptive", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    words = result.stdout.split()
    assert words[:2] == ["16", "adaptive"]
    assert {"cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse", "cow_ahead_alloc_fail"} <= set(words)
    assert result.dmesg_problems == []


def test_built_kernel_prefers_the_patched_copy_and_stock_is_apart(tmp_path):
    source = kbuild.SOURCES["6.12"]
    assert kbuild.built_kernel(tmp_path, source) is None and kbuild.stock_built(tmp_path, source) is None
    tree_image = tmp_path / source.tree_name / "arch/x86/boot/bzImage"
    tree_image.parent.mkdir(parents=True)
    tree_image.write_bytes(b"tree")
    assert kbuild.built_kernel(tmp_path, source) == tree_image
    (tmp_path / "bzImage-cow-ahead").write_bytes(b"patched")
    (tmp_path / "bzImage-stock").write_bytes(b"stock")
    assert kbuild.built_kernel(tmp_path, source).read_bytes() == b"patched"
    assert kbuild.stock_built(tmp_path, source).read_bytes() == b"stock"


def test_a_tree_from_another_tarball_is_unpacked_afresh(tmp_path):
    """Debian replaced linux-source-6.12 6.12.117 by 6.12.118 in place; a build directory unpacked from
    the old tarball must not be built as if it were the new one."""
    def tarball(sublevel: int) -> Path:
        src = tmp_path / f"src{sublevel}" / "tree"
        src.mkdir(parents=True)
        (src / "Makefile").write_text(f"SUBLEVEL = {sublevel}\n")
        out = tmp_path / f"tree-{sublevel}.tar"
        subprocess.run(["tar", "cf", out, "-C", src.parent, "tree"], check=True)
        return out
    build = tmp_path / "build"
    old = dataclasses.replace(kbuild.SOURCES["6.12"], tarball=tarball(117), tree_name="tree", build_dir=build)
    tree = kbuild.extract(build, old)
    (tree / "object.o").write_text("built")
    (build / kbuild.CONFIGURED_MARK).write_text("configured")
    assert kbuild.extract(build, old) == tree and (tree / "object.o").exists()  # same tarball: kept
    new = dataclasses.replace(old, tarball=tarball(118))
    assert kbuild.extract(build, new) == tree
    assert (tree / "Makefile").read_text() == "SUBLEVEL = 118\n"
    assert not (tree / "object.o").exists() and not (build / kbuild.CONFIGURED_MARK).exists()


def test_build_applies_the_sources_own_patch_by_default(tmp_path, monkeypatch):
    """fast.ensure_kernel and check call build(build_dir, source=6.12) without a patch: a fresh machine's
    CI build took the 6.1 patch (the old default) and left the 6.12 tree half patched."""
    seen = {}
    monkeypatch.setattr(kbuild, "_build_locked", lambda build_dir, patch, *rest: seen.setdefault("patch", patch))
    kbuild.build(tmp_path, source=kbuild.SOURCES["6.12"])
    assert seen["patch"] == kbuild.SOURCES["6.12"].patch


def test_a_patch_that_does_not_apply_leaves_the_tree_untouched(tmp_path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "memory.c").write_text("one\ntwo\nthree\n")
    (tree / "mm" / "mmap.c").write_text("alpha\n")
    bad = tmp_path / "bad.patch"
    bad.write_text("--- a/mm/mmap.c\n+++ b/mm/mmap.c\n@@ -1 +1 @@\n-alpha\n+beta\n"
                   "--- a/mm/memory.c\n+++ b/mm/memory.c\n@@ -1,3 +1,3 @@\n one\n-TWO\n+2\n three\n")
    with pytest.raises(kbuild.CowaheadError, match="does not apply"):
        kbuild.apply_patch(tree, bad)
    assert (tree / "mm" / "mmap.c").read_text() == "alpha\n"  # the hunk that would apply was not applied
    assert not list(tree.rglob("*.rej")) and not (tmp_path / "applied.patch").exists()


def test_the_612_source_is_the_pinned_release():
    """Issue 19 names 6.12.117, and every committed 6.12 result was built from it."""
    top = subprocess.run(["tar", "xOf", SOURCE.tarball, f"{SOURCE.tree_name}/Makefile"], capture_output=True,
                         text=True, check=True).stdout
    assert "SUBLEVEL = 117\n" in top


def test_the_thp_off_variant_turns_thp_off_last_and_keeps_the_debug_options():
    """scripts/config applies its arguments in order: THP must be disabled after the distro config enabled it."""
    nothp = kbuild.source_of("6.12", thp_off=True)
    flags = list(nothp.config)
    last = max(i for i, flag in enumerate(flags) if flags[i + 1:i + 2] == ["TRANSPARENT_HUGEPAGE"])
    assert flags[last] == "--disable"
    assert nothp.absent == ("TRANSPARENT_HUGEPAGE",) and "TRANSPARENT_HUGEPAGE" not in nothp.required
    assert {"DEBUG_VM", "PAGE_TABLE_CHECK", "PROVE_LOCKING", "KSM", "MEM_SOFT_DIRTY"} <= set(nothp.required)
    assert nothp.build_dir != SOURCE.build_dir and nothp.name == "6.12-nothp" and SOURCE.name == "6.12"
    with pytest.raises(Exception, match="6.12 only"):
        kbuild.source_of("6.1", thp_off=True)


def test_the_no_debug_variant_turns_each_debug_option_off_after_the_distro_config():
    """Issue 23's cost runs: the distro config with every debug option disabled after it was enabled, THP and
    the interfaces kept; its own build directory and results name."""
    nodebug = kbuild.source_of("6.12", no_debug=True)
    flags = list(nodebug.config)
    for option in ("DEBUG_VM", "PAGE_TABLE_CHECK", "PROVE_LOCKING", "DEBUG_ATOMIC_SLEEP"):
        last = max(i for i in range(len(flags) - 1) if flags[i + 1] == option)
        assert flags[last] == "--disable", option
    assert {"DEBUG_VM", "PAGE_TABLE_CHECK", "PROVE_LOCKING"} <= set(nodebug.absent)
    assert {"TRANSPARENT_HUGEPAGE", "KSM", "MEMCG", "USERFAULTFD"} <= set(nodebug.required)
    assert not {"DEBUG_VM", "PROVE_LOCKING"} & set(nodebug.required)
    assert nodebug.build_dir not in (SOURCE.build_dir, kbuild.source_of("6.12", thp_off=True).build_dir)
    assert nodebug.name == "6.12-nodebug"
    with pytest.raises(Exception, match="choose one"):
        kbuild.source_of("6.12", thp_off=True, no_debug=True)


def test_unwanted_config_names_an_option_still_on():
    config = "CONFIG_TRANSPARENT_HUGEPAGE=y\n# CONFIG_KSM is not set\nCONFIG_FOO=m\n"
    assert kbuild.unwanted_config(config, ("TRANSPARENT_HUGEPAGE", "KSM", "FOO")) == ["TRANSPARENT_HUGEPAGE", "FOO"]
    assert kbuild.unwanted_config("# CONFIG_TRANSPARENT_HUGEPAGE is not set\n", ("TRANSPARENT_HUGEPAGE",)) == []


def test_a_second_build_in_the_same_directory_is_refused(tmp_path):
    import fcntl
    with open(tmp_path / "build.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(Exception, match="another cowahead build"):
            kbuild.build(tmp_path, source=SOURCE)


def test_a_reproducer_skip_needs_its_status_its_reason_and_a_clean_log():
    row = {"case": "thp_tail", "finding": 2, "policy": "fixed", "window": 16, "returncode": 4,
           "output": {"case": "thp_tail", "skipped": True, "reason": "no THP"}, "dmesg": []}
    got = outcome(row)
    assert got["status"] == "skip" and not got["passed"] and got["skip_reason"] == "no THP"
    assert outcome(dict(row, dmesg=["BUG: Bad page map"]))["status"] == "fail"
    assert outcome(dict(row, returncode=0))["status"] == "fail"  # "skipped" with exit 0 is no skip
    assert outcome(dict(row, output={"skipped": True}))["status"] == "fail"  # a skip must say why


@requires("gcc", "build-essential")
def test_thp_tail_skips_saying_why_without_thp_and_runs_with_it(tmp_path):
    """On the host (THP in madvise mode or always) the case runs; a THP-off kernel is imitated by the path check."""
    import os
    binary = compile_programs(tmp_path)["issue19"]
    done = subprocess.run([binary, "thp_tail"], capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if os.path.exists("/sys/kernel/mm/transparent_hugepage"):
        assert done.returncode == 0 and report["ok"] is True and report["thp_kb_before_fork"] == 2048, done.stdout
    else:
        assert done.returncode == 4 and report["skipped"] is True and "no THP" in report["reason"]


def test_khugepaged_is_invoked_with_a_test_type_its_usage_accepts():
    """khugepaged.c's parse_test_type: no argument, or <context>:<mem_type>; a bare "anon" is usage() and exit 1."""
    import re
    (run,) = selftests.make_runs({"khugepaged": "/x/khugepaged"}, False, ["khugepaged"])
    args = run["argv"][1:]
    assert args == [] or re.fullmatch(r"(all|khugepaged|madvise):(all|anon|file|shmem)", args[-1]), args


def test_parse_khugepaged_checks_by_colour_and_test():
    out = ("\nRun test: collapse_full (khugepaged:anon)\nCollapse fully populated PTE table.... \x1b[32mOK\x1b[0m\n"
           "\nRun test: collapse_max_ptes_shared (madvise:anon)\nAllocate huge page... \x1b[32mOK\x1b[0m\n"
           "Share huge page over fork()... \x1b[31mFail\x1b[0m\n"
           "\nRun test: collapse_swapin_single_pte (khugepaged:anon)\nSwapout one page... \x1b[33mSkip\x1b[0m\n"
           "Restore THP and khugepaged settings...\x1b[32mOK\x1b[0m\n")
    got = selftests.parse_output("khugepaged", out)
    assert list(got.values()) == ["pass", "pass", "fail", "skip", "pass"]
    assert "002 collapse_max_ptes_shared (madvise:anon) Allocate huge page: OK" in got
    assert got["003 collapse_max_ptes_shared (madvise:anon) Share huge page over fork(): Fail"] == "fail"


def _run(test="split_huge_page_test", cases="ok 1 a\nok 2 b\nok 3 c\n", **kw):
    row = {"test": test, "policy": "fixed", "window": 16, "cases": parse_tap(cases), "returncode": None,
           "dmesg": [], **kw}
    row["outcome"] = selftests.outcome_of(row)
    return row


def test_a_time_out_on_stock_is_compared_as_a_time_out():
    stock = {"runs": [_run(cases="ok 1 a\nok 2 b\nok 3 c\n", error="timed out")]}
    slower = _run(cases="ok 1 a\nok 2 b\n", error="timed out")  # got less far: speed, not behaviour
    finished = _run(cases="ok 1 a\nok 2 b\nok 3 c\nok 4 d\n", returncode=0)
    broke = _run(cases="ok 1 a\nnot ok 2 b\n", error="timed out")
    rows = table(stock, {"runs": [slower, finished, broke]})
    assert [r["verdict"] for r in rows] == ["= stock", "differs", "differs"]
    assert rows[0]["outcome"] == rows[0]["stock_outcome"] == "timeout"
    assert rows[1]["differs_from_stock"][0] == "outcome: stock timeout, patched exit 0"
    assert rows[2]["differs_from_stock"] == ["002 b: stock pass, patched fail"]


def test_a_different_exit_status_differs_and_a_policy_not_in_the_kernel_is_no_verdict():
    stock = {"runs": [_run(test="mremap_test", returncode=1)]}
    rows = table(stock, {"runs": [_run(test="mremap_test", returncode=0),
                                  _run(test="mremap_test", policy="folio", error=selftests.NOT_IN_KERNEL)]})
    assert rows[0]["verdict"] == "differs" and rows[1]["verdict"] == "not in kernel"
    summary = selftests.summary(rows)
    assert summary["compared"] == 1 and summary["equal_to_stock"] == 0 and summary["not_in_kernel"] == ["folio"]


def test_the_guest_finds_which_policies_the_sysctl_takes(monkeypatch):
    class Sysctl:  # as the patch's handler: an unknown name is EINVAL and the old one stays
        value = "fixed"

        def exists(self):
            return True

        def write_text(self, text):
            if text not in ("fixed", "around", "adaptive"):
                raise OSError(22, "Invalid argument")
            Sysctl.value = text

        def read_text(self):
            return Sysctl.value + "\n"

    monkeypatch.setattr(inguest, "SYSCTL_POLICY", Sysctl())
    assert inguest.accepted_policies(["fixed", "folio", "adaptive"]) == ["fixed", "adaptive"]
    skipped = inguest.run_one({"policy": "folio", "window": 16, "argv": ["false"]}, ["fixed", "adaptive"])
    assert skipped["error"] == selftests.NOT_IN_KERNEL and "returncode" not in skipped


def test_selftest_cells_are_cached_per_image_and_a_rerun_boots_only_what_is_missing(tmp_path, monkeypatch):
    boots = []

    def fake_run_plan(kernel, plan, work, cpus, timeout, probe_policies):
        boots.append([(r["test"], r["policy"], r["window"]) for r in plan.runs])
        rows = [{**r, "returncode": 0, "stdout": "ok 1 x\n", "seconds": 1.0, "dmesg": []} for r in plan.runs]
        return rows, GuestResult([], 0, "", "", 1.0)

    monkeypatch.setattr(selftests, "run_plan", fake_run_plan)
    monkeypatch.setattr(selftests, "guest_summary", lambda rows, result: {})
    image = tmp_path / "bzImage"
    image.write_bytes(b"one")
    bins = {"mkdirty": tmp_path / "mkdirty", "cow": tmp_path / "cow"}
    settings = {"policies": ("fixed", "around"), "windows": (0, 16)}
    first = selftests.run_selftests(image, bins, True, ["mkdirty", "cow"], cache=tmp_path / "c", **settings)
    assert len(boots) == 2 and sorted(len(b) for b in boots) == [3, 3]
    assert [r["outcome"] for r in first["runs"]] == ["exit 0"] * 6
    again = selftests.run_selftests(image, bins, True, ["mkdirty", "cow"], cache=tmp_path / "c", **settings)
    assert len(boots) == 2 and again["runs"] == first["runs"]
    wider = selftests.run_selftests(image, bins, True, ["mkdirty"], cache=tmp_path / "c",
                                    policies=("fixed", "around"), windows=(0, 16, 512))
    assert boots[-1] == [("mkdirty", "fixed", 512), ("mkdirty", "around", 512)] and len(wider["runs"]) == 5
    image.write_bytes(b"rebuilt")
    selftests.run_selftests(image, bins, True, ["mkdirty"], cache=tmp_path / "c", **settings)
    assert len(boots[-1]) == 3
    offline = selftests.run_selftests(image, bins, True, ["cow"], cache=tmp_path / "c", boot=False, **settings)
    assert [r["outcome"] for r in offline["runs"]] == ["error: not run"] * 3 and len(boots) == 4


def test_ci_reuses_an_image_of_this_patch_and_builds_otherwise(tmp_path, monkeypatch):
    import os
    from cowahead.kernel import fast
    built = []

    class Result:
        bzimage, seconds, log, warnings = tmp_path / "new", 12.0, tmp_path / "log", []

    monkeypatch.setattr(fast, "build", lambda build_dir, source: built.append(build_dir) or Result())
    (tmp_path / "applied.patch").write_bytes(SOURCE.patch.read_bytes())
    image = tmp_path / kbuild.PATCHED_IMAGE
    image.write_bytes(b"image")
    got = fast.ensure_kernel(SOURCE, tmp_path, log=lambda m: None)
    assert got["image"] == image and not got["built"] and built == []
    os.utime(image, (1, 1))  # older than the patch applied: built from something else
    assert fast.ensure_kernel(SOURCE, tmp_path, log=lambda m: None)["built"] and built == [tmp_path]
    image.touch()
    (tmp_path / "applied.patch").write_bytes(b"another patch")
    got = fast.ensure_kernel(SOURCE, tmp_path, log=lambda m: None)
    assert got["built"] and got["build_seconds"] == 12.0 and len(built) == 2


def test_the_fast_plan_has_what_issue_19_lists(tmp_path):
    from cowahead.kernel import fast
    from cowahead.kernel.repro import CASES
    plan = fast.fast_plan(tmp_path, tmp_path / "cow")
    work = [r for r in plan.runs if r["kind"] == "workload"]
    assert {r["window"] for r in work} == {0, 16} and {r["policy"] for r in work if r["window"]} == \
        {"fixed", "around", "adaptive", "folio"}  # every policy of the 6.12 patch
    assert [(r["test"], r["policy"], r["window"]) for r in plan.runs if r["kind"] == "selftest"] == \
        [("cow", "fixed", 0), ("cow", "fixed", 16)]
    assert {r["finding"] for r in plan.runs if r["kind"] == "repro"} == {1, 2, 3, 4, 5, 6}
    assert len([r for r in plan.runs if r["kind"] == "repro"]) == sum(len(s) for _, s in CASES.values())


def test_kernel_check_runs_the_reproducers_and_the_selftests_and_says_why_not(tmp_path, monkeypatch):
    from cowahead.kernel import check as check_mod
    clean = {"dmesg_clean": True, "dmesg": []}
    monkeypatch.setattr(check_mod, "run_in_guest", lambda *a, **k: GuestResult([], 0, "16\nfixed\n", "", 1.0))
    monkeypatch.setattr(check_mod, "validate", lambda kernel: {"validation": [], "security": [], "guest": clean})
    monkeypatch.setattr(check_mod, "integrity", lambda kernel: {"integrity": [], "guest": clean})
    monkeypatch.setattr(check_mod.repro, "reproduce", lambda kernel: {
        "runs": [], "summary": {"runs": 25, "passed": 25, "skipped": 0, "failed": 0, "planned": 25},
        "guest": {"dmesg_clean": False, "dmesg": ["BUG: x"]}})
    calls = []

    def fake_selftests(image, binaries, patched, **kw):
        calls.append((image.name, patched))
        return {"runs": [_run(test="cow", returncode=0)]}

    monkeypatch.setattr(check_mod.selftests, "build_selftests", lambda tree, out: {"cow": out / "cow"})
    monkeypatch.setattr(check_mod.selftests, "run_selftests", fake_selftests)
    (tmp_path / kbuild.PATCHED_IMAGE).write_bytes(b"p")
    doc = json.loads(check_mod.check(tmp_path, skip_build=True, out_dir=tmp_path / "out", log=lambda m: None,
                                     source=SOURCE, skip_measure=True).read_text())
    assert doc["summary"]["reproducer_runs"]["passed"] == 25
    assert "no stock image" in doc["selftests"]["skipped"] and calls == []
    assert doc["summary"]["dmesg_clean"] is False  # the reproducers' boot logged a BUG
    (tmp_path / kbuild.STOCK_IMAGE).write_bytes(b"s")
    doc = json.loads(check_mod.check(tmp_path, skip_build=True, out_dir=tmp_path / "out", log=lambda m: None,
                                     source=SOURCE, skip_measure=True).read_text())
    assert calls == [(kbuild.STOCK_IMAGE, False), (kbuild.PATCHED_IMAGE, True)]
    assert doc["selftests"]["summary"]["equal_to_stock"] == 1 and doc["selftests"]["table"][0]["verdict"] == "= stock"


def _fake_guest(monkeypatch, stdout=lambda run: "ok 1 x\n"):
    """run_plan without a guest: every run exits 0 printing ``stdout(run)``; returns the plans it was given."""
    plans = []

    def fake_run_plan(kernel, plan, work, cpus, timeout, probe_policies):
        plans.append(plan.runs)
        rows = [{**r, "returncode": 0, "stdout": stdout(r), "seconds": 1.0, "dmesg": []} for r in plan.runs]
        return rows, GuestResult([], 0, "", "", 1.0)

    monkeypatch.setattr(selftests, "run_plan", fake_run_plan)
    monkeypatch.setattr(selftests, "guest_summary", lambda rows, result: {})
    return plans


def test_stock_repeats_are_cells_of_their_own_and_run_1_keeps_its_name(tmp_path, monkeypatch):
    plans = _fake_guest(monkeypatch)
    image = tmp_path / "bzImage-stock"
    image.write_bytes(b"stock")
    bins = {"mremap_test": tmp_path / "mremap_test"}
    cache = tmp_path / "c"
    got = selftests.run_selftests(image, bins, False, ["mremap_test"], cache=cache, repeats=2)
    assert [(r["test"], r["repeat"]) for r in plans[0]] == [("mremap_test", 1), ("mremap_test", 2)]  # one boot
    assert [r["repeat"] for r in got["runs"]] == [1, 2]
    key = selftests.image_key(image)
    assert sorted(p.name for p in (cache / key).iterdir()) == ["mremap_test@None:None#2.json",
                                                               "mremap_test@None:None.json"]
    selftests.run_selftests(image, bins, False, ["mremap_test"], cache=cache, repeats=3)
    assert len(plans) == 2 and [r["repeat"] for r in plans[1]] == [3]  # only the missing repeat boots


MREMAP_015 = "5MB mremap - Source 1MB-aligned, Dest 1MB-aligned with 40MB Preamble"


def _mremap(statuses: dict[str, str], **kw) -> dict:
    """A mremap_test run whose TAP gives case N the status statuses[N] (cases 001, 002 and 015)."""
    tap = "".join(f"{'not ok' if status == 'fail' else 'ok'} {n} {name}\n"
                  for n, name in ((1, "a"), (2, "b"), (15, MREMAP_015)) for status in [statuses[f"{n:03d}"]])
    return _run(test="mremap_test", cases=tap, returncode=1, **kw)


def test_a_case_flaky_in_stock_is_no_difference_but_one_failing_in_every_stock_run_is():
    stock = {"runs": [_mremap({"001": "pass", "002": "fail", "015": "fail"}, policy=None, window=None, repeat=1),
                      _mremap({"001": "pass", "002": "fail", "015": "pass"}, policy=None, window=None, repeat=2)]}
    passes_015 = _mremap({"001": "pass", "002": "fail", "015": "pass"})
    fails_015 = _mremap({"001": "pass", "002": "fail", "015": "fail"}, window=512)
    passes_002 = _mremap({"001": "pass", "002": "pass", "015": "pass"}, policy="around")  # fails in every stock run
    fails_001 = _mremap({"001": "fail", "002": "fail", "015": "pass"}, policy="adaptive")  # passes in every one
    rows = table(stock, {"runs": [passes_015, fails_015, passes_002, fails_001]})
    flaky = "015 NMB mremap - Source NMB-aligned, Dest NMB-aligned with NMB Preamble"
    assert [r["verdict"] for r in rows] == ["= stock", "= stock", "differs", "differs"]
    assert all(r["flaky_in_stock"] == [flaky] and r["stock_runs"] == 2 for r in rows)
    assert rows[2]["differs_from_stock"] == ["002 b: stock fail, patched pass"]
    assert rows[3]["differs_from_stock"] == ["001 a: stock pass, patched fail"]
    md = selftests.markdown(stock, rows)
    assert "| mremap_test | 1/2/0, 2/1/0 (exit 1) | = stock (flaky: 015) | = stock (flaky: 015) | DIFFERS" in md


def test_a_flaky_stock_outcome_lets_either_outcome_equal_stock():
    stock = {"runs": [_run(returncode=0, repeat=1), _run(error="timed out", repeat=2)]}
    rows = table(stock, {"runs": [_run(returncode=0), _run(error="timed out"), _run(returncode=1)]})
    assert [r["verdict"] for r in rows] == ["= stock", "= stock", "differs"]
    assert rows[0]["flaky_in_stock"] == ["outcome"] and rows[0]["stock_outcome"] == "exit 0 or timeout"
    assert rows[2]["differs_from_stock"] == ["outcome: stock exit 0 or timeout, patched exit 1"]


def test_one_stock_run_gives_the_table_from_before_repeats():
    """The rows and the markdown as they were before --stock-runs, written out by hand."""
    stock = {"runs": [_mremap({"001": "pass", "002": "fail", "015": "fail"}, policy=None, window=None)]}
    patched = _mremap({"001": "pass", "002": "fail", "015": "pass"}, seconds=3.5)
    same = _mremap({"001": "pass", "002": "fail", "015": "fail"}, window=512)
    rows = table(stock, {"runs": [patched, same]})
    common = {"test": "mremap_test", "policy": "fixed", "outcome": "exit 1", "stock_outcome": "exit 1",
              "returncode": 1, "stock_returncode": 1, "dmesg_lines": 0}
    assert rows == [
        {**common, "window": 16, "pass": 2, "fail": 1, "skip": 0, "seconds": 3.5,
         "differs_from_stock": ["015 NMB mremap - Source NMB-aligned, Dest NMB-aligned with NMB Preamble: "
                                "stock fail, patched pass"], "equal_to_stock": False, "verdict": "differs"},
        {**common, "window": 512, "pass": 1, "fail": 2, "skip": 0, "seconds": None,
         "differs_from_stock": [], "equal_to_stock": True, "verdict": "= stock"}]
    assert selftests.markdown(stock, rows) == (
        "| test | stock p/f/s (outcome) | fixed:16 | fixed:512 |\n| --- | --- | --- | --- |\n"
        "| mremap_test | 1/2/0 (exit 1) | DIFFERS (2/1/0, exit 1) | = stock |\n")


def test_large_destinations_cells_are_cached_apart_and_both_kernels_get_the_knobs(tmp_path, monkeypatch):
    """Issue 23: the same THP knobs on stock and patched (else stock is no reference), the sysctl on patched
    only, at window 0 too; the default cells keep their names and are not reused for the variant."""
    from cowahead.kernel.repro import LARGE_DESTINATIONS_THP
    plans = _fake_guest(monkeypatch)
    stock_image, patched_image = tmp_path / "bzImage-stock", tmp_path / "bzImage-cow-ahead"
    stock_image.write_bytes(b"stock")
    patched_image.write_bytes(b"patched")
    bins, cache = {"mkdirty": tmp_path / "mkdirty"}, tmp_path / "c"
    settings = {"policies": ("fixed",), "windows": (0, 16)}
    ld = selftests.LARGE_DESTINATIONS
    selftests.run_selftests(stock_image, bins, False, ["mkdirty"], cache=cache)
    selftests.run_selftests(patched_image, bins, True, ["mkdirty"], cache=cache, **settings)
    stock = selftests.run_selftests(stock_image, bins, False, ["mkdirty"], cache=cache, variant=ld)
    patched = selftests.run_selftests(patched_image, bins, True, ["mkdirty"], cache=cache, variant=ld, **settings)
    assert len(plans) == 4  # the variant booted although the default cells were cached
    assert all("thp" not in r and "large_destinations" not in r for plan in plans[:2] for r in plan)
    assert [(r["thp"], "large_destinations" in r) for r in plans[2]] == [(LARGE_DESTINATIONS_THP, False)]
    assert [(r["window"], r["thp"], r["large_destinations"]) for r in plans[3]] == \
        [(0, LARGE_DESTINATIONS_THP, 1), (16, LARGE_DESTINATIONS_THP, 1)]
    assert stock["runs"][0]["thp"] == LARGE_DESTINATIONS_THP and patched["runs"][0]["large_destinations"] == 1
    assert stock["variant"] == patched["variant"] == "large-destinations"
    names = {str(p.relative_to(cache)) for p in cache.rglob("*.json")}
    key_s, key_p = selftests.image_key(stock_image), selftests.image_key(patched_image)
    assert names == {f"{key_s}/mkdirty@None:None.json", f"{key_s}/mkdirty@None:None+ld.json",
                     f"{key_p}/mkdirty@fixed:0.json", f"{key_p}/mkdirty@fixed:16.json",
                     f"{key_p}/mkdirty@fixed:0+ld.json", f"{key_p}/mkdirty@fixed:16+ld.json"}
    assert selftests.cell_path(cache, "k", "cow", None, None, 2, ld).name == "cow@None:None+ld#2.json"


def test_seeding_takes_only_cells_of_the_same_variant(tmp_path):
    stock_image, patched_image = tmp_path / "bzImage-stock", tmp_path / "bzImage-cow-ahead"
    stock_image.write_bytes(b"stock")
    patched_image.write_bytes(b"patched")
    images = {"stock": stock_image, "patched": patched_image}
    doc = {"stock": {"kernel_sha256_16": selftests.image_key(stock_image),
                     "runs": [_run(test="cow", policy=None, window=None, returncode=0)]},
           "patched": {"kernel_sha256_16": selftests.image_key(patched_image), "runs": [_run(test="cow", returncode=0)]}}
    before_variants = tmp_path / "old.json"
    before_variants.write_text(json.dumps(doc))
    large = tmp_path / "ld.json"
    large.write_text(json.dumps({**doc, "variant": "large-destinations"}))
    cache = tmp_path / "c"
    with pytest.raises(Exception, match="large-destinations variant, not default"):
        selftests.seed_cache(large, cache, images, ["cow"])
    with pytest.raises(Exception, match="default variant, not large-destinations"):
        selftests.seed_cache(before_variants, cache, images, ["cow"], selftests.LARGE_DESTINATIONS)
    assert not cache.exists()
    assert selftests.seed_cache(large, cache, images, ["cow"], selftests.LARGE_DESTINATIONS) == 2
    assert selftests.seed_cache(before_variants, cache, images, ["cow"]) == 2
    assert sorted(p.name for p in cache.rglob("*.json")) == ["cow@None:None+ld.json", "cow@None:None.json",
                                                             "cow@fixed:16+ld.json", "cow@fixed:16.json"]


def test_the_selftests_verb_names_and_describes_the_variant_and_the_stock_runs(tmp_path, monkeypatch):
    """`kernel selftests --large-destinations --stock-runs 2`, no guest: mremap_test's case 015 fails in one
    stock run and passes in the other and patched, so the patched cell is "= stock (flaky: 015)"."""
    import datetime as dt
    from click.testing import CliRunner
    from cowahead.cli.kernel import command
    from cowahead.kernel.repro import LARGE_DESTINATIONS_THP

    def tap(run):
        status = "not ok" if run["policy"] is None and run["repeat"] == 1 else "ok"
        return f"ok 1 a\n{status} 15 {MREMAP_015}\n"

    plans = _fake_guest(monkeypatch, tap)
    monkeypatch.setattr(selftests, "build_selftests", lambda tree, out, tests: {t: out / t for t in tests})
    for name in ("stock", "patched"):
        (tmp_path / name).write_bytes(name.encode())
    common = ["selftests", "--build-dir", str(tmp_path), "--kernel", str(tmp_path / "patched"), "--stock-kernel",
              str(tmp_path / "stock"), "--test", "mremap_test", "--policy", "fixed", "--window", "16",
              "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    done = CliRunner().invoke(command, [*common, "--large-destinations", "--stock-runs", "2"])
    assert done.exit_code == 0, done.output
    path = tmp_path / "out" / f"kernel-6.12-selftests-large-destinations-{dt.date.today().isoformat()}.json"
    doc = json.loads(path.read_text())
    assert (doc["variant"], doc["thp"], doc["stock_runs"]) == ("large-destinations", LARGE_DESTINATIONS_THP, 2)
    assert doc["patched_sysctls"] == {"vm.cow_ahead_large_destinations": 1}
    assert [r["verdict"] for r in doc["table"]] == ["= stock"]
    assert "| = stock (flaky: 015) |" in path.with_suffix(".md").read_text()
    assert len(plans) == 2
    done = CliRunner().invoke(command, [*common, "--cached-only"])  # the default variant: none of those cells
    assert done.exit_code == 0, done.output
    doc = json.loads((tmp_path / "out" / f"kernel-6.12-selftests-{dt.date.today().isoformat()}.json").read_text())
    assert doc["variant"] == "default" and doc["thp"] is None and doc["patched_sysctls"] == {}
    assert [r["verdict"] for r in doc["table"]] == ["not run"] and len(plans) == 2


def test_seeding_skips_rows_of_cells_that_never_ran(tmp_path):
    """A results file keeps "not run" rows for cells it had no time for; seeded, they would never boot."""
    image = tmp_path / "bzImage-stock"
    image.write_bytes(b"stock")
    never = selftests.not_run("mkdirty", None, None, 1)
    failed_boot = selftests.not_run("cow", None, None, 1, "boot: no QEMU", "error: no QEMU")
    timed_out = _run(test="soft-dirty", policy=None, window=None, error="timed out")
    results = tmp_path / "old.json"
    results.write_text(json.dumps({"stock": {"kernel_sha256_16": selftests.image_key(image),
                                             "runs": [never, failed_boot, timed_out]}}))
    cache = tmp_path / "c"
    assert selftests.seed_cache(results, cache, {"stock": image}, ["mkdirty", "cow", "soft-dirty"]) == 1
    assert [p.name for p in cache.rglob("*.json")] == ["soft-dirty@None:None.json"]


def test_seeding_takes_a_side_only_where_its_image_is_the_same(tmp_path):
    """Rows of an earlier patch's image must never pass for a rebuilt one; the unchanged stock image's do."""
    stock_image, patched_image = tmp_path / "bzImage-stock", tmp_path / "bzImage-cow-ahead"
    stock_image.write_bytes(b"stock")
    patched_image.write_bytes(b"patched, a newer patch")
    results = tmp_path / "old.json"
    results.write_text(json.dumps({
        "stock": {"kernel_sha256_16": selftests.image_key(stock_image),
                  "runs": [_run(test="cow", policy=None, window=None, returncode=0)]},
        "patched": {"kernel_sha256_16": "956c8a902498b006", "runs": [_run(test="cow", returncode=0)]}}))
    cache = tmp_path / "c"
    images = {"stock": stock_image, "patched": patched_image}
    assert selftests.seed_cache(results, cache, images, ["cow"]) == 1
    assert [p.parent.name for p in cache.rglob("*.json")] == [selftests.image_key(stock_image)]
