"""A unix listener with more connections waiting than its backlog allows now: it listens
on "@ckpt-test-lowered-PID" with a backlog of 8, four of its own clients connect, then it
listens again with a backlog of 1 (the kernel keeps the four). Prints "ready PID".

On SIGUSR1 it accepts every waiting connection, sends each accepted end its number and
prints "accepted N" with the numbers its clients read in order; then how many new
non-blocking clients the backlog of 1 lets wait ("room N", 2 for a backlog of 1), then
"END"."""

import os
import signal
import socket
import time

name = b"\0ckpt-test-lowered-%d" % os.getpid()
lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lst.bind(name)
lst.listen(8)
clients = []
for _ in range(4):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(name)
    clients.append(c)
lst.listen(1)


def report(*_: object) -> None:
    lst.setblocking(False)
    accepted = []
    while True:
        try:
            accepted.append(lst.accept()[0])
        except BlockingIOError:
            break
    for i, conn in enumerate(accepted):
        conn.send(b"%d" % i)
    got = b" ".join(c.recv(8) for c in clients).decode()
    os.write(1, f"accepted {len(accepted)}: {got}\n".encode())
    room = 0
    extra = []
    while room < 10:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(name)
        except BlockingIOError:
            s.close()
            break
        extra.append(s)
        room += 1
    os.write(1, f"room {room}\nEND\n".encode())


signal.signal(signal.SIGUSR1, report)
os.write(1, f"ready {os.getpid()}\n".encode())
while True:
    time.sleep(1)
