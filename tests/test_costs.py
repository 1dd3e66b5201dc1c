"""The two cost profiles: the kernel one held to the kernel check it came from, both priced by hand.

The kernel profile's numbers are recomputed here from the raw rows of the files they were derived from
(a least squares written in the test, and hand arithmetic on single rows), never taken from
``cowahead.kernel.costs``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cowahead.cli.main import main
from cowahead.model.costs import KERNEL_PROFILE, cost_profile
from cowahead.model.counters import Counters

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
CHECK = RESULTS / "kernel-2026-11-27.json"
FTRACE = RESULTS / "kernel-ftrace-2026-11-27.json"
CALIBRATION = RESULTS / "calibration-2026-11-26.json"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----- the kernel profile against the files it came from ----------------------------------------


def test_the_kernel_profile_names_the_files_it_came_from():
    doc = json.loads(KERNEL_PROFILE.read_text())
    assert doc["format"] == "cowahead-costs" and doc["profile"] == "kernel"
    for key, path in (("kernel_check", CHECK), ("ftrace", FTRACE), ("calibration", CALIBRATION)):
        assert doc["provenance"][key]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), key
    assert "kernel-2026-11-27.json" in doc["costs"]["source"]


def test_the_kernel_profile_is_a_least_squares_fit_of_the_check_recomputed_here():
    check, ftrace, calibration = (json.loads(p.read_text()) for p in (CHECK, FTRACE, CALIBRATION))
    rows = [r for r in check["measure"]["measurement"] if r["policy"] == "fixed"]
    terms = np.array([[r["cow_fault_copy"], r["cow_ahead_copy"], r["model_ahead_batches"]] for r in rows], float)
    kernel = np.array([r["child_instructions"] - r["user_instructions"] for r in rows], float)
    (per_fault, per_ahead, per_batch), *_ = np.linalg.lstsq(terms, kernel, rcond=None)
    # the copy's instructions per page: copy_mc_to_kernel over both traced windows, the tracer's own out
    copies = [(s["groups"]["copy"]["functions"]["copy_mc_to_kernel"], s["tracer_inner_overhead_per_call"])
              for s in ftrace["settings"]]
    copy = sum(f["measured_total"] - f["calls"] * o for f, o in copies) / sum(f["calls"] for f, _ in copies)
    memcpy, cow_fault = calibration["memcpy_us_per_page"], calibration["costs"]["cow_fault_us"]
    us_per_instruction = (cow_fault - memcpy) / (per_fault - copy)
    kernel_profile = cost_profile("kernel")
    assert kernel_profile.cow_fault_us == cow_fault
    assert kernel_profile.ahead_copy_us == pytest.approx(memcpy + (per_ahead - copy) * us_per_instruction, abs=6e-4)
    assert kernel_profile.ahead_call_us == pytest.approx(per_batch * us_per_instruction, abs=6e-4)
    # what the check did not measure is the calibration's
    for name in ("zero_fill_us", "zero_page_us", "map_us", "reuse_us", "ahead_reuse_us"):
        assert getattr(kernel_profile, name) == calibration["costs"][name], name
    # the fit is close: every fixed row within 1 % of its measured instructions
    assert np.max(np.abs(terms @ [per_fault, per_ahead, per_batch] - kernel) / kernel) < 0.01


def test_the_kernel_profile_against_single_rows_by_hand():
    """Hand arithmetic on the raw numbers of three rows of kernel-2026-11-27.json."""
    profile = cost_profile("kernel")
    # sequential, window 0: (13,376,898 − 16,470) / 2048 COW faults = 6,523.65 instructions per fault.
    # The copy is 4,114.3 of them (ftrace: (9,786,430 + 9,816,142 − 4,105 × 661) / 4,105 calls); the host
    # copies a page in 0.5287 µs and takes 2.515 µs for the whole fault, so every other instruction is
    # (2.515 − 0.5287) / (6,523.65 − 4,114.3) = 1.9863 / 2,409.35 = 0.00082442 µs.
    # sequential, fixed:64: 10,878,085 − 16,470 = 10,861,615 instructions, 32 faults and 2,016 pages
    # ahead in 32 windows: (10,861,615 − 32 × 6,523.65) / 2,016 = 5,284.2 per
    # ahead page with its window's share, 0.5287 + (5,284.2 − 4,114.3) × 0.00082442 = 1.4932 µs.
    assert profile.ahead_copy_us + 32 / 2016 * profile.ahead_call_us == pytest.approx(1.4932, abs=0.005)
    # sequential, fixed:4: 11,729,648 − 16,470 = 11,713,178; 512 faults, 1,536 ahead in 512 windows:
    # (11,713,178 − 512 × 6,523.65) / 1,536 = 5,451.3 per ahead page with its share of a window,
    # 0.5287 + (5,451.3 − 4,114.3) × 0.00082442 = 1.6310 µs: windows of 3 pages pay a third of one each.
    assert profile.ahead_copy_us + 512 / 1536 * profile.ahead_call_us == pytest.approx(1.6310, abs=0.01)


def test_regenerating_the_kernel_profile_gives_the_shipped_costs(tmp_path, capsys):
    out = tmp_path / "costs.json"
    code, printed, err = run(capsys, "kernel", "costs", CHECK, "--ftrace", FTRACE, "--calibration", CALIBRATION,
                             "-o", out)
    assert code == 0 and err == "" and str(out) in printed
    fresh, shipped = json.loads(out.read_text()), json.loads(KERNEL_PROFILE.read_text())
    assert {k: v for k, v in fresh["costs"].items() if k != "source"} == \
        {k: v for k, v in shipped["costs"].items() if k != "source"}
    assert fresh["fit"]["instructions"] == shipped["fit"]["instructions"]


def test_kernel_costs_refuses_the_wrong_files_in_one_line(tmp_path, capsys):
    for argv in ((CALIBRATION, "--ftrace", FTRACE, "--calibration", CALIBRATION),
                 (CHECK, "--ftrace", CHECK, "--calibration", CALIBRATION),
                 (CHECK, "--ftrace", FTRACE, "--calibration", CHECK)):
        code, out, err = run(capsys, "kernel", "costs", *argv, "-o", tmp_path / "c.json")
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("cowahead: error:"), err
        assert not (tmp_path / "c.json").exists()


# ----- predict_us under both profiles, by hand ------------------------------------------------------


# A fork child writing 160 pages in order under a 16-page window: 10 COW faults, 150 pages ahead in 10
# windows, 5 exclusive pages reused ahead; the parent zero-filled the 160 pages first.
AHEAD = Counters(zero_fill=160, zero_fill_pages=160, cow_copy=10, cow_copy_pages=10, ahead_copies=150,
                 ahead_batches=10, ahead_reuses=5)
LINUX = Counters(zero_fill=160, zero_fill_pages=160, cow_copy=160, cow_copy_pages=160)


def test_predict_us_under_the_kernel_profile_by_hand():
    kernel = cost_profile("kernel")
    assert (kernel.cow_fault_us, kernel.zero_fill_us, kernel.ahead_copy_us, kernel.ahead_call_us,
            kernel.ahead_reuse_us) == (2.515, 1.415, 1.488, 0.454, 0.214)  # the shipped file (held above)
    # 160 × 1.415 + 10 × 2.515 + 150 × 1.488 + 10 × 0.454 + 5 × 0.214
    # = 226.4 + 25.15 + 223.2 + 4.54 + 1.07 = 480.36
    assert kernel.predict_us(AHEAD) == pytest.approx(480.36)
    # Linux: 160 × 1.415 + 160 × 2.515 = 226.4 + 402.4 = 628.8
    assert kernel.predict_us(LINUX) == pytest.approx(628.8)


def test_predict_us_under_the_userspace_profile_by_hand():
    userspace = cost_profile("userspace")
    # 226.4 + 25.15 + 150 × 2.050 + 10 × 2.843 + 5 × 0.214 = 226.4 + 25.15 + 307.5 + 28.43 + 1.07 = 588.55
    assert userspace.predict_us(AHEAD) == pytest.approx(588.55)
    assert userspace.predict_us(LINUX) == pytest.approx(628.8)  # Linux itself costs the same in both


def test_simulate_json_carries_both_profiles(tmp_path, capsys):
    trace = tmp_path / "seq.parquet"
    assert run(capsys, "generate", "sequential", "--pages", "256", "-o", trace)[0] == 0
    code, out, _ = run(capsys, "simulate", trace, "--json", "-p", "none", "-p", "fixed:16")
    none, fixed = json.loads(out)
    assert code == 0 and (fixed["zero_fills"], fixed["cow_copies"], fixed["ahead_copies"]) == (256, 16, 240)
    assert fixed["ahead_batches"] == 16 and fixed["zero_page"] == fixed["map"] == fixed["reuse"] == 0
    # kernel, the default: 256 × 1.415 + 16 × 2.515 + 240 × 1.488 + 16 × 0.454
    # = 362.24 + 40.24 + 357.12 + 7.264 = 766.864
    assert fixed["predicted_us"] == pytest.approx(766.864, abs=1e-3)
    # user space: 362.24 + 40.24 + 240 × 2.050 + 16 × 2.843 = 362.24 + 40.24 + 492 + 45.488 = 939.968
    assert fixed["predicted_us_userspace"] == pytest.approx(939.968, abs=1e-3)
    # none: 256 × 1.415 + 256 × 2.515 = 1,006.08 under both
    assert none["predicted_us"] == none["predicted_us_userspace"] == pytest.approx(1006.08, abs=1e-3)
    code, out, _ = run(capsys, "simulate", trace, "--json", "-p", "fixed:16", "--costs", "userspace")
    (fixed,) = json.loads(out)
    assert fixed["predicted_us"] == fixed["predicted_us_userspace"] == pytest.approx(939.968, abs=1e-3)


# ----- --costs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [["simulate", "T"], ["sweep", "T", "-o", "R.json"], ["evaluate", "-o", "OUT"]])
@pytest.mark.parametrize("costs", ["nonsense", "README"])
def test_costs_nonsense_is_one_line_and_exit_2(verb, costs, tmp_path, capsys):
    trace = tmp_path / "t.parquet"
    assert run(capsys, "generate", "sequential", "--pages", "16", "-o", trace)[0] == 0
    (tmp_path / "README").write_text("not a cost file\n")
    where = {"T": trace, "R.json": tmp_path / "r.json", "OUT": tmp_path / "out", "README": tmp_path / "README"}
    code, out, err = run(capsys, *[where.get(a, a) for a in verb], "--costs", where.get(costs, costs))
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("cowahead: error:"), err
    assert "Traceback" not in err and not (tmp_path / "out").exists() and not (tmp_path / "r.json").exists()
