"""The costing and verdict chain, checked against figures worked out by hand (issue 17).

Counters → CostModel.predict_us → result_row → best_per_family → verdict, and the real-timing
medians and spreads. Every expected value below is computed in the comments from small made-up
counters; none is obtained by calling the code under test.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cowahead.errors import CowaheadError
from cowahead.model.costs import CostModel
from cowahead.model.counters import Counters
from cowahead.real import timing
from cowahead.results.summary import Budgets, best_per_family, change, over_budget, verdict
from cowahead.results.rows import result_row

# One power of ten per cost constant, so each term shows as its own digit of the total.
DIGITS = CostModel(cow_fault_us=1, zero_fill_us=10, zero_page_us=100, map_us=1_000, reuse_us=10_000,
                   ahead_copy_us=100_000, ahead_call_us=1_000_000, ahead_reuse_us=10_000_000)


def counters() -> Counters:
    """A distinct small value in every field; the priced ones are 1..8, one per digit of DIGITS."""
    return Counters(events=20, zero_fill=2, zero_page=3, map=4, cow_copy=1, reuse=5, outside_vma=21,
                    ahead_copies=6, ahead_reuses=8, ahead_batches=7, ahead_hits=22, ahead_waste=23,
                    extra_pages=24, extra_pages_peak=25, extra_pages_final=26, resident=27, resident_peak=28,
                    zero_fill_pages=29, cow_copy_pages=30, reuse_pages=31, thp_fault_alloc=32, mthp_fault_alloc=33,
                    huge_zero_page=34, thp_split_pmd=35, thp_collapse_alloc=36, cow_large_alloc=37, cow_large_pages=38)


# ----- counters ----------------------------------------------------------------------------


def test_faults_are_the_five_fault_paths_and_nothing_ahead():
    # zero_fill + zero_page + map + cow_copy + reuse = 2 + 3 + 4 + 1 + 5 = 15
    # (ahead copies, reuses and batches are madvise work, not faults)
    assert counters().faults == 15


def test_as_dict_holds_every_field_but_the_live_gauges_and_adds_faults():
    assert counters().as_dict() == {
        "events": 20, "zero_fill": 2, "zero_page": 3, "map": 4, "cow_copy": 1, "reuse": 5, "outside_vma": 21,
        "ahead_copies": 6, "ahead_reuses": 8, "ahead_batches": 7, "ahead_hits": 22, "ahead_waste": 23,
        "extra_pages_peak": 25, "extra_pages_final": 26, "resident_peak": 28, "zero_fill_pages": 29,
        "cow_copy_pages": 30, "reuse_pages": 31, "thp_fault_alloc": 32, "mthp_fault_alloc": 33, "huge_zero_page": 34,
        "thp_split_pmd": 35, "thp_collapse_alloc": 36, "cow_large_alloc": 37, "cow_large_pages": 38, "faults": 15}


# ----- the cost model ------------------------------------------------------------------------


def test_predict_us_prices_each_counter_with_its_own_constant():
    #   cow_copy      1 × 1          =          1
    #   zero_fill     2 × 10         =         20
    #   zero_page     3 × 100        =        300
    #   map           4 × 1 000      =      4 000
    #   reuse         5 × 10 000     =     50 000
    #   ahead_copies  6 × 100 000    =    600 000
    #   ahead_batches 7 × 1 000 000  =  7 000 000
    #   ahead_reuses  8 × 10 000 000 = 80 000 000
    #   pages beyond each fault's first: copied 30 − 1 + zero-filled 29 − 2 = 56,
    #                 56 × 100 000   =  5 600 000  (at ahead_copy_us)
    #                                  ----------
    #                                  93 254 321  (events, hits, waste, extra, resident: free)
    assert DIGITS.predict_us(counters()) == 93_254_321


def test_predict_us_prices_a_thp_fault_as_one_fault_plus_511_batched_pages():
    # one THP zero fill (512 pages) and one thp-cow copy (512 pages): 1 × 10 + 1 × 1 + (511 + 511) × 100 000
    c = Counters(zero_fill=1, zero_fill_pages=512, cow_copy=1, cow_copy_pages=512)
    assert DIGITS.predict_us(c) == 10 + 1 + 1022 * 100_000


@pytest.mark.parametrize("field, constant, expected", [
    # one counter at 3, every other counter 0: 3 × that constant alone
    ("cow_copy", "cow_fault_us", 3 * 1), ("zero_fill", "zero_fill_us", 3 * 10),
    ("zero_page", "zero_page_us", 3 * 100), ("map", "map_us", 3 * 1_000), ("reuse", "reuse_us", 3 * 10_000),
    ("ahead_copies", "ahead_copy_us", 3 * 100_000), ("ahead_batches", "ahead_call_us", 3 * 1_000_000),
    ("ahead_reuses", "ahead_reuse_us", 3 * 10_000_000)])
def test_predict_us_term_by_term(field, constant, expected):
    assert DIGITS.predict_us(Counters(**{field: 3})) == expected


def test_predict_us_of_nothing_is_zero_and_unpriced_counters_cost_nothing():
    assert DIGITS.predict_us(Counters()) == 0
    assert DIGITS.predict_us(Counters(events=5, outside_vma=6, ahead_hits=7, ahead_waste=8, extra_pages=9,
                                      extra_pages_peak=10, extra_pages_final=11, resident=12,
                                      resident_peak=13)) == 0
    # large destinations: their pages are priced as cow_copy and ahead_copies already are, not again
    assert DIGITS.predict_us(Counters(cow_large_alloc=14, cow_large_pages=15)) == 0


def test_predict_us_with_fractional_constants():
    # 4 COW faults at 2.5 µs + 3 pages ahead at 0.5 µs in 2 calls at 0.25 µs: 10 + 1.5 + 0.5 = 12.0
    costs = CostModel(cow_fault_us=2.5, zero_fill_us=0, zero_page_us=0, map_us=0, reuse_us=0,
                      ahead_copy_us=0.5, ahead_call_us=0.25, ahead_reuse_us=0)
    assert costs.predict_us(Counters(cow_copy=4, ahead_copies=3, ahead_batches=2, zero_fill=9)) == \
        pytest.approx(12.0)


# ----- one result row ----------------------------------------------------------------------


def test_result_row_has_every_key_worked_out_by_hand():
    row = result_row("fixed:4", counters(), DIGITS)
    assert row == {
        # the table's columns first
        "policy": "fixed:4",
        "faults": 15,                # 2 + 3 + 4 + 1 + 5
        "cow_copies": 1, "ahead_copies": 6, "ahead_hits": 22, "ahead_waste": 23, "zero_fills": 2,
        "reuses": 5, "extra_pages_peak": 25,
        "predicted_us": 93_254_321,  # as in test_predict_us_prices_each_counter_with_its_own_constant
        "pages_copied": 36,          # pages copied on demand 30 + copied ahead 6
        # the user-space profile (CostModel's defaults): 1 × 2.515 + 2 × 1.415 + 3 × 0.508 + 4 × 1.767
        # + 5 × 0.717 + 6 × 2.050 + 7 × 2.843 + 8 × 0.214 + (29 − 2 + 30 − 1 folio pages) 56 × 2.050
        # = 2.515 + 2.83 + 1.524 + 7.068 + 3.585 + 12.3 + 19.901 + 1.712 + 114.8 = 166.235
        "predicted_us_userspace": 166.235,
        # then the counters not already shown under their own name
        "events": 20, "zero_fill": 2, "zero_page": 3, "map": 4, "cow_copy": 1, "reuse": 5, "outside_vma": 21,
        "ahead_reuses": 8, "ahead_batches": 7, "extra_pages_final": 26, "resident_peak": 28, "zero_fill_pages": 29,
        "cow_copy_pages": 30, "reuse_pages": 31, "thp_fault_alloc": 32, "mthp_fault_alloc": 33, "huge_zero_page": 34,
        "thp_split_pmd": 35, "thp_collapse_alloc": 36, "cow_large_alloc": 37, "cow_large_pages": 38}
    assert list(row)[:11] == ["policy", "faults", "cow_copies", "ahead_copies", "ahead_hits", "ahead_waste",
                              "zero_fills", "reuses", "extra_pages_peak", "predicted_us", "pages_copied"]


def test_result_row_pages_copied_counts_ahead_copies_too():
    # 10 copied on demand, 30 ahead (reuses copy nothing): 40 pages copied
    row = result_row("fixed:8", Counters(cow_copy=10, cow_copy_pages=10, ahead_copies=30, ahead_reuses=50), DIGITS)
    assert row["pages_copied"] == 40 and row["cow_copies"] == 10 and row["ahead_copies"] == 30


def test_result_row_rounds_predicted_us_to_nanoseconds():
    # 3 × 0.1234567 µs = 0.3703701 µs → 0.370
    costs = CostModel(cow_fault_us=0.1234567, zero_fill_us=0, zero_page_us=0, map_us=0, reuse_us=0,
                      ahead_copy_us=0, ahead_call_us=0, ahead_reuse_us=0)
    assert result_row("none", Counters(cow_copy=3), costs)["predicted_us"] == 0.370


# ----- best window per family ------------------------------------------------------------


def row(policy, faults, predicted_us, pages_copied, extra_pages_peak, ahead_copies, ahead_waste,
        predicted_us_userspace=0.0):
    return {"policy": policy, "faults": faults, "predicted_us": predicted_us, "pages_copied": pages_copied,
            "extra_pages_peak": extra_pages_peak, "ahead_copies": ahead_copies, "ahead_waste": ahead_waste,
            "predicted_us_userspace": predicted_us_userspace}


ROWS = [
    #    policy      faults  pred. µs  copied  extra peak  ahead  waste  user-space µs
    row("fixed:16",      10,   150.0,     80,         32,    60,    20,  100.0),  # ties fixed:8 on time, more memory
    row("none",         100,   200.0,     50,          0,     0,     0,  300.0),
    row("fixed:4",       40,   180.0,     60,          8,    30,     5,  200.0),  # least memory, but slower
    row("fixed:8",       20,   150.0,     70,         16,    45,    10,  315.0),  # fastest, fewer extra pages: best
    row("around:32",     50,   190.0,     65,         40,    25,     8,  250.0),  # ties around:16, more memory
    row("around:16",     60,   190.0,     62,         20,    12,     4,  290.0),  # best around
    row("ccow",          90,   210.0,     55,          2,     5,     1,  310.0),
    row("oracle:4",      30,   120.0,     50,          0,    20,     0,  200.0),
]


def test_best_per_family_picks_the_lowest_time_then_the_fewest_extra_pages():
    out = {s["family"]: s for s in best_per_family(ROWS)}
    assert len(out) == 4 and {s["policy"] for s in out.values()} == {"fixed:8", "around:16", "ccow", "oracle:4"}


# rows without stalls, of one run (no interval)
NO_STALLS = {"stall_p99_us": None, "stall_max_us": None, "none_stall_p99_us": None, "predicted_change_ci_pct": None,
             "runs": 1, "stall_after_fork_us": None, "none_stall_after_fork_us": None, "child_copied_pages": None,
             "none_child_copied_pages": None, "rdb_cow_mib": None, "none_rdb_cow_mib": None}


def test_best_per_family_carries_the_best_windows_stalls_and_nones():
    rows = [{**r, "stall_p99_us": 10.0 * i, "stall_max_us": 100.0 * i} for i, r in enumerate(ROWS)]
    out = {s["family"]: s for s in best_per_family(rows)}
    # fixed:8 is ROWS[3], none ROWS[1]
    assert (out["fixed"]["stall_p99_us"], out["fixed"]["stall_max_us"], out["fixed"]["none_stall_p99_us"]) == \
        (30.0, 300.0, 10.0)


def test_best_per_family_changes_against_none_by_hand():
    out = {s["family"]: s for s in best_per_family(ROWS)}
    # fixed:8 against none: faults 100·(20−100)/100 = −80 %; time 100·(150−200)/200 = −25 %;
    # extra copies 70 − 50 = 20; the same window in user space 100·(315−300)/300 = +5 % (fixed:16 and
    # fixed:4 are faster there, but the window is chosen on the headline time)
    assert out["fixed"] == {"family": "fixed", "policy": "fixed:8", "faults_change_pct": pytest.approx(-80.0),
                            "ahead_copies": 45, "ahead_waste": 10, "extra_copies": 20, "extra_pages_peak": 16,
                            "predicted_change_pct": pytest.approx(-25.0),
                            "predicted_change_pct_userspace": pytest.approx(5.0), **NO_STALLS}
    # around:16: faults 100·(60−100)/100 = −40 %; time 100·(190−200)/200 = −5 %; copies 62 − 50 = 12;
    # user space 100·(290−300)/300 = −3.33 %
    assert out["around"] == {"family": "around", "policy": "around:16", "faults_change_pct": pytest.approx(-40.0),
                             "ahead_copies": 12, "ahead_waste": 4, "extra_copies": 12, "extra_pages_peak": 20,
                             "predicted_change_pct": pytest.approx(-5.0),
                             "predicted_change_pct_userspace": pytest.approx(-10 / 3), **NO_STALLS}
    # ccow: faults 100·(90−100)/100 = −10 %; time 100·(210−200)/200 = +5 %; copies 55 − 50 = 5;
    # user space 100·(310−300)/300 = +3.33 %
    assert out["ccow"] == {"family": "ccow", "policy": "ccow", "faults_change_pct": pytest.approx(-10.0),
                           "ahead_copies": 5, "ahead_waste": 1, "extra_copies": 5, "extra_pages_peak": 2,
                           "predicted_change_pct": pytest.approx(5.0),
                           "predicted_change_pct_userspace": pytest.approx(10 / 3), **NO_STALLS}
    # oracle:4: faults −70 %; time 100·(120−200)/200 = −40 %; copies 50 − 50 = 0
    assert out["oracle"]["faults_change_pct"] == pytest.approx(-70.0)
    assert out["oracle"]["predicted_change_pct"] == pytest.approx(-40.0)
    assert out["oracle"]["extra_copies"] == 0


def test_best_per_family_tie_break_holds_whichever_row_comes_first():
    tied = [row("none", 10, 100.0, 10, 0, 0, 0),
            row("fixed:2", 8, 90.0, 12, 3, 2, 0), row("fixed:4", 7, 90.0, 14, 1, 4, 1),
            row("fixed:8", 6, 90.0, 18, 2, 8, 2)]
    for rows in (tied, [tied[0]] + tied[:0:-1]):
        assert [s["policy"] for s in best_per_family(rows)] == ["fixed:4"]  # 1 extra page at peak


def test_a_baseline_of_zero_gives_no_percentage():
    # none with no faults and no time: nothing to take a percentage of
    rows = [row("none", 0, 0.0, 0, 0, 0, 0), row("fixed:4", 5, 12.0, 6, 1, 3, 0)]
    (s,) = best_per_family(rows)
    assert s["faults_change_pct"] is None and s["predicted_change_pct"] is None and s["extra_copies"] == 6
    assert change(150.0, 200.0) == pytest.approx(-25.0) and change(3.0, 0.0) is None


# ----- the verdict -------------------------------------------------------------------------


def summary(family, policy, ahead_copies, predicted_change_pct, faults_change_pct=-50.0, extra_pages_peak=1600):
    return {"family": family, "policy": policy, "ahead_copies": ahead_copies,
            "predicted_change_pct": predicted_change_pct, "faults_change_pct": faults_change_pct,
            "extra_pages_peak": extra_pages_peak}


def test_verdict_helps_names_the_best_realizable_policy():
    # the oracle's −40 % is no realizable policy; fixed:8's −25 % beats around's −5 % and ccow's +5 %
    summaries = [summary("around", "around:16", 12, -5.0), summary("fixed", "fixed:8", 45, -25.0, -80.0, 1600),
                 summary("ccow", "ccow", 5, 5.0), summary("oracle", "oracle:4", 20, -40.0)]
    assert verdict(summaries) == "COW-ahead helps: fixed:8 predicts -25.0% time, -80.0% faults, " \
                                 "1,600 extra pages (6.2 MiB) at peak."


def test_verdict_helps_says_what_the_window_does_to_the_stalls():
    best = {**summary("fixed", "fixed:8", 45, -25.0, -80.0, 256), "stall_p99_us": 520.0, "none_stall_p99_us": 3.0,
            "stall_after_fork_us": 12_345.0, "none_stall_after_fork_us": 10_000.0}
    # 256 pages are 1 MiB; 10,000 µs after the forks are 10.0 ms
    assert verdict([best]) == "COW-ahead helps: fixed:8 predicts -25.0% time, -80.0% faults, p99 stall 3.0 → " \
                              "520.0 µs, stalls in the 100 ms after forks 10.0 → 12.3 ms, 256 extra pages (1.0 MiB) at peak."


def test_verdict_idle_families_are_noted_in_order_and_the_oracle_never():
    summaries = [summary("fixed", "fixed:8", 45, -25.0, -80.0, 16), summary("ccow", "ccow", 0, 0.0),
                 summary("adaptive", "adaptive", 0, 0.0), summary("oracle", "oracle:4", 0, 0.0)]
    assert verdict(summaries) == "COW-ahead helps: fixed:8 predicts -25.0% time, -80.0% faults, " \
                                 "16 extra pages (0.1 MiB) at peak (adaptive, ccow stayed off: nothing copied ahead)."


@pytest.mark.parametrize("gain", [-1.5, -2.0, 0.0, 2.0])
def test_verdict_within_two_percent_is_no_real_difference(gain):
    summaries = [summary("fixed", "fixed:8", 45, gain), summary("ccow", "ccow", 5, 9.0)]
    assert verdict(summaries) == ("COW-ahead makes no real difference here: the best policy that copies ahead, "
                                  f"fixed:8, predicts {gain:+.1f}% time against none (within ±2%).")


def test_verdict_just_past_two_percent_helps():
    assert verdict([summary("fixed", "fixed:8", 45, -2.1, -30.0, 5)]).startswith(
        "COW-ahead helps: fixed:8 predicts -2.1% time, -30.0% faults, 5 extra pages (0.0 MiB) at peak")


def test_verdict_does_not_help_when_every_acting_policy_costs_time():
    # the best of +3.0 and +5.0 is +3.0; the oracle's −40 % does not count
    summaries = [summary("ccow", "ccow", 5, 5.0), summary("fixed", "fixed:2", 4, 3.0),
                 summary("around", "around:16", 0, 0.0), summary("oracle", "oracle:4", 20, -40.0)]
    assert verdict(summaries) == ("COW-ahead does not help here: the best policy that copies ahead, fixed:2, "
                                  "predicts +3.0% time against none (around stayed off: nothing copied ahead).")


def test_verdict_does_not_act_when_nothing_realizable_copies_ahead():
    summaries = [summary("fixed", "fixed:8", 0, 0.0), summary("ccow", "ccow", 0, 0.0),
                 summary("oracle", "oracle:4", 20, -40.0)]
    assert verdict(summaries) == ("COW-ahead does not act here: no realizable policy copied a page ahead "
                                  "(ccow, fixed stayed off: nothing copied ahead).")
    # copies ahead against a baseline of 0 (no percentage): neither acting nor idle, so no note
    assert verdict([summary("fixed", "fixed:8", 3, None)]) == \
        "COW-ahead does not act here: no realizable policy copied a page ahead."


# ----- real timing: medians and spreads ---------------------------------------------------


@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 4, 5], 2 / 3),            # q1 = 2, q3 = 4, median 3: (4 − 2) / 3
    ([5, 1, 4, 2, 3], 2 / 3),            # the same, unsorted
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], 0.8),  # positions 8·¼ = 2 and 8·¾ = 6: q1 = 3, q3 = 7, median 5: 4 / 5
    ([2, 4], 1 / 3),                     # q1 = 2 + ¼·2 = 2.5, q3 = 2 + ¾·2 = 3.5, median 3: 1 / 3
    ([10, 10, 10, 10], 0.0),             # no spread at all
    ([7], 0.0), ([], 0.0),               # fewer than two: nothing to measure a spread with
])
def test_spread_is_the_interquartile_range_over_the_median(values, expected):
    assert timing.spread(values) == pytest.approx(expected)


# CPU µs each plan's five rounds take, by hand:
#   none          100 300 200 500 400 → sorted 100 200 300 400 500: median 300, q1 200, q3 400, spread 0.6667
#   fixed:4        90  80 100  70  60 → sorted  60  70  80  90 100: median  80, q1  70, q3  90, spread 0.25
#   none|fixed:4  110  90 100 120  80 → sorted  80  90 100 110 120: median 100, q1  90, q3 110, spread 0.2
#   fixed:4 against its own none: 100 · (80 / 100 − 1) = −20 %
CPU_US = {"none": [100, 300, 200, 500, 400], "fixed:4": [90, 80, 100, 70, 60],
          "none|fixed:4": [110, 90, 100, 120, 80]}


@pytest.fixture
def fake_runs(monkeypatch):
    """time_policies with plans that are names and runs that return CPU_US in turn: no process runs."""
    seen = {"plans_for": None, "runs": [], "advanced": 0}

    def plans_side_by_side(trace, policies):
        seen["plans_for"] = (trace, list(policies))
        return {key: SimpleNamespace(key=key, pattern="sequential", policy=key) for key in CPU_US}

    def run_plan(plan, measure):
        assert measure is False
        rounds_so_far = sum(1 for key in seen["runs"] if key == plan.key)
        seen["runs"].append(plan.key)
        us = CPU_US[plan.key][rounds_so_far]
        return SimpleNamespace(integrity=[], work_cpu_ns=us * 1000, work_ns=2 * us * 1000, wall_ns=3 * us * 1000)

    monkeypatch.setattr(timing, "plans_side_by_side", plans_side_by_side)
    monkeypatch.setattr(timing, "run_plan", run_plan)
    return seen


def test_time_policies_reports_medians_changes_and_spreads_by_hand(fake_runs):
    def advance(n):
        fake_runs["advanced"] += n

    out = timing.time_policies("TRACE", ["none", "fixed:4"], repeats=5, advance=advance)
    assert fake_runs["plans_for"] == ("TRACE", ["none", "fixed:4"])
    assert out["repeats"] == 5 and "MADV_POPULATE_WRITE" in out["method"]
    assert out["cpu_us"] == {"none": 300.0, "fixed:4": 80.0}
    assert out["change_pct"] == {"fixed:4": -20.0}
    assert out["spread"] == {"none": 0.6667, "fixed:4": 0.25, "none|fixed:4": 0.2}
    # rounds run every plan once: none, fixed:4, none|fixed:4, five times over; one advance per run
    assert fake_runs["runs"] == ["none", "fixed:4", "none|fixed:4"] * 5 and fake_runs["advanced"] == 15


def test_run_rounds_keeps_cpu_work_and_wall_microseconds_per_plan(fake_runs):
    plans = {key: SimpleNamespace(key=key, pattern="sequential", policy=key) for key in CPU_US}
    times = timing.run_rounds(plans, repeats=2)
    # round 1 and 2 of each plan; work is 2× and wall 3× the CPU time in the fake
    assert times["none"] == {"cpu_us": [100, 300], "work_us": [200, 600], "wall_us": [300, 900]}
    assert times["fixed:4"]["cpu_us"] == [90, 80] and times["none|fixed:4"]["wall_us"] == [330, 270]


def test_run_rounds_stops_at_broken_memory(monkeypatch):
    monkeypatch.setattr(timing, "run_plan", lambda plan, measure: SimpleNamespace(
        integrity=["pid 2: page +5: holds 7, must hold 6"], work_cpu_ns=1, work_ns=1, wall_ns=1))
    plan = SimpleNamespace(pattern="bgsave", policy="fixed:4")
    with pytest.raises(CowaheadError, match=r"^bgsave under fixed:4: memory integrity broken: "
                                            r"pid 2: page \+5: holds 7, must hold 6$"):
        timing.run_rounds({"fixed:4": plan}, repeats=3)


# ----- budgets: the rule that picks a best window ---------------------------------------------------


def with_stalls(p99: dict[str, float]) -> list[dict]:
    return [{**r, "stall_p99_us": p99.get(r["policy"], 2.5)} for r in ROWS]


def test_a_window_over_the_stall_budget_is_not_chosen():
    # fixed:8 (150 µs, the fastest) stalls 150 µs at p99: over 100, so fixed:16 (150 µs too, ties on time,
    # 32 extra pages) is next; with fixed:16 over too, fixed:4 (180 µs)
    rows = with_stalls({"fixed:8": 150.0})
    assert {s["family"]: s["policy"] for s in best_per_family(rows)}["fixed"] == "fixed:16"
    rows = with_stalls({"fixed:8": 150.0, "fixed:16": 101.0})
    assert {s["family"]: s["policy"] for s in best_per_family(rows)}["fixed"] == "fixed:4"
    assert {s["family"]: s["policy"] for s in best_per_family(rows, Budgets(None))}["fixed"] == "fixed:8"


def test_a_family_with_every_window_over_budget_has_no_summary_and_the_verdict_names_it():
    rows = with_stalls({"fixed:4": 200.0, "fixed:8": 200.0, "fixed:16": 200.0})
    summaries = best_per_family(rows)
    assert "fixed" not in {s["family"] for s in summaries} and over_budget(rows, Budgets()) == ["fixed"]
    assert verdict(summaries, over_budget(rows, Budgets())).endswith("(fixed: every window over the budgets).")


def test_the_memory_budget_in_mib():
    # 16 extra pages = 64 KiB = 0.0625 MiB: fixed:8 fits 0.0625 and not 0.06; then fixed:4 (8 pages, 0.03125)
    rows = with_stalls({})
    assert {s["family"]: s["policy"] for s in best_per_family(rows, Budgets(None, 0.0625))}["fixed"] == "fixed:8"
    assert {s["family"]: s["policy"] for s in best_per_family(rows, Budgets(None, 0.06))}["fixed"] == "fixed:4"
    assert Budgets(100.0, 8.0).describe() == "p99 stall ≤ 100 µs and extra memory ≤ 8 MiB at peak"



# ----- repeats: the median over runs and its interval ------------------------------------------------


def test_the_bootstrap_interval_of_a_median_by_hand():
    from cowahead.results.repeats import bootstrap_interval
    assert bootstrap_interval([5.0]) is None  # one run: no interval
    lo, hi = bootstrap_interval([-8.8, 1.6, -8.2])  # the three redis-bgsave runs of around:64
    assert -8.8 <= lo <= hi <= 1.6  # a median of resampled runs lies within the runs' range
    assert lo == -8.8 and hi == pytest.approx(1.6)  # 3 runs: resamples of two or three -8.8 (or 1.6) happen


def test_runs_are_combined_and_the_best_window_is_chosen_on_the_median():
    from cowahead.results.repeats import combine_runs

    def run(fixed8: float, fixed16: float) -> dict:  # none at 100 µs in every run
        return {"name": "w", "trace": "t.parquet", "rows": [
            row("none", 10, 100.0, 1, 0, 0, 0, 100.0), row("fixed:8", 5, fixed8, 2, 1, 1, 0, 100.0),
            row("fixed:16", 4, fixed16, 3, 2, 2, 0, 100.0)]}
    # fixed:8: −10, −12, +30 % → median −10; fixed:16: −5, −6, −7 % → median −6: fixed:8 is chosen on the median
    # though run 0 alone would choose it too; its interval holds 0 (+30 % in one run), so no difference
    entry = combine_runs([run(90.0, 95.0), run(88.0, 94.0), run(130.0, 93.0)])
    assert entry["runs"] == 3 and [r["repeat"]["runs"] for r in entry["rows"]] == [3, 3, 3]
    fixed8 = entry["rows"][1]["repeat"]
    assert fixed8["predicted_change_pct"] == [-10.0, -12.0, 30.0] and fixed8["median_pct"] == -10.0
    [best] = best_per_family(entry["rows"], Budgets(None))
    assert (best["policy"], best["predicted_change_pct"], best["runs"]) == ("fixed:8", -10.0, 3)
    assert best["predicted_change_ci_pct"][0] <= 0 <= best["predicted_change_ci_pct"][1]
    assert "makes no real difference" in verdict([best]) and "median of 3 runs" in verdict([best])
    # an interval that excludes 0 around a change under 2 % is no difference either, and says its interval
    near = {**best, "predicted_change_pct": -1.0, "predicted_change_ci_pct": [-1.5, -0.5]}
    assert verdict([near]).endswith("predicts -1.0% time against none (median of 3 runs, 95% interval -1.5% … "
                                    "-0.5%) (within ±2%).")
    # steadier runs: fixed:16 −5, −6, −7; fixed:8 now −4, −4, −4: fixed:16 by its median, an interval below 0
    entry = combine_runs([run(96.0, 95.0), run(96.0, 94.0), run(96.0, 93.0)])
    [best] = best_per_family(entry["rows"], Budgets(None))
    assert (best["policy"], best["predicted_change_pct"]) == ("fixed:16", -6.0)
    assert best["predicted_change_ci_pct"][1] < 0 and verdict([best]).startswith("COW-ahead helps: fixed:16")
