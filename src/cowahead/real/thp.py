"""The THP and mTHP knobs under /sys/kernel/mm/transparent_hugepage/: set them for a while, then put them back.

Reading is ``machine.thp_settings()`` (what every result file records);
this module adds writing. ``thp_config(...)`` snapshots every writable
knob, applies the new values and restores every knob that changed in its
``finally`` — on an exception, on KeyboardInterrupt, and on SIGTERM, which
it turns into the exception ``Terminated`` while inside (the old handler is
put back afterwards). The knobs are global: whatever else runs on the
machine meanwhile sees them too, so keep the ``with`` block short.

Knob names are the paths under the THP directory, as ``thp_settings()``
names them: ``enabled``, ``defrag``, ``use_zero_page``,
``hugepages-64kB/enabled``. An mTHP size is named as the kernel names its
directory without the prefix: ``"64kB"``, ``"2048kB"``. A size's
``inherit`` follows the top-level ``enabled`` (Documentation/admin-guide/mm/transhuge.rst).

The named configurations of issue 18 are data (``CONFIGS``); each one says
what every anonymous mTHP size is, so it means the same whatever the
machine's settings were before.

Counters: ``thp_counters()`` reads /proc/vmstat's ``thp_*`` lines and every
size's ``stats/`` files, so an experiment can report what it allocated,
split and fell back on (``anon_fault_fallback``: a large folio could not be
allocated and a smaller order was used) instead of silently mismatching.
They are global too: another process's faults count in them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CowaheadError
from ..machine import THP, _selected, thp_settings

VMSTAT = Path("/proc/vmstat")


class Terminated(SystemExit):
    """SIGTERM inside ``thp_config``: unwinds the stack (restoring the knobs) and, uncaught, exits 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


# ----- reading --------------------------------------------------------------------------------


def anon_sizes() -> list[str]:
    """The mTHP sizes this kernel offers for anonymous memory, smallest first (``["16kB", ..., "2048kB"]``).

    A size directory without ``enabled`` (8kB on x86-64: order 1 is not
    allowed for anonymous folios) is a shmem-only size and is left out.
    """
    sizes = [d.name.removeprefix("hugepages-") for d in THP.glob("hugepages-*kB") if (d / "enabled").exists()]
    return sorted(sizes, key=lambda s: int(s.removesuffix("kB")))


def knob_snapshot() -> dict[str, str]:
    """Every writable knob's value: ``thp_settings()`` and the ones it leaves out (per-size shmem, khugepaged)."""
    snapshot = thp_settings()
    for path in sorted(THP.rglob("*")):
        if path.is_file() and "stats" not in path.parts and os.stat(path).st_mode & 0o200:
            value = _selected(path)
            if value:
                snapshot.setdefault(str(path.relative_to(THP)), value)
    return snapshot


def thp_counters() -> dict[str, int]:
    """/proc/vmstat's ``thp_*`` counters, every size's ``hugepages-*/stats/*`` (e.g. ``64kB/anon_fault_alloc``),
    and khugepaged's ``pages_collapsed`` and ``full_scans`` (did it collapse something meanwhile?)."""
    counters: dict[str, int] = {}
    for name in ("pages_collapsed", "full_scans"):
        counters[f"khugepaged/{name}"] = int((THP / "khugepaged" / name).read_text())
    for line in VMSTAT.read_text().splitlines():
        name, value = line.split()
        if name.startswith("thp_"):
            counters[name] = int(value)
    for stats in sorted(THP.glob("hugepages-*kB/stats")):
        size = stats.parent.name.removeprefix("hugepages-")
        for path in sorted(stats.iterdir()):
            counters[f"{size}/{path.name}"] = int(path.read_text())
    return counters


def counter_deltas(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """The counters that moved, ``after - before``."""
    return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}


# ----- the named configurations of issue 18 --------------------------------------------------


@dataclass(frozen=True)
class ThpConfig:
    """Values for some knobs; ``None`` leaves a knob as found.

    ``mthp`` maps a size ("64kB") to its ``enabled`` word; ``other_sizes``,
    when set, is the word for every anonymous size ``mthp`` does not name;
    ``khugepaged`` maps a knob of ``khugepaged/`` ("scan_sleep_millisecs")
    to its value.
    """
    name: str
    description: str
    enabled: str | None = None
    defrag: str | None = None
    use_zero_page: int | None = None
    mthp: Mapping[str, str] = field(default_factory=dict)
    other_sizes: str | None = None
    khugepaged: Mapping[str, str] = field(default_factory=dict)

    def knobs(self) -> dict[str, str]:
        """The knob → value writes this configuration asks for, as ``knob_snapshot()`` names them."""
        wanted: dict[str, str] = {}
        if self.enabled is not None:
            wanted["enabled"] = self.enabled
        if self.defrag is not None:
            wanted["defrag"] = self.defrag
        if self.use_zero_page is not None:
            wanted["use_zero_page"] = str(int(self.use_zero_page))
        if self.other_sizes is not None:
            for size in anon_sizes():
                wanted[_size_knob(size)] = self.other_sizes
        for size, value in self.mthp.items():
            wanted[_size_knob(size)] = value
        for knob, value in self.khugepaged.items():
            wanted[f"khugepaged/{knob}"] = str(value)
        return wanted


