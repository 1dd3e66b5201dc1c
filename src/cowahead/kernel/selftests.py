"""Upstream's mm selftests (tools/testing/selftests/mm of the same kernel source), built on the host, run in the guest.

Built from the build tree (``make headers`` there, then each test's own make
target) into BUILD_DIR/selftests-mm. One boot per kernel runs every test under
every setting (inguest.py, one run per test × setting, ``dmesg -c`` after
each); the TAP lines each test prints (``ok N …``, ``not ok N …``,
``ok N # SKIP …``) are parsed into one status per test case, and the patched
kernel's statuses are compared case by case with the stock kernel's.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CowaheadError
from ..output import write_dated_results
from ..results.header import header
from .kbuild import image_key
from .repro import LARGE_DESTINATIONS_THP
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


@dataclass(frozen=True)
class Variant:
    """What every run of a matrix gets besides its policy and window. Both kernels run under the same THP
    knobs (stock under other knobs would be no reference); the patched kernel's sysctls come on top, at
    window 0 too (the control under identical knobs). Its cells are cached apart (``cell_suffix``)."""
    name: str
    cell_suffix: str = ""
    thp: dict[str, str] | None = None
    patched_sysctls: dict[str, int] = field(default_factory=dict)  # inguest.run_one's keys

    def run_fields(self, patched: bool) -> dict:
        """The keys a run of this kernel gets (inguest.run_one sets them, and restores the knobs after it)."""
        return {**({"thp": self.thp} if self.thp else {}), **(self.patched_sysctls if patched else {})}

    def describe(self) -> dict:
        """What a results file records at top level, so that a reader (and --seed-from) knows the variant."""
        return {"variant": self.name, "thp": self.thp,
                "patched_sysctls": {SYSCTL_NAMES[k]: v for k, v in self.patched_sysctls.items()}}


SYSCTL_NAMES = {"large_destinations": "vm.cow_ahead_large_destinations"}  # run_one's key → the sysctl it sets


DEFAULT = Variant("default")
# Issue 23: vm.cow_ahead_large_destinations=1, with 16 and 64 KiB mTHP always so that it has orders to use.
LARGE_DESTINATIONS = Variant("large-destinations", "+ld", LARGE_DESTINATIONS_THP, {"large_destinations": 1})
VARIANTS = {v.name: v for v in (DEFAULT, LARGE_DESTINATIONS)}


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
              settings=None, repeat: int = 1, variant: Variant = DEFAULT) -> list[dict]:
    """One run per test × (policy, window); ``repeat``: which run of these cells on this kernel (1 = the first)."""
    runs = []
    for test in tests:
        for policy, window in settings or settings_for(patched):
            runs.append({"kind": "selftest", "test": test, "policy": policy, "window": window, "repeat": repeat,
                         "timeout": timeout or TIMEOUTS[test],
                         "argv": [str(binaries[test]), *ARGS.get(test, [])], "raw_stdout": True,
                         "cwd": "/tmp",  # some tests make files in their directory; /tmp is writable
                         **variant.run_fields(patched)})
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
    out = {"test": r["test"], "policy": r["policy"], "window": r["window"], "repeat": r.get("repeat", 1),
           "timeout": r.get("timeout"),
           "returncode": r.get("returncode"), "error": r.get("error"), "seconds": r.get("seconds"),
           "cases": parse_output(r["test"], r.get("stdout", "")), "dmesg": r.get("dmesg", []),
           "stdout_tail": r.get("stdout", "")[-1500:], "stderr_tail": r.get("stderr", "")[-1500:],
           # a variant's knobs as asked and as the guest read them back (absent in the default variant)
           **{k: r[k] for k in ("thp", "thp_set", "large_destinations") if k in r}}
    out["outcome"] = outcome_of(out)
    return out


def cell_path(cache: Path, kernel_key: str, test: str, policy, window, repeat: int = 1,
              variant: Variant = DEFAULT) -> Path:
    """One cell's file: "TEST@POLICY:WINDOW", the variant's suffix, "#N" for a repeat after the first; the
    default variant's first run keeps the name cells had before variants and repeats (old caches still count)."""
    again = f"#{repeat}" if repeat > 1 else ""
    return cache / kernel_key / f"{test}@{policy}:{window}{variant.cell_suffix}{again}.json"


