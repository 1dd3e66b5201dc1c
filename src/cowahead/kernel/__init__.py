"""COW-ahead inside Linux: the patched kernel's build, its VM harness, validation against the model.

The harness boots a kernel under QEMU TCG with virtme-ng over the host's root
file system (``run_in_guest``); ``build`` makes the patched Debian 6.1 kernel;
``validate`` and ``measure`` run guest workloads and compare /proc/vmstat with
the model.
"""

from .kbuild import DEFAULT_BUILD_DIR, PATCH, BuildResult, build, built_kernel, patch_applies
from .vm import GuestResult, qemu_available, run_in_guest, stock_kernel
from .vmstat import COW_COUNTERS, parse_vmstat, vmstat_delta

__all__ = ["DEFAULT_BUILD_DIR", "PATCH", "BuildResult", "build", "built_kernel", "patch_applies", "GuestResult",
           "qemu_available", "run_in_guest", "stock_kernel", "COW_COUNTERS", "parse_vmstat", "vmstat_delta"]
