"""Unix sockets whose names lead nowhere any more, and datagram sockets whose peer
closed. In DIR: a listener bound to DIR/a/srv.sock, whose file was removed; a
datagram socket bound to DIR/b.sock, whose file was replaced by a regular file;
d1, bound to @ckpt-test-dead-PID, connected to a socket bound to DIR/peer.sock that
sent it "hello" and closed; d2, one end of a datagram socketpair whose other end
closed. Prints "ready"; on SIGUSR1 prints what each shows, then "END"."""

import errno
import os
import signal
import socket
import sys
import time

folder = sys.argv[1]
os.mkdir(os.path.join(folder, "a"))
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(os.path.join(folder, "a", "srv.sock"))
srv.listen(3)
os.unlink(os.path.join(folder, "a", "srv.sock"))
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind(os.path.join(folder, "b.sock"))
os.unlink(os.path.join(folder, "b.sock"))
with open(os.path.join(folder, "b.sock"), "w") as f:
    f.write("replaced")
d1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
d1.bind(b"\0ckpt-test-dead-%d" % os.getpid())
p1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
p1.bind(os.path.join(folder, "peer.sock"))
d1.connect(os.path.join(folder, "peer.sock"))
p1.connect(d1.getsockname())
p1.send(b"hello")
p1.close()
d2, p2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
p2.close()


def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def report(*_):
    print(f"srv name {srv.getsockname()}", flush=True)
    with socket.socket(socket.AF_UNIX) as c:
        print(f"srv connect {attempt(lambda: c.connect(srv.getsockname()))}", flush=True)
    print(f"dg name {dg.getsockname()}", flush=True)
    with open(os.path.join(folder, "b.sock")) as f:
        print(f"b.sock holds {f.read()}", flush=True)
    print(f"d1 peer {d1.getpeername()}", flush=True)
    data, addr = d1.recvfrom(100)
    print(f"d1 got {data.decode()} from {addr}", flush=True)
    print(f"d1 send {attempt(lambda: d1.send(b'x'))}", flush=True)
    print(f"d2 send {attempt(lambda: d2.send(b'x'))}", flush=True)
    print("END", flush=True)


signal.signal(signal.SIGUSR1, report)
print("ready", flush=True)
while True:
    time.sleep(0.05)
