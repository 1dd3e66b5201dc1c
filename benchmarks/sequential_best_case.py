"""The best case for user-space COW-ahead, without the trace harness.

A child writes all N pages in order after fork, in windows of W pages: a
write to the window's first page (one COW fault), then either
MADV_POPULATE_WRITE over the other W-1 (ahead) or nothing (none), then the
writes to the other W-1. Both arms make the very same numpy calls. CPU time
(user + system) per page, medians of rounds run side by side.

    .venv/bin/python benchmarks/sequential_best_case.py [--pages 4096] [--rounds 9] [--windows 4 16 64 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from cowahead.real import linux
from cowahead.trace.events import PAGE_SIZE


def one_run(pages: int, window: int, ahead: bool) -> float:
    address = linux.mmap_anon(pages * PAGE_SIZE)
    view = linux.uint64_pages(address, pages)
    view[:, 0] = 1
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            starts = range(0, pages, window)
            firsts = [np.array([p]) for p in starts]
            rests = [np.arange(p + 1, min(p + window, pages)) for p in starts]
            one, value = np.array([7], np.uint64), np.uint64(7)
            cpu = time.process_time_ns()
            for first, rest in zip(firsts, rests):
                view[first, 0] = one
                if ahead and len(rest):
                    linux.populate_write(address + int(rest[0]) * PAGE_SIZE, len(rest) * PAGE_SIZE)
                view[rest, 0] = value
            cpu = time.process_time_ns() - cpu
            os.write(write_fd, cpu.to_bytes(8, "little"))
        finally:
            os._exit(0)
    cpu = int.from_bytes(os.read(read_fd, 8), "little")
    os.waitpid(child, 0)
    os.close(read_fd)
    os.close(write_fd)
    linux.munmap(address, pages * PAGE_SIZE)
    return cpu / 1000 / pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--windows", type=int, nargs="+", default=[4, 16, 64, 512])
    args = parser.parse_args(argv)
    if not linux.probe_support().populate_write:
        print("sequential_best_case: MADV_POPULATE_WRITE is not available", file=sys.stderr)
        return 2
    times = {(w, a): [] for w in args.windows for a in (False, True)}
    for _ in range(args.rounds):
        for key in times:
            times[key].append(one_run(args.pages, *key))
    print(f"{args.pages} pages, CPU µs per page, medians of {args.rounds}")
    for w in args.windows:
        none, ahead = statistics.median(times[(w, False)]), statistics.median(times[(w, True)])
        print(f"window {w:4}: none {none:.3f}  ahead {ahead:.3f}  ahead/none {ahead / none:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
