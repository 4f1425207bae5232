"""prefork: a CPython parent builds a big dict, then forks 3 workers that share it
copy-on-write, as a pre-fork server does (``gc.freeze()`` before the forks, so that
no collection writes to the shared objects; gunicorn --preload, multiprocessing's fork).

Every process prints "ROLE N" (ROLE = P, W0, W1, W2) every 50 ms; a worker looks up
one entry of the dict each time. Before its loop P prints "pids P W0 W1 W2".
SIGUSR1: the process sums the dict and prints "ROLE sum S" (it touches every object,
so the memory it shares is its own afterwards).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time

ENTRIES = 300_000
WORKERS = 3

table = {f"key {i}": (i, f"value {i} " * 4) for i in range(ENTRIES)}
gc.freeze()
want_sum = False


def on_usr1(sig: int, frame: object) -> None:
    global want_sum
    want_sum = True


def loop(role: str, worker: bool) -> None:
    global want_sum
    n = 0
    while True:
        if want_sum:
            want_sum = False
            total = sum(v[0] for v in table.values())
            print(f"{role} sum {total}", flush=True)
        if worker:
            assert table[f"key {n * 7919 % ENTRIES}"][0] == n * 7919 % ENTRIES
        os.write(1, f"{role} {n}\n".encode())  # one write a line: the output is shared
        n += 1
        time.sleep(0.05)


signal.signal(signal.SIGUSR1, on_usr1)
kids = []
for w in range(WORKERS):
    pid = os.fork()
    if pid == 0:
        loop(f"W{w}", True)
        sys.exit(0)
    kids.append(pid)
print("pids", os.getpid(), *kids, flush=True)
loop("P", False)
