"""A redis client and its server in one tree: starts redis-server (ARGV after the port
and folder: its options) as its child with an append-only file, then sends batches of
pipelined commands on one connection, each batch written before any reply is read:
INCR n (each reply must be one more than the last) and RPUSH l (the list grows by one
each). Prints "batch B n N" after each batch, one write a line; "ERROR ..." and exit 1
on any reply out of order."""

import os
import socket
import subprocess
import sys
import time

port, folder = int(sys.argv[1]), sys.argv[2]
log = open(os.path.join(folder, "redis.log"), "ab")
server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--dir", folder, "--save", "", "--appendonly", "yes",
                           "--appendfsync", "always", "--protected-mode", "no",
                           *sys.argv[3:]], stdout=log, stderr=subprocess.STDOUT)
for _ in range(600):
    try:
        conn = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        if server.poll() is not None:
            sys.exit(f"ERROR redis-server exited with {server.returncode}")
        time.sleep(0.1)
else:
    sys.exit("ERROR redis-server did not listen")


def resp(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode())
                                             for a in args)


buf = b""


def reply() -> int:
    global buf
    while b"\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            sys.exit("ERROR redis closed the connection")
        buf += chunk
    line, buf = buf.split(b"\r\n", 1)
    if line[:1] != b":":
        sys.exit(f"ERROR unexpected reply {line!r}")
    return int(line[1:])


conn.sendall(resp("DEL", "n", "l"))
reply()
n = 0
batch = 0
while True:
    conn.sendall(b"".join(resp("INCR", "n") + resp("RPUSH", "l", str(n + i + 1))
                          for i in range(200)))
    for _ in range(200):
        got, length = reply(), reply()
        if got != n + 1 or length != n + 1:
            os.write(1, f"ERROR INCR gave {got}, RPUSH {length}, after {n}\n".encode())
            sys.exit(1)
        n = got
    os.write(1, f"batch {batch} n {n}\n".encode())
    batch += 1
    time.sleep(0.05)