def not_run(test: str, policy, window, repeat: int, error: str = "not run (no row from the guest)",
            outcome: str = "error: not run") -> dict:
    """The row of a cell without a result (not booted, or its boot failed)."""
    return {"test": test, "policy": policy, "window": window, "repeat": repeat, "error": error, "outcome": outcome,
            "cases": {}, "dmesg": [], "returncode": None}


def run_selftests(kernel: Path, binaries: dict[str, Path], patched: bool, tests=TESTS, timeout: float | None = None,
                  cache: Path | None = None, log=lambda message: None, boot: bool = True, repeats: int = 1,
                  variant: Variant = DEFAULT, **settings) -> dict:
    """Every test × setting, ``repeats`` times each, one boot per test for the cells the cache does not have yet.

    Cells are cached per kernel image (its sha256) in ``cache``, one file each, as soon as their boot
    ends: a second call runs only what is missing, a rebuilt image starts afresh. A boot that does not
    finish records an error for its cells and caches nothing, so the next call tries them again.
    ``boot=False``: no guest at all, the table of what the cache has (the rest "not run"). ``repeats``
    is for the stock kernel, whose flaky tests need more than one sample (table()); each repeat is a
    cell of its own, in the same boot. ``variant``: the THP knobs and sysctls of every run (Variant).
    """
    cache = Path(cache or tempfile.mkdtemp(prefix="cowahead-selftests-cache-"))
    key = image_key(kernel)
    cells = [(t, p, w, n) for t in tests for p, w in settings_for(patched, **settings) for n in range(1, repeats + 1)]
    runs, boots = [], []
    for test in tests:
        wanted = [(p, w, n) for t, p, w, n in cells
                  if t == test and not cell_path(cache, key, t, p, w, n, variant).exists()]
        if not wanted or not boot:
            continue
        plan = [run for n in sorted({n for _, _, n in wanted})
                for run in make_runs(binaries, patched, [test], timeout, [(p, w) for p, w, m in wanted if m == n], n,
                                     variant)]
        limit = sum(r["timeout"] for r in plan) + 900  # the boot, dmesg and a margin
        log(f"{test}: {len(plan)} run(s) in one boot (at most {limit:.0f} s)")
        work = Path(tempfile.mkdtemp(prefix="cowahead-selftests-"))
        try:
            rows, result = run_plan(kernel, Plan(plan, {}), work, cpus=2, timeout=limit,
                                    probe_policies=CANDIDATE_POLICIES if patched else None)
        except CowaheadError as e:
            boots.append({"test": test, "error": str(e)})
            runs += [not_run(test, p, w, n, f"boot: {e}", f"error: {e}") for p, w, n in wanted]
            continue
        boots.append({"test": test, **guest_summary(rows, result),
                      "policies": next((r for r in rows if r.get("kind") == "policies"), None)})
        for r in rows:
            if r.get("kind") == "selftest":
                rec = record(r)
                path = cell_path(cache, key, r["test"], r["policy"], r["window"], rec["repeat"], variant)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec, indent=1) + "\n")
    for t, p, w, n in cells:
        path = cell_path(cache, key, t, p, w, n, variant)
        if path.exists():
            runs.append(json.loads(path.read_text()))
        elif not any((r["test"], r["policy"], r["window"], r.get("repeat", 1)) == (t, p, w, n) for r in runs):
            runs.append(not_run(t, p, w, n))
    return {"kernel_image": str(kernel), "kernel_sha256_16": key, "patched": patched, "variant": variant.name,
            "runs": runs,
            "planned": len(cells), "boots": boots, "cache": str(cache)}


def results_variant(doc: dict) -> str:
    """The variant a results file is of; files from before variants are the default's."""
    return doc.get("variant", DEFAULT.name)


def has_result(run: dict) -> bool:
    """False for a results file's row of a cell that never ran (not booted, or its boot failed): seeded, it
    would be cached as a result and never booted again."""
    return not str(run.get("error") or "").startswith(("not run", "boot:"))


