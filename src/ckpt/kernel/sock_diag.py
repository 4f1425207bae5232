"""The netlink sock_diag interface: the unix sockets of this network namespace (type,
state, peer, name, socket file, pending connections, queues), inet sockets by protocol
and state, SOCK_DESTROY, and netlink and AF_PACKET sockets; one request, one socket,
answers parsed into typed records."""

from __future__ import annotations

import errno
import os
import socket
import struct

from .record import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
SOCK_DESTROY = 21
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
UDIAG_SHOW_ALL = 0x1F  # name, vfs, peer, icons, rqlen
UNIX_DIAG_NAME, UNIX_DIAG_VFS, UNIX_DIAG_PEER, UNIX_DIAG_ICONS = 0, 1, 2, 3
UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 4, 6
INET_DIAG_SHUTDOWN = 8
NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF

# Socket states as sock_diag reports them (the kernel's TCP_* numbers, for unix sockets too).
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_TIME_WAIT, TCP_CLOSE, TCP_LISTEN = 1, 2, 6, 7, 10


def request(req: bytes, dump: bool = True, mtype: int = SOCK_DIAG_BY_FAMILY) -> list[bytes]:
    """Send one sock_diag request; the bodies of the answers (none for an exact
    request that found nothing, or for SOCK_DESTROY)."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_SOCK_DIAG)
    try:
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        if mtype != SOCK_DIAG_BY_FAMILY:
            flags |= NLM_F_ACK
        hdr = struct.pack("=IHHII", 16 + len(req), mtype, flags, 1, 0)
        nl.sendto(hdr + req, (0, 0))
        out: list[bytes] = []
        while True:
            data = nl.recv(1 << 17)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    if err in (0, errno.ENOENT) and not dump:
                        return out
                    raise OSError(err, f"sock_diag: {os.strerror(err)}")
                out.append(data[off + 16:off + length])
                if not dump:
                    return out
                off += (length + 3) & ~3
    finally:
        nl.close()


def attrs(body: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """The netlink attributes (type, payload) of a message body from ``start``."""
    a = start
    while a + 4 <= len(body):
        alen, atype = struct.unpack_from("=HH", body, a)
        if alen < 4:
            break
        yield atype & 0x3FFF, body[a + 4:a + alen]
        a += (alen + 3) & ~3


# ------------------------------------------------------------------ unix sockets


TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:  # a dict at run time
    from collections.abc import Iterator
    from typing import TypedDict

    class UnixDiag(TypedDict):
        """One unix socket as sock_diag shows it."""

        type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
        state: int  # TCP_LISTEN, TCP_ESTABLISHED, ...
        peer: int  # the peer's inode; 0 with has_peer: a peer that was closed (or not accepted)
        has_peer: bool
        name: str | None  # the address, hex, as the kernel keeps it (a path ends with NUL)
        shutdown: int
        rqueue: int  # a listener: connections not accepted yet; else bytes (or first message)
        wqueue: int  # a listener: its backlog
        icons: list[int]  # a listener: the inodes of its clients not accepted yet
        vfs: tuple[int, int] | None  # the socket file's inode and (kernel) device


def _parse_unix(body: bytes) -> tuple[int, UnixDiag]:
    _fam, stype, state, _pad, ino = struct.unpack_from("=BBBBI", body, 0)
    info: UnixDiag = {"type": stype, "state": state, "peer": 0, "has_peer": False,
                      "name": None, "shutdown": 0, "rqueue": 0, "wqueue": 0, "icons": [],
                      "vfs": None}
    for atype, payload in attrs(body, 16):
        if atype == UNIX_DIAG_NAME:
            info["name"] = payload.hex()
        elif atype == UNIX_DIAG_VFS:
            info["vfs"] = struct.unpack_from("=II", payload)
        elif atype == UNIX_DIAG_PEER:
            info["peer"] = struct.unpack_from("=I", payload)[0]
            info["has_peer"] = True
        elif atype == UNIX_DIAG_ICONS:
            info["icons"] = list(struct.unpack(f"={len(payload) // 4}I", payload))
        elif atype == UNIX_DIAG_RQLEN:
            info["rqueue"], info["wqueue"] = struct.unpack_from("=II", payload)
        elif atype == UNIX_DIAG_SHUTDOWN:
            info["shutdown"] = payload[0]
    return ino, info


def _unix_req(ino: int) -> bytes:
    return struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, ALL_STATES, ino, UDIAG_SHOW_ALL,
                       NOCOOKIE, NOCOOKIE)


def unix_sockets() -> dict[int, UnixDiag]:
    """Every unix socket of this network namespace, by inode."""
    return dict(_parse_unix(b) for b in request(_unix_req(0)))


def unix_socket(ino: int) -> UnixDiag | None:
    """The record of unix socket ``ino``, or None if it is no unix socket."""
    for body in request(_unix_req(ino), dump=False):
        return _parse_unix(body)[1]
    return None


_last_lookup: tuple[int, bool] = (0, False)


def is_unix_socket(ino: int) -> bool:
    """Whether socket inode ``ino`` is a unix socket (one exact lookup, the last kept)."""
    global _last_lookup
    if _last_lookup[0] != ino:
        _last_lookup = (ino, unix_socket(ino) is not None)
    return _last_lookup[1]


# ------------------------------------------------------------------ inet sockets


@dataclass(frozen=True)
class InetDiag:
    """One TCP or UDP socket as sock_diag shows it."""

    family: int
    proto: int
    state: int
    sockid: bytes  # the kernel's inet_diag_sockid, as given back to SOCK_DESTROY
    rqueue: int
    wqueue: int
    inode: int
    shutdown: int = 0  # RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2


    @property
    def sport(self) -> int:
        return int(struct.unpack_from(">H", self.sockid, 0)[0])

    @property
    def src(self) -> bytes:
        """The local address, packed (4 or 16 bytes)."""
        return self.sockid[4:4 + (4 if self.family == socket.AF_INET else 16)]

    @property
    def dport(self) -> int:
        return int(struct.unpack_from(">H", self.sockid, 2)[0])

    @property
    def dst(self) -> bytes:
        """The peer's address, packed (4 or 16 bytes)."""
        return self.sockid[20:20 + (4 if self.family == socket.AF_INET else 16)]

    def endpoints(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """(local, peer) as (address, port), addresses as text."""
        return ((socket.inet_ntop(self.family, self.src), self.sport),
                (socket.inet_ntop(self.family, self.dst), self.dport))


def _inet_req(family: int, proto: int, states: int, sockid: bytes = bytes(48)) -> bytes:
    return struct.pack("=BBBxI", family, proto, 0, states) + sockid


def inet_sockets(family: int, proto: int, states: int = ALL_STATES) -> list[InetDiag]:
    """The sockets of ``family`` and ``proto`` in ``states`` (a mask of 1 << state); for
    UDP, the bound ones."""
    out = []
    for body in request(_inet_req(family, proto, states)):
        _fam, state = body[0], body[1]
        rqueue, wqueue, _uid, ino = struct.unpack_from("=IIII", body, 56)
        shutdown = next((p[0] for t, p in attrs(body, 72) if t == INET_DIAG_SHUTDOWN and p), 0)
        out.append(InetDiag(family, proto, state, body[4:52], rqueue, wqueue, ino, shutdown))
    return out


def destroy(sock: InetDiag) -> None:
    """Close the socket (SOCK_DESTROY: the kernel needs CONFIG_INET_DIAG_DESTROY)."""
    request(_inet_req(sock.family, sock.proto, ALL_STATES, sock.sockid), dump=False,
            mtype=SOCK_DESTROY)


# ------------------------------------------------------------------ netlink and packet sockets

NDIAG_PROTO_ALL = 255
NDIAG_SHOW_MEMINFO, NDIAG_SHOW_GROUPS, NDIAG_SHOW_FLAGS = 0x1, 0x2, 0x8
NETLINK_DIAG_MEMINFO, NETLINK_DIAG_GROUPS, NETLINK_DIAG_FLAGS = 0, 1, 4
NDIAG_FLAG_CB_RUNNING = 0x1
PACKET_SHOW_INFO, PACKET_SHOW_MCLIST, PACKET_SHOW_RING_CFG = 0x1, 0x2, 0x4
PACKET_SHOW_FANOUT, PACKET_SHOW_MEMINFO = 0x8, 0x20
PACKET_DIAG_INFO, PACKET_DIAG_MCLIST, PACKET_DIAG_RX_RING, PACKET_DIAG_TX_RING = 0, 1, 2, 3
PACKET_DIAG_FANOUT, PACKET_DIAG_MEMINFO = 4, 6


@dataclass(frozen=True)
class NetlinkDiag:
    """One netlink socket as sock_diag shows it."""

    protocol: int
    portid: int
    dst_portid: int
    dst_group: int
    groups: tuple[int, ...]  # the multicast groups it is a member of (1-based)
    rqueue: int  # bytes of messages queued for reading (receive memory)
    dumping: bool  # an answer in several parts is being made (NDIAG_FLAG_CB_RUNNING)


def _groups(bitmap: bytes) -> tuple[int, ...]:
    return tuple(i + 1 for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1)


def netlink_sockets() -> dict[int, NetlinkDiag]:
    """Every netlink socket of this network namespace, by inode."""
    req = struct.pack("=BBHIIII", socket.AF_NETLINK, NDIAG_PROTO_ALL, 0, 0,
                      NDIAG_SHOW_MEMINFO | NDIAG_SHOW_GROUPS | NDIAG_SHOW_FLAGS,
                      NOCOOKIE, NOCOOKIE)
    out = {}
    for body in request(req):
        _fam, _type, proto, _state, portid, dport, dgroup, ino = struct.unpack_from(
            "=BBBBIIII", body)
        groups: tuple[int, ...] = ()
        rqueue, flags = 0, 0
        for atype, payload in attrs(body, 28):
            if atype == NETLINK_DIAG_GROUPS:
                groups = _groups(payload)
            elif atype == NETLINK_DIAG_MEMINFO:
                rqueue = struct.unpack_from("=I", payload)[0]
            elif atype == NETLINK_DIAG_FLAGS:
                flags = struct.unpack_from("=I", payload)[0]
        out[ino] = NetlinkDiag(proto, portid, dport, dgroup, groups, rqueue,
                               bool(flags & NDIAG_FLAG_CB_RUNNING))
    return out


@dataclass(frozen=True)
class PacketDiag:
    """One AF_PACKET socket as sock_diag shows it."""

    ifindex: int  # the device it is bound to, 0 for all
    version: int  # PACKET_VERSION
    memberships: tuple[tuple[int, int, int, bytes], ...]  # (ifindex, count, type, address)
    rings: bool  # a PACKET_RX_RING or PACKET_TX_RING is set up
    fanout: bool  # a member of a PACKET_FANOUT group
    rqueue: int  # bytes of packets queued for reading (receive memory)


def packet_sockets() -> dict[int, PacketDiag]:
    """Every AF_PACKET socket of this network namespace, by inode."""
    req = struct.pack("=BBHIIII", socket.AF_PACKET, 0, 0, 0,
                      PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG
                      | PACKET_SHOW_FANOUT | PACKET_SHOW_MEMINFO, NOCOOKIE, NOCOOKIE)
    out = {}
    for body in request(req):
        ino = struct.unpack_from("=I", body, 4)[0]
        ifindex = version = rqueue = 0
        rings = fanout = False
        members = []
        for atype, payload in attrs(body, 16):
            if atype == PACKET_DIAG_INFO:
                ifindex, version = struct.unpack_from("=II", payload)
            elif atype == PACKET_DIAG_MCLIST:
                for off in range(0, len(payload) - 43, 44):
                    index, count, mtype, alen = struct.unpack_from("=IIHH", payload, off)
                    members.append((index, count, mtype, payload[off + 12:off + 12 + alen]))
            elif atype in (PACKET_DIAG_RX_RING, PACKET_DIAG_TX_RING):
                rings = True
            elif atype == PACKET_DIAG_FANOUT:
                fanout = True
            elif atype == PACKET_DIAG_MEMINFO:
                rqueue = struct.unpack_from("=I", payload)[0]
        out[ino] = PacketDiag(ifindex, version, tuple(members), rings, fanout, rqueue)
    return out
