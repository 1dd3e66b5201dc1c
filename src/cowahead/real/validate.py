"""Every generator under every policy, run in the model and on the running kernel, page for page.

Under each THP configuration asked for (real/thp.py ``CONFIGS``: never,
madvise, always, mthp-64k, mthp-mixed) the knobs are set for the while
(``thp_config``: restored however it ends, Ctrl-C and SIGTERM included),
read back, and the model replays each generator's folio variant under the
settings actually in force (``FolioSettings.from_thp(thp_settings(),
platform.release())``), not the variant's own: the variant brings its
events (``+madvise``: MADV_HUGEPAGE on the mapping), the knobs bring the
folio sizes. Without configurations the knobs stay as found and the plain
generators run.

khugepaged is paused meanwhile (``scan_sleep_millisecs`` a day, restored
with the rest): it collapses small pages into THPs in the background,
every 10 s here, which no replay of a trace can place (the model does not
model collapses); a run it reached anyway is reported as such.

The THP counters are read around every run: a large folio the kernel
could not allocate (``thp_fault_fallback``, ``anon_fault_fallback`` of a
size) or a khugepaged collapse shows there, and a run that disagrees while
one moved is reported as such, not as a model error. The counters are
global (another process's faults count too), so a move alone fails nothing.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from ..errors import CowaheadError
from ..machine import thp_settings
from ..model.folio import FolioSettings
from ..policies import default_policies, family_of, parse_policy
from ..results.header import header
from ..trace.events import HPAGE_PMD_ORDER
from ..trace.generators import PATTERNS, generate
from . import linux
from .plan import build_plan
from .runner import run_plan
from .thp import CONFIGS, counter_deltas, thp_config, thp_counters
from .truth import Comparison, compare

POLICIES = default_policies("example")
# Quick: Linux's own path and one COW-ahead window, under every configuration.
QUICK_POLICIES = [p for p in POLICIES if family_of(p) in ("none", "fixed")]
# Not a multiple of 512 on purpose: a PMD THP fits in the first 2 MiB, and the tail, where no 2 MiB fits in
# the VMA, is where the smaller folio sizes go (1000 pages under mthp-mixed: one 2 MiB THP, thirty 64 KiB
# and two 16 KiB folios; under madvise: one THP and 488 pages of 4 KiB).
PAGES, QUICK_PAGES = 1000, 600
# The generators' folio variant each configuration runs: the variant's events go with the knobs.
VARIANT = {"never": "", "madvise": "madvise", "always": "always", "mthp-64k": "mthp-64k",
           "mthp-mixed": "mthp-mixed"}
CONFIG_NAMES = list(VARIANT)
SHOWN_IN_FILE = 50  # examples of each kind of problem a run keeps in the results file (all are counted)
HOST = ""  # the configuration name of a run under the knobs as found
# khugepaged's sleep between scans while validating: long enough that it never wakes during a run.
KHUGEPAGED_PAUSE = {"scan_sleep_millisecs": str(24 * 3600 * 1000)}


@dataclass(frozen=True)
class ValidateSettings:
    patterns: list[str]
    policies: list[str]
    pages: int
    seed: int = 0
    configs: list[str] = field(default_factory=list)  # THP configurations; empty: the knobs as found


def parse_configs(text: str | None) -> list[str]:
    """'madvise,mthp-64k' → ['madvise', 'mthp-64k']; None: all five; 'host': [] (the knobs as found, the
    plain generators); a name not in CONFIGS: CowaheadError."""
    if text is None:
        return list(CONFIG_NAMES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = ", ".join(CONFIG_NAMES + ["host"])
    if not names:
        raise CowaheadError(f"--folios names no configuration; there are {known}")
    if names == ["host"]:
        return []
    for name in names:
        if name not in VARIANT:
            why = "'host' stands alone" if name == "host" else f"there are {known}"
            raise CowaheadError(f"no THP configuration {name!r} in --folios {text}; {why}")
    return list(dict.fromkeys(names))


def settings(quick: bool, pages: int | None, policies: list[str], seed: int,
             configs: list[str] | None = None) -> ValidateSettings:
    """Bad policy names fail here, before any process is forked; so does a policy that changes the kernel's
    own fault path (thp-cow: Linux <= 5.7 copied a whole THP in do_huge_pmd_wp_page), which user space
    cannot do: MADV_POPULATE_WRITE breaks COW the way this kernel does."""
    for policy in policies:
        if getattr(parse_policy(policy), "copies_whole_thp", False):
            raise CowaheadError(f"policy {policy} is a kernel's own THP COW path (Linux <= 5.7), which user space "
                                "cannot reproduce on this kernel: it cannot be validated here")
    return ValidateSettings(list(PATTERNS), policies or (QUICK_POLICIES if quick else POLICIES),
                            pages or (QUICK_PAGES if quick else PAGES), seed, list(configs or []))


def check_support(policies: list[str]) -> tuple[list[str], list[str]]:
    """The policies this machine can validate, and one-line warnings; raises if it can validate none.

    Without visible PFNs (not root) a COW copy cannot be told from a reuse:
    no number would be right, so nothing runs. Without MADV_POPULATE_WRITE
    only ``none`` can run for real (the degraded mode).
    """
    support = linux.probe_support()
    if not support.pfns_visible:
        raise CowaheadError(support.problems[0])
    if support.populate_write:
        return policies, []
    kept = [p for p in policies if p == "none"]
    if not kept:
        raise CowaheadError(support.problems[-1])
    return kept, [support.problems[-1] + f"; degraded: validating 'none' only, skipping {len(policies) - 1}"]


def config_warnings(config: ValidateSettings) -> list[str]:
    """What a run of these settings cannot show: PMD THPs in a span smaller than 2 MiB."""
    pmd_pages = 1 << HPAGE_PMD_ORDER
    thp = [c for c in config.configs if c in ("madvise", "always", "mthp-mixed")]
    if thp and config.pages < pmd_pages:
        return [f"{config.pages} pages hold no 2 MiB range: PMD THP is not exercised under {', '.join(thp)}"]
    return []


@contextlib.contextmanager
def knobs(name: str) -> Iterator[dict[str, str]]:
    """The THP settings in force for a configuration: set by ``thp_config`` (HOST: as found, untouched)."""
    if name == HOST:
        yield thp_settings()
        return
    with thp_config(replace(CONFIGS[name], khugepaged=KHUGEPAGED_PAUSE)) as in_force:
        yield in_force


def validate(config: ValidateSettings, on_done: Callable[[Comparison], None] | None = None,
             skipped: list[str] | None = None, in_force: dict[str, dict[str, str]] | None = None
             ) -> list[Comparison]:
    """Compare every pattern under every policy, per configuration; a pattern real runs cannot map goes to
    ``skipped``; ``in_force`` hears the THP settings each configuration ran under."""
    zero_pfn = linux.probe_support().zero_pfn
    results = []
    for name in config.configs or [HOST]:
        with knobs(name) as thp:
            if in_force is not None:
                in_force[name] = thp
            folios = FolioSettings.from_thp(thp, platform.release())
            for pattern in config.patterns:
                spec = f"{pattern}+{VARIANT[name]}" if VARIANT.get(name) else pattern
                trace = generate(spec, config.pages, config.seed)
                try:
                    plans = [build_plan(trace, policy, folios=folios) for policy in config.policies]
                except CowaheadError as e:  # e.g. a shared or file mapping: not run for real yet
                    if skipped is None:
                        raise
                    skipped.append(f"{spec}: {e}")
                    continue
                for plan in plans:
                    result = _run(plan, zero_pfn, thp)
                    result.config = name
                    results.append(result)
                    if on_done:
                        on_done(result)
    return results


def _run(plan, zero_pfn: int, in_force: dict[str, str] | None = None) -> Comparison:
    """One plan for real, with the THP counters that moved meanwhile and any knob that changed under it
    (the knobs are global: another program may write them while we run)."""
    before = thp_counters()
    result = compare(run_plan(plan, measure=True), zero_pfn)
    now = thp_settings()
    result.knobs_changed = [f"{knob}: {value} → {now.get(knob)}" for knob, value in (in_force or {}).items()
                            if now.get(knob) != value]
    moved = counter_deltas(before, thp_counters())
    result.kernel_counters = moved
    result.fallbacks = {name: n for name, n in moved.items() if "fallback" in name}
    result.collapsed = moved.get("khugepaged/pages_collapsed", 0)
    return result


def _problem_lists(r: Comparison) -> dict[str, list[str]]:
    return {"mismatches": r.mismatches, "folio_mismatches": r.folio_mismatches, "unexplained": r.unexplained,
            "integrity": r.integrity}


def summary(results: list[Comparison]) -> list[dict]:
    """Per configuration × pattern: runs matched, faults and folio pages matched of all compared."""
    rows: dict[tuple[str, str], dict] = {}
    for r in results:
        row = rows.setdefault((r.config, r.pattern), {
            "config": r.config, "pattern": r.pattern, "runs": 0, "runs_matched": 0, "faults_matched": 0,
            "faults_total": 0, "folio_pages_matched": 0, "folio_pages_total": 0, "statuses": {}})
        row["runs"] += 1
        row["runs_matched"] += r.ok
        row["faults_matched"] += r.faults_matched
        row["faults_total"] += r.faults_total
        row["folio_pages_matched"] += r.folio_pages_matched
        row["folio_pages_total"] += r.folio_pages_total
        row["statuses"][r.status] = row["statuses"].get(r.status, 0) + 1
    return list(rows.values())


def document(config: ValidateSettings, results: list[Comparison], skipped: list[str],
             in_force: dict[str, dict[str, str]] | None = None) -> dict:
    """A validation run as a versioned JSON document with the machine's metadata."""
    return {
        **header("validate"),
        "settings": {"pages": config.pages, "seed": config.seed, "policies": config.policies,
                     "configs": config.configs or [HOST], "thp_in_force": in_force or {}},
        "summary": summary(results),
        "runs": [{"config": r.config, "pattern": r.pattern, "policy": r.policy, "ok": r.ok, "status": r.status,
                  "faults_matched": r.faults_matched, "faults_total": r.faults_total,
                  "folio_pages_matched": r.folio_pages_matched, "folio_pages_total": r.folio_pages_total,
                  "model": dict(r.model), "kernel": dict(r.real),
                  "model_pages": dict(r.model_pages), "kernel_pages": dict(r.real_pages),
                  "minflt": r.minflt, "faults": r.faults, "noise": r.noise, "spurious": r.spurious,
                  "kernel_counters": r.kernel_counters, "fallbacks": r.fallbacks, "collapsed": r.collapsed,
                  "knobs_changed": r.knobs_changed,
                  "problems": {name: len(lines) for name, lines in _problem_lists(r).items()},
                  **{name: lines[:SHOWN_IN_FILE] for name, lines in _problem_lists(r).items()}}
                 for r in results],
        "skipped": skipped,
    }
