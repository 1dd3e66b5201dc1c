"""Build Debian's linux-source-6.12 (or 6.1) with the COW-ahead patch, in a build directory outside the repository.

Steps, each skipped when already done, so a second build is incremental:
extract /usr/src/linux-source-<version>.tar.xz; apply the version's patch
(kernel/cow-ahead-6.12.patch, kernel/cow-ahead.patch for 6.1) or swap in a
newer version of it, or revert it for a stock build (the applied copy is
kept beside the tree); configure with virtme-ng's minimal config
(``vng --kconfig``) plus CONFIG_CHANGES (and for 6.12 DISTRO_DEBUG_CONFIG);
``nice -n 19 make -j bzImage`` with each build's log kept in the build
directory (``build.log`` is the latest). The image is copied to
``bzImage-cow-ahead`` or ``bzImage-stock`` beside the tree, so one tree holds
both: the 6.12 patch touches only mm/ (no header outside it), so switching
between them rebuilds mm/ alone. Kernel sources and outputs never go into the
repository.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CowaheadError

REPO_ROOT = Path(__file__).resolve().parents[3]
# Linux 6.1 (the first patch; kept until the 6.12 one has passed validation).
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TREE_NAME = "linux-source-6.1"
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

# 6.12: what distribution kernels have (THP with mTHP, soft-dirty, KSM, userfaultfd with uffd-wp,
# memcg, NUMA balancing, the interfaces upstream's mm selftests use: pagemap, debugfs, gup_test,
# hugetlbfs) and the debug options that catch the class of bug issue 19 found: DEBUG_VM,
# PAGE_TABLE_CHECK (enforced: a page mapped writable while shared is a BUG), lockdep,
# DEBUG_ATOMIC_SLEEP. THP is "always", as Debian's own config.
DISTRO_DEBUG_CONFIG = [
    "--enable", "TRANSPARENT_HUGEPAGE", "--enable", "TRANSPARENT_HUGEPAGE_ALWAYS",
    "--disable", "TRANSPARENT_HUGEPAGE_MADVISE", "--enable", "CHECKPOINT_RESTORE", "--enable", "MEM_SOFT_DIRTY",
    "--enable", "KSM", "--enable", "USERFAULTFD", "--enable", "PTE_MARKER_UFFD_WP", "--enable", "MEMCG",
    "--enable", "CGROUPS", "--enable", "NUMA", "--enable", "NUMA_BALANCING",
    "--enable", "NUMA_BALANCING_DEFAULT_ENABLED", "--enable", "MIGRATION", "--enable", "COMPACTION",
    "--enable", "PROC_PAGE_MONITOR", "--enable", "DEBUG_FS", "--enable", "GUP_TEST", "--enable", "ANON_VMA_NAME",
    "--enable", "HUGETLBFS", "--enable", "DEBUG_KERNEL", "--enable", "DEBUG_VM", "--enable", "PAGE_TABLE_CHECK",
    "--enable", "PAGE_TABLE_CHECK_ENFORCED", "--enable", "PROVE_LOCKING", "--enable", "DEBUG_SPINLOCK",
    "--enable", "DEBUG_ATOMIC_SLEEP", "--disable", "WERROR"]
# Checked in the final .config: olddefconfig drops what a dependency does not allow.
DISTRO_DEBUG_REQUIRED = ("TRANSPARENT_HUGEPAGE", "MEM_SOFT_DIRTY", "KSM", "USERFAULTFD", "PTE_MARKER_UFFD_WP",
                         "MEMCG", "NUMA_BALANCING", "DEBUG_VM", "PAGE_TABLE_CHECK", "PAGE_TABLE_CHECK_ENFORCED",
                         "PROVE_LOCKING", "GUP_TEST")


@dataclass(frozen=True)
class Source:
    """One Debian kernel source package: its tarball, the tree it unpacks to, the patch for it."""
    version: str
    tarball: Path
    tree_name: str
    patch: Path
    build_dir: Path
    config: tuple[str, ...]  # on top of CONFIG_CHANGES
    required: tuple[str, ...]  # CONFIG_ options the final .config must have =y
    absent: tuple[str, ...] = ()  # CONFIG_ options the final .config must not have =y
    variant: str = ""  # "" or "nothp": names the results files (kernel-6.12-nothp-…)

    @property
    def name(self) -> str:
        return self.version + (f"-{self.variant}" if self.variant else "")


SOURCES = {
    "6.1": Source("6.1", SOURCE_TARBALL, TREE_NAME, PATCH, DEFAULT_BUILD_DIR, (), ()),
    "6.12": Source("6.12", Path("/usr/src/linux-source-6.12.tar.xz"), "linux-source-6.12",
                   REPO_ROOT / "kernel" / "cow-ahead-6.12.patch",
                   Path(os.environ.get("COWAHEAD_KBUILD_612", Path.home() / ".cache" / "cowahead" / "kernel-6.12")),
                   tuple(DISTRO_DEBUG_CONFIG), DISTRO_DEBUG_REQUIRED),
}
# Issue 19: the reproducers run on a THP-off kernel too (finding 1 needs one: the 6.1 check that failed
# is constant 0 without THP). The same config with TRANSPARENT_HUGEPAGE off (scripts/config applies
# its arguments in order, so the later --disable wins), every debug option kept; its own build
# directory, since the config change rebuilds nearly everything (2467 of 2729 objects depend on a
# THP option through their headers).
THP_OFF_CONFIG = ("--disable", "TRANSPARENT_HUGEPAGE")
SOURCES["6.12-nothp"] = Source(
    "6.12", SOURCES["6.12"].tarball, SOURCES["6.12"].tree_name, SOURCES["6.12"].patch,
    Path(os.environ.get("COWAHEAD_KBUILD_612_NOTHP", Path.home() / ".cache" / "cowahead" / "kernel-6.12-nothp")),
    (*DISTRO_DEBUG_CONFIG, *THP_OFF_CONFIG), tuple(o for o in DISTRO_DEBUG_REQUIRED if o != "TRANSPARENT_HUGEPAGE"),
    absent=("TRANSPARENT_HUGEPAGE",), variant="nothp")
# Issue 23: instruction counts on the debug config are inflated where it adds work per lock and per page
# (lockdep, DEBUG_VM, PAGE_TABLE_CHECK), so costs are also measured on the same config without the debug
# options (the distribution config as shipped). Its own build directory: the change rebuilds everything.
DEBUG_OPTIONS = ("DEBUG_VM", "PAGE_TABLE_CHECK", "PAGE_TABLE_CHECK_ENFORCED", "PROVE_LOCKING", "DEBUG_SPINLOCK",
                 "DEBUG_ATOMIC_SLEEP", "DEBUG_LOCK_ALLOC", "LOCKDEP")
NO_DEBUG_CONFIG = tuple(arg for option in DEBUG_OPTIONS for arg in ("--disable", option))
SOURCES["6.12-nodebug"] = Source(
    "6.12", SOURCES["6.12"].tarball, SOURCES["6.12"].tree_name, SOURCES["6.12"].patch,
    Path(os.environ.get("COWAHEAD_KBUILD_612_NODEBUG", Path.home() / ".cache" / "cowahead" / "kernel-6.12-nodebug")),
    (*DISTRO_DEBUG_CONFIG, *NO_DEBUG_CONFIG), tuple(o for o in DISTRO_DEBUG_REQUIRED if o not in DEBUG_OPTIONS),
    absent=("DEBUG_VM", "PAGE_TABLE_CHECK", "PROVE_LOCKING"), variant="nodebug")
PATCHED_IMAGE = "bzImage-cow-ahead"
STOCK_IMAGE = "bzImage-stock"

WARNING = re.compile(r"\bwarning:")


@dataclass(frozen=True)
class BuildResult:
    tree: Path
    bzimage: Path
    log: Path
    seconds: float
    warnings: list[str]  # compiler warning lines in this build's log


def source_of(version: str, thp_off: bool = False, no_debug: bool = False) -> Source:
    if version not in SOURCES or SOURCES[version].variant:
        raise CowaheadError(f"kernel source '{version}' is not one of {', '.join(VERSIONS)}")
    if thp_off and no_debug:
        raise CowaheadError("--thp-off and --no-debug are separate configurations; choose one")
    if no_debug:
        if f"{version}-nodebug" not in SOURCES:
            raise CowaheadError("--no-debug is for 6.12 only")
        return SOURCES[f"{version}-nodebug"]
    if thp_off:
        if f"{version}-nothp" not in SOURCES:
            raise CowaheadError("--thp-off is for 6.12 only (6.1's config has THP off already)")
        return SOURCES[f"{version}-nothp"]
    return SOURCES[version]


VERSIONS = tuple(name for name, source in SOURCES.items() if not source.variant)


def tree_of(build_dir: Path, source: Source = SOURCES["6.1"]) -> Path:
    return Path(build_dir) / source.tree_name


SOURCE_MARK = "cowahead.source"
APPLIED_PATCH = "applied.patch"  # beside the tree: the patch the tree has now (absent: stock)


def extract(build_dir: Path, source: Source = SOURCES["6.1"]) -> Path:
    """The tree unpacked from the tarball that is installed now.

    A tree from another tarball (Debian's security updates replace linux-source-6.12 in place:
    6.12.117 became 6.12.118) is removed and unpacked afresh, so an image is never a silent mix."""
    build_dir = Path(build_dir)
    tree = tree_of(build_dir, source)
    if not source.tarball.exists():
        raise CowaheadError(f"{source.tarball} is missing; install Debian's linux-source-{source.version} "
                            "(scripts/setup)")
    mark = build_dir / SOURCE_MARK
    wanted = f"{source.tarball} sha256 {_sha256(source.tarball)}\n"
    if (tree / "Makefile").exists() and mark.exists() and mark.read_text() == wanted:
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    build_dir.mkdir(parents=True, exist_ok=True)
    _run(["tar", "xf", str(source.tarball), "-C", str(build_dir)], "extracting the kernel source")
    for stale in (CONFIGURED_MARK, APPLIED_PATCH):
        (build_dir / stale).unlink(missing_ok=True)
    mark.write_text(wanted)
    return tree


def image_key(kernel: Path) -> str:
    """An image's identity in results files and the selftest cache: its sha256, 16 hex digits."""
    return _sha256(kernel)[:16]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def patched_files(patch_text: str) -> list[str]:
    return [line[len("+++ b/"):].split("\t")[0] for line in patch_text.splitlines() if line.startswith("+++ b/")]


