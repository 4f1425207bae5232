"""Multicast groups a datagram or raw inet socket has joined (IP_ADD_MEMBERSHIP,
MCAST_JOIN_GROUP, source filters). The kernel lists no socket's groups, so at dump
each group joined on an interface of the process's network namespace (/proc/net/igmp,
igmp6) is asked of the socket: MCAST_MSFILTER gives its filter (mode and sources), or
EADDRNOTAVAIL when the socket has not joined it. At restore each is joined again on
the same interface, then given its filter.
"""

from __future__ import annotations

import errno
import socket
import struct

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc, proc_net
from ..schema import Int, List, Obj, Str

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

FEATURE = "multicast"
MCAST_JOIN_GROUP, MCAST_MSFILTER = 42, 48
MODES = {0: "exclude", 1: "include"}  # MCAST_EXCLUDE, MCAST_INCLUDE
MAX_SOURCES = 64
SOCKADDR = 128  # struct sockaddr_storage
# struct group_filter: interface index, (padding), group, mode, number of sources; then
# the sources; struct group_req: interface index, (padding), group
_FILTER = struct.Struct(f"=I4x{SOCKADDR}sII")
_REQ = struct.Struct(f"=I4x{SOCKADDR}s")

# One membership in an inet description's ``mcast``.
SCHEMA = Obj(ifindex=Int(1, (1 << 31) - 1), group=Str(64),
             mode=Str(choices=tuple(MODES.values())), sources=List(Str(64), max=MAX_SOURCES))


def _level(family: int) -> int:
    return socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6


def _sockaddr(family: int, host: str) -> bytes:
    packed = socket.inet_pton(family, host)
    if family == socket.AF_INET:
        raw = struct.pack("=HH4s", family, 0, packed)
    else:
        raw = struct.pack("=HHI16sI", family, 0, 0, packed, 0)
    return raw.ljust(SOCKADDR, b"\0")


def _host(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[4:8])
    return socket.inet_ntop(family, raw[8:24])


def dump(pid: int, sock: socket.socket, where: str) -> list[dict[str, Any]]:
    """The groups ``sock`` (of process ``pid``) has joined, with their filters."""
    family = sock.family
    if family not in (socket.AF_INET, socket.AF_INET6):
        return []
    out = []
    for ifindex, group in proc_net.multicast_groups(pid, family):
        asked = _FILTER.pack(ifindex, _sockaddr(family, group), 0, MAX_SOURCES)
        size = _FILTER.size + SOCKADDR * MAX_SOURCES
        try:
            got, _ = libc.getsockopt(sock.fileno(), _level(family), MCAST_MSFILTER, size,
                                     size, asked)
        except OSError as e:
            if e.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.EINVAL):
                continue  # not joined by this socket
            raise
        _, _, mode, count = _FILTER.unpack_from(got)
        if count > MAX_SOURCES or mode not in MODES:
            raise UnsupportedError(f"{where}: multicast group {group} on interface "
                                   f"{ifindex} filtered by {count} sources (mode {mode}); "
                                   f"ckpt keeps up to {MAX_SOURCES}")
        sources = [_host(family, got[_FILTER.size + SOCKADDR * i:][:SOCKADDR])
                   for i in range(count)]
        out.append({"ifindex": ifindex, "group": group, "mode": MODES[mode],
                    "sources": sources})
    return out


def restore(sock: socket.socket, memberships: list[dict[str, Any]], where: str) -> None:
    """Join each group again on its interface; a filter other than "every source" is
    set after the join (the kernel filters only a group the socket has joined)."""
    family, level = sock.family, _level(sock.family)
    modes = {name: num for num, name in MODES.items()}
    for m in memberships:
        group = _sockaddr(family, m["group"])
        try:
            sock.setsockopt(level, MCAST_JOIN_GROUP, _REQ.pack(m["ifindex"], group))
            if m["mode"] != "exclude" or m["sources"]:
                sources = b"".join(_sockaddr(family, s) for s in m["sources"])
                sock.setsockopt(level, MCAST_MSFILTER,
                                _FILTER.pack(m["ifindex"], group, modes[m["mode"]],
                                             len(m["sources"])) + sources)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e)
            raise RestoreError(f"{where}: cannot join multicast group {m['group']} on "
                               f"interface {m['ifindex']} again: {why}") from None
