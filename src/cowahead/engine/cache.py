"""numba's on-disk cache for the engine, keyed on every engine source file rather than each function's own.

numba stamps a cached function with a hash of the one file that defines it. A
compiled caller holds its callees' code too (inlined, or linked into its
library), so after an edit to ``layout.page_range`` the cache of
``prepass._scan_chunk`` still matched ``prepass.py`` and ran the old
``page_range`` (issue 17). Here every function defined in this folder gets one
stamp instead: a SHA-256 over the names and contents of all the folder's
``.py`` files (sorted; read once, when this module is imported). An edit
anywhere in the engine then invalidates every engine function's cache entry,
and the next call recompiles it; without an edit each process loads the cache
as before.

How: ``EngineCacheLocator`` goes first in numba's list of cache locators
(``CacheImpl._locator_classes``). For a function outside this folder it declines,
so other numba users are untouched. For one inside it asks numba's own locators,
in numba's order, and wraps the first that accepts: the cache stays where numba
would put it (``src/cowahead/engine/__pycache__``; ``NUMBA_CACHE_DIR`` if set; the
user-wide cache if ``__pycache__`` is read-only), with numba's file names, and
only the source stamp differs.

Why a stamp, not a directory per hash (``__pycache__/numba-<hash>/``): numba
already stores the stamp in each function's index file, treats a differing one
as an empty index and overwrites the entry in place, so stale entries never pile
up and there is nothing to prune, which would race with a sweep's parallel workers
still loading the old directory.

The key also covers the few files outside the folder whose constants the
compiled code freezes in (``FROZEN_IN``: the event, VMA and frame kinds, the
counters, adaptive's miss limit); a constant read from any other file would
need adding there. And
``NUMBA_CACHE_LOCATOR_CLASSES``, if set, replaces numba's list and this locator
with it. Import this module before any ``@njit(cache=True)`` here is defined:
numba picks a function's locator when it is decorated.
"""

from __future__ import annotations

import hashlib
import os

from numba.core import caching

ENGINE_DIR = os.path.dirname(os.path.realpath(__file__))
_LOCATORS = caching.CacheImpl._locator_classes  # numba's own list, shared by all its caches


# Files outside the folder whose constants the compiled code freezes in: layout.py derives the event,
# VMA and frame kinds and the counter positions from them, windows.py reads MMAP_LOTSAMISS.
FROZEN_IN = ("../trace/events.py", "../model/counters.py", "../model/memory.py", "../policies/adaptive.py")


def sources_stamp(folder: str = ENGINE_DIR, frozen_in: tuple[str, ...] = FROZEN_IN) -> str:
    """SHA-256 over the relative path and contents of every .py file under ``folder`` (in sorted order),
    then of each file of ``frozen_in`` (relative to ``folder``)."""
    digest = hashlib.sha256()
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        paths += [os.path.join(root, f) for f in files if f.endswith(".py")]
    for path in sorted(paths) + [os.path.normpath(os.path.join(folder, f)) for f in frozen_in]:
        if not os.path.isfile(path):  # an editor's lock file: a dangling symlink
            continue
        with open(path, "rb") as f:
            data = f.read()
        digest.update(os.path.relpath(path, folder).encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


STAMP = sources_stamp()


class EngineCacheLocator(caching._CacheLocator):
    """numba's locator for an engine function, with the stamp of all engine sources."""

    engine_dir = ENGINE_DIR

    def __init__(self, inner: caching._CacheLocator, py_file: str) -> None:
        self._inner = inner
        self._py_file = py_file  # numba's CacheImpl warns at it when a function cannot be cached

    def ensure_cache_path(self) -> None:
        self._inner.ensure_cache_path()

    def get_cache_path(self) -> str:
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return "cowahead.engine sources", STAMP

    def get_disambiguator(self) -> str:
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.commonpath([os.path.realpath(py_file), cls.engine_dir]) != cls.engine_dir:
            return None
        for other in _LOCATORS:
            if getattr(other, "engine_dir", None) is None:  # numba's, not an engine locator (of any copy)
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, py_file)
        return None


def install() -> None:
    """Put the locator first in numba's list, once per engine folder (a re-import adds nothing)."""
    if not any(getattr(c, "engine_dir", None) == ENGINE_DIR for c in _LOCATORS):
        _LOCATORS.insert(0, EngineCacheLocator)


install()
