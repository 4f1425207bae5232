"""Datagrams queued on a UDP (or UDP-Lite) socket: read at dump without taking them,
with where each came from and where it was sent to, and delivered again at restore,
from the same address and port, through a raw socket.

At dump each datagram is peeked in turn (MSG_PEEK at its place in the queue, set
with SO_PEEK_OFF), with IP_PKTINFO, IP_RECVTTL and IP_RECVTOS (their IPv6
equivalents) switched on for the while, then back to the process's settings: so
ckpt learns the destination address the sender used (a socket bound to a
wildcard address can have been sent to any of the host's), and the TTL and TOS
the datagram came with. At restore, before the new socket connects (a connected
socket takes datagrams from its peer only), each one is written as an IP packet
with its sender's address and port on a raw socket, and travels through the
loopback to the new socket; the restore then checks that all of them arrived.

Refused at dump: a datagram sent to a multicast or broadcast address.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time

from ..errors import RestoreError, UnsupportedError
from ..images import RawWriter
from ..kernel.tcp_repair import checksum, on_the_wire
from ..schema import NAT, U16, Int, Obj, Str

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

SO_PEEK_OFF = 42
IP_PKTINFO, IP_RECVTTL, IP_RECVTOS, IP_TTL, IP_TOS = 8, 12, 13, 2, 1
IPV6_RECVPKTINFO, IPV6_PKTINFO, IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT = 49, 50, 51, 52
IPV6_RECVTCLASS, IPV6_TCLASS = 66, 67
IPPROTO_UDPLITE = 136
QUEUE_FILE = "udp-queues.img"
_MAX_DGRAM = 65536
_ANC = 256

# The options switched on while peeking: (level, option), per family.
_RECV_OPTS = {
    socket.AF_INET: ((socket.IPPROTO_IP, IP_PKTINFO), (socket.IPPROTO_IP, IP_RECVTTL),
                     (socket.IPPROTO_IP, IP_RECVTOS)),
    socket.AF_INET6: ((socket.IPPROTO_IPV6, IPV6_RECVPKTINFO),
                      (socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT),
                      (socket.IPPROTO_IPV6, IPV6_RECVTCLASS)),
}


def _header_fields(anc: list[tuple[int, int, bytes]]) -> tuple[str | None, int, int]:
    """(destination address, TTL or hop limit, TOS or traffic class) from the control
    messages of one peeked datagram."""
    dst, ttl, tos = None, 64, 0
    for level, ctype, data in anc:
        if level == socket.IPPROTO_IP and ctype == IP_PKTINFO:
            dst = socket.inet_ntop(socket.AF_INET, data[8:12])
        elif level == socket.IPPROTO_IP and ctype == IP_TTL:
            ttl = struct.unpack_from("=i", data)[0]
        elif level == socket.IPPROTO_IP and ctype == IP_TOS:
            tos = data[0]
        elif level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO:
            dst = socket.inet_ntop(socket.AF_INET6, data[:16])
        elif level == socket.IPPROTO_IPV6 and ctype == IPV6_HOPLIMIT:
            ttl = struct.unpack_from("=i", data)[0]
        elif level == socket.IPPROTO_IPV6 and ctype == IPV6_TCLASS:
            tos = struct.unpack_from("=i", data)[0]
    return dst, ttl, tos


def peek(sock: socket.socket, where: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every datagram queued on ``sock``, left in place: (data, its header fields:
    src, sport, dst, ttl, tos)."""
    fam = sock.family
    saved = [(level, opt, sock.getsockopt(level, opt)) for level, opt in _RECV_OPTS[fam]]
    saved_off = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    out: list[tuple[bytes, dict[str, Any]]] = []
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT | socket.MSG_TRUNC
    try:
        for level, opt, _ in saved:
            sock.setsockopt(level, opt, 1)
        off = 0
        while True:
            # the first with the offset off, so an empty datagram at the head is seen
            sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, off if out else -1)
            try:
                data, anc, _mflags, addr = sock.recvmsg(_MAX_DGRAM, _ANC, flags)
            except BlockingIOError:
                break
            dst, ttl, tos = _header_fields(anc)
            if dst is None:
                raise UnsupportedError(f"{where}: a queued datagram without its destination "
                                       "address; ckpt cannot deliver it again")
            ip = ipaddress.ip_address(dst)
            if ip.is_multicast or dst == "255.255.255.255":
                raise UnsupportedError(f"{where}: a datagram queued on it was sent to {dst}, a "
                                       "multicast or broadcast address; ckpt cannot deliver "
                                       "it again")
            out.append((data, {"src": addr[0], "sport": addr[1], "dst": dst, "ttl": ttl,
                               "tos": tos}))
            off += len(data)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved_off)
        for level, opt, value in saved:
            sock.setsockopt(level, opt, value)
    return out


