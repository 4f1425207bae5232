"""An echo server on every kind of listening socket, with a client in its own tree.

Usage: sockserver.py DIR TCPPORT UDPPORT

It listens on a unix stream socket at DIR/echo.sock, a unix seqpacket socket
on the abstract name "@ckpt-test-echo-PID", TCP 127.0.0.1:TCPPORT (without
SO_REUSEADDR; TCP_NODELAY and SO_KEEPALIVE set, backlog 7) and TCP [::1]:0
(IPV6_V6ONLY, SO_REUSEADDR, SO_REUSEPORT); it serves UDP on 127.0.0.1:UDPPORT
(a datagram "x" is answered "udp x") and on a unix datagram socket at
DIR/dgram.sock ("unix x"); it also holds an unbound, unconnected unix socket
and TCP socket. Each stream connection gets one line echoed back ("echo
LINE") and is closed by the server (so its port holds TIME_WAIT connections).

A forked child connects to DIR/echo.sock and pings the connection the server
accepted every 50 ms: the server prints "P N" for each ping it answers, the
child "C N" for each answer it gets. On SIGUSR1 the server prints the options
of its sockets ("opts ..."), the TCP backlogs included.

Prints "ready PID CHILD V6PORT" once everything is set up.
"""

import os
import select
import signal
import socket
import struct
import sys
import time

d, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = os.path.join(d, "echo.sock")
abstract = b"\0ckpt-test-echo-%d" % os.getpid()

ux = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ux.bind(path)
os.chmod(path, 0o640)
os.chown(path, 1234, 4321)
ux.listen(5)
ab = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
ab.bind(abstract)
ab.listen(3)
t4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t4.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t4.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
t4.bind(("127.0.0.1", tcp_port))
t4.listen(7)
t6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
t6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
t6.bind(("::1", 0))
t6.listen(11)
ud = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ud.bind(("127.0.0.1", udp_port))
dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind(os.path.join(d, "dgram.sock"))
spare_unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
spare_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

child = os.fork()
if child == 0:
    for s in (ux, ab, t4, t6, ud, dg, spare_unix, spare_tcp):
        s.close()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    f = c.makefile("rwb", buffering=0)
    for n in range(10**9):
        f.write(b"ping %d\n" % n)
        line = f.readline()
        print(f"C {n}" if line == b"pong %d\n" % n else f"C BAD {n} {line!r}", flush=True)
        time.sleep(0.05)

conn, _ = ux.accept()  # the child's connection: a pair inside the tree
show = False


def on_usr1(sig, frame):
    global show
    show = True


signal.signal(signal.SIGUSR1, on_usr1)
print(f"ready {os.getpid()} {child} {t6.getsockname()[1]}", flush=True)


def backlog(s):
    """sk_max_ack_backlog of a TCP listener: tcpi_sacked in its tcp_info."""
    return struct.unpack_from("=I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 28)[0]


def opts():
    g = socket.SOL_SOCKET
    return (f"opts t4.nodelay={t4.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)} "
            f"t4.keepalive={t4.getsockopt(g, socket.SO_KEEPALIVE)} "
            f"t4.reuseaddr={t4.getsockopt(g, socket.SO_REUSEADDR)} "
            f"t4.listening={t4.getsockopt(g, socket.SO_ACCEPTCONN)} "
            f"t4.backlog={backlog(t4)} t6.backlog={backlog(t6)} "
            f"t6.v6only={t6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)} "
            f"t6.reuseaddr={t6.getsockopt(g, socket.SO_REUSEADDR)} "
            f"t6.reuseport={t6.getsockopt(g, socket.SO_REUSEPORT)} "
            f"ux.name={ux.getsockname()} ab.name={ab.getsockname()!r} "
            f"dg.name={dg.getsockname()} ud.name={ud.getsockname()[0]}:{ud.getsockname()[1]}")


cf = conn.makefile("rwb", buffering=0)
listeners = {ux: "unix", ab: "abstract", t4: "tcp4", t6: "tcp6"}
while True:
    if show:
        show = False
        print(opts(), flush=True)
    try:
        ready, _, _ = select.select([conn, ud, dg, *listeners], [], [], 1.0)
    except InterruptedError:
        continue
    for s in ready:
        if s is conn:
            line = cf.readline()
            n = int(line.split()[1])
            cf.write(b"pong %d\n" % n)
            print(f"P {n}", flush=True)
        elif s is ud:
            data, addr = ud.recvfrom(4096)
            ud.sendto(b"udp " + data, addr)
            print(f"udp {data.decode()}", flush=True)
        elif s is dg:
            data, addr = dg.recvfrom(4096)
            dg.sendto(b"unix " + data, addr)
            print(f"dgram {data.decode()}", flush=True)
        else:
            c, _ = s.accept()
            if s is ab:
                data = c.recv(4096)
            else:
                data = c.makefile("rb").readline().rstrip(b"\n")
            c.sendall(b"echo " + data + b"\n")
            c.close()
            print(f"served {listeners[s]} {data.decode()}", flush=True)
