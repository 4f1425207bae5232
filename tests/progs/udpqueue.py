"""UDP and UDP-Lite sockets that let datagrams pile up: u4 (0.0.0.0, IP_PKTINFO and
IP_RECVTTL on), u6 (::, dual stack, IPV6_RECVPKTINFO on), lite (UDP-Lite on
127.0.0.1), conn (connected to peer, which sent it two datagrams), and inner, which
sent one to u4. Prints "ready U4PORT U6PORT LITEPORT"; on SIGUSR1 reads every
queue and prints one line per datagram: "GOT SOCKET DATA SRC DST TTL"."""

import signal
import socket
import struct
import time

IP_PKTINFO, IP_RECVTTL, IPV6_RECVPKTINFO = 8, 12, 49

u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u4.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
u4.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
u4.bind(("0.0.0.0", 0))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
u6.bind(("::", 0))
lite = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
lite.bind(("127.0.0.1", 0))
conn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
conn.bind(("127.0.0.1", 0))
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind(("127.0.0.1", 0))
conn.connect(peer.getsockname())
peer.sendto(b"c1", conn.getsockname())
peer.sendto(b"c2", conn.getsockname())
inner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
inner.bind(("127.0.0.1", 0))
inner.sendto(b"from-inner", ("127.0.0.1", u4.getsockname()[1]))


def fields(anc):
    dst, ttl = "-", "-"
    for level, ctype, data in anc:
        if level == socket.IPPROTO_IP and ctype == IP_PKTINFO:
            dst = socket.inet_ntoa(data[8:12])
        elif level == socket.IPPROTO_IP and ctype == 2:
            ttl = str(struct.unpack("=i", data)[0])
        elif level == socket.IPPROTO_IPV6 and ctype == 50:
            dst = socket.inet_ntop(socket.AF_INET6, data[:16])
    return dst, ttl


def report(*_):
    for name, s in (("u4", u4), ("u6", u6), ("lite", lite), ("conn", conn)):
        while True:
            try:
                data, anc, _, addr = s.recvmsg(100, 256, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            dst, ttl = fields(anc)
            src = f"{addr[0]}:{addr[1]}" if addr else "-"
            print(f"GOT {name} {data.decode() or '(empty)'} {src} {dst} {ttl}", flush=True)
    print("END", flush=True)


signal.signal(signal.SIGUSR1, report)
print(f"ready {u4.getsockname()[1]} {u6.getsockname()[1]} {lite.getsockname()[1]} "
      f"{inner.getsockname()[1]} {peer.getsockname()[1]}", flush=True)
while True:
    time.sleep(0.05)
