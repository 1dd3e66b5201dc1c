"""The reproducers of issue 19's six findings (guest/issue19.c), run in one boot of a kernel.

Each case runs under COW-ahead settings where the 6.1 patch misbehaved, and at
window 0; on a stock kernel (no sysctls) once, unset. A run passes when the
case prints ``"ok": true``, exits 0 and the kernel log gained no BUG, WARNING
or Bad page line during it (inguest.py reads ``dmesg -c`` after every run).
A case that needs what the kernel lacks (``thp_tail`` on a THP-off kernel)
says so: exit 4 (kselftest's KSFT_SKIP) with ``"skipped": true`` and the
reason; the run is recorded as skipped, never as passed, and a skip with a
kernel-log problem is a failure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..output import write_dated_results
from ..results.header import header
from .guestprogs import compile_programs
from .kbuild import image_key
from .validate import Plan, guest_summary, run_plan

# case → (finding of issue 19, [(policy, window), …]); window 0 is COW-ahead off.
CASES = {
    "missing_table": (1, [("fixed", 0), ("fixed", 16), ("fixed", 512), ("around", 16)]),
    "thp_tail": (2, [("fixed", 0), ("fixed", 16), ("fixed", 512)]),
    "soft_dirty_copy": (3, [("fixed", 0), ("fixed", 16), ("fixed", 512)]),
    "soft_dirty_reuse": (3, [("fixed", 0), ("fixed", 16), ("fixed", 512)]),
    "oom": (4, [("fixed", 0), ("fixed", 512)]),
    # Issue 23: the same under the THP knobs (no MADV_NOHUGEPAGE): with large destinations the window's
    # blocks ask for large folios the limit refuses; they fall back (cow_large_fallback), never OOM-kill.
    "oom_large": (4, [("fixed", 0), ("fixed", 16), ("fixed", 512)]),
    "ksm": (5, [("fixed", 0), ("fixed", 16), ("fixed", 512)]),
    "zero_page": (5, [("fixed", 0), ("fixed", 16), ("fixed", 512)]),
    "adaptive_munmap": (6, [("adaptive", 0), ("adaptive", 64)]),
    "adaptive_mremap": (6, [("adaptive", 0), ("adaptive", 64)]),
}


# Issue 23: the reproducers with vm.cow_ahead_large_destinations=1, under THP knobs that give it orders to use
# (16 and 64 KiB mTHP always, PMD THP as the guest's default, so thp_tail still has its THP); window 0 runs
# under the same knobs, the control.
LARGE_DESTINATIONS_THP = {"enabled": "always", "hugepages-2048kB/enabled": "inherit",
                          "hugepages-64kB/enabled": "always", "hugepages-16kB/enabled": "always"}


def make_runs(binary: Path, patched: bool = True, cases=None, large_destinations: bool = False,
              repeats: int = 1) -> list[dict]:
    """Each case at each of its settings; ``repeats`` rounds of all of them (a kill that happens in some
    runs only, as finding 4's OOM kills did, needs more than one to be seen or ruled out)."""
    runs = []
    for repeat in range(repeats):
        for case in cases or CASES:
            finding, settings = CASES[case]
            for policy, window in (settings if patched else [(None, None)]):
                run = {"kind": "repro", "case": case, "finding": finding, "policy": policy, "window": window,
                       "argv": [str(binary), case], "timeout": 300, "repeat": repeat}
                if large_destinations:
                    run.update(large_destinations=1, thp=LARGE_DESTINATIONS_THP)
                runs.append(run)
    return runs


SKIP_STATUS = 4


def outcome(row: dict) -> dict:
    """One run's result: the case's own report, the kernel-log lines, and pass / fail / skip."""
    output = row.get("output", {})
    clean = not row.get("dmesg") and "error" not in row
    passed = clean and row.get("returncode") == 0 and output.get("ok") is True
    skipped = (clean and row.get("returncode") == SKIP_STATUS and output.get("skipped") is True
               and bool(output.get("reason")))
    return {"case": row["case"], "finding": row["finding"], "policy": row["policy"], "window": row["window"],
            "repeat": row.get("repeat", 0),
            "returncode": row.get("returncode"), "error": row.get("error"), "report": output,
            "dmesg": row.get("dmesg", []), "stderr": row.get("stderr", "")[-500:], "passed": passed,
            "status": "pass" if passed else "skip" if skipped else "fail",
            "skip_reason": output.get("reason") if skipped else None}


def reproduce(kernel: Path, patched: bool = True, work: Path | None = None, cases=None,
              large_destinations: bool = False, repeats: int = 1) -> dict:
    work = Path(work or tempfile.mkdtemp(prefix="cowahead-issue19-"))
    programs = compile_programs(work / "bin")
    runs = make_runs(programs["issue19"], patched, cases, large_destinations, repeats)
    rows, result = run_plan(kernel, Plan(runs, {}), work, cpus=2)
    out = [outcome(r) for r in rows if r.get("kind") == "repro"]
    return {"kernel_image": str(kernel), "kernel_sha256_16": image_key(kernel), "patched": patched,
            "large_destinations": large_destinations,
            "thp": LARGE_DESTINATIONS_THP if large_destinations else None, "repeats": repeats, "runs": out,
            "summary": {"runs": len(out), "passed": sum(r["passed"] for r in out),
                        "skipped": sum(r["status"] == "skip" for r in out),
                        "failed": sum(r["status"] == "fail" for r in out), "planned": len(runs)},
            "guest": guest_summary(rows, result)}


def write_results(doc: dict, out_dir: Path, name: str = "kernel-6.12-issue19") -> Path:
    return write_dated_results(out_dir, name, {**header("kernel-issue19"), **doc})
