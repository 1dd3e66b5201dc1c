"""Hypothesis strategies for valid event streams, shared by the model and engine tests."""

from hypothesis import strategies as st

from conftest import Stream
from cowahead.policies import default_policies
from cowahead.trace import EventKind, VmaKind

# Pages 480 … 560 relative to a page-table-aligned base: streams cross a page-table boundary at 512.
LOW, HIGH = 480, 560

# Windows chosen to hit the edges, then every policy's own example from the registry (policies/*.py), so
# that a new policy file is in every property and differential test without editing this list.
POLICIES = list(dict.fromkeys(["none", "fixed:1", "fixed:3", "fixed:8", "around:4", "around:16", "adaptive:8",
                               "adaptive", "ccow:8,0.5", "ccow:4,0.5", "ccow", "oracle:4", "oracle:16", "folio",
                               "thp-cow", "ccow-published", "ccow-published:8"]
                              + default_policies("example")))


@st.composite
def event_streams(draw, cow_only: bool = False, max_ops: int = 60) -> Stream:
    """A random but valid stream; with ``cow_only``: populate, fork, then only writes, reads, forks, exits."""
    s = Stream()
    first = draw(st.integers(LOW, LOW + 24))
    pages = draw(st.integers(8, HIGH - first))
    kind = VmaKind.PRIVATE_ANON if cow_only else draw(st.sampled_from(list(VmaKind)))
    s.mmap(1, first, pages, kind)
    # Most interesting behaviour needs populated memory shared by a fork: start there,
    # with a few holes and zero-page reads unless the stream is COW-only.
    for page in range(first, first + pages):
        if cow_only or draw(st.integers(0, 9)) < 8:
            s.write(1, page)
        elif draw(st.booleans()):
            s.read(1, page)
    s.fork(1, 2)
    live, next_pid = [1, 2], 3
    ops = ["write", "write", "write", "read", "fork", "exit", "span", "parent_write", "parent_write", "refork"]
    if not cow_only:
        ops += ["exec", "mmap", "munmap", "dontneed", "write", "read"]
    for _ in range(draw(st.integers(0, max_ops))):
        if not live:
            break
        op = draw(st.sampled_from(ops))
        pid = draw(st.sampled_from(live))
        # mostly inside the first mapping, sometimes anywhere (other VMAs, or none)
        page = draw(st.integers(first, first + pages - 1) if draw(st.integers(0, 9)) else st.integers(LOW, HIGH - 1))
        if op in ("parent_write", "refork") and 1 in live:
            pid = 1  # the first process keeps writing and forking, as Redis does for its saves
            op = "parent_write" if op == "parent_write" else "fork"
        if op == "write":
            s.write(pid, page)
        elif op == "parent_write":  # a short run of writes, dense enough for ccow's history
            s.write(pid, *range(page, min(page + draw(st.integers(1, 6)), HIGH)))
        elif op == "read":
            s.read(pid, page)
        elif op == "span":  # one event over several pages, as a memset would
            s.value += 1
            s._add(pid, EventKind.WRITE, page, draw(st.integers(2, 12)), s.value)
        elif op in ("fork", "refork"):
            s.fork(pid, next_pid)
            live.append(next_pid)
            next_pid += 1
        elif op == "exit":
            s.exit(pid)
            live.remove(pid)
        elif op == "exec":
            s.exec(pid)
        else:
            length = draw(st.integers(1, 16))
            if op == "mmap":
                s.mmap(pid, page, length, draw(st.sampled_from(list(VmaKind))))
            else:
                getattr(s, op)(pid, page, length)
    for pid in live if draw(st.booleans()) else []:
        s.exit(pid)
    return s


@st.composite
def snapshot_streams(draw) -> Stream:
    """Redis-like: a parent that writes runs of pages and forks a saving child again and again."""
    s = Stream()
    pages = draw(st.integers(8, 64))
    s.mmap(1, LOW, pages).write(1, *range(LOW, LOW + pages))
    child = 2
    for _ in range(draw(st.integers(1, 4))):
        s.fork(1, child)
        for _ in range(draw(st.integers(0, 8))):
            start = draw(st.integers(LOW, LOW + pages - 1))
            s.write(1, *range(start, min(start + draw(st.integers(1, 8)), LOW + pages)))
            if draw(st.booleans()):
                s.read(child, draw(st.integers(LOW, LOW + pages - 1)))
        if draw(st.booleans()):
            s.exit(child)
        child += 1
    return s


