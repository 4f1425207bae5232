"""The raw and ICMP (ping) sockets /proc/net lists, for what sock_diag does not tell
of them here: the address a raw socket is connected to, its queues, its state."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

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
