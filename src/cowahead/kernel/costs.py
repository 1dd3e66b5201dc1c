"""The ``kernel`` cost profile, derived from ``cowahead kernel check``'s measurements of the patched kernel.

The check's ``measure`` rows count, under QEMU ``-icount shift=0`` (one virtual ns per guest instruction),
the kernel instructions of a forked child's writes (``child_instructions − user_instructions``) per
pattern, policy and window, beside the kernel's own counters of the same run: COW faults
(``cow_fault_copy``), pages copied ahead (``cow_ahead_copy``) and, from the model's replay of the same
trace, the windows that copied (``model_ahead_batches``, the model's ``ahead_batches``).

1. The fit, in instructions: least squares without intercept over the check's ``fixed`` rows (the
   ``adaptive`` rows copy nothing ahead and add a decision cost per fault no CostModel field has; they are
   kept as residuals out of the fit)::

       kernel_instructions ≈ per_cow_fault × cow_fault_copy + per_ahead_copy × cow_ahead_copy
                             + per_batch × model_ahead_batches

2. The conversion to µs on this host. The page copy is ``rep movsb``, which TCG counts once per byte
   (``copy_instructions``: ftrace's ``copy_mc_to_kernel``), while the host copies a page in the
   calibration's ``memcpy_us_per_page``. Every other kernel instruction is priced alike, at
   ``us_per_instruction``, chosen so that a COW fault costs the calibration's ``cow_fault_us``::

       us_per_instruction = (cow_fault_us − memcpy_us) / (per_cow_fault − copy_instructions)
       ahead_copy_us      = memcpy_us + (per_ahead_copy − copy_instructions) × us_per_instruction
       ahead_call_us      = per_batch × us_per_instruction

3. What the check did not measure keeps the calibration's figure: the fault paths the patch leaves alone
   (zero fill, zero page, shmem map, reuse) and ``ahead_reuse_us`` (the measured patterns reuse nothing
   ahead): user-space MADV_POPULATE_WRITE's reuse per page, an upper bound for the patch's pass under the
   page-table lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import CowaheadError
from ..model.costs import CostModel
from ..results.header import header
from .validate import TRAP_INSTRUCTIONS

FIT_POLICY = "fixed"
FIT_TERMS = ("cow_fault_copy", "cow_ahead_copy", "model_ahead_batches")
FROM_CALIBRATION = ("cow_fault_us", "zero_fill_us", "zero_page_us", "map_us", "reuse_us", "ahead_reuse_us")


@dataclass(frozen=True)
class InstructionFit:
    """Kernel instructions per COW fault (trap, walk, do_wp_page, copy, flush), per page copied ahead and
    per window that copied (its lock, its ranged TLB flush)."""
    per_cow_fault: float
    per_ahead_copy: float
    per_batch: float

    def predict(self, row: dict) -> float:
        return (self.per_cow_fault * row["cow_fault_copy"] + self.per_ahead_copy * row["cow_ahead_copy"]
                + self.per_batch * row["model_ahead_batches"])


def kernel_instructions(row: dict) -> int:
    """The child's writes minus the same writes again without faults: what the faults cost in the kernel."""
    return row["child_instructions"] - row["user_instructions"]


