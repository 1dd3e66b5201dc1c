"""redis-bgsave's COW memory per policy, in rdb_last_cow_size's terms: a real recording, its replay's pages
copied while the BGSAVE child lived, against the scenario's own count from the model's fault log and against
what Redis itself reported."""

from __future__ import annotations

import os

import pytest
from conftest import requires

from cowahead.model.costs import CostModel
from cowahead.results.rows import simulate_engine
from cowahead.scenarios import redis_bgsave
from cowahead.trace import TraceFile

pytestmark = [requires("redis-server", "redis-server"), requires("perf", "linux-perf"),
              pytest.mark.skipif(os.geteuid() != 0, reason="recording attaches perf to redis-server: needs root")]


def test_the_snapshot_childs_cow_memory_per_policy(tmp_path):
    result = redis_bgsave.run(tmp_path / "redis.parquet")
    details = result.details
    none, around = simulate_engine(TraceFile(tmp_path / "redis.parquet"), ["none", "around:64"], CostModel())
    # the interval count (replay counters at the fork and at the child's exit) and the scenario's own count
    # (the model's fault log, filtered by process and event index) are two readings of one quantity
    assert none["child_copied_pages"] == details["model_cow_copies"] > 0
    ours = redis_bgsave.per_policy(none, details)["rdb_cow_pages"]
    assert ours == pytest.approx(details["rdb_last_cow_pages"], rel=0.05)  # Redis's own number, ±5 %
    # COW-ahead copies more while the child lives: the child ends up owning more
    assert redis_bgsave.per_policy(around, details)["rdb_cow_pages"] > ours
