"""Runs inside the guest: a plan of runs, each with its COW-ahead setting; one JSON line per run.

``python -m cowahead.kernel.inguest PLAN.json`` — the host writes the plan, boots
the kernel once and reads back the lines that start with ``RESULT``. Standard
library only, so that it runs with whatever the guest's Python can import.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

SYSCTL_PAGES = Path("/proc/sys/vm/cow_ahead_pages")
SYSCTL_POLICY = Path("/proc/sys/vm/cow_ahead_policy")
SYSCTL_LARGE = Path("/proc/sys/vm/cow_ahead_large_destinations")  # issue 23; absent before it
THP = Path("/sys/kernel/mm/transparent_hugepage")
MARK = "RESULT "
STDOUT_KEPT = 200_000
# As vm.DMESG_PROBLEM (this file imports nothing from the package): kernel log lines that fail a run.
DMESG_PROBLEM = re.compile(r"BUG|WARNING|Bad page|Oops|general protection|Call Trace")


def dmesg_new_problems() -> list[str]:
    """Problem lines logged since the last call (dmesg -c reads and clears); [] if dmesg cannot run."""
    try:
        done = subprocess.run(["dmesg", "-c"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ["cowahead: dmesg could not be read"]
    return [line for line in done.stdout.splitlines() if DMESG_PROBLEM.search(line)]


def set_cow_ahead(policy: str | None, pages: int | None, large: int | None = None) -> None:
    """``large``: vm.cow_ahead_large_destinations; a run that asks for 1 on a kernel without it fails."""
    if policy is not None:
        SYSCTL_POLICY.write_text(policy)
    if large is not None and (large or SYSCTL_LARGE.exists()):
        SYSCTL_LARGE.write_text(str(large))
    if pages is not None:
        SYSCTL_PAGES.write_text(str(pages))


def thp_word(key: str) -> str:
    """A THP knob's current word: the bracketed one of "always [madvise] never", else the whole text."""
    text = (THP / key).read_text().strip()
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else text


def set_thp(knobs: dict) -> dict:
    """Set each knob (key under THP, word); returns what each reads afterwards."""
    for key, word in knobs.items():
        (THP / key).write_text(word)
    return {key: thp_word(key) for key in knobs}


def accepted_policies(candidates: list[str]) -> list[str]:
    """The policies this kernel's vm.cow_ahead_policy takes (written one by one; the first is left set)."""
    if not SYSCTL_POLICY.exists():
        return []
    accepted = []
    for policy in candidates:
        try:
            SYSCTL_POLICY.write_text(policy)
        except OSError:
            continue
        if SYSCTL_POLICY.read_text().strip() == policy:
            accepted.append(policy)
    if accepted:
        SYSCTL_POLICY.write_text(accepted[0])
    return accepted


def run_one(run: dict, accepted: list[str] | None = None) -> dict:
    out = dict(run)
    if accepted is not None and run.get("policy") is not None and run["policy"] not in accepted:
        out.update(error="policy not in this kernel", accepted_policies=accepted)
        return out
    saved = None
    try:
        if run.get("thp"):  # this run's THP knobs, restored after it
            saved = {key: thp_word(key) for key in run["thp"]}
            out["thp_set"] = set_thp(run["thp"])
        set_cow_ahead(run.get("policy"), run.get("window"), run.get("large_destinations"))
    except OSError as e:
        out.update(error=f"cannot set COW-ahead sysctls or THP knobs: {e}")
        if saved:
            set_thp(saved)
        return out
    start = time.monotonic()
    try:
        done = subprocess.run(run["argv"], capture_output=True, text=True, timeout=run.get("timeout", 600),
                              cwd=run.get("cwd"))
    except subprocess.TimeoutExpired as e:
        out.update(error="timed out")
        if run.get("raw_stdout"):
            partial = e.stdout or ""
            out["stdout"] = (partial.decode(errors="replace") if isinstance(partial, bytes) else partial)[-STDOUT_KEPT:]
        return out
    finally:
        if SYSCTL_PAGES.exists():
            SYSCTL_PAGES.write_text("0")
        if SYSCTL_LARGE.exists():
            SYSCTL_LARGE.write_text("0")
        if saved:
            set_thp(saved)
        out["seconds"] = round(time.monotonic() - start, 1)
        out["dmesg"] = dmesg_new_problems()
    out["returncode"] = done.returncode
    out["stderr"] = done.stderr[-2000:]
    if run.get("raw_stdout"):  # e.g. a selftest's TAP lines
        out["stdout"] = done.stdout[-STDOUT_KEPT:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if lines:
        out["output"] = json.loads(lines[-1])
    return out


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[1]).read_text())
    if plan.get("khugepaged_sleep_ms"):  # no collapse behind a run's back
        (THP / "khugepaged/scan_sleep_millisecs").write_text(str(plan["khugepaged_sleep_ms"]))
    boot = dmesg_new_problems()  # what boot logged, kept apart from the first run
    if boot:
        print(MARK + json.dumps({"kind": "boot-dmesg", "dmesg": boot}), flush=True)
    accepted = None
    if plan.get("probe_policies"):  # which of these the kernel has (a policy added later is found here)
        accepted = accepted_policies(plan["probe_policies"])
        print(MARK + json.dumps({"kind": "policies", "probed": plan["probe_policies"], "accepted": accepted}),
              flush=True)
    for run in plan["runs"]:
        print(MARK + json.dumps(run_one(run, accepted)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