# What ``save`` writes for each datagram: an inet description's ``queue``.
SCHEMA = Obj(at=NAT, len=Int(0, 0xFFFF), src=Str(64), sport=U16, dst=Str(64), ttl=Int(0, 255),
             tos=Int(0, 255))


def save(sock: socket.socket, raw: RawWriter, where: str) -> list[dict[str, Any]]:
    """The queue of ``sock`` written to ``raw``: one entry per datagram, in order."""
    return [{**fields, "at": raw.write(data), "len": len(data)}
            for data, fields in peek(sock, where)]


# ------------------------------------------------------------------ restore


def packet(proto: int, data: bytes, e: dict[str, Any], dport: int) -> tuple[int, bytes, str]:
    """(family, the IP packet, its destination) carrying ``data`` from e's sender to
    port ``dport`` of e's destination, with e's TTL and TOS; UDP's checksum set, and
    UDP-Lite's (covering everything)."""
    fam, src_host = on_the_wire(e["src"])
    _, dst_host = on_the_wire(e["dst"])
    length = 8 + len(data)
    field = 0 if proto == IPPROTO_UDPLITE else length  # UDP-Lite: the coverage, 0 = all
    udp = struct.pack("!HHHH", e["sport"], dport, field, 0) + data
    src, dst = socket.inet_pton(fam, src_host), socket.inet_pton(fam, dst_host)
    if fam == socket.AF_INET:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, length)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, e["tos"], 20 + length, 0, 0, e["ttl"], proto,
                         0, src, dst)  # the kernel fills in the IP checksum
    else:
        pseudo = src + dst + struct.pack("!I3xB", length, proto)
        ip = struct.pack("!IHBB16s16s", (6 << 28) | (e["tos"] << 20), length, proto, e["ttl"],
                         src, dst)
    csum = checksum(pseudo + udp) or 0xFFFF  # 0 would say "no checksum"
    return fam, ip + udp[:6] + struct.pack("!H", csum) + udp[8:], dst_host


def _queued(sock: socket.socket) -> int:
    """How many datagrams ``sock`` holds (peeked in turn)."""
    saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    n, off = 0, 0
    try:
        while True:
            sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, off if n else -1)
            try:
                data = sock.recv(_MAX_DGRAM, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return n
            n += 1
            off += len(data)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)


def deliver(sock: socket.socket, proto: int, queue: list[dict[str, Any]], path: str,
            where: str, timeout: float = 5.0) -> None:
    """Send every saved datagram again to the new ``sock`` (bound, not connected yet) from
    its sender's address; fail unless all of them are queued on it."""
    if not queue:
        return
    dport = sock.getsockname()[1]
    raws: dict[int, socket.socket] = {}
    try:
        with open(path, "rb") as f:
            for e in queue:
                f.seek(e["at"])
                fam, pkt, dst = packet(proto, f.read(e["len"]), e, dport)
                if fam not in raws:
                    raws[fam] = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
                try:
                    raws[fam].sendto(pkt, (dst, 0))
                except OSError as err:
                    raise RestoreError(f"{where}: cannot deliver a queued datagram from "
                                       f"{e['src']}:{e['sport']} to {dst}: {err.strerror}"
                                       ) from None
    finally:
        for r in raws.values():
            r.close()
    deadline = time.monotonic() + timeout
    while (n := _queued(sock)) < len(queue) and time.monotonic() < deadline:
        time.sleep(0.001)
    if n != len(queue):
        raise RestoreError(f"{where}: {n} of its {len(queue)} queued datagrams arrived again "
                           "(a firewall on the loopback?)")
