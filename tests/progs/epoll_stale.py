"""An epoll watch whose fd number no longer names the watched file.

A pipe's read end R is added to an epoll instance, dup'ed to another number,
and closed: the kernel keeps the watch (the file is still open), keyed by R.
With "reused", /dev/null is then opened and takes number R.

Prints "ready EPFD R DUP", then 0, 1, 2, ... every 50 ms.
"""

import os
import select
import sys
import time

mode = sys.argv[1]
r, w = os.pipe()
ep = select.epoll()
ep.register(r, select.EPOLLIN)
dup = os.dup(r)
os.close(r)
if mode == "reused":
    other = os.open("/dev/null", os.O_RDONLY)
    assert other == r, (other, r)
print(f"ready {ep.fileno()} {r} {dup}", flush=True)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
