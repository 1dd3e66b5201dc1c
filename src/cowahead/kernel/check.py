"""``cowahead kernel check``: build, boot, validate, security, measure; one versioned JSON document."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

from ..output import write_atomically
from ..results.header import header
from .kbuild import REPO_ROOT, SOURCES, Source, build, built_kernel
from .validate import integrity, measure, validate
from .vm import run_in_guest, vng_path

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def _version(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def metadata(kernel: Path, patch: Path = SOURCES["6.1"].patch) -> dict:
    return {**header("kernel-check"), "kernel_image": str(kernel), "patch": str(patch),
            "patch_sha256": hashlib.sha256(patch.read_bytes()).hexdigest(),
            "vng": _version([vng_path(), "--version"]),
            "qemu": _version(["qemu-system-x86_64", "--version"])}


def check(build_dir: Path, skip_build: bool = False, out_dir: Path = RESULTS_DIR, log=print,
          source: Source = SOURCES["6.1"], skip_measure: bool = False) -> Path:
    """Every step records its outcome in the document even when a later one fails."""
    doc: dict = {"source": source.version}
    if skip_build:
        kernel = built_kernel(build_dir, source)
        doc["build"] = {"skipped": True}
    else:
        log("building the patched kernel (nice -n 19) …")
        result = build(build_dir, source=source)
        kernel = result.bzimage
        doc["build"] = {"seconds": round(result.seconds, 1), "log": str(result.log), "warnings": result.warnings}
    if kernel is None:
        raise FileNotFoundError(f"no built kernel in {build_dir}")
    doc.update(metadata(kernel, source.patch))
    log("booting it under TCG …")
    boot = run_in_guest(kernel, ["sh", "-c", "uname -r; cat /proc/sys/vm/cow_ahead_pages /proc/sys/vm/cow_ahead_policy;"
                                             " grep -E '^cow_' /proc/vmstat; cat /proc/cow_ahead_stat 2>/dev/null; true"])
    doc["boot"] = {"returncode": boot.returncode, "seconds": round(boot.seconds, 1), "stdout": boot.stdout,
                   "dmesg": boot.dmesg_problems}
    log("validating against the model and running the vmsplice check …")
    validated = validate(kernel)
    validated["validation_guest"] = validated.pop("guest")
    doc.update(validated)
    log("COW integrity on two vCPUs under every policy …")
    doc["integrity"] = integrity(kernel)
    if skip_measure:
        doc["measure"] = {"skipped": True, "guest": {"dmesg_clean": True}}
    else:
        log("measuring under -icount shift=0 …")
        doc["measure"] = measure(kernel)
    doc["summary"] = {
        "validation_runs": len(doc["validation"]),
        "validation_matches": sum(1 for r in doc["validation"] if r.get("match")),
        "validation_raw_runs": sum(len(r.get("kernel_runs", [])) for r in doc["validation"]),
        "validation_raw_runs_matching": sum(run == r["model"] for r in doc["validation"]
                                            for run in r.get("kernel_runs", [])),
        "security_runs": len(doc["security"]), "security_safe": sum(1 for r in doc["security"] if r["safe"]),
        "integrity_runs": len(doc["integrity"]["integrity"]),
        "integrity_ok": sum(1 for r in doc["integrity"]["integrity"] if r["ok"]),
        "dmesg_clean": (not doc["boot"]["dmesg"] and doc["validation_guest"]["dmesg_clean"]
                        and doc["integrity"]["guest"]["dmesg_clean"] and doc["measure"]["guest"]["dmesg_clean"]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = "kernel" if source.version == "6.1" else f"kernel-{source.version}"
    path = out_dir / f"{prefix}-{dt.date.today().isoformat()}.json"
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    return path
