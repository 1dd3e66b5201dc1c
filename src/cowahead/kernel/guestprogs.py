"""The C programs the guest runs (guest/*.c), compiled on the host: the guest sees the host's files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import CowaheadError

SOURCE_DIR = Path(__file__).with_name("guest")
PROGRAMS = ("cow_workload", "vmsplice_leak", "issue19", "copy_loop")
INGUEST = Path(__file__).with_name("inguest.py")
INTEGRITY = SOURCE_DIR / "cow_integrity.py"  # Python with numpy: the guest runs the host's venv


def compile_programs(out_dir: Path) -> dict[str, Path]:
    """gcc -O2 each program into ``out_dir`` (rebuilt when a source is newer); name → executable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in PROGRAMS:
        source = SOURCE_DIR / f"{name}.c"
        binary = out_dir / name
        newest = max(source.stat().st_mtime, (SOURCE_DIR / "common.h").stat().st_mtime)
        if not binary.exists() or binary.stat().st_mtime < newest:
            done = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise CowaheadError(f"compiling {source.name} failed: {done.stderr.strip().splitlines()[-1:]}")
        built[name] = binary
    return built
