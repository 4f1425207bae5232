"""Socket options, for every kind of socket: which are saved (one table per level),
read at dump from ckpt's copy of the socket, and set again at restore on the new
one, in the table's order; a classic BPF filter (SO_ATTACH_FILTER) is one of them.

An option is saved when its value differs from that of a new socket of the same
family, type and protocol (so: the ones the process set), or always for those in
``ALWAYS``. The table's order is the order they are set back in (but SO_PRIORITY
last, since IP_TOS and IPV6_TCLASS change it): buffer sizes
(which lock the sizes) before SO_BUF_LOCK, which says what is locked; the filter
before SO_LOCK_FILTER, which stops it from changing. Options that are part of
how a socket is bound (SO_BINDTODEVICE, IPV6_V6ONLY, IP_FREEBIND, ...) are set
before the bind, as each kind calls ``apply_opts`` before binding.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc
from ..schema import S32, Field, Hex, Obj, Opt, Str

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

SOL_SOCKET, SOL_IP, SOL_IPV6 = socket.SOL_SOCKET, socket.IPPROTO_IP, socket.IPPROTO_IPV6
SOL_TCP, SOL_UDP, SOL_UDPLITE = socket.IPPROTO_TCP, socket.IPPROTO_UDP, 136
SO_ATTACH_FILTER = 26  # SO_GET_FILTER reads it back
BPF_MAXINSNS = 4096

# name -> (level, option read, option written, kind): kind "int"; "str" (a
# NUL-terminated name of up to 16 bytes); "buf" a buffer size, read doubled and
# written halved with the *FORCE option; "filter" a classic BPF program (its
# instructions, hex); or a size in bytes (a struct, kept as hex).
SockOpts = dict[str, tuple[int, int, int, "Any"]]

SOCKET: SockOpts = {
    "SO_SNDBUF": (SOL_SOCKET, 7, 32, "buf"),  # written with SO_SNDBUFFORCE
    "SO_RCVBUF": (SOL_SOCKET, 8, 33, "buf"),  # written with SO_RCVBUFFORCE
    "SO_BUF_LOCK": (SOL_SOCKET, 72, 72, "int"),
    "SO_REUSEADDR": (SOL_SOCKET, 2, 2, "int"),
    "SO_REUSEPORT": (SOL_SOCKET, 15, 15, "int"),
    "SO_KEEPALIVE": (SOL_SOCKET, 9, 9, "int"),
    "SO_BROADCAST": (SOL_SOCKET, 6, 6, "int"),
    "SO_DONTROUTE": (SOL_SOCKET, 5, 5, "int"),
    "SO_OOBINLINE": (SOL_SOCKET, 10, 10, "int"),
    "SO_NO_CHECK": (SOL_SOCKET, 11, 11, "int"),
    "SO_PRIORITY": (SOL_SOCKET, 12, 12, "int"),
    "SO_LINGER": (SOL_SOCKET, 13, 13, 8),
    "SO_PASSCRED": (SOL_SOCKET, 16, 16, "int"),
    "SO_PASSSEC": (SOL_SOCKET, 34, 34, "int"),
    "SO_PASSPIDFD": (SOL_SOCKET, 76, 76, "int"),
    "SO_RCVLOWAT": (SOL_SOCKET, 18, 18, "int"),
    "SO_RCVTIMEO": (SOL_SOCKET, 20, 20, 16),
    "SO_SNDTIMEO": (SOL_SOCKET, 21, 21, 16),
    "SO_BINDTODEVICE": (SOL_SOCKET, 25, 25, "str"),
    "SO_TIMESTAMP": (SOL_SOCKET, 29, 29, "int"),
    "SO_TIMESTAMPNS": (SOL_SOCKET, 35, 35, "int"),
    "SO_TIMESTAMPING": (SOL_SOCKET, 37, 37, "int"),
    "SO_TIMESTAMP_NEW": (SOL_SOCKET, 63, 63, "int"),
    "SO_TIMESTAMPNS_NEW": (SOL_SOCKET, 64, 64, "int"),
    "SO_MARK": (SOL_SOCKET, 36, 36, "int"),
    "SO_RCVMARK": (SOL_SOCKET, 75, 75, "int"),
    "SO_RXQ_OVFL": (SOL_SOCKET, 40, 40, "int"),
    "SO_WIFI_STATUS": (SOL_SOCKET, 41, 41, "int"),
    "SO_PEEK_OFF": (SOL_SOCKET, 42, 42, "int"),
    "SO_NOFCS": (SOL_SOCKET, 43, 43, "int"),
    "SO_SELECT_ERR_QUEUE": (SOL_SOCKET, 45, 45, "int"),
    "SO_BUSY_POLL": (SOL_SOCKET, 46, 46, "int"),
    "SO_MAX_PACING_RATE": (SOL_SOCKET, 47, 47, 8),
    "SO_INCOMING_CPU": (SOL_SOCKET, 49, 49, "int"),
    "SO_ZEROCOPY": (SOL_SOCKET, 60, 60, "int"),
    "SO_TXTIME": (SOL_SOCKET, 61, 61, 8),
    "SO_PREFER_BUSY_POLL": (SOL_SOCKET, 69, 69, "int"),
    "SO_BUSY_POLL_BUDGET": (SOL_SOCKET, 70, 70, "int"),
    "SO_TXREHASH": (SOL_SOCKET, 74, 74, "int"),
    "SO_RCVPRIORITY": (SOL_SOCKET, 82, 82, "int"),  # Linux 6.14
    "SO_PASSRIGHTS": (SOL_SOCKET, 83, 83, "int"),  # Linux 6.16: unix sockets take no fds
    "SO_ATTACH_FILTER": (SOL_SOCKET, SO_ATTACH_FILTER, SO_ATTACH_FILTER, "filter"),
    "SO_LOCK_FILTER": (SOL_SOCKET, 44, 44, "int"),
}
IP: SockOpts = {
    "IP_TOS": (SOL_IP, 1, 1, "int"),
    "IP_TTL": (SOL_IP, 2, 2, "int"),
    "IP_HDRINCL": (SOL_IP, 3, 3, "int"),
    "IP_RECVOPTS": (SOL_IP, 6, 6, "int"),
    "IP_RETOPTS": (SOL_IP, 7, 7, "int"),
    "IP_PKTINFO": (SOL_IP, 8, 8, "int"),
    "IP_MTU_DISCOVER": (SOL_IP, 10, 10, "int"),
    "IP_RECVERR": (SOL_IP, 11, 11, "int"),
    "IP_RECVTTL": (SOL_IP, 12, 12, "int"),
    "IP_RECVTOS": (SOL_IP, 13, 13, "int"),
    "IP_FREEBIND": (SOL_IP, 15, 15, "int"),
    "IP_PASSSEC": (SOL_IP, 18, 18, "int"),
    "IP_TRANSPARENT": (SOL_IP, 19, 19, "int"),
    "IP_RECVORIGDSTADDR": (SOL_IP, 20, 20, "int"),
    "IP_MINTTL": (SOL_IP, 21, 21, "int"),
    "IP_NODEFRAG": (SOL_IP, 22, 22, "int"),
    "IP_CHECKSUM": (SOL_IP, 23, 23, "int"),
    "IP_BIND_ADDRESS_NO_PORT": (SOL_IP, 24, 24, "int"),
    "IP_RECVFRAGSIZE": (SOL_IP, 25, 25, "int"),
    "IP_RECVERR_RFC4884": (SOL_IP, 26, 26, "int"),
    "IP_MULTICAST_IF": (SOL_IP, 32, 32, 4),
    "IP_MULTICAST_TTL": (SOL_IP, 33, 33, "int"),
    "IP_MULTICAST_LOOP": (SOL_IP, 34, 34, "int"),
    "IP_MULTICAST_ALL": (SOL_IP, 49, 49, "int"),
    "IP_LOCAL_PORT_RANGE": (SOL_IP, 51, 51, "int"),
}
IPV6: SockOpts = {
    "IPV6_CHECKSUM": (SOL_IPV6, 7, 7, "int"),
    "IPV6_UNICAST_HOPS": (SOL_IPV6, 16, 16, "int"),
    "IPV6_MULTICAST_IF": (SOL_IPV6, 17, 17, "int"),
    "IPV6_MULTICAST_HOPS": (SOL_IPV6, 18, 18, "int"),
    "IPV6_MULTICAST_LOOP": (SOL_IPV6, 19, 19, "int"),
    "IPV6_MTU_DISCOVER": (SOL_IPV6, 23, 23, "int"),
    "IPV6_RECVERR": (SOL_IPV6, 25, 25, "int"),
    "IPV6_V6ONLY": (SOL_IPV6, 26, 26, "int"),
    "IPV6_MULTICAST_ALL": (SOL_IPV6, 29, 29, "int"),
    "IPV6_RECVPKTINFO": (SOL_IPV6, 49, 49, "int"),
    "IPV6_RECVHOPLIMIT": (SOL_IPV6, 51, 51, "int"),
    "IPV6_RECVRTHDR": (SOL_IPV6, 56, 56, "int"),
    "IPV6_RECVPATHMTU": (SOL_IPV6, 60, 60, "int"),
    "IPV6_DONTFRAG": (SOL_IPV6, 62, 62, "int"),
    "IPV6_RECVTCLASS": (SOL_IPV6, 66, 66, "int"),
    "IPV6_TCLASS": (SOL_IPV6, 67, 67, "int"),
    "IPV6_AUTOFLOWLABEL": (SOL_IPV6, 70, 70, "int"),
    "IPV6_ADDR_PREFERENCES": (SOL_IPV6, 72, 72, "int"),
    "IPV6_MINHOPCOUNT": (SOL_IPV6, 73, 73, "int"),
    "IPV6_RECVORIGDSTADDR": (SOL_IPV6, 74, 74, "int"),
    "IPV6_TRANSPARENT": (SOL_IPV6, 75, 75, "int"),
    "IPV6_UNICAST_IF": (SOL_IPV6, 76, 76, "int"),
    "IPV6_RECVFRAGSIZE": (SOL_IPV6, 77, 77, "int"),
    "IPV6_FREEBIND": (SOL_IPV6, 78, 78, "int"),
}
TCP: SockOpts = {
    "TCP_NODELAY": (SOL_TCP, 1, 1, "int"),
    "TCP_MAXSEG": (SOL_TCP, 2, 2, "int"),
    "TCP_CORK": (SOL_TCP, 3, 3, "int"),
    "TCP_KEEPIDLE": (SOL_TCP, 4, 4, "int"),
    "TCP_KEEPINTVL": (SOL_TCP, 5, 5, "int"),
    "TCP_KEEPCNT": (SOL_TCP, 6, 6, "int"),
    "TCP_SYNCNT": (SOL_TCP, 7, 7, "int"),
    "TCP_LINGER2": (SOL_TCP, 8, 8, "int"),
    "TCP_DEFER_ACCEPT": (SOL_TCP, 9, 9, "int"),
    "TCP_WINDOW_CLAMP": (SOL_TCP, 10, 10, "int"),
    "TCP_QUICKACK": (SOL_TCP, 12, 12, "int"),
    "TCP_CONGESTION": (SOL_TCP, 13, 13, "str"),
    "TCP_THIN_LINEAR_TIMEOUTS": (SOL_TCP, 16, 16, "int"),
    "TCP_USER_TIMEOUT": (SOL_TCP, 18, 18, "int"),
    "TCP_FASTOPEN": (SOL_TCP, 23, 23, "int"),
    "TCP_NOTSENT_LOWAT": (SOL_TCP, 25, 25, "int"),
    "TCP_FASTOPEN_CONNECT": (SOL_TCP, 30, 30, "int"),
    "TCP_FASTOPEN_NO_COOKIE": (SOL_TCP, 34, 34, "int"),
    "TCP_TX_DELAY": (SOL_TCP, 37, 37, "int"),
}
UDP: SockOpts = {
    "UDP_CORK": (SOL_UDP, 1, 1, "int"),
    "UDP_NO_CHECK6_TX": (SOL_UDP, 101, 101, "int"),
    "UDP_NO_CHECK6_RX": (SOL_UDP, 102, 102, "int"),
    "UDP_SEGMENT": (SOL_UDP, 103, 103, "int"),
    "UDP_GRO": (SOL_UDP, 104, 104, "int"),
}
UDPLITE: SockOpts = {
    **{name: (SOL_UDPLITE, rd, wr, kind) for name, (_lvl, rd, wr, kind) in UDP.items()},
    "UDPLITE_SEND_CSCOV": (SOL_UDPLITE, 10, 10, "int"),
    "UDPLITE_RECV_CSCOV": (SOL_UDPLITE, 11, 11, "int"),
}

# Set after every other: IP_TOS and IPV6_TCLASS set the priority too.
LAST = ("SO_PRIORITY",)

NETLINK: SockOpts = {
    "NETLINK_PKTINFO": (270, 3, 3, "int"),
    "NETLINK_BROADCAST_ERROR": (270, 4, 4, "int"),
    "NETLINK_NO_ENOBUFS": (270, 5, 5, "int"),
    "NETLINK_LISTEN_ALL_NSID": (270, 8, 8, "int"),
    "NETLINK_CAP_ACK": (270, 10, 10, "int"),
    "NETLINK_EXT_ACK": (270, 11, 11, "int"),
    "NETLINK_GET_STRICT_CHK": (270, 12, 12, "int"),
}
PACKET: SockOpts = {  # SOL_PACKET
    "PACKET_VERSION": (263, 10, 10, "int"),
    "PACKET_RESERVE": (263, 12, 12, "int"),
    "PACKET_AUXDATA": (263, 8, 8, "int"),
    "PACKET_ORIGDEV": (263, 9, 9, "int"),
    "PACKET_VNET_HDR": (263, 15, 15, "int"),
    "PACKET_TIMESTAMP": (263, 17, 17, "int"),
    "PACKET_QDISC_BYPASS": (263, 20, 20, "int"),
    "PACKET_IGNORE_OUTGOING": (263, 23, 23, "int"),
}
RAW_ICMP: SockOpts = {"ICMP_FILTER": (255, 1, 1, 4)}  # SOL_RAW: ICMP types dropped
RAW_ICMPV6: SockOpts = {"ICMPV6_FILTER": (58, 1, 1, 32)}  # SOL_ICMPV6

# Saved whatever their value: what SO_BUF_LOCK says is set, unasked, by the buffer
# sizes a restore sets on every unix socket.
ALWAYS = frozenset({"SO_BUF_LOCK"})


def read_filter(sock: socket.socket, where: str) -> str:
    """The classic BPF program attached to ``sock`` (SO_ATTACH_FILTER), as hex; empty
    for none. An eBPF program (SO_ATTACH_BPF) cannot be read back: refused."""
    try:
        raw, count = libc.getsockopt(sock.fileno(), SOL_SOCKET, SO_ATTACH_FILTER,
                                     8 * BPF_MAXINSNS, BPF_MAXINSNS)
    except PermissionError:
        raise UnsupportedError(f"{where}: an eBPF program is attached to it (SO_ATTACH_BPF), "
                               "which ckpt cannot read back") from None
    return raw[:8 * count].hex()


def _attach_filter(sock: socket.socket, insns_hex: str) -> None:
    insns = bytes.fromhex(insns_hex)
    prog = ctypes.create_string_buffer(insns, len(insns))
    # struct sock_fprog: the instruction count, then a pointer to them
    sock.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("=H6xQ", len(insns) // 8, ctypes.addressof(prog)))


def _value_field(kind: Any) -> Field:
    if kind in ("int", "buf"):
        return S32
    if kind == "str":
        return Str(16)
    if kind == "filter":
        return Hex(4096 * 8)
    return Hex(kind)


def _read(sock: socket.socket, level: int, opt: int, kind: Any, where: str) -> Any:
    if kind in ("int", "buf"):
        return sock.getsockopt(level, opt)
    if kind == "str":
        return sock.getsockopt(level, opt, 16).split(b"\0", 1)[0].decode("ascii", "replace")
    if kind == "filter":
        return read_filter(sock, where)
    return sock.getsockopt(level, opt, kind).hex()


def read_opts(sock: socket.socket, table: SockOpts, fresh: socket.socket,
              where: str = "socket") -> dict[str, Any]:
    """The options of ``sock`` that differ from those of ``fresh``, a new socket of
    the same family and type (those the process set), and those in ``ALWAYS``;
    options this kernel does not know are left out."""
    out = {}
    for name, (level, opt, _wopt, kind) in table.items():
        try:
            value = _read(sock, level, opt, kind, where)
        except UnsupportedError:
            raise
        except OSError:
            continue
        try:
            default = _read(fresh, level, opt, kind, where)
        except OSError:
            default = None
        if value != default or name in ALWAYS:
            out[name] = value
    return out


def apply_opts(sock: socket.socket, opts: dict[str, Any], table: SockOpts, where: str,
               skip: tuple[str, ...] = ()) -> None:
    """Set the saved options ``opts`` on the new ``sock``, in the table's order."""
    unknown = [name for name in opts if name not in table]
    if unknown:
        raise RestoreError(f"{where}: the image sets socket option {unknown[0]}, unknown to "
                           "this ckpt")
    order = [n for n in table if n not in LAST] + [n for n in LAST if n in table]
    for name in order:
        if name not in opts or name in skip:
            continue
        level, _opt, wopt, kind = table[name]
        value = opts[name]
        try:
            if kind == "buf":
                sock.setsockopt(level, wopt, max(value // 2, 1))
            elif kind == "int":
                sock.setsockopt(level, wopt, value)
            elif kind == "str":
                sock.setsockopt(level, wopt, value.encode())
            elif kind == "filter":
                _attach_filter(sock, value)
            else:
                sock.setsockopt(level, wopt, bytes.fromhex(value))
        except OSError as e:
            raise RestoreError(f"{where}: cannot set socket option {name} to {value!r}: "
                               f"{e.strerror}") from None


# The ``opts`` of a socket in files.json: any option ckpt knows, with a value of its kind.
OPTIONS = Obj({name: Opt(_value_field(kind))
               for table in (SOCKET, IP, IPV6, TCP, UDP, UDPLITE, NETLINK, PACKET, RAW_ICMP,
                             RAW_ICMPV6)
               for name, (_level, _opt, _wopt, kind) in table.items()})


def urgent_pending(sock: socket.socket) -> bool:
    """Whether an out-of-band byte (sent with MSG_OOB: TCP urgent data, or a unix
    stream's, Linux 5.15+) waits to be read apart from the stream. A peek leaves it and
    its mark as they were. EAGAIN: TCP saw the urgent pointer, the byte is still to
    come; EINVAL: none, read already, or taken inline (SO_OOBINLINE: plain data)."""
    try:
        return bool(sock.recv(1, socket.MSG_OOB | socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except OSError:
        return False
