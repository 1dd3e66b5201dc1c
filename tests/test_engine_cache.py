"""numba's cache of the engine is keyed on all engine sources (engine/cache.py, issue 17).

A copy of the package, in fresh processes: ``prepass._scan_chunk`` calls ``layout.page_range`` from
another file. Editing ``page_range`` alone changes what ``_scan_chunk`` returns; without an edit a
process loads ``_scan_chunk`` from the cache and rewrites no index file.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cowahead

PACKAGE = Path(cowahead.__file__).parent

# Two reads and a write, of 1, 2 (straddling a page boundary) and 1 pages: 4 pages touched.
PROBE = """
import json, sys
import numpy as np
import cowahead
from cowahead.engine import layout, prepass

kind = np.array([layout.READ, layout.READ, layout.WRITE], np.int8)
pid = np.array([1, 1, 1], np.int32)
address = np.array([0x10000, 0x20ff0, 0x40000], np.int64)
length = np.array([4096, 32, 8], np.int64)
arg = np.zeros(3, np.int64)
lo, hi, touched, seen, advice = prepass._scan_chunk(kind, pid, address, length, arg)
stats = prepass._scan_chunk.stats
json.dump({"package": cowahead.__file__, "touched": int(touched), "lo": int(lo), "hi": int(hi),
           "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
           "cache_path": stats.cache_path}, sys.stdout)
"""


def _run(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT", "NUMBA_CACHE_LOCATOR_CLASSES")}
    env["PYTHONPATH"] = str(root / "src")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True, check=False,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert Path(result["package"]).is_relative_to(root / "src"), result["package"]  # the copy, not the tree
    return result


def _index_files(engine: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (engine / "__pycache__").glob("*.nbi")}


def test_an_edit_to_a_callee_in_another_file_recompiles_its_caller(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "src" / "cowahead", ignore=shutil.ignore_patterns("__pycache__"))
    engine = tmp_path / "src" / "cowahead" / "engine"

    first = _run(tmp_path)
    assert first["touched"] == 4 and first["misses"] == 1 and first["hits"] == 0
    assert Path(first["cache_path"]) == engine / "__pycache__"
    written = _index_files(engine)
    assert any(name.startswith("prepass._scan_chunk-") for name in written)

    again = _run(tmp_path)  # nothing edited: loaded from the cache, no index rewritten
    assert again["touched"] == 4 and again["hits"] == 1 and again["misses"] == 0
    assert _index_files(engine) == written

    # page_range now touches one page more per access; prepass.py is unchanged.
    layout = engine / "layout.py"
    source = layout.read_text()
    edited, n = re.subn(r"(def page_range\(.*?\n(?:    .*\n)*?    return .*?) \+ 1\n", r"\1 + 2\n", source)
    assert n == 1, "layout.page_range's last line no longer ends in '+ 1': update this test's edit"
    layout.write_text(edited)

    after = _run(tmp_path)
    assert after["touched"] == 4 + 3 and after["misses"] == 1 and after["hits"] == 0
    assert (after["lo"], after["hi"]) == (first["lo"], first["hi"] + 1)

    settled = _run(tmp_path)  # and the new code is cached in its turn
    assert settled["touched"] == 7 and settled["hits"] == 1 and settled["misses"] == 0


def test_the_key_covers_the_files_whose_constants_the_engine_freezes_in(tmp_path):
    """layout.py derives the event kinds and counter positions from trace/ and model/: an edit there
    changes the stamp too, and an edit elsewhere in the package does not."""
    from cowahead.engine.cache import sources_stamp

    shutil.copytree(PACKAGE, tmp_path / "cowahead", ignore=shutil.ignore_patterns("__pycache__"))
    engine = str(tmp_path / "cowahead" / "engine")
    before = sources_stamp(engine)
    (tmp_path / "cowahead" / "report" / "html.py").write_text("# not the engine's\n")
    assert sources_stamp(engine) == before
    events = tmp_path / "cowahead" / "trace" / "events.py"
    events.write_text(events.read_text().replace("WRITE = 4", "WRITE = 9"))
    assert sources_stamp(engine) != before
