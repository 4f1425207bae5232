"""Two ends of a TCP connection streaming numbered lines to each other, each checking
that it gets 0, 1, 2, ... from the other: nothing lost, repeated or reordered.

Usage:
  tcp_echo.py pair            the process listens on 127.0.0.1, forks a child that
                              connects, and both stream (both ends in one tree)
  tcp_echo.py serve HOST      listen on HOST (port 0), print "port N", stream with the
                              one client it accepts
  tcp_echo.py connect HOST PORT   connect and stream

Each end writes lines as fast as the connection takes them and reads in bursts, 2 ms
apart, so that both queues hold bytes most of the time. Every 500 lines received it
prints "NAME got N" (NAME: server or client); on a wrong line it prints "NAME ERROR
..." and exits 1. A line is "NUMBER" padded with dots to 64 bytes.
"""

import os
import selectors
import socket
import sys
import time

LINE = 64


def line(n: int) -> bytes:
    text = str(n).encode()
    return text + b"." * (LINE - 1 - len(text)) + b"\n"


def stream(sock: socket.socket, name: str) -> None:
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sent = got = 0
    pending = b""
    inbuf = b""
    print(f"{name} streaming", flush=True)
    while True:
        for _key, events in sel.select(1.0):
            if events & selectors.EVENT_WRITE:
                if not pending:
                    pending = b"".join(line(sent + i) for i in range(64))
                    sent += 64
                try:
                    n = sock.send(pending)
                    pending = pending[n:]
                except BlockingIOError:
                    pass
                except OSError as e:
                    print(f"{name} ERROR send: {e}", flush=True)
                    sys.exit(1)
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    data = None
                except OSError as e:
                    print(f"{name} ERROR recv: {e}", flush=True)
                    sys.exit(1)
                if data == b"":
                    print(f"{name} ERROR the peer closed after {got} lines", flush=True)
                    sys.exit(1)
                if data:
                    inbuf += data
                    while len(inbuf) >= LINE:
                        chunk, inbuf = inbuf[:LINE], inbuf[LINE:]
                        if chunk != line(got):
                            print(f"{name} ERROR expected {got}, got {chunk!r}", flush=True)
                            sys.exit(1)
                        got += 1
                        if got % 500 == 0:
                            print(f"{name} got {got}", flush=True)
        time.sleep(0.002)


def main() -> None:
    mode = sys.argv[1]
    if mode == "pair":
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        port = lst.getsockname()[1]
        if os.fork() == 0:
            lst.close()
            stream(socket.create_connection(("127.0.0.1", port)), "client")
        conn, _ = lst.accept()
        lst.close()
        stream(conn, "server")
    elif mode == "serve":
        host = sys.argv[2]
        lst = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        lst.bind((host, 0))
        lst.listen(1)
        print(f"port {lst.getsockname()[1]}", flush=True)
        conn, _ = lst.accept()
        lst.close()
        stream(conn, "server")
    else:
        stream(socket.create_connection((sys.argv[2], int(sys.argv[3]))), "client")


main()
