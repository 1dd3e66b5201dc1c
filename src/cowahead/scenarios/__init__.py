"""Real third-party programs, each started, loaded, recorded and stopped by its scenario.

One module per scenario, each with ``NAME``, ``SUMMARY`` and
``run(output, progress=None) -> ScenarioResult``: with an output path it
records into that trace and holds the trace's faults against the program's
own counters; with ``None`` it runs the same workload unrecorded (for the
overhead benchmark).
"""

from __future__ import annotations

from types import ModuleType

from ..errors import CowaheadError
from . import (forkexec, gunicorn_preload, gunicorn_preload_freeze, make_build, php_fpm, postgres_pgbench,
               python_forkpool, r_mclapply, redis_bgsave, redis_periodic, redis_thp, ruby_prefork,
               ruby_prefork_nakayoshi)
from ._common import TOLERANCE, Comparison, ScenarioResult

# The default ``evaluate`` records these (its time budget); the corpus (issue 21) adds the rest.
DEFAULT: tuple[ModuleType, ...] = (redis_bgsave, python_forkpool, forkexec)
CORPUS: tuple[ModuleType, ...] = (redis_periodic, redis_thp, gunicorn_preload, gunicorn_preload_freeze,
                                   postgres_pgbench, make_build, r_mclapply, php_fpm,
                                   ruby_prefork, ruby_prefork_nakayoshi)
SCENARIOS: dict[str, ModuleType] = {m.NAME: m for m in DEFAULT + CORPUS}
DEFAULT_SCENARIOS: list[str] = [m.NAME for m in DEFAULT]


def scenario(name: str) -> ModuleType:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise CowaheadError(f"no scenario {name!r}; the scenarios are: {', '.join(SCENARIOS)}") from None


__all__ = ["SCENARIOS", "DEFAULT_SCENARIOS", "scenario", "Comparison", "ScenarioResult", "TOLERANCE"]