# Folio settings for the folio streams, in machine.thp_settings()'s words (None: 4 KiB pages only).
FOLIO_SETTINGS = [None, {"enabled": "never"}, {"enabled": "madvise"}, {"enabled": "always"},
                  {"enabled": "never", "hugepages-64kB/enabled": "always"},
                  {"enabled": "madvise", "hugepages-16kB/enabled": "always", "hugepages-64kB/enabled": "always",
                   "hugepages-2048kB/enabled": "always"},
                  {"enabled": "madvise", "use_zero_page": "0", "hugepages-32kB/enabled": "inherit"}]


@st.composite
def folio_streams(draw, max_ops: int = 40, mixed: bool = False) -> Stream:
    """A random valid stream over 2 MiB-aligned memory (pages 0 … 1100, so PMD THPs fit), with MADV_HUGEPAGE,
    MADV_NOHUGEPAGE and PR_SET_THP_DISABLE among its events; reads and writes land near folio edges. With
    ``mixed``, new mappings of every kind too (MAP_FIXED over what is there: shmem, a private file, or
    anonymous memory at any page, so VMAs and 2 MiB blocks stop lining up)."""
    from cowahead.trace.events import Advice
    s = Stream()
    pages = draw(st.integers(16, 1100))
    s.mmap(1, 0, pages)
    if draw(st.booleans()):
        start = draw(st.integers(0, pages - 1))
        s.madvise(1, start, draw(st.integers(1, pages - start)), Advice.HUGEPAGE)
    hot = sorted({0, 1, 15, 16, 17, 63, 64, 511, 512, 513, pages - 1} & set(range(pages)))
    page_of = st.one_of(st.sampled_from(hot), st.integers(0, pages - 1))
    for _ in range(draw(st.integers(0, 12))):
        (s.write if draw(st.integers(0, 3)) else s.read)(1, draw(page_of))
    s.fork(1, 2)
    live, next_pid = [1, 2], 3
    ops = ["write", "write", "write", "read", "fork", "exit", "span", "dontneed", "munmap", "madvise", "exec",
           "thp_disable"] + (["mmap", "mmap"] if mixed else [])
    for _ in range(draw(st.integers(0, max_ops))):
        if not live:
            break
        op, pid, page = draw(st.sampled_from(ops)), draw(st.sampled_from(live)), draw(page_of)
        if op == "madvise" and draw(st.booleans()):
            page &= ~511  # an aligned start, so that MADV_COLLAPSE has whole 2 MiB to work on
        if op == "write":
            s.write(pid, page)
        elif op == "read":
            s.read(pid, page)
        elif op == "span":
            s.value += 1
            s._add(pid, EventKind.WRITE, page, draw(st.integers(2, 40)), s.value)
        elif op == "fork":
            s.fork(pid, next_pid)
            live.append(next_pid)
            next_pid += 1
        elif op == "exit":
            s.exit(pid)
            live.remove(pid)
        elif op == "exec":
            s.exec(pid).mmap(pid, 0, pages)
        elif op == "thp_disable":
            s.thp_disable(pid, draw(st.booleans()))
        elif op == "madvise":
            s.madvise(pid, page, draw(st.integers(1, 600)),
                      draw(st.sampled_from([Advice.HUGEPAGE, Advice.NOHUGEPAGE, Advice.COLLAPSE])))
        elif op == "mmap":
            s.mmap(pid, page, draw(st.sampled_from([1, 16, 100, 512, 600])), draw(st.sampled_from(list(VmaKind))))
        else:
            getattr(s, op)(pid, page, draw(st.sampled_from([1, 3, 16, 100, 512, 600])))
    for pid in live if draw(st.booleans()) else []:
        s.exit(pid)
    return s
