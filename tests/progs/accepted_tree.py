"""A server and its client, a child, over connections the server accepted: a stream
one on a listener bound to DIR/acc.sock, a seqpacket one on a listener bound to the
abstract name "@ckpt-test-acc-PID"; the child connects to both and, first, the server
to its own stream listener (a connection within one process). Prints "pids PID
CHILD" once connected.

The server sends "ping N" on both connections every 50 ms and waits for "pong N" on
each; it prints "P N", or "BAD ..." for a wrong reply. The child answers; the
listeners stay listening (a new client is accepted and answered "hello" on SIGUSR1).
"""

import os
import signal
import socket
import sys
import time

folder = sys.argv[1]
path = os.path.join(folder, "acc.sock")
name = b"\0ckpt-test-acc-%d" % os.getpid()
stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
stream.bind(path)
stream.listen(4)
seq = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
seq.bind(name)
seq.listen(4)
own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
own.connect(path)
own_accepted, _ = stream.accept()
child = os.fork()
if child == 0:
    for s in (stream, seq, own, own_accepted):
        s.close()
    cs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cs.connect(path)
    cq = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    cq.connect(name)
    f = cs.makefile("rwb", buffering=0)
    while True:
        line = f.readline()
        msg = cq.recv(100)
        if not line or not msg:
            sys.exit(0)
        f.write(b"pong " + line.split()[1] + b"\n")
        cq.send(b"pong " + msg.split()[1])
a, _ = stream.accept()
q, _ = seq.accept()
print(f"pids {os.getpid()} {child}", flush=True)


def greet(sig: int, frame: object) -> None:
    for lst in (stream, seq):
        c, _ = lst.accept()
        c.send(b"hello")
        c.close()


signal.signal(signal.SIGUSR1, greet)
f = a.makefile("rwb", buffering=0)
for n in range(10**9):
    f.write(b"ping %d\n" % n)
    q.send(b"ping %d" % n)
    own.send(b"%d" % n)
    reply, msg, mine = f.readline(), q.recv(100), own_accepted.recv(100)
    good = reply == b"pong %d\n" % n and msg == b"pong %d" % n and mine == b"%d" % n
    print(f"P {n}" if good else f"BAD {n} {reply!r} {msg!r} {mine!r}", flush=True)
    time.sleep(0.05)
