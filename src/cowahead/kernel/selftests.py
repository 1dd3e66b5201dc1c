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
import hashlib
import json
import re
import subprocess
import tempfile
from pathlib import Path

from ..errors import CowaheadError
from ..output import write_atomically
from ..results.header import header
from .validate import Plan, guest_summary, run_plan
from .vm import POLICIES

# Issue 19's list, cheapest first (the order they run in, so a time-out loses the costly ones).
TESTS = ("mkdirty", "soft-dirty", "madv_populate", "ksm_functional_tests", "gup_longterm", "cow",
         "pagemap_ioctl", "split_huge_page_test", "mremap_test", "uffd-unit-tests", "khugepaged")
# How each is invoked: as run_vmtests.sh's first invocation of it (tools/testing/selftests/mm). khugepaged
# without arguments is its "backwards compatible" run, both contexts (khugepaged, madvise) on anonymous
# memory, what COW-ahead touches; "anon" alone is no test type (<context>:<mem_type>), so the earlier
# harness got usage() on stderr and exit 1, no output.
ARGS: dict[str, list[str]] = {}
# Seconds per run under TCG on 2 shared cores (stock 6.12, debug config): a run past it is killed and
# recorded as timed out, with the cases it printed; stock's time-out is compared as a time-out.
TIMEOUTS = {"mkdirty": 120, "soft-dirty": 900, "madv_populate": 180, "ksm_functional_tests": 400,
            "gup_longterm": 180, "cow": 400, "pagemap_ioctl": 500, "split_huge_page_test": 300,
            "mremap_test": 600, "uffd-unit-tests": 900, "khugepaged": 900}
# Every policy the patch has or may have: the guest first writes each to vm.cow_ahead_policy and runs
# only those the kernel takes (inguest.accepted_policies); a new in-kernel policy goes here.
CANDIDATE_POLICIES = POLICIES  # the guest probes which of them the booted kernel takes
WINDOWS = (0, 16, 512)
NOT_IN_KERNEL = "policy not in this kernel"
TAP = re.compile(r"^(not ok|ok) (\d+)\s*(.*)$")
# uffd-unit-tests prints "Testing NAME on MEMORY... done|skipped [reason: …]|failed …" instead of TAP.
UFFD = re.compile(r"^Testing (.+?)\.\.\. (done|skipped|fail\w*)")
# khugepaged prints "Run test: NAME (context:memory)" then checks ending in a coloured word:
# green (32) passed, red (31) failed, yellow (33) skipped.
KHUGEPAGED_TEST = re.compile(r"^Run test: (\S+) \((\S+)\)")
KHUGEPAGED_CHECK = re.compile(r"^(.*?)\s*\x1b\[(3[123])m(.*?)\x1b\[0m")


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


def parse_khugepaged(stdout: str) -> dict[str, str]:
    """{"NNN test (context:memory) check: word": status}, numbered in order of appearance."""
    cases, test, n = {}, "?", 0
    for line in stdout.splitlines():
        t = KHUGEPAGED_TEST.match(line.strip())
        if t:
            test = f"{t.group(1)} ({t.group(2)})"
            continue
        c = KHUGEPAGED_CHECK.match(line.strip())
        if c:
            n += 1
            text, colour, word = c.groups()
            name = f"{test} {text.split(chr(13))[-1].strip(' .')}: {word}".strip()  # after a progress \r
            cases[f"{n:03d} {name}"] = {"32": "pass", "31": "fail", "33": "skip"}[colour]
    return cases


def parse_output(test: str, stdout: str) -> dict[str, str]:
    return parse_khugepaged(stdout) if test == "khugepaged" else parse_tap(stdout)


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


def settings_for(patched: bool, policies=CANDIDATE_POLICIES, windows=WINDOWS):
    """(policy, window) pairs: window 0 once (off is off), the others under every policy; stock: unset."""
    if not patched:
        return [(None, None)]
    return ([(policies[0], 0)] if 0 in windows else []) + [(p, w) for p in policies for w in windows if w]


def make_runs(binaries: dict[str, Path], patched: bool, tests=TESTS, timeout: float | None = None,
              settings=None) -> list[dict]:
    runs = []
    for test in tests:
        for policy, window in settings or settings_for(patched):
            runs.append({"kind": "selftest", "test": test, "policy": policy, "window": window,
                         "timeout": timeout or TIMEOUTS[test],
                         "argv": [str(binaries[test]), *ARGS.get(test, [])], "raw_stdout": True,
                         "cwd": "/tmp"})  # some tests make files in their directory; /tmp is writable
    return runs


def outcome_of(row: dict) -> str:
    """"timeout", "exit N", "not in kernel" or the guest's error."""
    if row.get("error") == "timed out":
        return "timeout"
    if row.get("error") == NOT_IN_KERNEL:
        return "not in kernel"
    if row.get("error"):
        return f"error: {row['error']}"
    return f"exit {row.get('returncode')}"


