"""Upstream's mm selftests (tools/testing/selftests/mm of the same kernel source), built on the host, run in the guest.

Built from the build tree (``make headers`` there, then each test's own make
target) into BUILD_DIR/selftests-mm. One boot per kernel runs every test under
every setting (inguest.py, one run per test × setting, ``dmesg -c`` after
each); the TAP lines each test prints (``ok N …``, ``not ok N …``,
``ok N # SKIP …``) are parsed into one status per test case, and the patched
kernel's statuses are compared case by case with the stock kernel's.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import tempfile
from pathlib import Path

from ..errors import CowaheadError
from ..output import write_atomically
from ..results.header import header
from .validate import Plan, guest_summary, run_plan

# Issue 19's list, cheapest first (the order they run in, so a time-out loses the costly ones).
TESTS = ("mkdirty", "soft-dirty", "madv_populate", "ksm_functional_tests", "gup_longterm", "cow",
         "pagemap_ioctl", "split_huge_page_test", "mremap_test", "uffd-unit-tests", "khugepaged")
# How each is invoked: khugepaged takes the memory kind to collapse (anon: what COW-ahead touches).
ARGS = {"khugepaged": ["anon"]}
TAP = re.compile(r"^(not ok|ok) (\d+)\s*(.*)$")
# uffd-unit-tests prints "Testing NAME on MEMORY... done|skipped [reason: …]|failed …" instead of TAP.
UFFD = re.compile(r"^Testing (.+?)\.\.\. (done|skipped|fail\w*)")


def build_selftests(tree: Path, out_dir: Path, tests=TESTS) -> dict[str, Path]:
    """``make headers`` in ``tree`` then each test; name → binary. Not while a kernel build runs in the tree.

    Binaries already in ``out_dir`` are kept (delete the directory to rebuild).
    """
    if all((out_dir / test).exists() for test in tests):
        return {test: out_dir / test for test in tests}
    done = subprocess.run(["nice", "-n", "19", "make", "headers"], cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise CowaheadError(f"make headers failed in {tree}: {done.stderr.strip().splitlines()[-1:]}")
    src = tree / "tools/testing/selftests/mm"
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for test in tests:
        binary = src / test
        done = subprocess.run(["nice", "-n", "19", "make", str(binary)], cwd=src, capture_output=True, text=True)
        if done.returncode != 0 and "KSFT_SKIP" in done.stderr:
            # Debian's 6.12.117 khugepaged.c uses KSFT_SKIP without including kselftest.h.
            done = subprocess.run(["nice", "-n", "19", "gcc", "-Wall", "-O2", "-I", str(tree), "-isystem",
                                   str(tree / "usr/include"), "-isystem", str(tree / "tools/include/uapi"),
                                   "-U_FORTIFY_SOURCE", "-no-pie", "-D_GNU_SOURCE=", "-include", "../kselftest.h",
                                   f"{test}.c", "vm_util.c", "thp_settings.c", "-lrt", "-lpthread", "-lm",
                                   "-o", str(binary)], cwd=src, capture_output=True, text=True)
        if done.returncode != 0:
            raise CowaheadError(f"building selftest {test} failed: {done.stderr.strip().splitlines()[-1:]}")
        target = out_dir / test
        target.write_bytes(binary.read_bytes())
        target.chmod(0o755)
        built[test] = target
    return built


def parse_tap(stdout: str) -> dict[str, str]:
    """TAP lines into {"N description": "pass" | "fail" | "skip"}; numbered so repeated names stay apart."""
    cases = {}
    for line in stdout.splitlines():
        u = UFFD.match(line.strip())
        if u:
            name, verdict = u.groups()
            cases[f"uffd {name}"] = {"done": "pass", "skipped": "skip"}.get(verdict, "fail")
            continue
        m = TAP.match(line.strip())
        if not m:
            continue
        verdict, number, rest = m.groups()
        skip = re.search(r"#\s*SKIP", rest, re.I)
        # kselftest prints a skip as "ok N # SKIP reason": the reason is the case's name then.
        name = re.sub(r"#\s*SKIP\s*", "", rest, flags=re.I).lstrip("- ").strip()
        cases[f"{int(number):03d} {name}"] = "skip" if skip else ("fail" if verdict == "not ok" else "pass")
    return cases


def settings_for(patched: bool, policies=("fixed", "around", "adaptive"), windows=(0, 16, 512)):
    """(policy, window) pairs: window 0 once (off is off), the others under every policy; stock: unset."""
    if not patched:
        return [(None, None)]
    return [(policies[0], 0)] + [(p, w) for p in policies for w in windows if w]


def make_runs(binaries: dict[str, Path], patched: bool, tests=TESTS, timeout: float = 900, **settings) -> list[dict]:
    runs = []
    for test in tests:
        for policy, window in settings_for(patched, **settings):
            runs.append({"kind": "selftest", "test": test, "policy": policy, "window": window, "timeout": timeout,
                         "argv": [str(binaries[test]), *ARGS.get(test, [])], "raw_stdout": True,
                         "cwd": "/tmp"})  # some tests make files in their directory; /tmp is writable
    return runs


def run_selftests(kernel: Path, binaries: dict[str, Path], patched: bool, tests=TESTS, timeout: float = 900,
                  guest_timeout: float = 6 * 3600, **settings) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cowahead-selftests-"))
    runs = make_runs(binaries, patched, tests, timeout, **settings)
    rows, result = run_plan(kernel, Plan(runs, {}), work, cpus=2, timeout=guest_timeout)
    out = []
    for r in rows:
        if r.get("kind") != "selftest":
            continue
        out.append({"test": r["test"], "policy": r["policy"], "window": r["window"],
                    "returncode": r.get("returncode"), "error": r.get("error"), "seconds": r.get("seconds"),
                    "cases": parse_tap(r.get("stdout", "")), "dmesg": r.get("dmesg", []),
                    "stdout_tail": r.get("stdout", "")[-1500:]})
    return {"kernel_image": str(kernel), "patched": patched, "runs": out, "planned": len(runs),
            "guest": guest_summary(rows, result)}


def comparable(cases: dict[str, str]) -> dict[str, str]:
    """Case names with their digits after the case number made N: some tests print measured figures in a
    case's name (pagemap_ioctl: "transact_test Extra pages 372 (0.8%) …"); the case number keeps them apart."""
    return {case[:4] + re.sub(r"\d+", "N", case[4:]): status for case, status in cases.items()}


