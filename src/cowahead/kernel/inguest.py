"""Runs inside the guest: a plan of runs, each with its COW-ahead setting; one JSON line per run.

``python -m cowahead.kernel.inguest PLAN.json`` — the host writes the plan, boots
the kernel once and reads back the lines that start with ``RESULT``. Standard
library only, so that it runs with whatever the guest's Python can import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SYSCTL_PAGES = Path("/proc/sys/vm/cow_ahead_pages")
SYSCTL_POLICY = Path("/proc/sys/vm/cow_ahead_policy")
MARK = "RESULT "


def set_cow_ahead(policy: str | None, pages: int | None) -> None:
    if policy is not None:
        SYSCTL_POLICY.write_text(policy)
    if pages is not None:
        SYSCTL_PAGES.write_text(str(pages))


def run_one(run: dict) -> dict:
    out = dict(run)
    try:
        set_cow_ahead(run.get("policy"), run.get("window"))
    except OSError as e:
        out.update(error=f"cannot set COW-ahead sysctls: {e}")
        return out
    try:
        done = subprocess.run(run["argv"], capture_output=True, text=True, timeout=run.get("timeout", 600))
    except subprocess.TimeoutExpired:
        out.update(error="timed out")
        return out
    finally:
        if SYSCTL_PAGES.exists():
            SYSCTL_PAGES.write_text("0")
    out["returncode"] = done.returncode
    out["stderr"] = done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if lines:
        out["output"] = json.loads(lines[-1])
    return out


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[1]).read_text())
    for run in plan["runs"]:
        print(MARK + json.dumps(run_one(run)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