def read_json(path: str | Path, what: str) -> dict:
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CowaheadError(f"{path}: not a readable {what} file ({e.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise CowaheadError(f"{path}: not a {what} file")
    return document


def measure_rows(check: dict, where: str) -> list[dict]:
    """The ``measure`` rows of a kernel check of either version (1: ``schema``; 2: the common header)."""
    if check.get("format") != "cowahead-kernel-check" and check.get("schema") != "cowahead.kernel-check/1":
        raise CowaheadError(f"{where}: not a `cowahead kernel check` results file")
    rows = check.get("measure", {}).get("measurement") or []
    needed = {"pattern", "policy", "window", "child_instructions", "user_instructions", *FIT_TERMS}
    if not rows or any(needed - row.keys() for row in rows):
        raise CowaheadError(f"{where}: its measure rows lack {', '.join(sorted(needed))} "
                            "(rerun `cowahead kernel check`)")
    return rows


def fit_instructions(rows: list[dict]) -> InstructionFit:
    fitted = [r for r in rows if r["policy"] == FIT_POLICY]
    terms = np.array([[r[t] for t in FIT_TERMS] for r in fitted], dtype=float)
    if len(fitted) < len(FIT_TERMS) or np.linalg.matrix_rank(terms) < len(FIT_TERMS):
        raise CowaheadError(f"the kernel check's {FIT_POLICY} rows cannot separate faults, ahead copies and batches "
                            "(window 0 and two windows that copy ahead are needed)")
    measured = np.array([kernel_instructions(r) for r in fitted], dtype=float)
    solution, *_ = np.linalg.lstsq(terms, measured, rcond=None)
    return InstructionFit(*(float(x) for x in solution))


def residuals(rows: list[dict], fit: InstructionFit) -> list[dict]:
    """Every measured row against the fit, those out of it (other policies) included."""
    out = []
    for r in rows:
        measured, fitted = kernel_instructions(r), fit.predict(r)
        out.append({"pattern": r["pattern"], "policy": r["policy"], "window": r["window"],
                    "in_fit": r["policy"] == FIT_POLICY, **{t: r[t] for t in FIT_TERMS},
                    "kernel_instructions": measured, "fitted": round(fitted),
                    "residual_pct": round(100 * (measured - fitted) / measured, 3)})
    return out


def _net(function: dict, overhead: float) -> float:
    """A traced function's instructions with the tracer's own per call taken out."""
    return function["measured_total"] - function["calls"] * overhead


def copy_instructions(ftrace: dict, where: str) -> float:
    """Instructions per page copy (``copy_mc_to_kernel``), pooled over the ftrace run's windows."""
    try:
        settings = ftrace["settings"]
        copies = [(s["groups"]["copy"]["functions"]["copy_mc_to_kernel"], s["tracer_inner_overhead_per_call"])
                  for s in settings]
    except (KeyError, TypeError):
        raise CowaheadError(f"{where}: not a kernel ftrace file with copy_mc_to_kernel "
                            "(python -m cowahead.kernel.ftrace)") from None
    return sum(_net(f, o) for f, o in copies) / sum(f["calls"] for f, _ in copies)


def ranged_flush_instructions(ftrace: dict) -> dict[int, float]:
    """Per window > 0 traced: instructions of one ranged ``flush_tlb_mm_range``, the flushes of
    ``ptep_clear_flush`` (one per fault, priced as at window 0) taken out. A check on ``per_batch``."""
    by_window = {s["window"]: s for s in ftrace["settings"]}
    base = by_window.get(0)
    if base is None:
        return {}
    flush = base["groups"]["install"]["functions"]["flush_tlb_mm_range"]
    single = _net(flush, base["tracer_inner_overhead_per_call"]) / flush["calls"]
    out = {}
    for window, s in by_window.items():
        if window:
            flush = s["groups"]["install"]["functions"]["flush_tlb_mm_range"]
            per_fault = s["groups"]["clear"]["functions"]["ptep_clear_flush"]["calls"]
            ranged = flush["calls"] - per_fault
            out[window] = round((_net(flush, s["tracer_inner_overhead_per_call"]) - per_fault * single) / ranged, 1)
    return out


def calibration_costs(calibration: dict, where: str) -> tuple[dict, float, float]:
    """The calibration's per-fault costs, its memcpy per page, and its user-space trap (a COW fault minus
    a page of batched MADV_POPULATE_WRITE)."""
    try:
        if calibration.get("format") != "cowahead-calibration":
            raise KeyError("format")
        costs = {name: float(calibration["costs"][name]) for name in FROM_CALIBRATION}
        memcpy = float(calibration["memcpy_us_per_page"])
        trap = costs["cow_fault_us"] - float(calibration["populate_write_fit"]["per_page_us"])
    except (KeyError, TypeError, ValueError) as e:
        raise CowaheadError(f"{where}: not a `cowahead calibrate` file with {e}") from None
    return costs, memcpy, trap


def _provenance(path: str | Path, document: dict) -> dict:
    return {"file": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "date": document.get("created") or document.get("date")}


def kernel_profile(check_path: str | Path, ftrace_path: str | Path, calibration_path: str | Path) -> dict:
    """The ``kernel`` cost-profile document: ``costs`` (what CostModel.load reads), the fit, the conversion
    and its checks, and the files it came from."""
    check = read_json(check_path, "kernel check")
    ftrace = read_json(ftrace_path, "kernel ftrace")
    calibration = read_json(calibration_path, "calibration")
    rows = measure_rows(check, str(check_path))
    fit = fit_instructions(rows)
    copy = copy_instructions(ftrace, str(ftrace_path))
    measured, memcpy_us, trap_us = calibration_costs(calibration, str(calibration_path))
    us_per_instruction = (measured["cow_fault_us"] - memcpy_us) / (fit.per_cow_fault - copy)
    provenance = {"kernel_check": _provenance(check_path, check), "ftrace": _provenance(ftrace_path, ftrace),
                  "calibration": _provenance(calibration_path, calibration)}
    source = (f"kernel: `cowahead kernel costs` from {check_path} (the patched kernel under QEMU TCG -icount, "
              f"{provenance['kernel_check']['date']}, sha256 {provenance['kernel_check']['sha256'][:12]}) and "
              f"{ftrace_path}, weighted with {calibration_path}; per fault, per ahead page and per batch fitted "
              f"by least squares over the {FIT_POLICY} rows; ahead_reuse_us and the fault paths the patch leaves "
              "alone are the calibration's")
    costs = CostModel(**{name: round(value, 3) for name, value in measured.items()},
                      ahead_copy_us=round(memcpy_us + (fit.per_ahead_copy - copy) * us_per_instruction, 3),
                      ahead_call_us=round(fit.per_batch * us_per_instruction, 3), source=source)
    checked = residuals(rows, fit)
    return {
        **header("costs"), "profile": "kernel",
        "costs": {f.name: getattr(costs, f.name) for f in fields(CostModel)},
        "provenance": provenance,
        "fit": {"method": f"least squares without intercept over the {FIT_POLICY} rows of measure.measurement: "
                          "kernel_instructions = per_cow_fault × cow_fault_copy + per_ahead_copy × cow_ahead_copy "
                          "+ per_batch × model_ahead_batches",
                "instructions": {"per_cow_fault": round(fit.per_cow_fault, 1),
                                 "per_ahead_copy": round(fit.per_ahead_copy, 1),
                                 "per_batch": round(fit.per_batch, 1)},
                "worst_residual_pct": max(abs(r["residual_pct"]) for r in checked if r["in_fit"]),
                "rows": checked},
        "conversion": {"method": "the page copy at the host's memcpy, every other instruction at us_per_instruction "
                                 "= (cow_fault_us − memcpy_us) / (per_cow_fault − copy_instructions)",
                       "copy_instructions": round(copy, 1), "memcpy_us_per_page": memcpy_us,
                       "cow_fault_us": measured["cow_fault_us"], "us_per_instruction": round(us_per_instruction, 7)},
        "checks": {"trap": {"instructions": TRAP_INSTRUCTIONS,
                            "predicted_us": round(TRAP_INSTRUCTIONS * us_per_instruction, 3),
                            "calibration_us": round(trap_us, 3),
                            "what": "the trap outside handle_mm_fault (ftrace) at us_per_instruction, against the "
                                    "calibration's cow_fault_us − MADV_POPULATE_WRITE's per-page fit"},
                   "ranged_flush": {"instructions_per_window": ranged_flush_instructions(ftrace),
                                    "per_batch_fitted": round(fit.per_batch, 1),
                                    "what": "ftrace: one ranged flush_tlb_mm_range per window of up to 16 pages"}},
        "not_measured": {"ahead_reuse_us": "the calibration's MADV_POPULATE_WRITE reuse per page (512-page calls): "
                                           "the kernel check's measured patterns reuse nothing ahead",
                         "zero_fill_us, zero_page_us, map_us, reuse_us":
                             "the calibration's: paths the patch does not change"},
    }