def record(r: dict) -> dict:
    """A guest row as the results file keeps it."""
    out = {"test": r["test"], "policy": r["policy"], "window": r["window"], "timeout": r.get("timeout"),
           "returncode": r.get("returncode"), "error": r.get("error"), "seconds": r.get("seconds"),
           "cases": parse_output(r["test"], r.get("stdout", "")), "dmesg": r.get("dmesg", []),
           "stdout_tail": r.get("stdout", "")[-1500:], "stderr_tail": r.get("stderr", "")[-1500:]}
    out["outcome"] = outcome_of(out)
    return out


def image_key(kernel: Path) -> str:
    return hashlib.sha256(Path(kernel).read_bytes()).hexdigest()[:16]


def cell_path(cache: Path, kernel_key: str, test: str, policy, window) -> Path:
    return cache / kernel_key / f"{test}@{policy}:{window}.json"


def run_selftests(kernel: Path, binaries: dict[str, Path], patched: bool, tests=TESTS, timeout: float | None = None,
                  cache: Path | None = None, log=lambda message: None, boot: bool = True, **settings) -> dict:
    """Every test × setting, one boot per test for the cells the cache does not have yet.

    Cells are cached per kernel image (its sha256) in ``cache``, one file each, as soon as their boot
    ends: a second call runs only what is missing, a rebuilt image starts afresh. A boot that does not
    finish records an error for its cells and caches nothing, so the next call tries them again.
    ``boot=False``: no guest at all, the table of what the cache has (the rest "not run").
    """
    cache = Path(cache or tempfile.mkdtemp(prefix="cowahead-selftests-cache-"))
    key = image_key(kernel)
    cells = [(t, p, w) for t in tests for p, w in settings_for(patched, **settings)]
    runs, boots = [], []
    for test in tests:
        wanted = [(p, w) for t, p, w in cells if t == test and not cell_path(cache, key, t, p, w).exists()]
        if not wanted or not boot:
            continue
        plan = make_runs(binaries, patched, [test], timeout, wanted)
        limit = sum(r["timeout"] for r in plan) + 900  # the boot, dmesg and a margin
        log(f"{test}: {len(plan)} run(s) in one boot (at most {limit:.0f} s)")
        work = Path(tempfile.mkdtemp(prefix="cowahead-selftests-"))
        try:
            rows, result = run_plan(kernel, Plan(plan, {}), work, cpus=2, timeout=limit,
                                    probe_policies=CANDIDATE_POLICIES if patched else None)
        except CowaheadError as e:
            boots.append({"test": test, "error": str(e)})
            runs += [{"test": test, "policy": p, "window": w, "error": f"boot: {e}", "outcome": f"error: {e}",
                      "cases": {}, "dmesg": [], "returncode": None} for p, w in wanted]
            continue
        boots.append({"test": test, **guest_summary(rows, result),
                      "policies": next((r for r in rows if r.get("kind") == "policies"), None)})
        for r in rows:
            if r.get("kind") == "selftest":
                rec = record(r)
                path = cell_path(cache, key, r["test"], r["policy"], r["window"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec, indent=1) + "\n")
    for t, p, w in cells:
        path = cell_path(cache, key, t, p, w)
        if path.exists():
            runs.append(json.loads(path.read_text()))
        elif not any(r["test"] == t and r["policy"] == p and r["window"] == w for r in runs):
            runs.append({"test": t, "policy": p, "window": w, "error": "not run (no row from the guest)",
                         "outcome": "error: not run", "cases": {}, "dmesg": [], "returncode": None})
    return {"kernel_image": str(kernel), "kernel_sha256_16": key, "patched": patched, "runs": runs,
            "planned": len(cells), "boots": boots, "cache": str(cache)}


def seed_cache(results_file: Path, cache: Path, images: dict[str, Path], tests) -> int:
    """Copy rows of an earlier results file into the cache, for images of the same sha256 and tests run as now.

    ``images``: "stock"/"patched" → the image those rows came from (the caller says they are the same
    files). Each seeded row says where it came from. Returns how many were seeded.
    """
    doc = json.loads(Path(results_file).read_text())
    n = 0
    for side, kernel in images.items():
        key = image_key(kernel)
        for r in doc[side]["runs"]:
            if r["test"] not in tests:
                continue
            path = cell_path(cache, key, r["test"], r["policy"], r["window"])
            if path.exists():
                continue
            rec = {**r, "seeded_from": Path(results_file).name}
            rec.setdefault("stderr_tail", None)
            rec["outcome"] = outcome_of(rec)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec, indent=1) + "\n")
            n += 1
    return n


def comparable(cases: dict[str, str]) -> dict[str, str]:
    """Case names with their digits after the case number made N: some tests print measured figures in a
    case's name (pagemap_ioctl: "transact_test Extra pages 372 (0.8%) …"); the case number keeps them apart."""
    return {case[:4] + re.sub(r"\d+", "N", case[4:]): status for case, status in cases.items()}


