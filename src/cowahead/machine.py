"""What every result file records about where it was measured: machine, kernel, THP, versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

THP = Path("/sys/kernel/mm/transparent_hugepage")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "?"


def machine_metadata() -> dict:
    """Machine, kernel and THP/mTHP settings (where mTHP is on, one fault maps a whole folio)."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read(Path("/proc/cpuinfo")).splitlines()
                if line.startswith("model name")), "?")
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "python": platform.python_version(),
        "thp_enabled": _read(THP / "enabled"),
        "thp_defrag": _read(THP / "defrag"),
        "mthp_enabled": {p.name: _read(p / "enabled") for p in sorted(THP.glob("hugepages-*"))},
        "euid": os.geteuid(),
        "load_average": os.getloadavg(),
    }


def package_versions(names: list[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
