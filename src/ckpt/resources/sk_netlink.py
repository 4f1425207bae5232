"""Netlink sockets (rtnetlink, generic netlink, uevents, audit, ...): protocol, port
id, multicast groups, the peer it is connected to and its options, from sock_diag;
at restore a new socket of the protocol, bound to the same port id and groups,
connected again.

Refused at dump: messages queued for reading (answers or events not read yet:
ckpt cannot make the kernel send them again), and an answer in several parts
being made (a dump request in progress), which would stop halfway.
"""

from __future__ import annotations

import os
import socket
import stat as st_mod

from ..errors import RestoreError, TransientError, UnsupportedError
from ..kernel import sock_diag
from ..log import logger
from ..schema import U32, U64, UID, Int, List, Tup
from .filekind import (
    Description,
    DumpCtx,
    OpenFd,
    RestoreCtx,
    SocketKind,
    refuse_if_net_not_saved,
)
from .sockopts import NETLINK, OPTIONS, SOCKET, apply_opts, read_opts

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.sk_netlink")

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
TABLE = {**SOCKET, **NETLINK}


def socket_family(f: OpenFd) -> int | None:
    """The address family of the socket fd ``f`` (None if it is no socket)."""
    if not (st_mod.S_ISSOCK(f.st.st_mode) and f.link.startswith("socket:")):
        return None
    sock = socket.socket(fileno=os.dup(f.dup))
    try:
        return int(sock.family)
    finally:
        sock.close()


def made_again(family: int, desc: Description, table: dict[str, Any], where: str
               ) -> socket.socket:
    """A new socket of ``family`` for ``desc``: its type and protocol, owner, options."""
    try:
        sock = socket.socket(family, desc["type"], desc["proto"])
    except OSError as e:
        raise RestoreError(f"{where}: cannot make it again: {e.strerror}") from None
    try:
        os.fchown(sock.fileno(), *desc["owner"])
        apply_opts(sock, desc["opts"], table, where)
    except BaseException:
        sock.close()
        raise
    return sock


class NetlinkSockets(SocketKind):
    KIND = "netlink"
    # its own fields in files.json
    SCHEMA = {
        "inode": U64, "type": Int(1, 5), "proto": Int(0, 255), "portid": U32,
        "groups": List(U32, max=1 << 16), "peer": Tup(U32, U32), "owner": Tup(UID, UID),
        "opts": OPTIONS,
    }

    def __init__(self) -> None:
        super().__init__()
        self._diag: dict[int, sock_diag.NetlinkDiag] | None = None  # dump

    @classmethod
    def claims_fd(cls, f: OpenFd) -> bool:
        return socket_family(f) == socket.AF_NETLINK

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        refuse_if_net_not_saved(ctx, f, "a netlink")
        sock = socket.socket(fileno=os.dup(f.dup))
        try:
            where = f"{f.where} (netlink protocol {sock.proto} {f.link})"
            if self._diag is None:
                self._diag = sock_diag.netlink_sockets()
            diag = self._diag.get(f.st.st_ino)
            if diag is None and sock.getsockname() == (0, 0):
                diag = _unbound(sock.proto)
            if diag is None:
                raise UnsupportedError(f"{where}: not found by sock_diag (of another network "
                                       "namespace?)")
            # (transient: a process reads an answer an instant after asking: the dump is
            # tried again, errors.TransientError)
            if diag.dumping:
                raise TransientError(f"{where}: an answer in several parts (a dump request) "
                                     "is being made for it; retry once it is read")
            if diag.rqueue:
                raise TransientError(f"{where}: messages queued for reading (answers or "
                                     "events not read yet); ckpt cannot have them sent "
                                     "again: retry when the process has read them")
            ctx.images.need("socket-families")
            with socket.socket(socket.AF_NETLINK, sock.type, sock.proto) as fresh:
                opts = read_opts(sock, TABLE, fresh, where)
            return {"inode": f.st.st_ino, "type": int(sock.type), "proto": sock.proto,
                    "portid": diag.portid, "groups": list(diag.groups),
                    "peer": [diag.dst_portid, diag.dst_group],
                    "owner": [f.st.st_uid, f.st.st_gid], "opts": opts}
        finally:
            sock.close()

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        where = f"socket:[{desc['inode']}] (netlink protocol {desc['proto']})"
        sock = made_again(socket.AF_NETLINK, desc, TABLE, where)
        try:
            _bind(sock, desc, where)
            if desc["peer"] != [0, 0]:
                sock.connect(tuple(desc["peer"]))
        except OSError as e:
            sock.close()
            raise RestoreError(f"{where}: cannot bind or connect it again: {e.strerror}"
                               ) from None
        except BaseException:
            sock.close()
            raise
        return sock.detach()


def _unbound(proto: int) -> sock_diag.NetlinkDiag:
    """What sock_diag would say of a socket never bound (nor connected or used to send,
    which bind it), which it does not list: no port id, no groups, no peer, nothing
    queued (dbus-daemon's audit socket)."""
    return sock_diag.NetlinkDiag(protocol=proto, portid=0, dst_portid=0, dst_group=0,
                                 groups=(), rqueue=0, dumping=False)


def _bind(sock: socket.socket, desc: dict[str, Any], where: str) -> None:
    """Bound again to its port id and groups (the first 32 at bind, the others as
    memberships); a socket never bound stays so."""
    groups = desc["groups"]
    if not desc["portid"] and not groups:
        return
    mask = sum(1 << (g - 1) for g in groups if g <= 32)
    try:
        sock.bind((desc["portid"], mask))
    except OSError as e:
        raise RestoreError(f"{where}: cannot bind port id {desc['portid']} again: "
                           f"{e.strerror}") from None
    for g in groups:
        if g > 32:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g)
