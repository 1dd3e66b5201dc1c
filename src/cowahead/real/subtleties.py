"""Real-kernel subtleties the model takes for granted, measured rather than assumed.

1. ``child_exit``: a parent's write after its child exited reuses the page
   (wp_can_reuse_anon_folio: map and ref count 1) — but only once the
   child's address space is gone. Written right after the child was told
   to exit, without waiting, the frames may still be shared: a COW copy.
   The runner therefore waits on a pidfd before the stream goes on.
2. ``lru_batch``: a freshly zero-filled folio sits in a per-CPU LRU add
   batch, which holds a reference; wp_can_reuse_anon_folio drains the
   *local* batch only. Zero-fill on CPU 0, then the child exits on CPU 1 and
   the parent writes from CPU 1: does any page copy instead of reuse?
3. ``exclusive_bit``: after fork, a child writing every other page of 64:
   the child's written pages get new PFNs; the parent's frames of those
   pages are mapped once again (pagemap bit 56) though still write-protected.
"""

from __future__ import annotations

import os

import numpy as np

from ..trace.events import PAGE_SIZE
from . import linux

FOLIO_BATCH = 31  # PAGEVEC_SIZE: folios an LRU add batch holds before it is flushed


def _changed_pfns(address: int, pages: int, write) -> tuple[int, int]:
    """Copies (PFN changed) and minor faults across ``write()``."""
    pagemap = linux.Pagemap()
    try:
        before = linux.pfns(pagemap.entries(address, pages))
        faults = linux.minor_faults()
        write()
        faults = linux.minor_faults() - faults
        after = linux.pfns(pagemap.entries(address, pages))
    finally:
        pagemap.close()
    return int(np.count_nonzero(before != after)), faults


def child_exit(pages: int = 256, wait: bool = True) -> dict:
    address = linux.mmap_anon(pages * PAGE_SIZE)
    view = linux.uint64_pages(address, pages)
    view[:, 0] = 1
    child = os.fork()
    if child == 0:
        os._exit(0)
    if wait:
        os.waitpid(child, 0)
    copies, faults = _changed_pfns(address, pages, lambda: view.__setitem__((slice(None), 0), 2))
    if not wait:
        os.waitpid(child, 0)
    linux.munmap(address, pages * PAGE_SIZE)
    return {"pages": pages, "waited_for_child": wait, "copies": copies, "reuses": pages - copies,
            "minor_faults": faults}


def lru_batch(pages: int = 3 * FOLIO_BATCH - 1) -> dict:
    """The last ``pages % 31`` zero-filled folios are still in CPU 0's batch when the parent,
    moved to CPU 1, writes them after the child exited (on CPU 1 too)."""
    cpus = os.sched_getaffinity(0)
    if not {0, 1} <= cpus:
        return {"skipped": "needs CPUs 0 and 1"}
    try:
        os.sched_setaffinity(0, {0})
        address = linux.mmap_anon(pages * PAGE_SIZE)
        view = linux.uint64_pages(address, pages)
        view[:, 0] = 1
        child = os.fork()
        if child == 0:
            os.sched_setaffinity(0, {1})
            os._exit(0)
        os.waitpid(child, 0)
        os.sched_setaffinity(0, {1})
        copies, faults = _changed_pfns(address, pages, lambda: view.__setitem__((slice(None), 0), 2))
        linux.munmap(address, pages * PAGE_SIZE)
    finally:
        os.sched_setaffinity(0, cpus)
    return {"pages": pages, "in_batch_at_most": pages % FOLIO_BATCH, "copies": copies, "minor_faults": faults}


def exclusive_bit(pages: int = 64) -> dict:
    address = linux.mmap_anon(pages * PAGE_SIZE)
    view = linux.uint64_pages(address, pages)
    view[:, 0] = 1
    to_parent, to_child = os.pipe(), os.pipe()
    child = os.fork()
    if child == 0:
        copies, _ = _changed_pfns(address, pages, lambda: view.__setitem__((slice(0, None, 2), 0), 2))
        os.write(to_parent[1], copies.to_bytes(4, "little"))
        os.read(to_child[0], 1)  # stay alive while the parent looks
        os._exit(0)
    child_copies = int.from_bytes(os.read(to_parent[0], 4), "little")
    pagemap = linux.Pagemap()
    exclusive = linux.exclusive(pagemap.entries(address, pages))
    pagemap.close()
    os.write(to_child[1], b"x")
    os.waitpid(child, 0)
    for fd in to_parent + to_child:
        os.close(fd)
    linux.munmap(address, pages * PAGE_SIZE)
    return {"pages": pages, "child_writes": pages // 2, "child_copies": child_copies,
            "parent_exclusive_pages": int(exclusive.sum()),
            "parent_exclusive_are_the_written_ones": bool(exclusive[0::2].all() and not exclusive[1::2].any())}


def measure_all(trials: int = 5) -> dict:
    return {
        "child_exit_waited": [child_exit(wait=True) for _ in range(trials)],
        "child_exit_not_waited": [child_exit(wait=False) for _ in range(trials)],
        "lru_batch_other_cpu": [lru_batch() for _ in range(trials)],
        "exclusive_bit": [exclusive_bit() for _ in range(trials)],
    }
