"""What /proc/net tells that sock_diag does not: of the raw and ICMP (ping) sockets, the
address a raw socket is connected to, its queues, its state; the multicast groups joined
on each interface of a network namespace (igmp, igmp6)."""

from __future__ import annotations

import socket
import struct

from .record import dataclass

_FILES = {(socket.AF_INET, "raw"): "raw", (socket.AF_INET6, "raw"): "raw6",
          (socket.AF_INET, "icmp"): "icmp", (socket.AF_INET6, "icmp"): "icmp6"}


@dataclass(frozen=True)
class ProcNetSocket:
    """One line of /proc/net/{raw,raw6,icmp,icmp6}."""

    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    wqueue: int
    rqueue: int
    inode: int


def _address(field: str, family: int) -> tuple[str, int]:
    """"0100007F:00FD" (the kernel's words in host order, hex) as (host, port)."""
    hexaddr, hexport = field.split(":")
    raw = bytes.fromhex(hexaddr)
    # each 32-bit word is printed in the machine's order (little-endian here)
    packed = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0])
                      for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, packed), int(hexport, 16)


def sockets(family: int, kind: str) -> dict[int, ProcNetSocket]:
    """The sockets of ``kind`` ("raw" or "icmp") and ``family``, by inode."""
    out = {}
    with open(f"/proc/net/{_FILES[family, kind]}") as f:
        next(f)
        for line in f:
            cols = line.split()
            if len(cols) < 10:
                continue
            tx, rx = (int(x, 16) for x in cols[4].split(":"))
            s = ProcNetSocket(_address(cols[1], family), _address(cols[2], family),
                              int(cols[3], 16), tx, rx, int(cols[9]))
            out[s.inode] = s
    return out



def parse_igmp(text: str) -> list[tuple[int, str]]:
    """/proc/net/igmp: a line per interface ("1<tab>lo : ..."), then one per group,
    indented, each group a big-endian address printed as a host-order hex word."""
    out = []
    index = None
    for line in text.splitlines():
        cols = line.split()
        if not cols:
            continue
        if not line[0].isspace():
            index = int(cols[0]) if cols[0].isdigit() else None
        elif index is not None:
            out.append((index, socket.inet_ntop(socket.AF_INET,
                                                struct.pack("<I", int(cols[0], 16)))))
    return out


def parse_igmp6(text: str) -> list[tuple[int, str]]:
    """/proc/net/igmp6: a line per group: interface index, name, group (hex), ..."""
    return [(int(cols[0]), socket.inet_ntop(socket.AF_INET6, bytes.fromhex(cols[2])))
            for cols in map(str.split, text.splitlines()) if len(cols) >= 3]


def multicast_groups(pid: int, family: int) -> list[tuple[int, str]]:
    """(interface index, group) of every multicast group joined on an interface of the
    network namespace of process ``pid``, by any socket or by the kernel itself."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return []
    name = "igmp" if family == socket.AF_INET else "igmp6"
    try:
        with open(f"/proc/{pid}/net/{name}") as f:
            text = f.read()
    except FileNotFoundError:  # a kernel without multicast for the family: no groups
        return []
    return parse_igmp(text) if family == socket.AF_INET else parse_igmp6(text)
