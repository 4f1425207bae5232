"""One end of a TCP connection that reads its error as soon as it has one.

Usage: tcp_reset_reader.py HOST PORT

Connects, prints "local PORT", then every 20 ms prints "tick N" and polls the socket:
readable or in error, it reads; a reset prints "error ECONNRESET" (the socket kept
open, in CLOSE from then on), the end of file "eof".
"""

import select
import socket
import sys

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(f"local {sock.getsockname()[1]}", flush=True)
p = select.poll()
p.register(sock, select.POLLIN)
done = False
n = 0
while True:
    print(f"tick {n}", flush=True)
    n += 1
    if not done and p.poll(20):
        try:
            data = sock.recv(1 << 16)
            if not data:
                print("eof", flush=True)
                done = True
        except ConnectionResetError:
            print("error ECONNRESET", flush=True)
            done = True
    else:
        select.select([], [], [], 0.02)
