"""A unix stream listener at a path, answering each connection.

Usage: unixlisten.py PATH

Binds and listens at PATH, prints "ready", then "N ok" every 50 ms; a client that
connects gets "hi PID\n" and is closed. A tick is "N BAD what" when the socket's
name is no longer PATH.
"""

import os
import select
import socket
import sys
import time

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(path)
sock.listen(4)
os.write(1, b"ready\n")
n = 0
next_tick = time.monotonic()
while True:
    wait = max(0.0, next_tick - time.monotonic())
    if select.select([sock], [], [], wait)[0]:
        conn, _ = sock.accept()
        conn.sendall(f"hi {os.getpid()}\n".encode())
        conn.close()
        continue
    name = sock.getsockname()
    state = "ok" if name == path else f"BAD named {name!r}"
    os.write(1, f"{n} {state}\n".encode())
    n += 1
    next_tick += 0.05
