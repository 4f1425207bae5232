"""AF_PACKET sockets (raw or cooked, on one device or all): protocol, device, options
and multicast/promiscuous memberships, from sock_diag; at restore a new socket
bound to the device by its name, the memberships added again.

Refused at dump: packets queued for reading (copies of traffic ckpt cannot have
sent again to this socket alone), rings (PACKET_RX_RING, PACKET_TX_RING: memory
mapped from the socket into the process) and PACKET_FANOUT groups.
"""

from __future__ import annotations

import os
import socket
import struct

from ..errors import RestoreError, TransientError, UnsupportedError
from ..kernel import sock_diag
from ..log import logger
from ..schema import NAT, U16, U64, UID, Hex, Int, List, Null, Str, Tup
from .filekind import (
    Description,
    DumpCtx,
    OpenFd,
    RestoreCtx,
    SocketKind,
    refuse_if_net_not_saved,
)
from .sk_netlink import made_again, socket_family
from .sockopts import OPTIONS, PACKET, SOCKET, read_opts

log = logger("ckpt.sk_packet")

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
TABLE = {**SOCKET, **PACKET}


class PacketSockets(SocketKind):
    KIND = "packet"
    # its own fields in files.json
    SCHEMA = {
        "inode": U64, "type": Int(1, 10), "proto": Int(0, 0xFFFF), "device": Null(Str(16)),
        "protocol": Int(0, 0xFFFF),
        "memberships": List(Tup(Str(16), NAT, U16, Hex(32))),
        "owner": Tup(UID, UID), "opts": OPTIONS,
    }

    def __init__(self) -> None:
        super().__init__()
        self._diag: dict[int, sock_diag.PacketDiag] | None = None  # dump

    @classmethod
    def claims_fd(cls, f: OpenFd) -> bool:
        return socket_family(f) == socket.AF_PACKET

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        refuse_if_net_not_saved(ctx, f, "a packet")
        sock = socket.socket(fileno=os.dup(f.dup))
        try:
            where = f"{f.where} (packet {f.link})"
            if self._diag is None:
                self._diag = sock_diag.packet_sockets()
            diag = self._diag.get(f.st.st_ino)
            if diag is None:
                raise UnsupportedError(f"{where}: not found by sock_diag (of another network "
                                       "namespace?)")
            if diag.rings:
                raise UnsupportedError(f"{where}: has a ring (PACKET_RX_RING or "
                                       "PACKET_TX_RING) mapped into the process; not supported")
            if diag.fanout:
                raise UnsupportedError(f"{where}: a member of a PACKET_FANOUT group; not "
                                       "supported")
            if diag.rqueue:  # one that reads them will, once let run
                raise TransientError(f"{where}: packets queued for reading; ckpt could not "
                                       "give them back to this socket alone: retry when the "
                                       "process has read them")
            ctx.images.need("socket-families")
            with socket.socket(socket.AF_PACKET, sock.type, sock.proto) as fresh:
                opts = read_opts(sock, TABLE, fresh, where)
            name = sock.getsockname()  # (device, protocol, ...) in host order
            return {"inode": f.st.st_ino, "type": int(sock.type), "proto": sock.proto,
                    "device": socket.if_indextoname(diag.ifindex) if diag.ifindex else None,
                    "protocol": name[1],
                    "memberships": [[socket.if_indextoname(i), count, mtype, addr.hex()]
                                    for i, count, mtype, addr in diag.memberships],
                    "owner": [f.st.st_uid, f.st.st_gid], "opts": opts}
        finally:
            sock.close()

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        where = f"socket:[{desc['inode']}] (packet)"
        sock = made_again(socket.AF_PACKET, desc, TABLE, where)
        try:
            if desc["device"]:
                sock.bind((desc["device"], desc["protocol"]))
            for device, count, mtype, addr in desc["memberships"]:
                raw = bytes.fromhex(addr)
                mreq = struct.pack("=iHH8s", socket.if_nametoindex(device), mtype, len(raw),
                                   raw)
                for _ in range(count):
                    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as e:
            sock.close()
            raise RestoreError(f"{where}: cannot bind it or add its memberships again "
                               f"(device {desc['device']}): {e.strerror}") from None
        except BaseException:
            sock.close()
            raise
        return sock.detach()
