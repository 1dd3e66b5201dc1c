"""``redis-periodic``: Debian's redis-server snapshotting by its ``save`` rule, again and again, under writes.

CCoW's setting: a server that forks a snapshot child every few seconds, so
what one fork interval copied is history for the next. A private
redis-server (as in ``redis-bgsave``) is filled by redis-benchmark and
attached to (``record --pid``); then, while a second redis-benchmark keeps
overwriting values, ``CONFIG SET save "1 1"`` turns on the rule "snapshot
when a second has passed since the last one and a key changed", which
under writes forks a BGSAVE child about every two seconds. After SAVES
snapshots the rule is turned off again (a save already running is waited
for and counted).

The program's own counter is INFO's ``rdb_last_cow_size`` of each save,
read when that save ends (INFO is polled every POLL seconds; a save
missed between two polls is an error, not a silent gap). Each is held
against its fork in the trace, in order, exactly as in ``redis-bgsave``:
the child's private anonymous pages in the reference model (policy
none) just before the child's exit.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..errors import CowaheadError
from ..trace import PAGE_SIZE
from ._common import Clock, Comparison, Recorder, ScenarioResult, add_to_trace
from .redis_bgsave import COUNTER_NOTE, Redis, model_saves, per_policy, saves_in_trace, under_writes

NAME = "redis-periodic"
SUMMARY = "redis-server `save 1 1` snapshotting 3+ times under redis-benchmark writes; each vs rdb_last_cow_size"
KEYS = 200_000
FILL_REQUESTS = 600_000
SAVES = 3            # snapshots wanted (CCoW's history needs a second fork at least; three show a trend)
SAVE_RULE = "1 1"    # seconds, changes
POLL = 0.05          # seconds between INFO persistence reads
DEADLINE = 120       # seconds for the SAVES snapshots
# per_policy (redis-bgsave's) gives each row's pages the save children end up owning, summed over the saves.
__all__ = ["NAME", "SUMMARY", "run", "per_policy"]


def run(output: Path | None, progress=None, saves: int = SAVES) -> ScenarioResult:
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="cowahead-redis-periodic-") as tmp:
        redis = Redis(Path(tmp), keys=KEYS)
        recorder = Recorder(output) if output is not None else None
        recording, done, memory = under_writes(redis, recorder, clock, lambda: _snapshots(redis, saves), progress,
                                               fill=FILL_REQUESTS)
    result = ScenarioResult(NAME, output, recording, seconds=dict(clock.seconds))
    result.details.update({"saves": len(done), "save_rule": SAVE_RULE, "keys": KEYS,
                           "used_memory": int(memory.get("used_memory", "0")),
                           "rdb_last_cow_size_per_save": [s["rdb_last_cow_size"] for s in done]})
    result.details["program_saves"] = done
    if recording is None:
        return result
    _compare(result, recording, redis.pid, done)
    add_to_trace(output, recording, result)
    return result


def _snapshots(redis: Redis, wanted: int) -> list[dict]:
    """Turn the save rule on, note every save as it ends, turn it off after ``wanted`` (and wait out one running)."""
    counted = int(redis.info("persistence").get("rdb_saves", "0") or 0)
    if redis.cli("CONFIG", "SET", "save", SAVE_RULE) != "OK":
        raise CowaheadError("redis-server refused CONFIG SET save")
    done: list[dict] = []
    rule_on = True
    deadline = time.monotonic() + DEADLINE
    while True:
        info = redis.info("persistence")
        saves = int(info.get("rdb_saves", "0") or 0)
        running = info.get("rdb_bgsave_in_progress") == "1"
        if saves > counted and not running:
            if saves > counted + 1:
                raise CowaheadError(f"{saves - counted} saves ended between two INFO reads {POLL} s apart; "
                                    "their rdb_last_cow_size values are lost")
            if info.get("rdb_last_bgsave_status") != "ok":
                raise CowaheadError(f"redis-server's save {len(done) + 1} failed; see {redis.directory / 'redis.log'}")
            counted = saves
            done.append({"rdb_saves": saves, "rdb_last_cow_size": int(info.get("rdb_last_cow_size", "0")),
                         "rdb_last_bgsave_time_sec": int(info.get("rdb_last_bgsave_time_sec", "-1"))})
        if rule_on and len(done) >= wanted:
            redis.cli("CONFIG", "SET", "save", "")
            rule_on = False
            continue  # read again: a save may have started before the rule went off
        if not rule_on and not running and saves == counted:
            return done
        if time.monotonic() > deadline:
            raise CowaheadError(f"only {len(done)} of {wanted} saves in {DEADLINE} s")
        time.sleep(POLL)


def _compare(result: ScenarioResult, recording, server: int, done: list[dict]) -> None:
    trace = recording.trace
    forks = saves_in_trace(trace, server)
    if len(forks) != len(done):
        raise CowaheadError(f"redis-server reported {len(done)} saves, the trace has {len(forks)} forks of it")
    per_save, _ = model_saves(trace, server)
    for number, (save, program) in enumerate(zip(per_save, done), start=1):
        result.comparisons.append(Comparison(
            f"pages save {number}'s child ends up owning", save["model_private_pages"],
            program["rdb_last_cow_size"] / PAGE_SIZE, "pages", COUNTER_NOTE))
    result.details["trace_saves"] = per_save
    result.details["model_child_zero_fills"] = sum(s["model_child_zero_fills"] for s in per_save)
    result.details["fork_interval_ms"] = [round((int(trace.columns["time_ns"][b[0]]) - int(trace.columns["time_ns"][a[0]])) / 1e6)
                                          for a, b in zip(forks, forks[1:])]
