"""``gunicorn-preload-freeze``: ``gunicorn-preload`` with ``gc.freeze()`` in the master before each fork.

Everything else, the load and the comparison, is ``gunicorn-preload``'s;
see that module.
"""

from __future__ import annotations

from pathlib import Path

from . import gunicorn_preload
from ._common import ScenarioResult

NAME = "gunicorn-preload-freeze"
SUMMARY = "gunicorn-preload with gc.freeze() before fork (Instagram's fix); checked against each worker's getrusage"


def run(output: Path | None, progress=None) -> ScenarioResult:
    return gunicorn_preload.run(output, progress, freeze=True, name=NAME)
