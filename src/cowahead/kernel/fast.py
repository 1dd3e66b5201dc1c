"""Issue 19's fast guest suite, for CI: build the patched 6.12 kernel if needed, then one boot runs

- page for page against the model at windows 0 and 16 under every policy (validate.make_plan),
- upstream's ``cow`` selftest at fixed:16, and at window 0 in the same boot (what it must equal),
- the six findings' reproducers (repro.CASES, every setting),

with the kernel log checked after each run and after the boot (inguest.py, vm.guest_script).

The build is cached outside the clone (kbuild's 6.12 build directory, ``COWAHEAD_KBUILD_612``); a
patched image built there from exactly this patch is used as it is, otherwise ``kbuild.build``
brings the tree to this patch (incremental where a tree exists, a full build on a fresh machine).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from .guestprogs import compile_programs
from .kbuild import APPLIED_PATCH, PATCHED_IMAGE, SOURCES, Source, build, tree_of
from .repro import make_runs as repro_runs
from .repro import outcome
from .selftests import build_selftests, make_runs as selftest_runs, record
from .validate import Plan, compare, guest_summary, make_plan, run_plan

WINDOWS = (0, 16)
COW_SETTINGS = [("fixed", 0), ("fixed", 16)]
GUEST_TIMEOUT_S = 3600


def current_image(build_dir: Path, source: Source) -> Path | None:
    """The patched image in ``build_dir`` if it was built from exactly ``source.patch``, else None."""
    image, applied = build_dir / PATCHED_IMAGE, build_dir / APPLIED_PATCH
    if image.exists() and applied.exists() and applied.read_bytes() == source.patch.read_bytes() \
            and image.stat().st_mtime >= applied.stat().st_mtime:
        return image
    return None


def ensure_kernel(source: Source = SOURCES["6.12"], build_dir: Path | None = None, log=print) -> dict:
    """The patched image to test and how it was had: reused, or built (with the build's seconds)."""
    build_dir = Path(build_dir or source.build_dir)
    image = current_image(build_dir, source)
    if image is not None:
        return {"image": image, "built": False, "build_dir": str(build_dir)}
    log(f"building the patched kernel in {build_dir} (nice -n 19; a full build on a fresh machine) …")
    result = build(build_dir, source=source)
    return {"image": result.bzimage, "built": True, "build_dir": str(build_dir),
            "build_seconds": round(result.seconds, 1), "build_log": str(result.log),
            "warnings": result.warnings}


def fast_plan(work: Path, cow_binary: Path) -> Plan:
    programs = compile_programs(work / "bin")
    plan = make_plan(work, programs, windows=WINDOWS, leak=False)
    cow = selftest_runs({"cow": cow_binary}, True, ["cow"], settings=COW_SETTINGS)
    return Plan(plan.runs + cow + repro_runs(programs["issue19"]), plan.traces)


def free_gib(*paths: Path) -> dict[str, float]:
    """Free disk space where the guest's status file (the temp dir) and the build live: a full disk
    loses vng's status file, which it reports as 255 with nothing on stderr."""
    return {str(p): round(shutil.disk_usage(p).free / 2**30, 2) for p in paths}


def run_fast(source: Source = SOURCES["6.12"], build_dir: Path | None = None, log=print) -> dict:
    build_dir = Path(build_dir or source.build_dir)
    start = time.monotonic()
    kernel = ensure_kernel(source, build_dir, log)
    binaries = build_selftests(tree_of(build_dir, source), build_dir / "selftests-mm", ["cow"])
    work = Path(tempfile.mkdtemp(prefix="cowahead-fast-"))
    plan = fast_plan(work, binaries["cow"])
    log(f"one boot of {kernel['image']}: {len(plan.runs)} runs …")
    disk = (Path(tempfile.gettempdir()), build_dir)
    disk_before = free_gib(*disk)
    rows, result = run_plan(kernel["image"], plan, work, cpus=2, timeout=GUEST_TIMEOUT_S)
    doc = {"kernel": {k: str(v) if isinstance(v, Path) else v for k, v in kernel.items()},
           "planned": len(plan.runs), "rows_back": sum(r.get("kind") != "boot-dmesg" for r in rows),
           "validation": compare(rows, plan.traces),
           "cow": [record(r) for r in rows if r.get("kind") == "selftest"],
           "reproducers": [outcome(r) for r in rows if r.get("kind") == "repro"],
           "guest": {**guest_summary(rows, result), "disk_free_gib_before": disk_before,
                     "disk_free_gib_after": free_gib(*disk)}}
    doc["seconds"] = round(time.monotonic() - start, 1)
    # The last run's document beside the build (outside the clone): what CI saw and how long it took.
    (build_dir / "fast-suite.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return doc