def table(stock: dict, patched: dict) -> list[dict]:
    """Per test and setting: cases passed/failed/skipped, and every case whose status differs from stock's."""
    base = {r["test"]: r for r in stock["runs"]}
    rows = []
    for r in patched["runs"]:
        ref = base.get(r["test"])
        counts = {k: sum(1 for v in r["cases"].values() if v == k) for k in ("pass", "fail", "skip")}
        mine, theirs = comparable(r["cases"]), comparable(ref["cases"]) if ref else {}
        differ = None if ref is None else sorted(
            f"{case}: stock {theirs.get(case, 'absent')}, patched {status}"
            for case, status in mine.items() if theirs.get(case) != status)
        if ref is not None:
            differ += sorted(f"{case}: stock {status}, patched absent" for case, status in theirs.items()
                             if case not in mine)
        rows.append({"test": r["test"], "policy": r["policy"], "window": r["window"], **counts,
                     "returncode": r["returncode"], "stock_returncode": ref["returncode"] if ref else None,
                     "dmesg_lines": len(r["dmesg"]), "differs_from_stock": differ,
                     "equal_to_stock": ref is not None and not differ and not r["dmesg"]})
    return rows


def write_results(doc: dict, out_dir: Path, name: str = "kernel-6.12-selftests") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{dt.date.today().isoformat()}.json"
    full = {**header("kernel-selftests"), **doc}
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(full, indent=2) + "\n"))
    return path
