"""Build Debian's linux-source-6.1 with the COW-ahead patch, in a build directory outside the repository.

Steps, each skipped when already done, so a second build is incremental:
extract /usr/src/linux-source-6.1.tar.xz; apply kernel/cow-ahead.patch (or
swap in a newer version of it: the applied copy is kept beside the tree);
configure with virtme-ng's minimal config (``vng --kconfig``) plus
CONFIG_CHANGES; ``nice -n 19 make -j bzImage`` with each build's log kept in
the build directory (``build.log`` is the latest). Kernel sources and outputs never go into the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CowaheadError

SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TREE_NAME = "linux-source-6.1"
REPO_ROOT = Path(__file__).resolve().parents[3]
PATCH = REPO_ROOT / "kernel" / "cow-ahead.patch"
DEFAULT_BUILD_DIR = Path(os.environ.get("COWAHEAD_KBUILD", Path.home() / ".cache" / "cowahead" / "kernel"))

# On top of `vng --kconfig`, through scripts/config then `make olddefconfig` (vng's own defaults
# win over a --config fragment for these): no debug info, since the link is much faster and
# nothing here needs it; perf events, sysctls and vm event counters, which the check relies on.
CONFIG_CHANGES = ["--disable", "DEBUG_INFO", "--enable", "DEBUG_INFO_NONE",
                  "--disable", "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT", "--disable", "DEBUG_INFO_DWARF4",
                  "--disable", "DEBUG_INFO_DWARF5", "--enable", "PERF_EVENTS", "--enable", "PROC_SYSCTL",
                  "--enable", "VM_EVENT_COUNTERS"]
CONFIGURED_MARK = "cowahead.configured"

WARNING = re.compile(r"\bwarning:")


@dataclass(frozen=True)
class BuildResult:
    tree: Path
    bzimage: Path
    log: Path
    seconds: float
    warnings: list[str]  # compiler warning lines in this build's log


def tree_of(build_dir: Path) -> Path:
    return Path(build_dir) / TREE_NAME


def extract(build_dir: Path) -> Path:
    tree = tree_of(build_dir)
    if (tree / "Makefile").exists():
        return tree
    if not SOURCE_TARBALL.exists():
        raise CowaheadError(f"{SOURCE_TARBALL} is missing; install Debian's linux-source-6.1 (scripts/setup)")
    build_dir.mkdir(parents=True, exist_ok=True)
    _run(["tar", "xf", str(SOURCE_TARBALL), "-C", str(build_dir)], "extracting the kernel source")
    return tree


def patched_files(patch_text: str) -> list[str]:
    return [line[len("+++ b/"):].split("\t")[0] for line in patch_text.splitlines() if line.startswith("+++ b/")]


def apply_patch(tree: Path, patch: Path = PATCH) -> bool:
    """Bring the tree to exactly ``patch``; returns whether anything changed.

    Swapping one version of the patch for another reverts and re-applies it; files that come out
    the same get their old modification time back, so make rebuilds only what really changed
    (a touched mm_types.h alone would rebuild most of the kernel).
    """
    applied = tree.parent / "applied.patch"
    wanted = patch.read_bytes()
    before: dict[str, tuple[bytes, int]] = {}
    if applied.exists():
        if applied.read_bytes() == wanted:
            return False
        for name in set(patched_files(applied.read_text())) | set(patched_files(wanted.decode())):
            path = tree / name
            if path.exists():
                before[name] = (path.read_bytes(), path.stat().st_mtime_ns)
        _run(["patch", "-p1", "-R", "-s", "-i", str(applied)], "reverting the previously applied patch", cwd=tree)
        applied.unlink()
    _run(["patch", "-p1", "-s", "-i", str(patch)], f"applying {patch.name}", cwd=tree)
    applied.write_bytes(wanted)
    for name, (content, mtime_ns) in before.items():
        path = tree / name
        if path.exists() and path.read_bytes() == content:
            os.utime(path, ns=(mtime_ns, mtime_ns))
    return True


def patch_applies(tree: Path, patch: Path = PATCH) -> tuple[bool, str]:
    """Does ``patch -p1 --dry-run`` accept the patch in this pristine tree?"""
    done = subprocess.run(["patch", "-p1", "--dry-run", "-i", str(patch)], cwd=tree, capture_output=True, text=True)
    return done.returncode == 0, done.stdout + done.stderr


def configure(tree: Path) -> None:
    """virtme-ng's minimal config plus CONFIG_CHANGES; done once per tree (a mark file says so)."""
    mark = tree.parent / CONFIGURED_MARK
    if mark.exists() and (tree / ".config").exists():
        return
    env = _tool_env()
    _run(["vng", "--kconfig"], "configuring with vng --kconfig", cwd=tree, env=env)
    _run(["./scripts/config", *CONFIG_CHANGES], "adjusting the config", cwd=tree)
    _run(["make", "olddefconfig"], "make olddefconfig", cwd=tree, env=env)
    config = (tree / ".config").read_text()
    if "CONFIG_DEBUG_INFO_NONE=y" not in config or "CONFIG_VM_EVENT_COUNTERS=y" not in config:
        raise CowaheadError(f"{tree}/.config did not take the cowahead settings")
    mark.write_text("vng --kconfig; scripts/config " + " ".join(CONFIG_CHANGES) + "; make olddefconfig\n")


def build(build_dir: Path = DEFAULT_BUILD_DIR, patch: Path = PATCH, jobs: int | None = None) -> BuildResult:
    """Extract, patch, configure and build bzImage; the log goes to BUILD_DIR/build.log."""
    build_dir = Path(build_dir)
    tree = extract(build_dir)
    apply_patch(tree, patch)
    configure(tree)
    # Every build keeps its own log (an incremental one would hide a full one's warnings);
    # build.log points at the latest.
    log = build_dir / time.strftime("build-%Y%m%dT%H%M%S.log", time.gmtime())
    latest = build_dir / "build.log"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(log.name)
    jobs = jobs or os.cpu_count() or 1
    start = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(["nice", "-n", "19", "make", f"-j{jobs}", "bzImage"], cwd=tree, stdout=out,
                              stderr=subprocess.STDOUT, env=_tool_env())
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        tail = "; ".join(text.strip().splitlines()[-3:])
        raise CowaheadError(f"kernel build failed (log {log}): {tail}")
    warnings = [line for line in text.splitlines() if WARNING.search(line)]
    return BuildResult(tree, tree / "arch/x86/boot/bzImage", log, seconds, warnings)


def built_kernel(build_dir: Path = DEFAULT_BUILD_DIR) -> Path | None:
    image = tree_of(build_dir) / "arch/x86/boot/bzImage"
    return image if image.exists() else None


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _run(args: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CowaheadError(f"{what} failed: {detail[0]}")
