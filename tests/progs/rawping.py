"""Raw and ICMP (ping) sockets: raw4 (protocol 253, bound to 127.0.0.1), icmp4 (raw
ICMP with an ICMP_FILTER letting timestamps only through), raw6 (protocol 253,
connected to ::1), ping4 and ping6 (ping sockets that sent one echo request, so
have an identifier). Prints "ready"; on SIGUSR1 prints each one's name, the
filter, an echo round trip on each ping socket, whether icmp4 got anything, and a
raw packet raw4 sends to itself, then "END". Run it where
net.ipv4.ping_group_range allows its group."""

import os
import signal
import socket
import struct
import time

ICMP_FILTER = 1
raw4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
raw4.bind(("127.0.0.1", 0))
icmp4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp4.setsockopt(255, ICMP_FILTER, struct.pack("=I", ~(1 << 13) & 0xFFFFFFFF))  # timestamps only
raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 253)
raw6.connect(("::1", 0))
ping4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
ping6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)


def echo(sock, to, request_type):
    sock.sendto(struct.pack("!BBHHH", request_type, 0, 0, 0, 7) + b"ping", to)
    sock.settimeout(5)
    reply = sock.recv(100)
    return struct.unpack_from("!BBHHH", reply)[0], reply[8:].decode()


echo(ping4, ("127.0.0.1", 0), 8)
echo(ping6, ("::1", 0), 128)


def report(*_):
    print(f"raw4 {raw4.getsockname()}", flush=True)
    print(f"icmp4 filter {icmp4.getsockopt(255, ICMP_FILTER, 4).hex()}", flush=True)
    print(f"raw6 {raw6.getsockname()[:2]}", flush=True)
    for name, s, to, kind in (("ping4", ping4, ("127.0.0.1", 0), 8),
                              ("ping6", ping6, ("::1", 0), 128)):
        print(f"{name} {s.getsockname()[:2]} echo {echo(s, to, kind)}", flush=True)
    try:
        icmp4.recv(100, socket.MSG_DONTWAIT)
        print("icmp4 got a packet its filter drops", flush=True)
    except BlockingIOError:
        print("icmp4 empty", flush=True)
    raw4.sendto(b"to-myself", ("127.0.0.1", 0))
    raw4.settimeout(5)
    print(f"raw4 got {raw4.recv(100)[20:].decode()}", flush=True)
    print("END", flush=True)


signal.signal(signal.SIGUSR1, report)
print(f"ready {os.getpid()}", flush=True)
while True:
    time.sleep(0.05)
