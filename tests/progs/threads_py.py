"""A CPython target with 3 threading.Thread workers sharing a list under a lock.

Prints "tids MAIN W1 W2 W3" (native thread ids) once every worker runs. Worker Wi
appends (i, N) to the shared list and prints "Wi N len=L" for N = 0, 1, 2, ...
every 50 ms. W1 and W2 sleep between ticks; W3 keeps computing in pure Python
(checking each result, "BAD W3 ..." if wrong), so the GIL is always contended.
Main prints "M N len=L ok|BAD" every 50 ms: "ok" when the list holds, for each
worker, exactly the entries (i, 0), (i, 1), ... in order. On SIGUSR1 main stops the
workers, joins them, prints "joined len=L ok|BAD" and exits with status 0.
"""

import os
import signal
import sys
import threading
import time

WORKERS = 3
EXPECTED = sum(k * k for k in range(2000))

shared: list[tuple[int, int]] = []
lock = threading.Lock()
stop = threading.Event()
started = threading.Barrier(WORKERS + 1)
tids = [0] * (WORKERS + 1)


def say(line: str) -> None:
    """One write(2) per line, so that threads never interleave within a line."""
    os.write(1, (line + "\n").encode())


def worker(i: int) -> None:
    tids[i] = threading.get_native_id()
    started.wait()
    n = 0
    next_tick = time.monotonic()
    while not stop.is_set():
        if i == WORKERS:
            value = sum(k * k for k in range(2000))
            if value != EXPECTED:
                say(f"BAD W{i} {value}")
            if time.monotonic() < next_tick:
                continue
            next_tick = time.monotonic() + 0.05
        with lock:
            shared.append((i, n))
            length = len(shared)
        say(f"W{i} {n} len={length}")
        n += 1
        if i != WORKERS:
            time.sleep(0.05)


def consistent() -> bool:
    """Every worker's entries are (i, 0), (i, 1), ... in list order."""
    with lock:
        snapshot = list(shared)
    nxt = [0] * (WORKERS + 1)
    for i, n in snapshot:
        if not 1 <= i <= WORKERS or n != nxt[i]:
            return False
        nxt[i] += 1
    return True


def main() -> int:
    usr1 = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: usr1.set())
    tids[0] = threading.get_native_id()
    threads = [threading.Thread(target=worker, args=(i,), name=f"W{i}")
               for i in range(1, WORKERS + 1)]
    for t in threads:
        t.start()
    started.wait()
    say("tids " + " ".join(map(str, tids)))
    n = 0
    while not usr1.is_set():
        say(f"M {n} len={len(shared)} {'ok' if consistent() else 'BAD'}")
        n += 1
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    say(f"joined len={len(shared)} {'ok' if consistent() else 'BAD'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
