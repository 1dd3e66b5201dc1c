"""The main job: the built-in workload suite, replayed under every policy, and its report.

``evaluate`` resolves each workload (a generator pattern, a scenario, or a
trace file) to a trace under ``DIR/traces``, sweeps every policy and window
over all of them with the engine on both cores (the ``none`` replay also
gives each workload's fault heatmap), times the best window of each policy for real where the workload
can run for real (the generators, through user-space COW-ahead), records
what each scenario's program says of itself, and writes ``DIR/results.json``
and ``DIR/index.html``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import CowaheadError
from .model.costs import CostModel
from .policies import Policy, default_policies
from .real.timing import time_policies
from .results.document import save_results
from .results.repeats import combine_runs
from .results.summary import Budgets, best_per_family
from .scenarios import DEFAULT_SCENARIOS, SCENARIOS, scenario
from .sweep import Pool, expand_policies, run_sweep
from .trace import Trace, TraceFile, write_trace
from .trace.generators import PATTERNS, generate

GENERATORS = ["sequential", "strided:4", "random", "zipf:1.2", "hotcold", "forkexec", "prefork", "bgsave"]
DEFAULT_WORKLOADS = GENERATORS + DEFAULT_SCENARIOS  # the corpus scenarios (scenarios.CORPUS) only when named
CORPUS_WORKLOADS = GENERATORS + list(SCENARIOS)  # `evaluate --corpus`: every scenario (issue 21)
# Timed for real unless --real asks for every runnable workload: where real runs say most (a child that
# writes runs of shared pages) for a few minutes less; bgsave's alone took 388 s (docs/results.md).
REAL_BY_DEFAULT = ("sequential",)


@dataclass(frozen=True)
class Settings:
    quick: bool
    pages: int          # pages each generator maps
    policies: list[Policy]
    real_repeats: int   # real runs per policy, medians; 0 = no real timing
    seed: int = 0
    real_workloads: tuple[str, ...] | None = REAL_BY_DEFAULT  # the workloads timed for real; None: every one
    budgets: Budgets = Budgets()  # what a best window may cost (stall, memory)
    repeats: int = 3  # runs of each generator (seeds seed … seed+R−1) and scenario (recordings); a trace file: 1
    corpus: bool = False  # every scenario, and the corpus page beside the report

    @classmethod
    def default(cls, quick: bool, real: bool = True, every_real: bool = False) -> "Settings":
        """``real``: time the best windows for real (REAL_BY_DEFAULT's workloads, or with ``every_real``
        each one that can run for real)."""
        chosen = None if every_real else REAL_BY_DEFAULT
        if quick:
            return cls(True, 2048, expand_policies(default_policies("evaluate-quick")), 3 if real else 0,
                       real_workloads=chosen, repeats=1)
        return cls(False, 16384, expand_policies(default_policies("evaluate")), 5 if real else 0,
                   real_workloads=chosen)


@dataclass
class Workload:
    name: str
    kind: str            # "generator", "scenario" or "trace"
    trace_path: Path
    description: str = ""
    notes: list[str] = field(default_factory=list)
    scenario: dict | None = None
    trace: Trace | None = None  # a generated trace, kept rather than read back from trace_path


def resolve(name: str) -> str:
    """Which kind of workload a command-line word names; a clear error otherwise."""
    if name.partition(":")[0] in PATTERNS:
        return "generator"
    if name in SCENARIOS:
        return "scenario"
    if Path(name).exists():
        return "trace"
    raise CowaheadError(f"'{name}' is no generator ({', '.join(PATTERNS)}), no scenario ({', '.join(SCENARIOS)}) "
                        "and no trace file")


def check_workloads(names: list[str]) -> None:
    """Every name checked before the first long step; no two may share a trace file."""
    for name in names:
        resolve(name)
    slugs = [_slug(name) for name in names]
    if len(set(slugs)) < len(slugs):
        twice = sorted({n for n, s in zip(names, slugs) if slugs.count(s) > 1})
        raise CowaheadError(f"workloads {', '.join(twice)} would share one trace file; name each once")


def prepare(name: str, settings: Settings, traces_dir: Path, progress=None, run: int = 0) -> Workload:
    """Make (or open) the workload's trace under ``traces_dir``: its ``run``-th (a generator's seed + run, a
    scenario's recording)."""
    kind = resolve(name)
    path = traces_dir / (f"{_slug(name)}.parquet" if run == 0 else f"{_slug(name)}-run{run}.parquet")
    if kind == "generator":
        seed = settings.seed + run
        trace = generate(name, settings.pages, seed)
        write_trace(trace, path)
        return Workload(name, kind, path, f"Generated pattern {name}, {settings.pages:,} pages, seed {seed}.",
                        trace=trace)
    if kind == "scenario":
        module = scenario(name)
        result = module.run(path, progress)
        notes = [f"{c.what}: trace {c.trace:,.0f} vs program {c.program:,.0f} {c.unit} "
                 f"({c.difference:+.1%}, {'agrees' if c.agrees else 'DISAGREES'} within ±5%)"
                 + (f"; {c.note}" if c.note else "") for c in result.comparisons]
        return Workload(name, kind, path, f"Scenario: {module.SUMMARY}", notes, result.as_dict())
    TraceFile(name)  # validates before anything long starts
    return Workload(Path(name).stem, kind, Path(name), f"Trace file {name}.")


