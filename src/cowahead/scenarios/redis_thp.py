"""``redis-thp``: redis-server on THP ``always`` with ``disable-thp no``, so a BGSAVE parent writes into PMD THPs.

The case that made Linux drop whole-THP COW in 5.8 (commit 3917c80280c9):
Redis, its heap in 2 MiB THPs, forks a snapshot child while clients keep
writing, and each write to a shared THP copied all of it. Since 5.8 the
parent's PMD is split and one 4 KiB page copied, which is what this kernel
does; replaying the trace under ``thp-cow`` says what Linux <= 5.7 would
have done.

The run is ``redis-bgsave``'s (fill, BGSAVE under writes) with the server
started with ``--disable-thp no`` (Redis 7 otherwise sets
PR_SET_THP_DISABLE on itself) and the THP knob ``enabled`` set to
``always`` for the run, under ``real.thp.thp_config`` (which holds the
machine-wide THP lock and puts every knob back afterwards). Unlike
``redis-bgsave`` the server is recorded from its exec, fill included: an
attach snapshot carries no folio state, so from one the model mapped a
THP on every aligned 2 MiB that had pages (60 where the kernel had 57,
and the child's private pages 1.5 % off); from exec the model sees each
fault where the kernel took it. The trace's metadata records THP
``always``, so the model maps PMD THPs where an aligned 2 MiB fits in the
VMA at the fault.

Two comparisons: INFO ``rdb_last_cow_size`` against the child's private
pages in the model, as in ``redis-bgsave``; and the server's
``AnonHugePages`` (smaps_rollup, read just before BGSAVE) against the
model's PMD-mapped THP pages at the fork.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from ..errors import CowaheadError
from ..real.thp import counter_deltas, thp_config, thp_counters
from ..trace import PAGE_SIZE
from ._common import Clock, Comparison, Recorder, ScenarioResult, add_to_trace
from .redis_bgsave import (COUNTER_NOTE, KEYS, Redis, bgsave_under_writes, model_saves, per_policy, saves_in_trace,
                           under_writes)

NAME = "redis-thp"
SUMMARY = "redis-server BGSAVE on THP always with disable-thp no (parent writes hit PMD THPs); vs rdb_last_cow_size"
THP_ENABLED = "always"
PMD_PAGES = 512
__all__ = ["NAME", "SUMMARY", "run", "per_policy"]  # per_policy: redis-bgsave's, rdb_last_cow_size's terms per row


def anon_huge_pages(pid: int) -> int:
    """AnonHugePages of a process, in 4 KiB pages (/proc/PID/smaps_rollup: PMD-mapped anonymous THPs)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024 // PAGE_SIZE
    raise CowaheadError(f"/proc/{pid}/smaps_rollup has no AnonHugePages line")


def run(output: Path | None, progress=None) -> ScenarioResult:
    seen: dict[str, int] = {}
    clock = Clock()
    with thp_config(enabled=THP_ENABLED) as settings:
        with tempfile.TemporaryDirectory(prefix="cowahead-redis-thp-") as tmp:
            counters_before = thp_counters()
            recorder = Recorder(output) if output is not None else None

            def launch(command: list[str]):
                recorder.start(command)  # from exec: the model sees each THP fault where the kernel took it
                return recorder.process

            redis = Redis(Path(tmp), config=("--disable-thp", "no"), launch=launch if recorder else None)

            def before_save() -> None:
                seen["anon_huge_pages"] = anon_huge_pages(redis.pid)

            save = bgsave_under_writes(redis, clock, before_save)
            recording, info, memory = under_writes(redis, recorder, clock, save, progress, attach=False)
            vmstat = counter_deltas(counters_before, thp_counters())
    result = ScenarioResult(NAME, output, recording, seconds={"workload": clock.seconds["bgsave"], **clock.seconds})
    cow_bytes = int(info.get("rdb_last_cow_size", "0"))
    result.details.update({"thp_during_run": settings, "rdb_last_cow_size": cow_bytes, "keys": KEYS,
                           "used_memory": int(memory.get("used_memory", "0")),
                           "server_anon_huge_pages_before_save": seen.get("anon_huge_pages"),
                           "vmstat_thp_deltas_machine_wide": vmstat,
                           "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status")})
    if recording is None:
        return result
    _compare(result, recording, redis.pid, cow_bytes, seen["anon_huge_pages"])
    add_to_trace(output, recording, result)
    return result


def _compare(result: ScenarioResult, recording, server: int, cow_bytes: int, huge_pages: int) -> None:
    trace = recording.trace
    saves = saves_in_trace(trace, server)
    if len(saves) != 1:
        raise CowaheadError(f"expected one fork of redis-server in the trace, found {len(saves)}")
    at_fork = []
    [save], kernel = model_saves(trace, server, {saves[0][0]: lambda k: at_fork.append(replace(k.counters))})
    result.comparisons.append(Comparison(
        "pages the BGSAVE child ends up owning", save["model_private_pages"], cow_bytes / PAGE_SIZE, "pages",
        COUNTER_NOTE))
    model_huge = (at_fork[0].thp_fault_alloc - at_fork[0].thp_split_pmd) * PMD_PAGES
    result.comparisons.append(Comparison(
        "server's PMD-mapped THP pages at the fork", model_huge, huge_pages, "pages",
        "trace: model (policy none) PMD THPs faulted in less PMDs split, before the fork, x 512; "
        "program: the server's AnonHugePages (/proc/PID/smaps_rollup) just before BGSAVE / 4096"))
    result.details.update({"server": server, "child": save["child"], "model_cow_copies": save["model_cow_copies"],
                           "model_child_zero_fills": save["model_child_zero_fills"],
                           "model_copies_and_child_zero_fills": save["pages"],
                           "model_thp_pages_at_fork": model_huge,
                           "thp_pages_model_vs_anon_huge_pages": (model_huge - huge_pages) / huge_pages if huge_pages else None,
                           "model_thp_fault_alloc_before_fork": at_fork[0].thp_fault_alloc,
                           "model_thp_split_pmd_before_fork": at_fork[0].thp_split_pmd,
                           "model_thp_split_pmd_whole_trace": kernel.counters.thp_split_pmd,
                           "trace_cow_0x7_faults_during_save": save["trace_cow_0x7_faults"],
                           "bgsave_child_life_ms": save["child_life_ms"]})
