"""What every result file records about where it was measured: machine, kernel, THP, versions."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

THP = Path("/sys/kernel/mm/transparent_hugepage")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "?"


def thp_settings() -> dict[str, str]:
    """Every THP knob as the selected word (``madvise``), and each mTHP size's ``enabled``."""
    settings: dict[str, str] = {}
    for name in ("enabled", "defrag", "shmem_enabled", "use_zero_page"):
        settings[name] = _selected(THP / name)
    for size_dir in sorted(THP.glob("hugepages-*kB")):
        settings[f"{size_dir.name}/enabled"] = _selected(size_dir / "enabled")
    return {k: v for k, v in settings.items() if v}


def _selected(path: Path) -> str:
    text = _read(path)
    if text == "?":
        return ""
    chosen = re.search(r"\[(\w[\w+-]*)\]", text)
    return chosen.group(1) if chosen else text


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
        "thp": thp_settings(),
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
