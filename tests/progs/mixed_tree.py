"""A tree of four processes talking over a pipe, a unix stream socket pair and a TCP
connection on loopback, each stream checked at both ends.

The root forks: W, which writes numbered lines into a pipe the root reads; U, at the
other end of a unix socket pair; T, which connects to the root's TCP listener. The
root sends U and T consecutive 8-byte numbers and each answers with its own, about
every 2 ms; every receiver checks that what it gets goes on by one. The root prints
"tick N pipe=P unix=Q tcp=R" (what it received on each) every 50 rounds; any
process that sees a number out of order or an end of file prints "ERROR ..." and
exits 1. Each line is one write (the four share the output).

Usage: mixed_tree.py
"""

import os
import select
import socket
import struct
import time

NUM = struct.Struct("!Q")


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def fail(what: str) -> None:
    say(f"ERROR {os.getpid()}: {what}")
    os._exit(1)


class Numbers:
    """Consecutive 8-byte numbers arriving in pieces on a stream."""

    def __init__(self, name: str):
        self.name, self.buf, self.next = name, b"", 0

    def take(self, data: bytes) -> None:
        if not data:
            fail(f"end of file on {self.name} after {self.next}")
        self.buf += data
        while len(self.buf) >= NUM.size:
            (n,) = NUM.unpack_from(self.buf)
            if n != self.next:
                fail(f"{self.name}: got {n}, expected {self.next}")
            self.next += 1
            self.buf = self.buf[NUM.size:]


def answer(sock: socket.socket, name: str) -> None:
    """A child's loop: check each number received, answer one of its own for each."""
    got, sent = Numbers(name), 0
    while True:
        before = got.next
        got.take(sock.recv(4096))
        for _ in range(got.next - before):
            sock.sendall(NUM.pack(sent))
            sent += 1


def write_lines(fd: int) -> None:
    n = 0
    while True:
        os.write(fd, f"{n}\n".encode())
        n += 1
        time.sleep(0.002)


r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    write_lines(w)
os.close(w)
ua, ub = socket.socketpair()
if os.fork() == 0:
    ua.close()
    answer(ub, "unix (child)")
ub.close()
lst = socket.create_server(("127.0.0.1", 0))
port = lst.getsockname()[1]
if os.fork() == 0:
    lst.close()
    answer(socket.create_connection(("127.0.0.1", port)), "tcp (child)")
tcp, _ = lst.accept()
lst.close()

lines, line_buf = 0, b""
from_unix, from_tcp = Numbers("unix (root)"), Numbers("tcp (root)")
sent = rounds = 0
while True:
    for sock in (ua, tcp):
        sock.sendall(NUM.pack(sent))
    sent += 1
    time.sleep(0.002)
    ready, _, _ = select.select([r, ua, tcp], [], [], 0)
    for src in ready:
        if src == r:
            data = os.read(r, 4096)
            if not data:
                fail(f"end of file on the pipe after {lines} lines")
            line_buf += data
            *whole, line_buf = line_buf.split(b"\n")
            for x in whole:
                if int(x) != lines:
                    fail(f"pipe: got {int(x)}, expected {lines}")
                lines += 1
        else:
            (from_unix if src == ua else from_tcp).take(src.recv(4096))
    rounds += 1
    if rounds % 50 == 0:
        say(f"tick {rounds // 50} pipe={lines} unix={from_unix.next} tcp={from_tcp.next}")
    if sent - min(from_unix.next, from_tcp.next) > 1000:
        time.sleep(0.01)  # let the children catch up