CONFIGS: dict[str, ThpConfig] = {c.name: c for c in (
    ThpConfig("never", "no THP and no mTHP: every anonymous fault maps 4 KiB",
              enabled="never", mthp={"2048kB": "inherit"}, other_sizes="never"),
    ThpConfig("madvise", "PMD THP only in MADV_HUGEPAGE regions (this machine's default), no mTHP",
              enabled="madvise", mthp={"2048kB": "inherit"}, other_sizes="never"),
    ThpConfig("always", "PMD THP wherever an aligned 2 MiB fits in the VMA, no mTHP",
              enabled="always", mthp={"2048kB": "inherit"}, other_sizes="never"),
    ThpConfig("mthp-64k", "64 KiB mTHP always; PMD THP as by default (MADV_HUGEPAGE regions)",
              enabled="madvise", mthp={"64kB": "always", "2048kB": "inherit"}, other_sizes="never"),
    ThpConfig("mthp-mixed", "16 KiB, 64 KiB and 2 MiB always, together; other sizes never",
              enabled="madvise", mthp={"16kB": "always", "64kB": "always", "2048kB": "always"},
              other_sizes="never"),
)}


def _size_knob(size: str) -> str:
    name = size.removeprefix("hugepages-")
    return f"hugepages-{name}/enabled"


# ----- writing --------------------------------------------------------------------------------


def _choices(path: Path) -> list[str] | None:
    """The words a ``[selected] other`` knob accepts; None for a number knob."""
    text = path.read_text()
    if "[" not in text:
        return None
    return text.replace("[", " ").replace("]", " ").split()


def _check_writable(wanted: Mapping[str, str]) -> None:
    """Every knob exists, takes the value, and we may write it: checked before anything changes."""
    if os.geteuid() != 0:
        raise CowaheadError("setting THP knobs needs root (they are files under /sys/kernel/mm/transparent_hugepage/)")
    for knob, value in wanted.items():
        path = THP / knob
        if not path.is_file():
            raise CowaheadError(f"THP knob {path} is missing on this kernel ({os.uname().release})")
        choices = _choices(path)
        if choices is not None and value not in choices:
            raise CowaheadError(f"THP knob {path} takes {', '.join(choices)}, not {value!r}")
        if choices is None and not value.isdigit():
            raise CowaheadError(f"THP knob {path} takes a number, not {value!r}")


def _write(knob: str, value: str) -> None:
    path = THP / knob
    try:
        path.write_text(value)
    except OSError as e:
        raise CowaheadError(f"cannot set THP knob {path} to {value!r}: {e.strerror}") from None
    if _selected(path) != value:
        raise CowaheadError(f"THP knob {path} reads {_selected(path)!r} after writing {value!r}")


def _restore(snapshot: Mapping[str, str]) -> None:
    """Write back every knob whose value differs from ``snapshot``; try all of them, then report failures."""
    failures = []
    for knob, value in snapshot.items():
        path = THP / knob
        if _selected(path) == value:
            continue
        try:
            _write(knob, value)
        except CowaheadError as e:
            failures.append(str(e))
    if failures:
        raise CowaheadError("could not restore THP knobs: " + "; ".join(failures))


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


# The knobs are the machine's. Two processes each setting and restoring them at once (two test runs, a
# validate beside a test run) leave behind what the other set: each restores the snapshot it took, one of
# them while the other's knobs were in force (seen here: mTHP 16K/64K/2M `always` left on). A block holds
# this lock, machine-wide, from its snapshot to its restore; a second one waits.
LOCK_PATH = Path("/run/lock/cowahead-thp.lock")
_held = 0  # blocks entered by this process: an inner one takes no second lock (flock would wait on itself)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Hold the THP knobs for this process, against every other cowahead process on the machine."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    path = LOCK_PATH if LOCK_PATH.parent.is_dir() else Path("/tmp") / LOCK_PATH.name
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)  # CLOEXEC: an exec'd child holds nothing
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held = 1
        yield
    finally:
        _held = 0
        os.close(fd)


@contextlib.contextmanager
def thp_config(config: ThpConfig | str | None = None, *, enabled: str | None = None, defrag: str | None = None,
               use_zero_page: int | bool | None = None,
               mthp: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Set THP/mTHP knobs inside the block; every knob is as it was after it, however the block ends.

    ``config`` is a ``ThpConfig`` or the name of one in ``CONFIGS``; the
    keywords set single knobs on top of it (``mthp={"64kB": "always"}``).
    Yields ``thp_settings()`` as they are inside. Raises CowaheadError,
    before changing anything, when not root or when a knob is missing or
    would not take its value. Only the process that entered restores: a
    child forked inside the block leaves the knobs alone when it unwinds.
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise CowaheadError(f"no THP configuration {config!r}; there are {', '.join(CONFIGS)}")
        config = CONFIGS[config]
    wanted = config.knobs() if config is not None else {}
    overrides = ThpConfig("", "", enabled=enabled, defrag=defrag,
                          use_zero_page=None if use_zero_page is None else int(use_zero_page), mthp=mthp or {})
    wanted.update(overrides.knobs())
    _check_writable(wanted)

    with machine_lock():
        yield from _in_config(wanted)


def _in_config(wanted: dict[str, str]) -> Iterator[dict[str, str]]:
    snapshot = knob_snapshot()
    owner = os.getpid()  # a child forked inside the block that unwinds through it must not restore
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.SIG_DFL
    installed = False
    try:
        if in_main_thread:  # signal.signal works only there; elsewhere SIGTERM keeps its action
            old_handler = signal.signal(signal.SIGTERM, _raise_terminated)
            installed = True
        for knob, value in wanted.items():
            if _selected(THP / knob) != value:
                _write(knob, value)
        yield thp_settings()
    finally:
        # A second Ctrl-C or SIGTERM must not cut the restore short: both wait, blocked, until the
        # knobs are back and the old handler is in place, which then receives a pending SIGTERM.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if os.getpid() == owner:
                _restore(snapshot)
        finally:
            if installed:
                signal.signal(signal.SIGTERM, old_handler if old_handler is not None else signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
