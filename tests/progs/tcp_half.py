"""One end of a TCP connection, driven by signals, for the half-closed states.

Usage: tcp_half.py HOST PORT

Connects, prints "local PORT", then waits. SIGUSR1: shutdown(SHUT_WR), prints "shut".
SIGUSR2: reads until end of file and prints "read DATA" (DATA as Python shows bytes),
writes "reply" and prints "write ok" or "write ERRNO-NAME", closes, prints "closed".
"""

import errno
import signal
import socket
import sys

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
sock.settimeout(60)


def shut(signum: int, frame: object) -> None:
    sock.shutdown(socket.SHUT_WR)
    print("shut", flush=True)


def finish(signum: int, frame: object) -> None:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    print(f"read {data!r}", flush=True)
    try:
        sock.sendall(b"reply")
        print("write ok", flush=True)
    except OSError as e:
        print(f"write {errno.errorcode.get(e.errno, e.errno)}", flush=True)
    sock.close()
    print("closed", flush=True)


signal.signal(signal.SIGUSR1, shut)
signal.signal(signal.SIGUSR2, finish)
# said once the handlers are in: a signal sent as soon as this line is seen must not
# find SIGUSR1's default action (the end of the process) under load
print(f"local {sock.getsockname()[1]}", flush=True)
while True:
    signal.pause()