def apply_patch(tree: Path, patch: Path = PATCH) -> bool:
    """Bring the tree to exactly ``patch``; returns whether anything changed.

    Swapping one version of the patch for another reverts and re-applies it; files that come out
    the same get their old modification time back, so make rebuilds only what really changed
    (a touched mm_types.h alone would rebuild most of the kernel).
    """
    applied = tree.parent / APPLIED_PATCH
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
    # A patch that does not apply must leave the tree as it is, not half patched with .rej files.
    ok, output = patch_applies(tree, patch)
    if not ok:
        raise CowaheadError(f"{patch.name} does not apply to {tree}: {(output.strip().splitlines() or ['no output'])[-1]}")
    _run(["patch", "-p1", "-s", "-i", str(patch)], f"applying {patch.name}", cwd=tree)
    applied.write_bytes(wanted)
    for name, (content, mtime_ns) in before.items():
        path = tree / name
        if path.exists() and path.read_bytes() == content:
            os.utime(path, ns=(mtime_ns, mtime_ns))
    return True


def revert_patch(tree: Path) -> bool:
    """Bring the tree back to stock; files the patch did not change keep their modification time."""
    applied = tree.parent / APPLIED_PATCH
    if not applied.exists():
        return False
    _run(["patch", "-p1", "-R", "-s", "-i", str(applied)], "reverting the applied patch", cwd=tree)
    applied.unlink()
    return True


