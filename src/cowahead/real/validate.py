"""Every generator under every policy, run in the model and on the running kernel, page for page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import CowaheadError
from ..policies import default_policies, family_of, parse_policy
from ..results.header import header
from ..trace.generators import PATTERNS, generate
from . import linux
from .plan import build_plan
from .runner import run_plan
from .truth import Comparison, compare

POLICIES = default_policies("example")
QUICK_POLICIES = [p for p in POLICIES if family_of(p) in ("none", "fixed", "adaptive")]
PAGES, QUICK_PAGES = 1024, 256


@dataclass(frozen=True)
class ValidateSettings:
    patterns: list[str]
    policies: list[str]
    pages: int
    seed: int = 0


def settings(quick: bool, pages: int | None, policies: list[str], seed: int) -> ValidateSettings:
    """Bad policy names fail here, before any process is forked."""
    for policy in policies:
        parse_policy(policy)
    return ValidateSettings(list(PATTERNS), policies or (QUICK_POLICIES if quick else POLICIES),
                            pages or (QUICK_PAGES if quick else PAGES), seed)


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


def validate(config: ValidateSettings, on_done: Callable[[Comparison], None] | None = None,
             skipped: list[str] | None = None) -> list[Comparison]:
    """Compare every pattern under every policy; a pattern real runs cannot map goes to ``skipped``."""
    zero_pfn = linux.probe_support().zero_pfn
    results = []
    for pattern in config.patterns:
        trace = generate(pattern, config.pages, config.seed)
        try:
            plans = [build_plan(trace, policy) for policy in config.policies]
        except CowaheadError as e:  # e.g. a shared or file mapping: not run for real yet
            if skipped is None:
                raise
            skipped.append(f"{pattern}: {e}")
            continue
        for plan in plans:
            result = compare(run_plan(plan, measure=True), zero_pfn)
            results.append(result)
            if on_done:
                on_done(result)
    return results


def document(config: ValidateSettings, results: list[Comparison], skipped: list[str]) -> dict:
    """A validation run as a versioned JSON document with the machine's metadata."""
    return {
        **header("validate"),
        "settings": {"pages": config.pages, "seed": config.seed, "policies": config.policies},
        "runs": [{"pattern": r.pattern, "policy": r.policy, "ok": r.ok, "model": dict(r.model), "kernel": dict(r.real),
                  "minflt": r.minflt, "faults": r.faults, "noise": r.noise, "mismatches": r.mismatches,
                  "unexplained": r.unexplained, "integrity": r.integrity} for r in results],
        "skipped": skipped,
    }
