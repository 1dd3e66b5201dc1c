"""``ruby-prefork-nakayoshi``: ``ruby-prefork`` with ``require "nakayoshi_fork"`` in unicorn's configuration.

Everything else, the load and the comparison, is ``ruby-prefork``'s;
see that module.
"""

from __future__ import annotations

from pathlib import Path

from . import ruby_prefork
from ._common import ScenarioResult

NAME = "ruby-prefork-nakayoshi"
SUMMARY = "ruby-prefork with nakayoshi_fork (young objects promoted before fork); checked against /proc/self/stat faults"


def run(output: Path | None, progress=None) -> ScenarioResult:
    return ruby_prefork.run(output, progress, nakayoshi=True, name=NAME)
