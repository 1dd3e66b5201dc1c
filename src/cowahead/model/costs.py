"""The cost model that turns counters into predicted microseconds, and its two profiles.

Every constant is per page, per fault or per batch and names where it was measured. Two profiles ship
(docs/costs.md):

- ``kernel``, the headline: COW-ahead inside Linux, fitted by ``cowahead kernel costs`` to the patched
  kernel's instruction counts (``cowahead kernel check``) and weighted with this host's calibration. Its
  numbers live in one file, ``KERNEL_PROFILE``, and nowhere else.
- ``userspace``: COW-ahead from user space, ``MADV_POPULATE_WRITE`` a system call per window: what can
  be done without a patched kernel. Its numbers are ``CostModel``'s defaults below.

``cowahead calibrate`` writes a file with the same fields for this machine; ``--costs`` takes a profile
name or such a file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import CowaheadError
from .counters import Counters

# In the repository, beside the kernel check and the calibration it was derived from (as the kernel patch
# and the guest programs are found: the package runs from its clone).
KERNEL_PROFILE = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "costs-kernel-2026-12-01.json"
PROFILES = ("kernel", "userspace")
HEADLINE = "kernel"
COSTS_HELP = ("Cost profile: kernel (COW-ahead in a patched kernel, the default), userspace (MADV_POPULATE_WRITE, "
              "no patched kernel), or a file from `cowahead calibrate` or `cowahead kernel costs`.")


@dataclass(frozen=True)
class CostModel:
    """The ``userspace`` profile's numbers are these defaults."""
    cow_fault_us: float = 2.515    # one write per page after fork: trap + copy
    zero_fill_us: float = 1.415    # first write to a fresh private anonymous page
    zero_page_us: float = 0.508    # first read of a fresh private anonymous page
    map_us: float = 1.767          # first touch of a shared anonymous page (shmem allocation + map)
    reuse_us: float = 0.717        # write fault on an exclusive page after the child exited
    ahead_copy_us: float = 2.050   # per page broken ahead (MADV_POPULATE_WRITE fit: per-page part)
    ahead_call_us: float = 2.843   # per batch broken ahead (MADV_POPULATE_WRITE fit: per-call part)
    ahead_reuse_us: float = 0.214  # per exclusive page made writable ahead (MADV_POPULATE_WRITE, 512 pages)
    source: str = ("defaults: `cowahead calibrate -n 4096 -r 9` on a 2-vCPU Intel Xeon VM, Linux 6.18, "
                   "2026-11-26 (benchmarks/results/calibration-2026-11-26.json): medians of 9, CPU time; "
                   "ahead_* from user-space MADV_POPULATE_WRITE, fit per page + per call")

    def predict_us(self, c: Counters) -> float:
        """Each fault at its own price; the pages a large-folio fault copies or zero-fills beyond its first
        (a THP zero fill: 511; thp-cow's copy: 511) at the per-page price of a batch, ``ahead_copy_us``:
        allocation, copy and accounting without the trap. For zeroed pages that is an upper bound
        (clearing a page costs less than copying one); no calibration measures it apart yet."""
        extra_pages = max(0, c.cow_copy_pages - c.cow_copy) + max(0, c.zero_fill_pages - c.zero_fill)
        return (c.cow_copy * self.cow_fault_us + c.zero_fill * self.zero_fill_us
                + c.zero_page * self.zero_page_us + c.map * self.map_us + c.reuse * self.reuse_us
                + c.ahead_copies * self.ahead_copy_us + c.ahead_batches * self.ahead_call_us
                + c.ahead_reuses * self.ahead_reuse_us + extra_pages * self.ahead_copy_us)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "CostModel":
        """The ``costs`` object of a calibration or cost-profile file (or a bare object of the fields); a
        field it leaves out keeps the default (a version-1 calibration has no ``ahead_call_us``)."""
        try:
            data = json.loads(Path(path).read_text())
            costs = data.get("costs", data)
            known = {f.name for f in fields(cls)}
            given = {k: v for k, v in costs.items() if k in known}
            if not given.keys() - {"source"}:
                raise ValueError(f"no cost field ({', '.join(sorted(known - {'source'}))})")
            if any(not isinstance(v, (int, float)) or isinstance(v, bool) for k, v in given.items() if k != "source"):
                raise ValueError("a cost field is not a number")
            return cls(**given)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise CowaheadError(f"{path}: not a readable calibration file ({e}); run `cowahead calibrate`") from None


USERSPACE = CostModel()


def cost_profile(name: str) -> CostModel:
    """``kernel``, ``userspace``, or the path of a calibration or cost-profile file; one line otherwise."""
    if name == "userspace":
        return USERSPACE
    if name == "kernel":
        return CostModel.load(KERNEL_PROFILE)
    if Path(name).is_file():
        return CostModel.load(name)
    raise CowaheadError(f"--costs {name!r}: no such profile ({', '.join(PROFILES)}) and no such file")
