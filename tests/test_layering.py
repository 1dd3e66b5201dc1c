"""The folder layout is the architecture: which layer may import which, read from the sources themselves.

- ``model/`` (the semantics) imports nothing from ``policies/``, ``engine/``, ``report/`` or ``cli/``;
- ``report/`` only renders: it imports neither ``model/`` nor ``engine/``;
- ``policies/`` needs the model only for type hints (a kernel's view: VmFault, Mm);
- no import hides inside a function, except of the modules that load numba or matplotlib, which only
  the verbs that use them should pay for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "cowahead"
# Imported lazily, for their load time (numba compiles or loads its cache; matplotlib starts a backend;
# cluster.py loads dask, which only a sweep on a cluster needs).
LAZY = {"cowahead.engine", "cowahead.engine.prepass", "cowahead.report.html", "cowahead.cluster"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool, bool]]:
    """(absolute module, line, at module level, only for type checkers) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top = {id(n) for n in tree.body}
    typing_only = {id(sub) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                   for sub in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            names = [".".join(base + ([node.module] if node.module else []))]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        out += [(name, node.lineno, id(node) in top, id(node) in typing_only) for name in names]
    return out


def sources(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", sources("model"), ids=lambda p: p.name)
def test_model_imports_no_layer_above_it(path):
    above = ("cowahead.policies", "cowahead.engine", "cowahead.report", "cowahead.cli", "cowahead.results")
    assert [name for name, _, _, _ in imports(path) if name.startswith(above)] == []


@pytest.mark.parametrize("path", sources("report"), ids=lambda p: p.name)
def test_report_only_renders(path):
    assert [name for name, _, _, _ in imports(path) if name.startswith(("cowahead.model", "cowahead.engine"))] == []


@pytest.mark.parametrize("path", sources("policies"), ids=lambda p: p.name)
def test_policies_see_the_model_only_as_types(path):
    assert [name for name, _, _, typing_only in imports(path)
            if not typing_only and name.startswith(("cowahead.model", "cowahead.engine"))] == []


def test_no_import_hides_in_a_function_but_the_heavy_ones():
    hidden = [(str(path.relative_to(PACKAGE)), line, name)
              for path in sorted(PACKAGE.rglob("*.py")) for name, line, top, typing_only in imports(path)
              if not top and not typing_only and name not in LAZY]
    assert hidden == []


def test_the_checks_see_imports():
    """The rules above read real imports: model/kernel.py imports its neighbours, sweep.py the engine lazily,
    a policy its model types for type checkers only."""
    assert "cowahead.model.memory" in [n for n, _, _, _ in imports(PACKAGE / "model" / "kernel.py")]
    assert ("cowahead.engine", False) in [(n, top) for n, _, top, _ in imports(PACKAGE / "sweep.py")]
    assert ("cowahead.model.fault", True) in [(n, t) for n, _, _, t in imports(PACKAGE / "policies" / "fixed.py")]
