"""What scripts/setup installs is what the code runs.

scripts/apt-packages is the one list: setup installs its first column, and
these tests check that every package there is really present and that every
program the code starts is named there. A missing program fails here with
its package's name; it never skips, since a skip is how a fresh machine's
gap went unseen (busybox-static, which virtme-ng needs, was installed by hand
on every machine that ever ran the suite).
"""

from __future__ import annotations

import ast
import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "scripts" / "apt-packages"
# Debian's Essential packages (coreutils, dash, tar, …) are on every Debian system; the code may run
# these without naming a package.
ESSENTIAL = {"sh", "dash", "true", "echo", "ls", "cat", "nice", "tar", "env", "sleep", "kill",
             "dmesg"}  # dmesg: util-linux, Essential: yes
# Programs that come with the Python environment, not from Debian.
FROM_PIP = {"vng", "python", "python3"}
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "_run", "which"}


def apt_table() -> dict[str, list[str]]:
    """package -> what it provides, from scripts/apt-packages."""
    table = {}
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        package, provides, *_ = re.split(r"\s{2,}", line.strip())
        table[package] = provides.split()
    return table


def setup_packages() -> list[str]:
    """The packages scripts/setup would install, by running its own list-making line."""
    setup = (ROOT / "scripts" / "setup").read_text()
    line = next(line for line in setup.splitlines() if line.startswith("mapfile -t APT_PACKAGES"))
    done = subprocess.run(["bash", "-c", f'{line}; printf "%s\\n" "${{APT_PACKAGES[@]}}"'], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def programs_the_code_runs() -> dict[str, str]:
    """Literal program names passed to subprocess or shutil.which anywhere in src/ and benchmarks/,
    with the first place each is used."""
    found: dict[str, str] = {}
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in RUNNERS:
                continue
            first = node.args[0]
            if isinstance(first, (ast.List, ast.Tuple)) and first.elts:
                first = first.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_setup_installs_exactly_the_table():
    assert setup_packages() == list(apt_table())
    assert "busybox-static" in apt_table()  # the package whose absence the fresh-machine run showed


def test_every_program_the_code_runs_is_in_the_table():
    provided = {item for items in apt_table().values() for item in items}
    runs = programs_the_code_runs()
    assert {"perf", "gcc", "patch", "make", "qemu-system-x86_64", "redis-cli"} <= set(runs)  # the scan sees them
    unnamed = {program: where for program, where in runs.items()
               if program not in provided | ESSENTIAL | FROM_PIP and not program.startswith(("/", "./"))}  # ./: the tree's own
    assert not unnamed, f"programs run by the code but not named in scripts/apt-packages: {unnamed}"


@pytest.mark.parametrize("package", list(apt_table()))
def test_package_is_installed_and_provides_what_it_says(package):
    name, _, pinned = package.partition("=")
    if pinned:
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True).stdout
        if version != pinned:
            pytest.fail(f"Debian package {name} is {version or 'not installed'}, pinned to {pinned} "
                        "(./scripts/setup installs it)")
    for item in apt_table()[package]:
        present = glob.glob(item) if item.startswith("/") else shutil.which(item)
        if not present:
            pytest.fail(f"{item} not found: install Debian package {package} (./scripts/setup does)")


def test_busybox_is_the_static_one_virtme_ng_needs():
    """virtme-ng copies busybox into the guest's initramfs and refuses a dynamically linked one (which
    Debian's plain busybox package, pulled in by initramfs-tools, is); it asks `file` which it is."""
    from virtme import mkinitramfs
    from virtme.commands.run import is_statically_linked
    busybox = mkinitramfs.find_busybox(root="/", is_native=True)
    if busybox is None or not is_statically_linked(busybox):
        pytest.fail(f"no statically linked busybox (found {busybox}): install Debian package busybox-static "
                    "(./scripts/setup does)")
