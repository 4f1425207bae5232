"""Connections to unix listeners not accepted yet. The parent listens on the abstract
name "@ckpt-test-pend-PID" (stream) and on DIR/pend.sock (seqpacket) and accepts
nothing until SIGUSR1; its own client c1 connects to the stream listener, then its
child's c2; the child's c3 connects to the seqpacket listener and shuts down writing.
The test connects a third client to the stream listener from outside. Prints
"ready PID CHILD".

On SIGUSR1 the parent accepts every pending connection and prints, in accept order,
"ACCEPT NAME PID" with the peer's SO_PEERCRED pid; c1's view of the listener's
pid; then "c1 sends" what the first connection reads, "to-c2" sent on the second,
what the third reads ("eof" for end-of-file), what the seqpacket one reads. On SIGUSR1
the child prints what c2 reads.
"""

import os
import signal
import socket
import struct
import sys
import time

folder = sys.argv[1]
name = b"\0ckpt-test-pend-%d" % os.getpid()
lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lst.bind(name)
lst.listen(8)
seq = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
seq.bind(os.path.join(folder, "pend.sock"))
seq.listen(8)
c1 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c1.connect(name)
print(f"ready {os.getpid()}", flush=True)


def peer_pid(s):
    return struct.unpack("=iii", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]


def read(s):
    s.settimeout(5)
    try:
        data = s.recv(100)
    except TimeoutError:
        return "timeout"
    return data.decode() if data else "eof"


child = os.fork()
if child == 0:
    c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c2.connect(name)
    c3 = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c3.connect(os.path.join(folder, "pend.sock"))
    c3.shutdown(socket.SHUT_WR)
    signal.signal(signal.SIGUSR1, lambda *_: print(f"CHILD c2 reads {read(c2)}", flush=True))
    print("child ready", flush=True)
    while True:
        time.sleep(0.05)


def report(*_):
    lst.setblocking(False)
    conns = []
    while True:
        try:
            conns.append(lst.accept()[0])
        except BlockingIOError:
            break
    for c in conns:
        print(f"ACCEPT stream {peer_pid(c)}", flush=True)
    print(f"c1 sees listener {peer_pid(c1)}", flush=True)
    c1.send(b"from-c1")
    print(f"first reads {read(conns[0])}", flush=True)
    conns[1].send(b"to-c2")
    print(f"third reads {read(conns[2])}", flush=True)
    s, _ = seq.accept()
    print(f"ACCEPT seqpacket {peer_pid(s)} reads {read(s)}", flush=True)
    print("END", flush=True)


signal.signal(signal.SIGUSR1, report)
while True:
    time.sleep(0.05)
