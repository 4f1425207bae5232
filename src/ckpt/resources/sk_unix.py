"""Unix domain sockets: connected pairs inside the dumped tree (socketpair), with
the bytes or datagrams queued in them, and sockets connected to a peer outside
the tree (``--external unix[INODE]`` at dump, ``--inherit-fd
fd[N]:socket:[INODE]`` at restore).

The kernel's sock_diag netlink interface tells each socket's type, state and
peer; queued data is read with MSG_PEEK and SO_PEEK_OFF so it stays in place,
message by message for datagram and seqpacket sockets.
"""

from __future__ import annotations

import logging
import os
import socket
import stat as st_mod
import struct
from typing import Any

from ..errors import DumpError, RestoreError, UnsupportedError
from . import files

log = logging.getLogger("ckpt.sk_unix")

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
UDIAG_SHOW_NAME, UDIAG_SHOW_PEER, UDIAG_SHOW_RQLEN = 0x1, 0x4, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_PEER, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 0, 2, 4, 6
TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
SO_PEEK_OFF = 42
_PEEK_BUF = 64 << 10
RCV_SHUTDOWN = 1
QUEUE_FILE = "sk-queues.img"
_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}


def unix_sockets() -> dict[int, dict[str, Any]]:
    """Every unix socket of this network namespace: inode -> type, state, peer, name."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        req = struct.pack("=BBHIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0,
                          UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN,
                          0xFFFFFFFF) + struct.pack("=I", 0xFFFFFFFF)
        hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        nl.sendto(hdr + req, (0, 0))
        out: dict[int, dict[str, Any]] = {}
        while True:
            data = nl.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    raise OSError(err, f"sock_diag: {os.strerror(err)}")
                body = data[off + 16:off + length]
                _fam, stype, state, _pad, ino = struct.unpack_from("=BBBBI", body, 0)
                info: dict[str, Any] = {"type": stype, "state": state, "peer": 0,
                                        "name": None, "shutdown": 0}
                a = 16
                while a + 4 <= len(body):
                    alen, atype = struct.unpack_from("=HH", body, a)
                    if alen < 4:
                        break
                    payload = body[a + 4:a + alen]
                    if atype == UNIX_DIAG_NAME:
                        info["name"] = payload.hex()
                    elif atype == UNIX_DIAG_PEER:
                        info["peer"] = struct.unpack_from("=I", payload)[0]
                    elif atype == UNIX_DIAG_RQLEN:
                        info["rqueue"], info["wqueue"] = struct.unpack_from("=II", payload)
                    elif atype == UNIX_DIAG_SHUTDOWN:
                        info["shutdown"] = payload[0]
                    a += (alen + 3) & ~3
                out[ino] = info
                off += (length + 3) & ~3
    finally:
        nl.close()


def _peek_queue(sock: socket.socket, stype: int, rqueue: int, shutdown: int) -> list[bytes]:
    """The data queued for reading on ``sock``, left in place: for a stream socket one
    chunk of bytes, for datagram and seqpacket sockets each message, in order.

    ``rqueue`` (UNIX_DIAG_RQLEN) is no message count: for a datagram socket it
    is the length of the first message only. So the messages are peeked in
    turn until the queue says EAGAIN, each at its byte offset in the queue set
    with SO_PEEK_OFF, which makes a peek skip whole messages up to that offset
    (an empty message is skipped once it has been peeked). MSG_TRUNC gives a
    message's full length (a longer one is peeked again with a buffer that
    fits), so the next offset lands exactly past it. The first message is
    peeked with the offset disabled, so an empty one at the head is seen even
    if the process had peeked it before. The socket's own SO_PEEK_OFF is put
    back afterwards.

    A seqpacket socket whose peer shut down writing returns 0 (EOF) instead of
    EAGAIN at the end of its queue, like an empty message: there ``rqueue`` is
    the byte count of the whole queue, and a 0 once every byte was seen ends
    it (trailing empty messages read as EOF to the process too).
    """
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    stream = stype == socket.SOCK_STREAM
    if not stream:
        flags |= socket.MSG_TRUNC
    eof_at_end = stream or (stype == socket.SOCK_SEQPACKET and shutdown & RCV_SHUTDOWN)
    saved_off = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    buf = bytearray(_PEEK_BUF)
    msgs: list[bytes] = []
    off = 0
    try:
        while True:
            at = off if msgs or stream else -1
            sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, at)
            try:
                n = sock.recv_into(buf, len(buf), flags)
            except BlockingIOError:
                break
            if n > len(buf):  # a message longer than the buffer: peek it whole
                buf = bytearray(n)
                sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, at)
                n = sock.recv_into(buf, len(buf), flags)
            if n == 0 and eof_at_end and (stream or off >= rqueue):
                break
            msgs.append(bytes(buf[:n]))
            off += n
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved_off)
    if stream:
        return [b"".join(msgs)] if msgs else []
    return msgs


class UnixSockets:
    KIND = "unix"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISSOCK(st.st_mode) and link.startswith("socket:")

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: dict[str, str]) -> dict[str, Any]:
        sock = socket.socket(fileno=os.dup(dup))
        try:
            if sock.family != socket.AF_UNIX:
                raise UnsupportedError(f"process {pid} fd {fd}: {link} is a "
                                       f"{sock.family.name} socket; only unix sockets are "
                                       "supported yet")
            if "unix" not in ctx.raw:
                ctx.raw["unix"] = unix_sockets()
            table = ctx.raw["unix"]
            ino = st.st_ino
            me = table.get(ino)
            if me is None:
                raise DumpError(f"process {pid} fd {fd}: {link} not found by sock_diag")
            where = f"process {pid} fd {fd} ({_TYPES.get(me['type'], me['type'])} {link})"
            if me["name"] or me["state"] == TCP_LISTEN:
                raise UnsupportedError(f"{where}: bound or listening unix sockets are not "
                                       "supported yet")
            if me["state"] != TCP_ESTABLISHED or not me["peer"]:
                raise UnsupportedError(f"{where}: unconnected unix sockets are not "
                                       "supported yet")
            queue = _peek_queue(sock, me["type"], me.get("rqueue", 0), me["shutdown"])
            if "skq_raw" not in ctx.raw:
                ctx.raw["skq_raw"] = ctx.images.raw(QUEUE_FILE)
            chunks = [[ctx.raw["skq_raw"].write(m), len(m)] for m in queue]
            return {"inode": ino, "type": me["type"], "peer": me["peer"],
                    "shutdown": me["shutdown"], "queue": chunks,
                    "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                    "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
        finally:
            sock.close()

    def keys(self, desc: dict[str, Any]) -> list[str]:
        return [f"socket:[{desc['inode']}]"]

    def after_dump(self, ctx: files.DumpCtx, descriptions: dict[str, dict[str, Any]],
                   tasks: list[dict[str, Any]]) -> None:
        _check_external(descriptions, ctx.external)

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        socks: dict[int, int] = ctx.state.setdefault("unix", {})
        ino = desc["inode"]
        if ino not in socks:
            peer = _find_peer(ctx, desc)
            if peer is None:
                raise RestoreError(
                    f"socket:[{ino}] was connected to a peer outside the dumped tree; "
                    f"give its replacement with --inherit-fd 'fd[N]:socket:[{ino}]'")
            a, b = socket.socketpair(socket.AF_UNIX, desc["type"])
            for s, d in ((a, desc), (b, peer)):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(d["sndbuf"] // 2, 1024))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(d["rcvbuf"] // 2, 1024))
            _refill(ctx, b, desc)
            _refill(ctx, a, peer)
            for s, d in ((a, desc), (b, peer)):
                how = {1: socket.SHUT_RD, 2: socket.SHUT_WR, 3: socket.SHUT_RDWR}.get(
                    d["shutdown"])
                if how is not None:
                    s.shutdown(how)
            socks[ino] = a.detach()
            socks[peer["inode"]] = b.detach()
        fd = os.dup(socks[ino])
        return fd


def _find_peer(ctx: files.RestoreCtx, desc: dict[str, Any]) -> dict[str, Any] | None:
    for d in ctx.descriptions.values():
        if d["kind"] == "unix" and d["inode"] == desc["peer"]:
            return d
    return None


def _refill(ctx: files.RestoreCtx, sender: socket.socket, receiver: dict[str, Any]) -> None:
    """Queue again, from the peer, what ``receiver`` had not read yet."""
    if not receiver["queue"]:
        return
    with open(ctx.images.path(QUEUE_FILE), "rb") as f:
        for off, length in receiver["queue"]:
            f.seek(off)
            data = f.read(length)
            if receiver["type"] == socket.SOCK_STREAM:
                sender.sendall(data)
            else:
                sender.send(data)


def _check_external(descriptions: dict[str, dict[str, Any]], external: set[str]) -> None:
    """At dump: a socket whose peer is outside the tree needs ``--external unix[INODE]``."""
    inodes = {d["inode"] for d in descriptions.values() if d["kind"] == "unix"}
    for d in descriptions.values():
        if d["kind"] != "unix" or d["peer"] in inodes:
            continue
        if f"unix[{d['inode']}]" in external or f"unix[{d['peer']}]" in external:
            d["external"] = True
            continue
        raise UnsupportedError(
            f"socket:[{d['inode']}] is connected to socket:[{d['peer']}] outside the dumped "
            f"tree; dump with --external 'unix[{d['inode']}]' and restore with "
            f"--inherit-fd 'fd[N]:socket:[{d['inode']}]'")


files.register(UnixSockets())
