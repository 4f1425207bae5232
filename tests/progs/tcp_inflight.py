"""A TCP server that does not accept its connection until told, and (``tree``) its
client in the same tree, driven by signals.

Usage: tcp_inflight.py serve|tree [defer]

The server listens on 127.0.0.1 (a port the kernel picks) and prints "port N";
with ``defer``, TCP_DEFER_ACCEPT holds each connection until its client sends.
SIGUSR2: it accepts one connection, reads until it has "ping" (or end of file),
prints "server got DATA" (as Python shows bytes), answers "pong", prints
"server sent".
``tree``: it forks a client that connects and prints "client local PORT".
SIGUSR1 (to the client): it sends "ping", prints "client sent", then reads the
answer and prints "client got DATA" or "client error NAME".
"""

import errno
import os
import signal
import socket
import sys

lst = socket.socket()
lst.bind(("127.0.0.1", 0))
if sys.argv[2:] == ["defer"]:
    lst.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 600)
lst.listen(8)
port = lst.getsockname()[1]
print(f"port {port}", flush=True)


def serve(signum: int, frame: object) -> None:
    conn, _ = lst.accept()
    data = b""
    while not data.endswith(b"ping"):
        chunk = conn.recv(100)
        if not chunk:
            break
        data += chunk
    print(f"server got {data!r}", flush=True)
    conn.sendall(b"pong")
    print("server sent", flush=True)


if sys.argv[1] == "tree" and os.fork() == 0:
    lst.close()
    sock = socket.create_connection(("127.0.0.1", port))
    print(f"client local {sock.getsockname()[1]}", flush=True)
    sent = False

    def send(signum: int, frame: object) -> None:
        global sent
        sock.sendall(b"ping")
        sent = True
        print("client sent", flush=True)

    signal.signal(signal.SIGUSR1, send)
    while not sent:
        signal.pause()
    try:
        print(f"client got {sock.recv(100)!r}", flush=True)
    except OSError as e:
        print(f"client error {errno.errorcode.get(e.errno, e.errno)}", flush=True)
    signal.pause()
    sys.exit(0)

signal.signal(signal.SIGUSR2, serve)
while True:
    signal.pause()
