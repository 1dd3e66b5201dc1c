"""Where results and traces are written: the folder made if missing, files replaced atomically.

Every verb that writes a file calls ``output_file`` before its long work (a sweep, a recording, a
real-kernel validation), so a path that cannot be written fails in one line at once rather than
with a traceback after the work; the write itself then goes through ``write_atomically``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

from .errors import CowaheadError


def output_file(path: str | Path) -> Path:
    """``path`` as a Path, its folder made if missing; a CowaheadError if it cannot be written there.

    The check makes (and removes) the very temporary file the write will make: a folder that exists but
    refuses files (/proc, a read-only mount, a full disk's missing inode) says so now, not after the work.
    ``os.access`` alone answers yes for root on /proc."""
    path = Path(path)
    if path.is_dir():
        raise CowaheadError(f"{path}: is a directory; give a file name to write")
    _make(path.parent, f"{path}: its folder {path.parent}")
    Path(_temporary(path)).unlink()
    return path


def output_folder(path: str | Path) -> Path:
    """A folder for a report or an evaluation, made if missing; a CowaheadError if it cannot be."""
    path = Path(path)
    _make(path, f"{path}: the folder")
    return path


def _make(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # the folder, or one above it, is a file
        raise CowaheadError(f"{what} cannot be made: a file is in the way") from None
    except OSError as e:
        raise CowaheadError(f"{what} cannot be made ({e.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CowaheadError(f"{what} is not writable")


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file in ``path``'s folder, then rename it to ``path``: a reader never sees half
    a file, and a write that fails (or is interrupted) leaves what was there and no temporary behind."""
    path = output_file(path)
    tmp = _temporary(path)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results and traces are ordinary files
        os.replace(tmp, path)
    except OSError as e:  # ENOSPC, EIO, a quota: what was at path stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise CowaheadError(f"{path}: could not be written ({_reason(e)}); what was there is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _temporary(path: Path) -> str:
    """A new temporary file beside ``path`` (same file system, so the rename is atomic)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CowaheadError(f"{path}: cannot write a file in {path.parent} ({_reason(e)})") from None
    os.close(fd)
    return tmp


def _reason(e: OSError) -> str:
    """The system's words for an OSError; pyarrow's carry the errno only in their text ("[errno 28] …")."""
    number = e.errno or next((int(m.group(1)) for m in [re.search(r"\[errno (\d+)\]", str(e))] if m), None)
    return os.strerror(number) if number else str(e)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_dated_results(out_dir: str | Path, name: str, doc: dict) -> Path:
    """Write ``doc`` as JSON to OUT_DIR/NAME-<today>.json, or -2, -3 … after it, and return the path: a
    results file never replaces an earlier one of the same day (a kernel's results of an earlier patch
    are still evidence of that patch)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{dt.date.today().isoformat()}"
    path, n = out_dir / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = out_dir / f"{stem}-{n}.json"
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    return path