def patch_applies(tree: Path, patch: Path = PATCH) -> tuple[bool, str]:
    """Does ``patch -p1 --dry-run`` accept the patch in this pristine tree?"""
    done = subprocess.run(["patch", "-p1", "--dry-run", "-i", str(patch)], cwd=tree, capture_output=True, text=True)
    return done.returncode == 0, done.stdout + done.stderr


def missing_config(config_text: str, required) -> list[str]:
    """The options of ``required`` that the .config text does not have =y."""
    have = set(re.findall(r"^CONFIG_(\w+)=y$", config_text, re.M))
    return [name for name in required if name not in have]


def unwanted_config(config_text: str, absent) -> list[str]:
    """The options of ``absent`` that the .config text has =y or =m."""
    have = set(re.findall(r"^CONFIG_(\w+)=[ym]$", config_text, re.M))
    return [name for name in absent if name in have]


def configure(tree: Path, source: Source = SOURCES["6.1"]) -> None:
    """virtme-ng's minimal config plus CONFIG_CHANGES and the source's own; once per tree (a mark file)."""
    mark = tree.parent / CONFIGURED_MARK
    if mark.exists() and (tree / ".config").exists():
        return
    env = _tool_env()
    changes = [*CONFIG_CHANGES, *source.config]
    _run(["vng", "--kconfig"], "configuring with vng --kconfig", cwd=tree, env=env)
    _run(["./scripts/config", *changes], "adjusting the config", cwd=tree)
    _run(["make", "olddefconfig"], "make olddefconfig", cwd=tree, env=env)
    config = (tree / ".config").read_text()
    missing = missing_config(config, ("DEBUG_INFO_NONE", "VM_EVENT_COUNTERS", *source.required))
    if missing:
        raise CowaheadError(f"{tree}/.config did not take the cowahead settings: {', '.join(missing)} not =y")
    unwanted = unwanted_config(config, source.absent)
    if unwanted:
        raise CowaheadError(f"{tree}/.config did not take the cowahead settings: {', '.join(unwanted)} still on")
    mark.write_text("vng --kconfig; scripts/config " + " ".join(changes) + "; make olddefconfig\n")


