"""The replay engine on large-folio traces, against the reference model (a script, not a test).

    .venv/bin/python benchmarks/engine_folios.py [--pages 100000] [--patterns sequential,random,hotcold,prefork]
        [--variants madvise,always,mthp-64k,mthp-mixed] [--policies none,fixed:16] [--runs 3]

For each generator pattern and folio variant (``PATTERN+VARIANT``: the same events under THP or mTHP
settings) it generates a trace in memory and measures, as medians of ``--runs`` runs after a warm-up, the
engine's end-to-end replay of every policy at once (page space, decode, state, replay) and, once, the
reference model's replay of each policy; it checks the two give the same counters, and records both
times, events/s and the model's time over the engine's. The same pattern without a variant (4 KiB pages)
is measured beside each, for the engine's cost of the large-folio path. Results go to
benchmarks/results/engine-folios-<date>[-N].json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from cowahead.engine import replay_engine
from cowahead.model import Kernel
from cowahead.policies import parse_policy
from cowahead.trace.generators import generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine, result_path  # noqa: E402  (this folder's benchmark helpers)



def timed(fn, runs: int):
    fn()  # warm: numba's cache loaded, every specialization in use
    values, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        values.append(time.perf_counter() - start)
    return {"median": statistics.median(values), "runs": values}, result


def bench(spec: str, pages: int, policies: list[str], runs: int) -> dict:
    trace = generate(spec, pages=pages, seed=1)
    events = len(trace)
    engine_t, engine = timed(lambda: replay_engine(trace, policies), runs)
    out = {"events": events, "engine_s": engine_t, "engine_events_per_s": events * len(policies) / engine_t["median"],
           "policies": {}}
    for policy, counters in zip(policies, engine):
        start = time.perf_counter()
        expected = Kernel(parse_policy(policy)).replay(trace)
        model_s = time.perf_counter() - start
        if counters != expected:
            raise SystemExit(f"{spec} {policy}: the engine's counters differ from the model's")
        out["policies"][policy] = {"model_s": model_s, "model_events_per_s": events / model_s,
                                   "zero_fill": counters.zero_fill, "zero_fill_pages": counters.zero_fill_pages,
                                   "cow_copy": counters.cow_copy, "thp_fault_alloc": counters.thp_fault_alloc,
                                   "mthp_fault_alloc": counters.mthp_fault_alloc,
                                   "thp_split_pmd": counters.thp_split_pmd}
    model_total = sum(p["model_s"] for p in out["policies"].values())
    out["model_over_engine"] = model_total / engine_t["median"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--patterns", default="sequential,random,hotcold,prefork")
    parser.add_argument("--variants", default="madvise,always,mthp-64k,mthp-mixed")
    parser.add_argument("--policies", default="none,fixed:16")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    policies = args.policies.split(",")
    doc = {"format": "cowahead-benchmark", "version": 1, "benchmark": "engine-folios",
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
           "machine": machine(), "pages": args.pages, "policies": policies,
           "method": "end-to-end replay_engine of a generated trace in memory, all policies in one pass, median of "
                     "runs after a warm-up; the model once per policy; counters checked equal",
           "patterns": {}}
    for pattern in args.patterns.split(","):
        for spec in [pattern] + [f"{pattern}+{v}" for v in args.variants.split(",")]:
            doc["patterns"][spec] = result = bench(spec, args.pages, policies, args.runs)
            print(f"{spec:24s} {result['events']:9,d} events: engine {result['engine_s']['median']:7.3f} s, "
                  f"model {sum(p['model_s'] for p in result['policies'].values()):8.2f} s "
                  f"(×{result['model_over_engine']:.0f})", flush=True)
    out = result_path("engine-folios")
    out.write_text(json.dumps(doc, indent=1))
    print(out)


if __name__ == "__main__":
    main()
