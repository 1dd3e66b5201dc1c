"""Named, seeded synthetic workloads.

Every pattern starts the same way, as a fork-heavy program does: the parent
(pid 1000) maps N private anonymous pages, writes every page once (N
zero-fill faults) and forks. What follows is the pattern:

| pattern     | after the fork                                                           |
| ----------- | ------------------------------------------------------------------------ |
| sequential  | the child writes every page in address order, then exits                 |
| strided:S   | the child writes every S-th page in address order, then exits            |
| random      | the child writes N pages drawn uniformly (with repeats), then exits      |
| zipf:A      | the child writes N pages drawn Zipf(A) over a random page order          |
| hotcold     | the child writes N pages: 90 % in the first 10 % of the mapping          |
| forkexec    | 8 times: a child writes 8 consecutive pages at a random place, then execs and exits |
| prefork     | 4 children each write a scattered random eighth of the pages, then exit  |
| bgsave      | two Redis-like saves: each time a child reads every page in order while the parent writes a random page per child read; the child exits; the parent writes N/4 more |

Each write stores a distinct value, so replays can check memory contents.

A folio variant, ``PATTERN+VARIANT`` (e.g. ``sequential+madvise``,
``random+mthp-64k``), replays the same events under large-folio settings:

| variant    | settings (the trace's ``thp`` metadata)                    | events |
| ---------- | ---------------------------------------------------------- | ------ |
| madvise    | THP ``madvise``                                            | MADV_HUGEPAGE on each private mapping |
| always     | THP ``always``                                             | — |
| mthp-64k   | THP ``never``, 64 KiB ``always``                           | — |
| mthp-mixed | 16 KiB, 64 KiB and 2 MiB ``always``                        | — |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import CowaheadError
from .events import COLUMNS, LARGE_DESTINATIONS_KEY, PAGE_SIZE, Advice, EventKind, VmaKind
from .trace import Trace

BASE = 0x7F0000000000  # 2 MiB aligned, so regions and page tables line up with the mapping
PARENT = 1000
DEFAULT_PAGES = 4096


@dataclass
class TraceBuilder:
    """Appends events with increasing times; one distinct value per write."""
    rows: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in COLUMNS})
    value: int = 0

    def add(self, pid: int, kind: EventKind, address: int = 0, length: int = 0, arg: int = 0) -> None:
        for name, v in zip(COLUMNS, (len(self.rows["pid"]) * 1000, pid, int(kind), address, length, arg)):
            self.rows[name].append(v)

    def mmap(self, pid: int, pages: int, kind: VmaKind = VmaKind.PRIVATE_ANON) -> None:
        self.add(pid, EventKind.MMAP, BASE, pages * PAGE_SIZE, int(kind))

    def write(self, pid: int, page: int) -> None:
        self.value += 1
        self.add(pid, EventKind.WRITE, BASE + page * PAGE_SIZE, 1, self.value)

    def writes(self, pid: int, pages) -> None:
        for page in pages:
            self.write(pid, int(page))

    def read(self, pid: int, page: int) -> None:
        self.add(pid, EventKind.READ, BASE + page * PAGE_SIZE, 1)

    def fork(self, pid: int, child: int) -> None:
        self.add(pid, EventKind.FORK, arg=child)

    def exec(self, pid: int) -> None:
        self.add(pid, EventKind.EXEC)

    def exit(self, pid: int) -> None:
        self.add(pid, EventKind.EXIT)

    def trace(self, metadata: dict) -> Trace:
        return Trace({k: np.array(v, dtype=COLUMNS[k]) for k, v in self.rows.items()}, metadata)


def _populated(pages: int) -> TraceBuilder:
    b = TraceBuilder()
    b.mmap(PARENT, pages)
    b.writes(PARENT, range(pages))
    return b


def _one_child(pages: int, child_writes) -> TraceBuilder:
    b = _populated(pages)
    b.fork(PARENT, PARENT + 1)
    b.writes(PARENT + 1, child_writes)
    b.exit(PARENT + 1)
    b.exit(PARENT)
    return b


def sequential(pages: int, rng: np.random.Generator) -> TraceBuilder:
    return _one_child(pages, range(pages))


def strided(pages: int, rng: np.random.Generator, stride: int) -> TraceBuilder:
    return _one_child(pages, range(0, pages, stride))


def random(pages: int, rng: np.random.Generator) -> TraceBuilder:
    return _one_child(pages, rng.integers(0, pages, pages))


def zipf(pages: int, rng: np.random.Generator, a: float) -> TraceBuilder:
    weights = 1.0 / np.arange(1, pages + 1) ** a
    ranks = rng.choice(pages, size=pages, p=weights / weights.sum())
    return _one_child(pages, rng.permutation(pages)[ranks])


def hotcold(pages: int, rng: np.random.Generator) -> TraceBuilder:
    hot = max(1, pages // 10)
    is_hot = rng.random(pages) < 0.9
    targets = np.where(is_hot, rng.integers(0, hot, pages), rng.integers(0, pages, pages))
    return _one_child(pages, targets)


def forkexec(pages: int, rng: np.random.Generator, rounds: int = 8, writes: int = 8) -> TraceBuilder:
    b = _populated(pages)
    for r in range(rounds):
        child = PARENT + 1 + r
        start = int(rng.integers(0, max(1, pages - writes)))
        b.fork(PARENT, child)
        b.writes(child, range(start, min(pages, start + writes)))
        b.exec(child)
        b.exit(child)
    b.exit(PARENT)
    return b


def prefork(pages: int, rng: np.random.Generator, workers: int = 4) -> TraceBuilder:
    b = _populated(pages)
    children = [PARENT + 1 + w for w in range(workers)]
    for child in children:
        b.fork(PARENT, child)
    for child in children:
        b.writes(child, rng.choice(pages, size=max(1, pages // 8), replace=False))
        b.exit(child)
    b.exit(PARENT)
    return b


def bgsave(pages: int, rng: np.random.Generator, saves: int = 2) -> TraceBuilder:
    b = _populated(pages)
    for s in range(saves):
        child = PARENT + 1 + s
        b.fork(PARENT, child)
        for page, key in zip(range(pages), rng.integers(0, pages, pages)):
            b.read(child, page)
            b.write(PARENT, int(key))
        b.exit(child)
        b.writes(PARENT, rng.integers(0, pages, max(1, pages // 4)))
    b.exit(PARENT)
    return b


@dataclass(frozen=True)
class Pattern:
    name: str
    build: Callable[..., TraceBuilder]
    arg: Callable[[str], float] | None = None  # parser of the ':ARG' part, if the pattern takes one
    default_arg: float | None = None


PATTERNS: dict[str, Pattern] = {p.name: p for p in [
    Pattern("sequential", sequential),
    Pattern("strided", strided, int, 2),
    Pattern("random", random),
    Pattern("zipf", zipf, float, 1.0),
    Pattern("hotcold", hotcold),
    Pattern("forkexec", forkexec),
    Pattern("prefork", prefork),
    Pattern("bgsave", bgsave),
]}

SYNTAX = ("sequential, strided:S, random, zipf:A, hotcold, forkexec, prefork, bgsave; "
          "each also as PATTERN+madvise, +always, +mthp-64k, +mthp-mixed (large folios)")

# Folio variants: (the thp settings in machine.thp_settings()'s words, MADV_HUGEPAGE on each private mapping).
FOLIO_VARIANTS: dict[str, tuple[dict[str, str], bool]] = {
    "madvise": ({"enabled": "madvise"}, True),
    "always": ({"enabled": "always"}, False),
    "mthp-64k": ({"enabled": "never", "hugepages-64kB/enabled": "always"}, False),
    "mthp-mixed": ({"enabled": "never", "hugepages-16kB/enabled": "always", "hugepages-64kB/enabled": "always",
                    "hugepages-2048kB/enabled": "always"}, False),
}


def _madvise_hugepage(builder: TraceBuilder) -> TraceBuilder:
    """A MADV_HUGEPAGE over each private anonymous mapping, right after its MMAP, as a library asking for THP
    on a big array does."""
    rows = builder.rows
    out = TraceBuilder(value=builder.value)
    for i in range(len(rows["pid"])):
        kind, pid, address, length = rows["kind"][i], rows["pid"][i], rows["address"][i], rows["length"][i]
        out.add(pid, EventKind(kind), address, length, rows["arg"][i])
        if kind == EventKind.MMAP and rows["arg"][i] == VmaKind.PRIVATE_ANON:
            out.add(pid, EventKind.MADVISE, address, length, int(Advice.HUGEPAGE))
    return out


def generate(spec: str, pages: int = DEFAULT_PAGES, seed: int = 0, large_destinations: bool = False) -> Trace:
    """Build the named pattern's trace (``PATTERN[:ARG][+VARIANT]``); bad names or arguments raise CowaheadError.
    ``large_destinations``: replayed under a kernel whose COW-ahead copies into large folios
    (LARGE_DESTINATIONS_KEY), as the variant's ``thp`` words say which folios it may allocate."""
    spec, _, variant = spec.partition("+")
    if variant and variant not in FOLIO_VARIANTS:
        raise CowaheadError(f"unknown folio variant '+{variant}'; variants are {', '.join(FOLIO_VARIANTS)}")
    name, _, arg_text = spec.partition(":")
    pattern = PATTERNS.get(name)
    if pattern is None:
        raise CowaheadError(f"unknown pattern '{spec}'; patterns are {SYNTAX}")
    if not 1 <= pages <= 1 << 24:
        raise CowaheadError(f"--pages must be 1 … {1 << 24}, not {pages}")
    rng = np.random.default_rng(seed)
    if pattern.arg is None:
        if arg_text:
            raise CowaheadError(f"pattern '{name}' takes no argument")
        builder = pattern.build(pages, rng)
    else:
        arg = _parse_arg(spec, pattern, arg_text)
        builder = pattern.build(pages, rng, arg)
        name = f"{name}:{arg:g}"
    metadata = {"pattern": name, "pages": pages, "seed": seed}
    if variant:
        thp, madvise = FOLIO_VARIANTS[variant]
        builder = _madvise_hugepage(builder) if madvise else builder
        name = f"{name}+{variant}"
        metadata.update(pattern=name, thp=thp)
    if large_destinations:
        metadata[LARGE_DESTINATIONS_KEY] = True
    return builder.trace({"source": f"generate:{name}", **metadata})


def _parse_arg(spec: str, pattern: Pattern, text: str) -> float:
    if not text:
        return pattern.default_arg
    try:
        value = pattern.arg(text)
    except ValueError:
        raise CowaheadError(f"pattern '{spec}': '{text}' is not a valid {pattern.arg.__name__}") from None
    if value <= 0:
        raise CowaheadError(f"pattern '{spec}': the argument must be positive")
    return value