def seed_cache(results_file: Path, cache: Path, images: dict[str, Path], tests, variant: Variant = DEFAULT) -> int:
    """Copy rows of an earlier results file into the cache, for images of the same sha256 and tests run as now.

    ``images``: "stock"/"patched" → the image now in use. A side is seeded only where the file's image
    had the same sha256 (``kernel_sha256_16``): builds are reproducible (kbuild.REPRODUCIBLE_ENV; the
    stock image of two machines' builds had the same sha256), so an earlier session's rows of an
    unchanged image count, and a changed patch's rows never pass for the new image's. Each seeded row
    says where it came from. Returns how many were seeded. A file of another variant is refused: its
    rows ran under other knobs, and would pass for this variant's cells.
    """
    doc = json.loads(Path(results_file).read_text())
    if results_variant(doc) != variant.name:
        raise CowaheadError(f"{results_file} is of the {results_variant(doc)} variant, not {variant.name}: "
                            "its cells ran under other knobs")
    n = 0
    for side, kernel in images.items():
        key = image_key(kernel)
        if doc[side].get("kernel_sha256_16") != key:
            continue  # another image: its rows say nothing about this one
        for r in doc[side]["runs"]:
            if r["test"] not in tests or not has_result(r):
                continue
            path = cell_path(cache, key, r["test"], r["policy"], r["window"], r.get("repeat", 1), variant)
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


def outcome_text(run: dict) -> str:
    return run.get("outcome") or outcome_of(run)


def either(values: Iterable[str]) -> str:
    """Distinct values in first-seen order, "A or B": what the stock runs gave."""
    return " or ".join(dict.fromkeys(values))


def stock_statuses(case: str, mine: dict[str, str], patched_timed_out: bool,
                   theirs: list[tuple[dict[str, str], bool]]) -> list[str]:
    """The statuses of ``case`` in the stock runs this patched run is compared with ("absent" where a run
    finished without it). A stock run says nothing about a case where it or the patched run timed out and
    not both printed it: how far a timed-out run got is speed, not behaviour."""
    return [cases.get(case, "absent") for cases, timed_out in theirs
            if (case in mine and case in cases) or not (timed_out or patched_timed_out)]


def compare_cases(mine: dict[str, str], patched_timed_out: bool,
                  theirs: list[tuple[dict[str, str], bool]]) -> tuple[list[str], list[str]]:
    """(what differs, what is flaky in stock): a case equals stock when its status is one any stock run
    gave; flaky when the stock runs it is compared with gave it more than one status."""
    printed, missing, flaky = [], [], []
    for case in dict.fromkeys([*mine, *(c for cases, _ in theirs for c in cases)]):
        given = stock_statuses(case, mine, patched_timed_out, theirs)
        if len(set(given)) > 1:
            flaky.append(case)
        status = mine.get(case, "absent")
        if given and status not in given:
            (printed if case in mine else missing).append(f"{case}: stock {either(sorted(given))}, patched {status}")
    return sorted(printed) + sorted(missing), sorted(flaky)


