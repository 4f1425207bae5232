"""A parent and child talking over a unix socketpair, with unread bytes queued.

The parent sends "ping N" every 50 ms and waits for "pong N"; it prints "P N".
Before the loop it also queues 3000 bytes on a second socketpair (SOCK_SEQPACKET)
that the child reads only on SIGUSR1, printing "extra ok" if every message is
whole and in order.
"""

import os
import signal
import socket
import sys
import time

a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
qa, qb = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
for i in range(30):
    qa.send(b"%03d" % i + b"x" * 97)
pid = os.fork()
if pid == 0:
    a.close()
    qa.close()
    want_extra = False

    def on_usr1(sig: int, frame: object) -> None:
        global want_extra
        want_extra = True

    signal.signal(signal.SIGUSR1, on_usr1)
    f = b.makefile("rwb", buffering=0)
    while True:
        line = f.readline()
        if not line:
            sys.exit(0)
        if want_extra:
            want_extra = False
            msgs = [qb.recv(4096) for _ in range(30)]
            good = all(m == b"%03d" % i + b"x" * 97 for i, m in enumerate(msgs))
            print("extra ok" if good else f"extra BAD {msgs[:3]}", flush=True)
        n = int(line.split()[1])
        f.write(b"pong %d\n" % n)
b.close()
qb.close()
print(f"pids {os.getpid()} {pid}", flush=True)
f = a.makefile("rwb", buffering=0)
for n in range(10**9):
    f.write(b"ping %d\n" % n)
    reply = f.readline()
    print(f"P {n}" if reply == b"pong %d\n" % n else f"BAD {n} {reply!r}", flush=True)
    time.sleep(0.05)
