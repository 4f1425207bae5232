"""Hold one socket set-up, then print 0, 1, 2, ... one number per line every 50 ms.

Usage: sockhold.py MODE [DIR]

Refused by a dump (the process must run on unharmed):
  tcp-established   a TCP connection to itself, accepted
  tcp-pending       a TCP listener with one connection not accepted yet
  unix-pending      a unix listener (abstract name) with one connection not accepted, its
                    client having sent data on it
  ebpf-filter       a UDP socket with an eBPF program attached (SO_ATTACH_BPF)
  unix-epoll        a socketpair with a message carrying an epoll instance queued
  unix-outside      a bound datagram socket holding a datagram from a socket since closed
Restored (on SIGUSR1 the process prints what it finds):
  unix-dgram        DIR/srv.sock, a bound datagram socket with three datagrams queued:
                    from a socket bound to "@ckpt-test-cli-PID" (connected to the
                    server), from an unbound socket, and an empty one from the bound
                    client. On SIGUSR1 it prints "got DATA from ADDR" for each queued
                    datagram, then sends "again" from the bound client (send(), no
                    address) and prints how it arrived, and the client's peer name.
  relative          a stream listener bound to the relative name "rel.sock" from DIR
                    (its working directory), non-blocking: on SIGUSR1 it prints "name
                    NAME", "would block" (accept() says EAGAIN), then waits for a
                    connection, accepts it and prints "accepted"
  udp-connected     a UDP socket bound to 127.0.0.1 (prints "local PORT") and connected
                    to 127.0.0.1:DIR (DIR is a port here), and an unbound UDP socket:
                    on SIGUSR1 it sends "ping" with send() and prints the unbound
                    socket's name ("unbound HOST PORT")
  peer-closed       a stream socketpair whose one end was closed with "left over"
                    unread in the other: on SIGUSR1 it prints "read ..." then "eof"
                    and the result of a write ("write EPIPE").

Prints "ready" first.
"""

import array
import os
import select
import signal
import socket
import sys
import time

mode = sys.argv[1]
keep = []
report = None

if mode in ("tcp-established", "tcp-pending"):
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    cli = socket.create_connection(lst.getsockname())
    keep += [lst, cli]
    if mode == "tcp-established":
        keep.append(lst.accept()[0])
elif mode == "unix-pending":
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(b"\0ckpt-test-pending-%d" % os.getpid())
    lst.listen(4)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(lst.getsockname())
    cli.send(b"early")
    keep += [lst, cli]
elif mode == "ebpf-filter":
    import ctypes
    import struct
    insns = struct.pack("=BBhi", 0xB7, 0, 0, 0) + struct.pack("=BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQ", 1, 2, ctypes.addressof(code), ctypes.addressof(lic),
                       0, 0, 0)  # BPF_PROG_TYPE_SOCKET_FILTER, 2 insns, r0 = 0; exit
    attr += bytes(128 - len(attr))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    prog = libc.syscall(321, 5, ctypes.c_char_p(attr), len(attr))  # bpf(BPF_PROG_LOAD)
    if prog < 0:
        raise OSError(ctypes.get_errno(), "bpf(BPF_PROG_LOAD)")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, 50, prog)  # SO_ATTACH_BPF
    os.close(prog)
    keep.append(u)
elif mode == "unix-epoll":
    import select
    ep = select.epoll()
    a, b = socket.socketpair()
    a.sendmsg([b"fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [ep.fileno()]))])
    ep.close()
    keep += [a, b]
elif mode == "unix-outside":
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(b"\0ckpt-test-srv-%d" % os.getpid())
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0ckpt-test-gone-%d" % os.getpid())
        s.sendto(b"hello", srv.getsockname())
    keep.append(srv)
elif mode == "unix-dgram":
    path = os.path.join(sys.argv[2], "srv.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    cli.bind(b"\0ckpt-test-cli-%d" % os.getpid())
    cli.connect(path)
    anon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    cli.send(b"from-cli")
    anon.sendto(b"from-anon", path)
    cli.send(b"")
    keep += [srv, cli, anon]

    def report():
        for _ in range(3):
            data, addr = srv.recvfrom(100, socket.MSG_DONTWAIT)
            print(f"got {data!r} from {addr!r}", flush=True)
        try:
            srv.recvfrom(100, socket.MSG_DONTWAIT)
            print("more queued", flush=True)
        except BlockingIOError:
            print("queue empty", flush=True)
        cli.send(b"again")
        data, addr = srv.recvfrom(100)
        print(f"got {data!r} from {addr!r}", flush=True)
        print(f"cli peer {cli.getpeername()!r}", flush=True)
elif mode == "relative":
    os.chdir(sys.argv[2])
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind("rel.sock")
    lst.listen(2)
    lst.setblocking(False)
    keep.append(lst)

    def report():
        print(f"name {lst.getsockname()!r}", flush=True)
        try:
            lst.accept()
            print("accepted at once", flush=True)
        except BlockingIOError:
            print("would block", flush=True)
        select.select([lst], [], [])
        lst.accept()[0].close()
        print("accepted", flush=True)
elif mode == "udp-connected":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.connect(("127.0.0.1", int(sys.argv[2])))
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keep += [u, v]
    print(f"local {u.getsockname()[1]}", flush=True)

    def report():
        u.send(b"ping")
        host, port = v.getsockname()
        print(f"unbound {host} {port}", flush=True)
elif mode == "peer-closed":
    a, b = socket.socketpair()
    b.sendall(b"left over")
    b.close()
    keep.append(a)

    def report():
        print(f"read {a.recv(100)!r}", flush=True)
        print("eof" if a.recv(100) == b"" else "no eof", flush=True)
        try:
            a.send(b"x")
            print("write ok", flush=True)
        except BrokenPipeError:
            print("write EPIPE", flush=True)
else:
    sys.exit(f"sockhold: unknown mode {mode}")

signal.signal(signal.SIGPIPE, signal.SIG_IGN)
want = False


def on_usr1(sig, frame):
    global want
    want = True


signal.signal(signal.SIGUSR1, on_usr1)
print("ready", flush=True)
for n in range(10**9):
    if want and report is not None:
        want = False
        report()
    print(n, flush=True)
    time.sleep(0.05)