def table(stock: dict, patched: dict) -> list[dict]:
    """Per test and setting: cases passed/failed/skipped, the outcome, and every case whose status differs
    from stock's.

    The rule: a patched run equals stock when its outcome (exit status, or a time-out) is one a stock run
    of the test gave, each of its cases has a status some stock run gave that case, and its kernel log is
    clean. Where the patched run or a stock run timed out, that stock run is compared only on the cases
    both printed (how far a timed-out run got is speed, not behaviour); otherwise a case missing on one
    side is "absent", a status like any other. With one stock run this is "stock's outcome and stock's
    statuses". With several (``--stock-runs``), a case or the outcome the stock runs disagree on is flaky
    in stock: listed in the row's ``flaky_in_stock`` (with ``stock_runs`` and ``stock_outcomes``, keys
    only rows of a test run more than once on stock have; ``stock_returncode`` is the first run's), and a
    patched status equal to any of them is no difference; a case failing in every stock run and passing
    patched (or the reverse) still differs.
    A policy the kernel does not have gives a row with ``equal_to_stock`` None; so does a test with a stock
    run missing ("not run")."""
    base: dict[str, list[dict]] = {}
    for r in stock["runs"]:
        base.setdefault(r["test"], []).append(r)
    rows = []
    for r in patched["runs"]:
        refs = base.get(r["test"], [])
        counts = {k: sum(1 for v in r["cases"].values() if v == k) for k in ("pass", "fail", "skip")}
        outcomes = [outcome_text(ref) for ref in refs]
        row = {"test": r["test"], "policy": r["policy"], "window": r["window"], **counts,
               "outcome": outcome_text(r), "seconds": r.get("seconds"),
               "stock_outcome": either(outcomes) if refs else None,
               "returncode": r.get("returncode"), "stock_returncode": refs[0].get("returncode") if refs else None,
               "dmesg_lines": len(r.get("dmesg", []))}
        if len(refs) > 1:  # only then, so that a table of one stock run is the table from before repeats
            row.update(stock_runs=len(refs), stock_outcomes=outcomes, flaky_in_stock=[])
        if row["outcome"] in ("not in kernel", "error: not run") or "error: not run" in outcomes:
            rows.append({**row, "differs_from_stock": None, "equal_to_stock": None,
                         "verdict": "not in kernel" if row["outcome"] == "not in kernel" else "not run"})
            continue
        if not refs:
            rows.append({**row, "differs_from_stock": None, "equal_to_stock": False, "verdict": "no stock run"})
            continue
        theirs = [(comparable(ref["cases"]), outcome_text(ref) == "timeout") for ref in refs]
        differ, flaky = compare_cases(comparable(r["cases"]), row["outcome"] == "timeout", theirs)
        if row["outcome"] not in outcomes:
            differ.insert(0, f"outcome: stock {row['stock_outcome']}, patched {row['outcome']}")
        if len(set(outcomes)) > 1:
            flaky.insert(0, "outcome")
        if len(refs) > 1:
            row["flaky_in_stock"] = flaky
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


def case_label(case: str) -> str:
    """A case as the table cell names it: its number ("015"), else its name (uffd's lines have none)."""
    number = case.split(" ", 1)[0]
    return number if number.isdigit() else case


def patched_cell(row: dict | None) -> str:
    """One setting's cell: "= stock" (why it may look otherwise in brackets), DIFFERS with its counts, or why not."""
    if row is None:
        return "—"
    if row["equal_to_stock"] is None:
        return row["verdict"]
    if not row["equal_to_stock"]:
        return f"DIFFERS ({row['pass']}/{row['fail']}/{row['skip']}, {row['outcome']})"
    notes = (["timeout"] if row["outcome"] == "timeout" else []) + (
        [f"flaky: {', '.join(case_label(c) for c in row['flaky_in_stock'])}"] if row.get("flaky_in_stock") else [])
    return "= stock" + (f" ({'; '.join(notes)})" if notes else "")


def stock_cell(runs: list[dict]) -> str:
    """pass/fail/skip of each stock run of a test, then the outcomes they had."""
    counts = ", ".join("/".join(str(sum(v == k for v in r["cases"].values())) for k in ("pass", "fail", "skip"))
                       for r in runs)
    return f"{counts} ({either(outcome_text(r) for r in runs)})"


def markdown(stock: dict, rows: list[dict]) -> str:
    """test × setting: pass/fail/skip and = stock or what differs; stock's own counts first (each stock run's,
    where it ran more than once); "= stock (flaky: 015)" where a case the stock runs disagree on was compared."""
    settings = []
    for r in rows:
        if (r["policy"], r["window"]) not in settings:
            settings.append((r["policy"], r["window"]))
    head = "| test | stock p/f/s (outcome) | " + " | ".join(f"{p}:{w}" for p, w in settings) + " |"
    lines = [head, "|" + " --- |" * (2 + len(settings))]
    by = {(r["test"], r["policy"], r["window"]): r for r in rows}
    stock_runs: dict[str, list[dict]] = {}
    for r in stock["runs"]:
        stock_runs.setdefault(r["test"], []).append(r)
    for test, runs in stock_runs.items():
        lines.append(f"| {test} | {stock_cell(runs)} | "
                     + " | ".join(patched_cell(by.get((test, p, w))) for p, w in settings) + " |")
    return "\n".join(lines) + "\n"


def write_results(doc: dict, out_dir: Path, name: str = "kernel-6.12-selftests") -> Path:
    return write_dated_results(out_dir, name, {**header("kernel-selftests"), **doc})