def build(build_dir: Path | None = None, patch: Path | None = None, jobs: int | None = None,
          source: Source = SOURCES["6.1"], stock: bool = False) -> BuildResult:
    """Extract, patch (or, ``stock``, revert), configure and build bzImage; the log goes to BUILD_DIR/build.log.

    ``patch``: default the source's own (kernel/cow-ahead-6.12.patch for 6.12).

    The image is copied to BUILD_DIR/bzImage-cow-ahead (or bzImage-stock).
    """
    build_dir = Path(build_dir or source.build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / "build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CowaheadError(f"another cowahead build holds {build_dir}/build.lock") from None
        return _build_locked(build_dir, patch or source.patch, jobs, source, stock)


def _build_locked(build_dir: Path, patch: Path, jobs: int | None, source: Source, stock: bool) -> BuildResult:
    tree = extract(build_dir, source)
    if stock:
        revert_patch(tree)
    else:
        apply_patch(tree, patch)
    configure(tree, source)
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
                              stderr=subprocess.STDOUT, env=_make_env())
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        tail = "; ".join(text.strip().splitlines()[-3:])
        raise CowaheadError(f"kernel build failed (log {log}): {tail}")
    warnings = [line for line in text.splitlines() if WARNING.search(line)]
    image = build_dir / (STOCK_IMAGE if stock else PATCHED_IMAGE)
    shutil.copyfile(tree / "arch/x86/boot/bzImage", image)
    return BuildResult(tree, image, log, seconds, warnings)


def built_kernel(build_dir: Path | None = None, source: Source = SOURCES["6.1"]) -> Path | None:
    """The patched image: BUILD_DIR/bzImage-cow-ahead, else (6.1 build directories) the tree's own."""
    build_dir = Path(build_dir or source.build_dir)
    for image in (build_dir / PATCHED_IMAGE, tree_of(build_dir, source) / "arch/x86/boot/bzImage"):
        if image.exists():
            return image
    return None


def stock_built(build_dir: Path | None = None, source: Source = SOURCES["6.12"]) -> Path | None:
    """The same tree built without the patch (``cowahead kernel build --stock``), if it was."""
    image = Path(build_dir or source.build_dir) / STOCK_IMAGE
    return image if image.exists() else None


# The kernel's reproducible-build variables (Documentation/kbuild/reproducible-builds.rst): with them,
# the same tree, config, compiler and build path give the same bzImage, so an image's sha256 (the
# selftest cache's key, image_key) means the same kernel in a later session, on a fresh
# machine, and committed results can seed that session's cache instead of hours of TCG boots.
REPRODUCIBLE_ENV = {"KBUILD_BUILD_TIMESTAMP": "Tue Dec  1 00:00:00 UTC 2026", "KBUILD_BUILD_USER": "cowahead",
                    "KBUILD_BUILD_HOST": "cowahead", "KBUILD_BUILD_VERSION": "1"}


def _make_env() -> dict[str, str]:
    return {**_tool_env(), **REPRODUCIBLE_ENV}


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _run(args: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CowaheadError(f"{what} failed: {detail[0]}")
