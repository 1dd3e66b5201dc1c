"""The results document ``evaluate`` writes and ``report`` reads: versioned JSON with metadata."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import CowaheadError
from ..output import write_atomically
from ..machine import machine_metadata, package_versions

PACKAGES = ["cowahead", "numpy", "numba", "pyarrow", "matplotlib"]
FORMAT = "cowahead-results"
VERSION = 1


def new_results(costs: dict) -> dict:
    return {"format": FORMAT, "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["cowahead", *sys.argv[1:]]),
            "machine": machine_metadata(),
            "versions": {"python": sys.version.split()[0], **package_versions(PACKAGES)},
            "costs": costs, "workloads": []}


def save_results(results: dict, path: Path) -> None:
    """Atomic: a reader never sees half a file."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))


def load_results(path: Path) -> dict:
    try:
        results = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CowaheadError(f"{path}: no such results file; make one with `cowahead evaluate -o DIR`") from None
    except (OSError, ValueError) as e:
        raise CowaheadError(f"{path}: not a readable results file ({e.__class__.__name__})") from None
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise CowaheadError(f"{path}: not a cowahead results file (format is not {FORMAT})")
    if results.get("version") != VERSION:
        raise CowaheadError(f"{path}: results version {results.get('version')}, this cowahead reads {VERSION}")
    return results
