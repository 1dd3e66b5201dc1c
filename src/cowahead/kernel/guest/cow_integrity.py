"""COW integrity under COW-ahead: after fork each side sees only its own writes, with a thread writing throughout.

Runs in the guest (`cowahead kernel check`): 20 rounds of fork; the child writes a random third of 4096
pages and checks every page; the parent writes every fifth page meanwhile and checks its own view after
the child exits. Prints one JSON line; exit status 1 if any round saw a wrong page.
"""
import json
import os
import random
import sys
import threading

import numpy as np

PAGES = 4096
PAGE_WORDS = 512
mem = np.zeros(PAGES * PAGE_WORDS, dtype=np.int64)
mem[::PAGE_WORDS] = np.arange(PAGES)
stop = False
thread_pages = range(0, PAGES, 7)

def writer():
    v = 10**9
    while not stop:
        for p in thread_pages:
            mem[p * PAGE_WORDS + 1] = v
        v += 1

t = threading.Thread(target=writer); t.start()
bad = 0
for round_ in range(20):
    snapshot_first = mem[::PAGE_WORDS].copy()
    pid = os.fork()
    if pid == 0:
        rng = random.Random(round_)
        mine = sorted(rng.sample(range(PAGES), PAGES // 3))
        for p in mine:
            mem[p * PAGE_WORDS] = -p - 1
        col = mem[::PAGE_WORDS]
        expect = snapshot_first.copy(); expect[mine] = -np.array(mine) - 1
        os._exit(0 if np.array_equal(col, expect) else 1)
    for p in range(round_ % 5, PAGES, 5):   # the parent writes too, while the child runs
        mem[p * PAGE_WORDS] = p + 100000 * (round_ + 1)
    _, status = os.waitpid(pid, 0)
    bad += os.waitstatus_to_exitcode(status) != 0
    col = mem[::PAGE_WORDS]
    touched = np.arange(round_ % 5, PAGES, 5)
    expect = snapshot_first.copy(); expect[touched] = touched + 100000 * (round_ + 1)
    bad += not np.array_equal(col, expect)
stop = True; t.join()
print(json.dumps({"rounds": 20, "pages": PAGES, "bad_rounds": int(bad)}))
sys.exit(1 if bad else 0)
