"""A service with a slow start: it imports modules and builds a table of SERVICE_MB
megabytes, then answers each connection on its listener (an inherited fd,
SERVICE_FD, default 3: socket activation's way) with one line: the PID it sees
(getpid and /proc/self/stat), the table's size and a lookup in it."""

import os
import socket
import time

t0 = time.monotonic()
import asyncio  # noqa: E402,F401 - the warm-up: what a real service imports
import decimal  # noqa: E402,F401
import email.parser  # noqa: E402,F401
import http.server  # noqa: E402,F401
import json  # noqa: E402,F401
import xml.dom.minidom  # noqa: E402,F401

megabytes = int(os.environ.get("SERVICE_MB", "200"))
# about 100 bytes a key and value: 10,000 entries a megabyte
table = {f"key-{i:09d}": f"value-{i:09d}-" + "x" * 40 for i in range(megabytes * 10_000)}
listener = socket.socket(fileno=int(os.environ.get("SERVICE_FD", "3")))
os.write(1, f"ready {os.getpid()} {len(table)} {time.monotonic() - t0:.3f}\n".encode())
while True:
    conn, _ = listener.accept()
    with conn:
        key = conn.recv(100).decode().strip() or "key-000000000"
        with open("/proc/self/stat") as f:
            seen = f.read().split()[0]
        conn.sendall(f"{os.getpid()} {seen} {len(table)} {table.get(key, '-')}\n".encode())