def evaluate(names: list[str], settings: Settings, out_dir: Path, costs: CostModel,
             step: Callable[[str, int], Callable[[int], None]], pool: Pool | None = None) -> dict:
    """Run the whole job; ``step(description, total)`` returns an ``advance(n)`` for a progress bar.
    ``pool``: where the replay runs (sweep.open_pool: a Dask cluster); by default this machine's two cores."""
    traces_dir = out_dir / "traces"
    traces_dir.mkdir(parents=True, exist_ok=True)
    check_workloads(names)
    timings, clock = {}, time.perf_counter()

    def lap(stage: str) -> None:  # where the job's time went, kept in results.json
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        clock = now

    runs = {name: 1 if resolve(name) == "trace" else max(1, settings.repeats) for name in names}
    advance = step("workloads", sum(runs.values()))
    made: list[list[Workload]] = []  # per workload, its runs
    for name in names:
        made.append([])
        for run in range(runs[name]):
            made[-1].append(prepare(name, settings, traces_dir, run=run))
            advance(1)
        lap(f"workload {name}")
    workloads = [runs_of[0] for runs_of in made]
    every = [w for runs_of in made for w in runs_of]
    paths = [str(w.trace_path) for w in every]
    advance = step(f"replay (engine, {'the cluster' if pool else 'both cores'})",
                   len(paths) * len(settings.policies))
    # The none replay of each workload's first run keeps its fault log for the heatmap (the report shows run
    # 0's); generated traces are replayed from memory here, and a cluster reads the files they were written to.
    results = run_sweep(paths, settings.policies, jobs=min(2, os.cpu_count() or 1), costs=costs, progress=advance,
                        heatmaps={str(w.trace_path) for w in workloads}, in_memory={str(w.trace_path): w.trace for w in every if w.trace},
                        pool=pool)
    if results["sweep"]["interrupted"]:
        raise KeyboardInterrupt  # unlike a sweep, an evaluation has no partial form: Ctrl-C stops it here too
    lap("replay")
    entries, combined = iter(results["workloads"]), []
    for runs_of in made:  # the sweep's entries, one per run, in the order of ``every``
        run_entries = [next(entries) for _ in runs_of]
        for run, entry in zip(runs_of, run_entries):
            entry["trace"] = os.path.relpath(run.trace_path, out_dir)
        combined.append(combine_runs(run_entries))
    results["workloads"] = combined
    for runs_of, entry in zip(made, results["workloads"]):
        workload = runs_of[0]
        entry.update(name=workload.name, kind=workload.kind, description=workload.description,
                     notes=_agreement_notes(runs_of) + _run_notes(runs[workload.name]),
                     trace=os.path.relpath(workload.trace_path, out_dir))
        if workload.scenario:
            entry["scenario"] = workload.scenario
            entry["scenario_runs"] = [run.scenario for run in runs_of]
            _per_policy(workload.name, workload.scenario, entry["rows"])
        keep_memory_of_the_best(entry["rows"], settings.budgets)
    if settings.real_repeats:
        _time_for_real(workloads, results, settings, step, lap)
    results["settings"] = {"quick": settings.quick, "pages": settings.pages, "seed": settings.seed,
                           "policies": [p.name for p in settings.policies], "real_repeats": settings.real_repeats,
                           "real_workloads": ("all" if settings.real_workloads is None
                                              else list(settings.real_workloads)),
                           "repeats": settings.repeats, "corpus": settings.corpus}
    results["budgets"] = asdict(settings.budgets)
    results["timings_s"] = timings
    save_results(results, out_dir / "results.json")
    from .report.html import write_report  # matplotlib: imported only when a report is drawn
    write_report(results, out_dir)
    return results


def _agreement_notes(runs_of: list[Workload]) -> list[str]:
    """Each recording's agreement with its program's own counters: every run is checked, not only the first."""
    if len(runs_of) == 1:
        return runs_of[0].notes
    return [f"recording {k}: {note}" for k, run in enumerate(runs_of) for note in run.notes]


def _per_policy(name: str, scenario_result: dict, rows: list[dict]) -> None:
    """What a scenario says of each policy in its program's own terms (redis-bgsave: rdb_last_cow_size's)."""
    own = getattr(scenario(name), "per_policy", None)
    if own is not None:
        for row in rows:
            row.update(own(row, scenario_result.get("details", {})))


def _run_notes(runs: int) -> list[str]:
    if runs < 2:
        return []
    return [f"{runs} runs (seeds or recordings): each row shows run 0's counters; Δ time is the median of the "
            "runs' changes against their own none, with a 95% bootstrap interval"]


def keep_memory_of_the_best(rows: list[dict], budgets: Budgets) -> None:
    """Memory over time stays on none's row and each family's best window: the plot's, a bounded file."""
    kept = {"none"} | {s["policy"] for s in best_per_family(rows, budgets)}
    for row in rows:
        if row["policy"] not in kept:
            row.pop("memory", None)


def _time_for_real(workloads: list[Workload], results: dict, settings: Settings, step, lap) -> None:
    """Real time change of each family's best window, for workloads that can run for real."""
    runnable = [(w, e) for w, e in zip(workloads, results["workloads"]) if w.trace is not None
                and (settings.real_workloads is None or w.name in settings.real_workloads)]
    chosen = {w.name: ["none"] + [s["policy"] for s in best_per_family(e["rows"], settings.budgets)]
              for w, e in runnable}
    # each policy but none runs beside a none cut into the same calls: 2n - 1 plans per workload
    runs = sum(2 * len(p) - 1 for p in chosen.values()) * settings.real_repeats
    advance = step("real runs (user-space COW-ahead)", runs)
    for workload, entry in runnable:
        entry["real"] = time_policies(workload.trace, chosen[workload.name],
                                      settings.real_repeats, advance)
        lap(f"real runs {workload.name}")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
