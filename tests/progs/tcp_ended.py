"""One end of a TCP connection whose peer ends it, driven by signals.

Usage: tcp_ended.py HOST PORT

Connects, prints "local PORT", then waits.
SIGUSR1: prints "error NAME" (or "error 0"): the pending error, read with SO_ERROR
  (which clears it), as a process that noticed the reset would.
SIGHUP: shutdown(SHUT_WR), prints "shut".
SIGUSR2: reads until end of file or an error, prints "read DATA" (as Python shows
  bytes) and "eof" or "recv NAME", then writes, prints "write ok" or "write NAME".
"""

import errno
import signal
import socket
import sys

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def error(signum: int, frame: object) -> None:
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    print(f"error {name(err) if err else 0}", flush=True)


def shut(signum: int, frame: object) -> None:
    sock.shutdown(socket.SHUT_WR)
    print("shut", flush=True)


def finish(signum: int, frame: object) -> None:
    data, end = b"", "eof"
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except OSError as e:
        end = f"recv {name(e.errno)}"
    print(f"read {data!r}", flush=True)
    print(end, flush=True)
    try:
        sock.send(b"more")
        print("write ok", flush=True)
    except OSError as e:
        print(f"write {name(e.errno)}", flush=True)


signal.signal(signal.SIGUSR1, error)
signal.signal(signal.SIGHUP, shut)
signal.signal(signal.SIGUSR2, finish)
print(f"local {sock.getsockname()[1]}", flush=True)  # the handlers are in
while True:
    signal.pause()
