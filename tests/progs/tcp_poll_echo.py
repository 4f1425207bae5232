"""One end of a TCP connection that sends back what it receives.

Usage: tcp_poll_echo.py HOST PORT

Connects, prints "local PORT", then waits in poll() until the socket is readable,
reads, sends the bytes back and prints "echoed N" (N bytes so far); exits at end of
file. It waits in poll only, never inside recv or send: a socket left in repair mode
by a killed ckpt fails those, but poll waits on.
"""

import select
import socket
import sys

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(f"local {sock.getsockname()[1]}", flush=True)
p = select.poll()
p.register(sock, select.POLLIN)
total = 0
while True:
    p.poll()
    data = sock.recv(1 << 16)
    if not data:
        break
    sock.sendall(data)
    total += len(data)
    print(f"echoed {total}", flush=True)
