"""Run one command in a QEMU guest booted with virtme-ng, over the host's root file system.

Nested KVM does not boot guests on this machine kind, so the guest always runs
under QEMU's TCG (``vng --disable-kvm``). The guest sees the host's files
(read-only, with a writable overlay on /tmp and friends), so programs and
Python from the host run unchanged inside it. ``vng`` passes the guest
command's stdout, stderr and exit status back.

Under ``icount`` (``-icount shift=0``) one virtual nanosecond is one guest
instruction, so guest clocks count instructions deterministically; QEMU runs
icount guests on one vCPU, so ``cpus`` is forced to 1 there.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CowaheadError

POLICIES = ("fixed", "around", "adaptive", "folio")  # vm.cow_ahead_policy of the 6.12 patch (folio: not in the 6.1 one)
SYSCTL_PAGES = "/proc/sys/vm/cow_ahead_pages"
SYSCTL_POLICY = "/proc/sys/vm/cow_ahead_policy"
SYSCTL_LARGE = "/proc/sys/vm/cow_ahead_large_destinations"  # issue 23
DEFAULT_TIMEOUT_S = 600
BOOT_RETRIES = 1
# vng's status when QEMU ended without the guest command's status (a panic, a killed QEMU): the
# kernel console is not kept by default, so such a boot is repeated once with it on stderr.
VNG_NO_STATUS = 255
# After every guest command the guest's kernel log is searched for these (issue 19: a debug kernel
# reports what a production one silently corrupts); matching lines come back on stderr with DMESG_MARK.
DMESG_PROBLEM = r"BUG|WARNING|Bad page|Oops|general protection|Call Trace"
DMESG_MARK = "cowahead-dmesg: "


@dataclass(frozen=True)
class GuestResult:
    """What the guest command printed and how it ended; ``seconds`` is host wall time of the whole boot."""
    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def dmesg_problems(self) -> list[str]:
        """Kernel log lines matching DMESG_PROBLEM after the command; any of them fails the run."""
        return dmesg_problems(self.stderr)


def dmesg_problems(stderr: str) -> list[str]:
    return [line[len(DMESG_MARK):] for line in stderr.splitlines() if line.startswith(DMESG_MARK)]


def dmesg_check_script() -> str:
    """Shell that prints the kernel log's problem lines to stderr, each marked with DMESG_MARK."""
    return f"dmesg | grep -E '{DMESG_PROBLEM}' | sed 's/^/{DMESG_MARK}/' >&2"


def vng_path() -> str:
    """The ``vng`` executable: beside this Python first (the venv), then on PATH."""
    here = Path(sys.executable).parent / "vng"
    if here.exists():
        return str(here)
    found = shutil.which("vng")
    if found is None:
        raise CowaheadError("vng (virtme-ng) is not installed; run scripts/setup")
    return found


def qemu_available() -> bool:
    return shutil.which("qemu-system-x86_64") is not None


def stock_kernel() -> Path | None:
    """The newest Debian kernel image in /boot (linux-image-amd64), if any."""
    images = sorted(glob.glob("/boot/vmlinuz-*"))
    return Path(images[-1]) if images else None


def guest_script(command: list[str], cow_ahead: int | None, policy: str | None,
                 large_destinations: bool | None = None) -> str:
    """The shell line the guest runs: set the COW-ahead sysctls, run the command, check dmesg, keep its status."""
    sets = []
    if large_destinations is not None:
        sets.append(f"echo {int(large_destinations)} > {SYSCTL_LARGE}")
    if policy is not None:
        if policy not in POLICIES:
            raise CowaheadError(f"kernel policy '{policy}' is not one of {', '.join(POLICIES)}")
        sets.append(f"echo {policy} > {SYSCTL_POLICY}")
    if cow_ahead is not None:
        if not 0 <= cow_ahead <= 512:
            raise CowaheadError(f"--cow-ahead must be 0 … 512 pages (one page table), not {cow_ahead}")
        sets.append(f"echo {cow_ahead} > {SYSCTL_PAGES}")
    script = ""
    if sets:
        # A kernel without the patch has no such files: say so instead of running unpatched.
        script = (f"[ -w {SYSCTL_PAGES} ] || {{ echo 'cowahead: this kernel has no {SYSCTL_PAGES}' >&2; exit 125; }}; "
                  + " && ".join(sets) + " && ")
    return script + shlex.join(command) + "; rc=$?; " + dmesg_check_script() + "; exit $rc"


def vng_command(kernel: Path, script: str, icount: bool = False, cpus: int = 1, memory: str = "1G",
                cwd: Path | None = None, console: bool = False) -> list[str]:
    """``console``: the guest kernel's console (boot log, loglevel 7) comes back on stderr too."""
    args = [vng_path(), "--run", str(kernel), "--disable-kvm", "--cpus", str(1 if icount else cpus),
            "--memory", memory]
    if console:
        args.append("--verbose")
    if cwd is not None:
        args += ["--cwd", str(cwd)]
    if icount:
        args.append("--qemu-opts=-icount shift=0")
    args += ["--exec", script]
    return args


def run_in_guest(kernel: Path, command: list[str], cow_ahead: int | None = None, policy: str | None = None,
                 icount: bool = False, cpus: int = 1, memory: str = "1G",
                 timeout: float = DEFAULT_TIMEOUT_S, large_destinations: bool | None = None) -> GuestResult:
    """Boot ``kernel`` under TCG, run ``command`` as root in the guest and return its output and status.

    ``cow_ahead`` and ``policy`` set vm.cow_ahead_pages and vm.cow_ahead_policy first (patched kernels
    only; exit status 125 if the kernel lacks them).
    """
    kernel = Path(kernel)
    if not kernel.exists():
        raise CowaheadError(f"kernel {kernel} does not exist")
    if not qemu_available():
        raise CowaheadError("qemu-system-x86_64 is not installed; run scripts/setup")
    if not command:
        raise CowaheadError("no command to run in the guest (give it after --)")
    script = guest_script(command, cow_ahead, policy, large_destinations)
    env = dict(os.environ)
    # vng runs its helpers (virtme-configkernel, virtme-ng-init) from PATH.
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    # Under TCG on a loaded host a boot has, rarely, stalled before the command started (QEMU
    # idle, no console output); one more boot has always gone through. A boot that ended with no
    # status is repeated with the console kept, so what the kernel said is in the result's stderr.
    console = False
    for attempt in range(1 + BOOT_RETRIES):
        args = vng_command(kernel, script, icount, cpus, memory, Path.cwd(), console=console)
        start = time.monotonic()
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            continue
        result = GuestResult(args, done.returncode, done.stdout, done.stderr, time.monotonic() - start)
        if result.returncode != VNG_NO_STATUS or console or attempt == BOOT_RETRIES:
            return result
        console = True
    raise CowaheadError(f"the guest did not finish within {timeout:.0f} s, {1 + BOOT_RETRIES} boots")
