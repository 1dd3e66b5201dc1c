"""The results document ``evaluate`` and ``sweep`` write and ``report`` reads: versioned, with metadata.

JSON holds the document as it is. Parquet (``sweep -o R.parquet``) holds one row per workload × policy,
with a ``trace`` column naming the workload, and the rest of the document as metadata under the key traces use; ``load_results``
reads either back into the same document.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import CowaheadError
from ..model.costs import USERSPACE
from ..output import write_atomically
from ..trace.parquet import METADATA_KEY
from .header import check_header, header


def new_results(costs: dict) -> dict:
    """``costs``: the profile the rows' ``predicted_us`` is under; ``costs_userspace``: their
    ``predicted_us_userspace``'s."""
    return {**header("results"), "costs": costs, "costs_userspace": asdict(USERSPACE), "workloads": []}


def save_results(results: dict, path: Path) -> None:
    """JSON, or Parquet where ``path`` ends in .parquet. Atomic: a reader never sees half a file."""
    if Path(path).suffix == ".parquet":
        write_atomically(path, lambda tmp: pq.write_table(_table(results), tmp))
    else:
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(results, indent=1)))


def _table(results: dict) -> pa.Table:
    rows = [{"trace": w["name"], **row} for w in results["workloads"] for row in w["rows"]]
    meta = {k: v for k, v in results.items() if k != "workloads"}
    meta["workloads"] = [{k: v for k, v in w.items() if k != "rows"} for w in results["workloads"]]
    return pa.Table.from_pylist(rows).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def _from_table(table: pa.Table) -> dict:
    results = json.loads(table.schema.metadata[METADATA_KEY])
    rows = table.to_pylist()
    for w in results["workloads"]:
        w["rows"] = [{k: v for k, v in r.items() if k != "trace"} for r in rows if r["trace"] == w["name"]]
    return results


def load_results(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            parquet = f.read(4) == b"PAR1"
        if parquet:
            table = pq.read_table(path)
            if METADATA_KEY not in (table.schema.metadata or {}):
                raise CowaheadError(f"{path}: a Parquet file but not a cowahead results file (no metadata)")
            results = _from_table(table)
        else:
            results = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CowaheadError(f"{path}: no such results file; make one with `cowahead evaluate -o DIR`") from None
    except (OSError, ValueError, pa.ArrowException) as e:
        raise CowaheadError(f"{path}: not a readable results file ({e.__class__.__name__})") from None
    check_header(results, "results", str(path))
    return results
