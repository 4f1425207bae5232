"""A parent and its child, each counting; the parent with a second thread.

Prints "pids PARENT CHILD THREAD", then "N P" (the parent) and "N C" (the child),
N = 0, 1, 2, ... every 50 ms, each line in one write. The parent holds a few MiB of
memory it wrote (its pages are charged to its memory cgroup).
"""

import os
import threading
import time

ballast = bytearray(os.urandom(1 << 16)) * 64  # 4 MiB written


def say(line: str) -> None:
    os.write(1, f"{line}\n".encode())


def count(tag: str) -> None:
    n = 0
    while True:
        say(f"{n} {tag}")
        n += 1
        time.sleep(0.05)


r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(w)
    os.read(r, 1)  # until the parent said who is who
    os.close(r)
    count("C")
os.close(r)
tid = []
ready = threading.Event()


def idle() -> None:
    tid.append(threading.get_native_id())
    ready.set()
    while True:
        time.sleep(1)


threading.Thread(target=idle, daemon=True).start()
ready.wait()
say(f"pids {os.getpid()} {child} {tid[0]}")
os.close(w)
count("P")
