"""Measure the real-kernel subtleties the model relies on (cowahead.real.subtleties).

    .venv/bin/python benchmarks/kernel_subtleties.py [--trials 5]

writes benchmarks/results/subtleties-<date>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from importlib.metadata import version
from pathlib import Path

from cowahead.real import linux
from cowahead.real.subtleties import measure_all

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    support = linux.probe_support()
    if not support.pfns_visible:
        print(f"kernel_subtleties: {support.problems[0]}", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.timezone.utc)
    results = measure_all(args.trials)
    doc = {"format": "cowahead-kernel-subtleties", "version": 1, "created": now.isoformat(timespec="seconds"),
           "metadata": {**linux.machine_metadata(), "cowahead": version("cowahead"), "trials": args.trials},
           "results": results}
    output = RESULTS / f"subtleties-{now.date().isoformat()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2) + "\n")
    for name, trials in results.items():
        print(f"{name}: " + "; ".join(", ".join(f"{k}={v}" for k, v in t.items() if k != "pages") for t in trials))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
