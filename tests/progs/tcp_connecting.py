"""A connect() under way, for SYN_SENT across a dump.

Usage: tcp_connecting.py HOST PORT LOCAL_PORT block|poll

Binds LOCAL_PORT, prints "connecting", then connects to HOST PORT: inside a blocking
connect() ("block"), or with a non-blocking one and poll() for its end ("poll").
Once connected prints "connected" (or "error ERRNO-NAME" and exits), sends "ping",
reads 4 bytes and prints "got DATA" (DATA as Python shows bytes).
"""

import errno
import select
import socket
import sys

host, port, local, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
sock.bind((host, local))
print("connecting", flush=True)
if mode == "block":
    err = sock.connect_ex((host, port))
else:
    sock.setblocking(False)
    err = sock.connect_ex((host, port))
    if err == errno.EINPROGRESS:
        p = select.poll()
        p.register(sock, select.POLLOUT)
        while not p.poll(1000):
            pass
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    sock.setblocking(True)
if err:
    print(f"error {errno.errorcode.get(err, err)}", flush=True)
    sys.exit(1)
print("connected", flush=True)
sock.settimeout(60)
sock.sendall(b"ping")
data = b""
while len(data) < 4 and (chunk := sock.recv(4 - len(data))):
    data += chunk
print(f"got {data!r}", flush=True)