def table(stock: dict, patched: dict) -> list[dict]:
    """Per test and setting: cases passed/failed/skipped, the outcome, and every case whose status differs
    from stock's. A run equals stock when its outcome (exit status, or a time-out) is stock's, its cases
    have stock's statuses and its kernel log is clean; where either timed out only the cases both printed
    are compared (how far a timed-out run got is speed, not behaviour). A policy the kernel does not have
    gives a row with ``equal_to_stock`` None."""
    base = {r["test"]: r for r in stock["runs"]}
    rows = []
    for r in patched["runs"]:
        ref = base.get(r["test"])
        counts = {k: sum(1 for v in r["cases"].values() if v == k) for k in ("pass", "fail", "skip")}
        row = {"test": r["test"], "policy": r["policy"], "window": r["window"], **counts,
               "outcome": r.get("outcome", outcome_of(r)), "seconds": r.get("seconds"),
               "stock_outcome": (ref.get("outcome") or outcome_of(ref)) if ref else None,
               "returncode": r.get("returncode"), "stock_returncode": ref.get("returncode") if ref else None,
               "dmesg_lines": len(r.get("dmesg", []))}
        if row["outcome"] in ("not in kernel", "error: not run") or (ref and ref.get("outcome") == "error: not run"):
            rows.append({**row, "differs_from_stock": None, "equal_to_stock": None,
                         "verdict": "not in kernel" if row["outcome"] == "not in kernel" else "not run"})
            continue
        if ref is None:
            rows.append({**row, "differs_from_stock": None, "equal_to_stock": False, "verdict": "no stock run"})
            continue
        mine, theirs = comparable(r["cases"]), comparable(ref["cases"])
        partial = "timeout" in (row["outcome"], row["stock_outcome"])
        differ = sorted(f"{case}: stock {theirs.get(case, 'absent')}, patched {status}"
                        for case, status in mine.items()
                        if theirs.get(case) != status and not (partial and case not in theirs))
        if not partial:
            differ += sorted(f"{case}: stock {status}, patched absent" for case, status in theirs.items()
                             if case not in mine)
        if row["outcome"] != row["stock_outcome"]:
            differ.insert(0, f"outcome: stock {row['stock_outcome']}, patched {row['outcome']}")
        equal = not differ and not r.get("dmesg") and not row["outcome"].startswith("error")
        rows.append({**row, "differs_from_stock": differ, "equal_to_stock": equal,
                     "verdict": "= stock" if equal else "differs"})
    return rows


def summary(rows: list[dict]) -> dict:
    ran = [r for r in rows if r["equal_to_stock"] is not None]
    return {"rows": len(rows), "compared": len(ran), "equal_to_stock": sum(r["equal_to_stock"] for r in ran),
            "differ": [f"{r['test']} {r['policy']}:{r['window']}" for r in ran if not r["equal_to_stock"]],
            "not_run": [f"{r['test']} {r['policy']}:{r['window']}" for r in rows if r["verdict"] == "not run"],
            "not_in_kernel": sorted({r["policy"] for r in rows if r["verdict"] == "not in kernel"}),
            "dmesg_clean": all(r["dmesg_lines"] == 0 for r in rows)}


def markdown(stock: dict, rows: list[dict]) -> str:
    """test × setting: pass/fail/skip and = stock or what differs; stock's own counts first."""
    settings = []
    for r in rows:
        if (r["policy"], r["window"]) not in settings:
            settings.append((r["policy"], r["window"]))
    head = "| test | stock p/f/s (outcome) | " + " | ".join(f"{p}:{w}" for p, w in settings) + " |"
    lines = [head, "|" + " --- |" * (2 + len(settings))]
    by = {(r["test"], r["policy"], r["window"]): r for r in rows}
    for s_run in stock["runs"]:
        c = s_run["cases"]
        counts = "/".join(str(sum(v == k for v in c.values())) for k in ("pass", "fail", "skip"))
        cells = []
        for p, w in settings:
            r = by.get((s_run["test"], p, w))
            if r is None:
                cells.append("—")
            elif r["equal_to_stock"] is None:
                cells.append(r["verdict"])
            elif r["equal_to_stock"]:
                cells.append("= stock" + (" (timeout)" if r["outcome"] == "timeout" else ""))
            else:
                cells.append(f"DIFFERS ({r['pass']}/{r['fail']}/{r['skip']}, {r['outcome']})")
        lines.append(f"| {s_run['test']} | {counts} ({s_run.get('outcome') or outcome_of(s_run)}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(doc: dict, out_dir: Path, name: str = "kernel-6.12-selftests") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{dt.date.today().isoformat()}.json"
    full = {**header("kernel-selftests"), **doc}
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(full, indent=2) + "\n"))
    return path
