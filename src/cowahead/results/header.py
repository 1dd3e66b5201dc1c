"""The one header every cowahead document carries, and the one history of their versions.

Traces, results (``evaluate``, ``sweep``), validation runs, calibrations and
kernel checks all start with the same fields: what the document is
(``format``, ``version``), when and by which command it was made, and where
(the machine, its kernel and THP/mTHP settings, the package versions).
Readers check ``format`` and ``version`` with ``check_header``.
"""

from __future__ import annotations

import sys
import time

from ..errors import CowaheadError
from ..machine import machine_metadata, package_versions

PACKAGES = ["cowahead", "numpy", "numba", "pyarrow", "matplotlib"]

# Each kind's versions, newest last: what changed, so that a reader knows what it is refusing.
# READABLE: older versions a reader still takes (a version-1 trace is a version-2 one without the new events).
HISTORY: dict[str, dict[int, str]] = {
    "trace": {1: "one row per event (time_ns, pid, kind, address, length, arg), metadata under b'cowahead'",
              2: "event kinds MADVISE, THP_DISABLE and COLLAPSE; the folio settings (thp, kernel) in the metadata"},
    "results": {1: "workloads with one row per policy; costs; optional sweep, settings, timings_s",
                2: "two cost profiles in every row: predicted_us under 'costs' (the kernel profile unless "
                   "--costs says otherwise), predicted_us_userspace under 'costs_userspace' (MADV_POPULATE_WRITE); "
                   "rows carry their COW faults' batch histogram (cow_batches: [ahead copies, ahead reuses, "
                   "faults]), stalls under 'costs' (cow_faults, stall_p50_us, stall_p99_us, stall_max_us, "
                   "stall_total_us) and, where kept, memory over time (memory: events, extra_pages, "
                   "pages_copied, resident)"},
    "validate": {1: "machine metadata and settings mixed under 'metadata'",
                 2: "the common header; the run's settings under 'settings'",
                 3: "runs per THP configuration ('config', 'status'), faults and folio pages matched of "
                    "compared, pages per fault kind, THP counters, folio-map mismatches, problem counts with "
                    "at most 50 examples each; 'summary' per configuration × pattern; settings 'configs' and "
                    "'thp_in_force'"},
    "calibration": {1: "machine metadata and settings mixed under 'metadata'",
                    2: "the common header; the run's settings under 'settings'"},
    "kernel-check": {1: "'schema': 'cowahead.kernel-check/1', host under 'host', written in place",
                     2: "the common header; written atomically",
                     3: "'source' (the Debian kernel source, 6.1 or 6.12); kernel-log problems per run, per boot "
                        "('dmesg', 'dmesg_clean', 'validation_guest'); counters the kernel lacks left out of the "
                        "comparison ('not_measured')"},
    "kernel-issue19": {1: "issue 19's reproducers: 'runs' (case, finding, policy, window, report, dmesg, passed), "
                          "'summary', 'guest'"},
    "kernel-selftests": {1: "upstream mm selftests in the guest: 'runs' (kernel, policy, window, test, "
                            "per-case results ok/not ok/skip), 'table' against the stock kernel"},
    "costs": {1: "a cost profile derived from measurements ('profile', 'costs' as CostModel's fields, "
                 "'provenance', 'fit', 'conversion', 'checks', 'not_measured')"},
}


READABLE: dict[str, set[int]] = {"trace": {1}, "kernel-check": {2}}


def current_version(kind: str) -> int:
    return max(HISTORY[kind])


def header(kind: str) -> dict:
    """The fields a new document of ``kind`` (a key of HISTORY) starts with."""
    return {"format": f"cowahead-{kind}", "version": current_version(kind),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["cowahead", *sys.argv[1:]]),
            "machine": machine_metadata(),
            "versions": {"python": sys.version.split()[0], **package_versions(PACKAGES)}}


def check_header(document: object, kind: str, where: str) -> None:
    """A one-line CowaheadError unless ``document`` is a ``kind`` document this cowahead reads."""
    expected = f"cowahead-{kind}"
    found = document.get("format") if isinstance(document, dict) else None
    if found != expected:
        raise CowaheadError(f"{where}: not a cowahead {kind} file (format is {found!r}, not {expected})")
    version = document.get("version")
    if version != current_version(kind) and version not in READABLE.get(kind, set()):
        known = HISTORY[kind].get(version) if isinstance(version, int) else None
        what = f" ({known})" if known else ""
        raise CowaheadError(f"{where}: {kind} version {version!r}{what}; this cowahead reads version "
                            f"{current_version(kind)}")
