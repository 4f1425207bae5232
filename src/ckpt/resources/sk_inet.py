"""TCP, UDP and UDP-Lite sockets, IPv4 and IPv6: TCP sockets listening (with no
connection waiting to be accepted) or not yet used (bound or not), TCP connections
(with ``--tcp-established``: sk_tcp.py saves and rebuilds them, and those that
ended), UDP and UDP-Lite sockets bound or not, connected or not, shut down or not,
with the datagrams queued on them (udp_queue.py).


Each comes back as a new socket with the same owner and the options the process
had changed (sockopts.py), bound to the same address and port (with IP_FREEBIND
if the host no longer has that address), then listening with the same backlog
or connected to the same peer, and shut down as it was. A TCP port still held
by connections in TIME_WAIT (the dumped socket's, since the dump closed them) is
freed with SOCK_DESTROY before the bind is tried again.

Refused at dump: TCP connections (and connect() calls under way, SYN_SENT) without
``--tcp-established``, a SYN_RECV of a simultaneous open, a listener with connections
not yet accepted, a TCP connection that ended with an error not read yet or whose
attempt failed (sk_tcp.py), a corked UDP socket with data not sent yet, and every
other protocol or family.

"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat as st_mod
import struct

from ..errors import RestoreError, TransientError, UnsupportedError
from ..images import RawWriter
from ..kernel import proc_net, sock_diag
from ..kernel.sock_diag import TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_TIME_WAIT
from ..log import logger
from ..schema import NAT, U16, U32, U64, UID, Either, Int, List, Null, Opt, Str, Tup, refuse
from . import mcast, sk_tcp, udp_queue
from .filekind import (
    Description,
    DumpCtx,
    ImageRefs,
    OpenFd,
    RestoreCtx,
    SocketKind,
    refuse_if_net_not_saved,
    taken_hint,
)
from .sockopts import (
    IP,
    IPV6,
    OPTIONS,
    RAW_ICMP,
    RAW_ICMPV6,
    SOCKET,
    TCP,
    UDP,
    UDPLITE,
    SockOpts,
    apply_opts,
    read_opts,
)

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.sk_inet")

RCV_SHUTDOWN, SEND_SHUTDOWN = 1, 2
IPPROTO_UDPLITE = udp_queue.IPPROTO_UDPLITE
# Set once the datagrams queued at dump are delivered again: they would keep them out.
_AFTER_QUEUE = ("SO_BINDTODEVICE", "SO_ATTACH_FILTER", "SO_LOCK_FILTER")

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}
_PROTOS = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", 136: "UDP-Lite"}
_FAMILIES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
# Multicast options a TCP socket refuses to set, which an accepted one reads from the
# peer's SYN: its TTL (hop limit) and, for IPv6, the interface it came in on.
_NOT_TCP = ("IP_MULTICAST_TTL", "IPV6_MULTICAST_HOPS", "IPV6_MULTICAST_IF")


def opts_table(family: int, proto: int, stype: int = 0) -> SockOpts:
    """The options ckpt saves for a socket of ``family``, ``proto`` (and ``stype``)."""
    ip = IP if family == socket.AF_INET else IPV6
    if stype == socket.SOCK_RAW:
        extra = {(socket.AF_INET, 1): RAW_ICMP, (socket.AF_INET6, 58): RAW_ICMPV6}
        return {**SOCKET, **ip, **extra.get((family, proto), {})}
    if _is_ping(stype, proto):
        return {**SOCKET, **ip}
    table = {**SOCKET, **ip,
             **{socket.IPPROTO_TCP: TCP, IPPROTO_UDPLITE: UDPLITE}.get(proto, UDP)}
    if proto == socket.IPPROTO_TCP:
        for name in _NOT_TCP:
            table.pop(name, None)
    return table


def _is_ping(stype: int, proto: int) -> bool:
    return stype == socket.SOCK_DGRAM and proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6)


def _proto_name(stype: int, proto: int) -> str:
    if stype == socket.SOCK_RAW:
        return f"raw (protocol {proto})"
    return "ICMP (ping)" if _is_ping(stype, proto) else _PROTOS.get(proto, str(proto))


def new_socket(family: int, stype: int, proto: int, gid: int) -> socket.socket:
    """A new socket; an ICMP (ping) one made under group ``gid``, the owner's, since
    net.ipv4.ping_group_range lets some groups only make them (root is no exception)."""
    if not _is_ping(stype, proto) or os.getegid() == gid:
        return socket.socket(family, stype, proto)
    saved = os.getegid()
    os.setegid(gid)
    try:
        return socket.socket(family, stype, proto)
    finally:
        os.setegid(saved)


def _fmt(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound(addr: tuple[Any, ...]) -> list[Any] | None:
    """A local address as saved: null when unbound (any address, port 0)."""
    if addr[1] == 0 and addr[0] in ("0.0.0.0", "::"):
        return None
    return list(addr)


def on_loopback(host: str) -> bool:
    """Whether ``host`` is an address of ``lo`` or a wildcard: one that every network
    namespace has once its lo is up."""
    if host.startswith("::ffff:"):
        host = host[7:]
    return host in ("0.0.0.0", "::", "::1") or host.startswith("127.")


def _refuse_off_loopback(f: OpenFd, desc: dict[str, Any], sock: socket.socket) -> None:
    """A socket of the tree's own network namespace, which is not saved (``--empty-ns
    net``: the restore makes a new one, only lo up in it) is kept only when bound to
    and connected over lo (or a wildcard), which the new namespace has: refused
    otherwise, naming its address."""
    try:
        peer = sock.getpeername()
    except OSError:
        peer = None
    for what, addr in (("bound to", desc["addr"]), ("connected to", peer)):
        if addr is not None and not on_loopback(addr[0]):
            raise UnsupportedError(
                f"{f.where}: {f.link} is an inet socket {what} {addr[0]} in the tree's own "
                "network namespace, which is not saved (--empty-ns net): the restore makes "
                "a new one with only lo up")


def udp_sockets(family: int, proto: int) -> dict[int, sock_diag.InetDiag]:
    """The hashed (bound) UDP or UDP-Lite sockets of ``family`` by inode, from sock_diag:
    their queues and shutdown state."""
    return {s.inode: s for s in sock_diag.inet_sockets(family, proto)}


def _shutdown_by_poll(sock: socket.socket) -> int:
    """The shutdown state of a socket sock_diag does not list (an unbound UDP socket), as
    poll shows it: both ways (POLLHUP) or reading (POLLRDHUP); writing alone does not
    show."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP)
    events = p.poll(0)
    mask = events[0][1] if events else 0
    if mask & select.POLLHUP:
        return RCV_SHUTDOWN | SEND_SHUTDOWN
    return RCV_SHUTDOWN if mask & select.POLLRDHUP else 0


# A socket's address as getsockname gives it: [host, port] or [host, port, flowinfo,
# scope_id].
ADDRESS = Either(Tup(Str(64), U16), Tup(Str(64), U16, U32, U32))


class InetSockets(SocketKind):
    KIND = "inet"
    # its own fields in files.json
    SCHEMA = {
        "inode": U64, "family": Int(2, 10), "type": Int(1, 5), "proto": Int(0, 255),
        "state": Int(1, 12), "addr": Null(ADDRESS), "peer": Null(ADDRESS),
        "owner": Tup(UID, UID), "opts": OPTIONS,
        "backlog": Opt(NAT),
        "shutdown": Opt(Int(0, 3)),
        "queue": Opt(List(udp_queue.SCHEMA)),  # UDP datagrams queued
        "tcp": Opt(sk_tcp.SCHEMA),  # an established connection
        "in_flight": Opt(List(ADDRESS)),  # a listener's: peers of connections not accepted
        "mcast": Opt(List(mcast.SCHEMA, max=1024)),  # multicast groups joined
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        if desc["state"] == TCP_LISTEN and "backlog" not in desc:
            raise refuse(where, "backlog", "missing, but the socket listens")
        if desc["family"] == socket.AF_INET:  # an IPv4 socket takes [host, port] only
            for name in ("addr", "peer"):
                if desc[name] is not None and len(desc[name]) != 2:
                    raise refuse(where, name, "not an IPv4 address ([host, port])")
        tcp = desc.get("tcp", {})
        if "tcp" in desc and desc["addr"] is None:
            raise refuse(where, "addr", "null, but the socket had a TCP connection")
        if "tcp" in desc and desc["peer"] is None and not tcp.get("ended"):
            raise refuse(where, "peer", "null, but the socket had a TCP connection")
        for i, d in enumerate(desc.get("queue", [])):
            refs.within(udp_queue.QUEUE_FILE, d["at"], d["len"], where, f"queue[{i}]")
        for side in ("send", "recv"):
            if "off" in tcp.get(side, {}):
                q = tcp[side]
                refs.within(sk_tcp.QUEUE_FILE, q["off"], q["len"], where, f"tcp.{side}")

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        return 2 if "tcp" in desc else 1  # a connection: ckpt's copy, kept until it runs

    def __init__(self) -> None:
        super().__init__()
        self._udp_diag: dict[tuple[int, int], dict[int, sock_diag.InetDiag]] = {}  # dump
        self._queues: RawWriter | None = None  # dump: udp-queues.img
        self.connections = sk_tcp.Connections()  # TCP connections, dump and restore

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        # every socket that is not a unix one; other families are refused in dump()
        return (st_mod.S_ISSOCK(st.st_mode) and link.startswith("socket:")
                and not sock_diag.is_unix_socket(st.st_ino))

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        pid, fd, link, st = f.pid, f.fd, f.link, f.st
        sock = socket.socket(fileno=os.dup(f.dup))
        try:
            fam, stype, proto = sock.family, sock.type, sock.proto
            if fam == socket.AF_UNIX:
                raise UnsupportedError(f"process {pid} fd {fd}: {link} is a unix socket "
                                       "sock_diag does not know (of another network "
                                       "namespace?)")
            if fam not in _FAMILIES:
                fname = getattr(fam, "name", str(int(fam)))
                raise UnsupportedError(f"process {pid} fd {fd}: {link} is an {fname} socket; "
                                       "ckpt supports unix, TCP and UDP sockets only")
            if (stype, proto) not in ((socket.SOCK_STREAM, socket.IPPROTO_TCP),
                                      (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
                                      (socket.SOCK_DGRAM, IPPROTO_UDPLITE)) and \
                    stype != socket.SOCK_RAW and not _is_ping(stype, proto):
                raise UnsupportedError(f"{f.where}: {link} is an {fam.name} socket of type "
                                       f"{int(stype)}, protocol {proto}; ckpt supports TCP, "
                                       "UDP, UDP-Lite, raw and ICMP (ping) sockets only")
            if ctx.empty_net and (stype == socket.SOCK_RAW or _is_ping(stype, proto)):
                refuse_if_net_not_saved(ctx, f, f"a raw or ping {_FAMILIES[fam]}")
            where = f"{f.where} ({_proto_name(stype, proto)} {_FAMILIES[fam]} {link})"
            with new_socket(fam, stype, proto, st.st_gid) as fresh:
                opts = read_opts(sock, opts_table(fam, proto, stype), fresh, where)
            desc: dict[str, Any] = {"inode": st.st_ino, "family": int(fam),
                                    "type": int(stype), "proto": proto,
                                    "addr": _bound(sock.getsockname()), "peer": None,
                                    "owner": [st.st_uid, st.st_gid], "opts": opts}
            if ctx.empty_net:
                _refuse_off_loopback(f, desc, sock)
            if proto != socket.IPPROTO_TCP:  # (TCP sockets cannot join groups)
                groups = mcast.dump(pid, sock, where)
                if groups:
                    desc["mcast"] = groups
                    ctx.images.need(mcast.FEATURE)
            if stype == socket.SOCK_RAW or _is_ping(stype, proto):
                self._raw(ctx, sock, desc, where)
            elif proto == socket.IPPROTO_TCP:
                self._tcp(ctx, sock, desc, where)
            else:
                self._udp(ctx, sock, desc, where)
            log.info("%s: %s", where, desc)
            return desc
        finally:
            sock.close()

    def _tcp(self, ctx: DumpCtx, sock: socket.socket, desc: dict[str, Any],
             where: str) -> None:
        ti = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        state = ti[0]
        desc["state"] = state
        if state == TCP_LISTEN:
            pending, backlog = struct.unpack_from("=II", ti, 24)  # tcpi_unacked, _sacked
            if pending or desc["opts"].get("TCP_DEFER_ACCEPT"):  # connections waiting
                self.connections.listening(ctx, desc, pending, where)
            desc["backlog"] = backlog
            return
        if state in sk_tcp.CONNECTED:
            desc["peer"] = list(sock.getpeername())
            self.connections.dump(ctx, sock, desc, where)
            return
        if state == sk_tcp.SYN_SENT:
            self.connections.connecting(ctx, sock, desc, where)
            return
        if state != TCP_CLOSE:
            raise UnsupportedError(f"{where}: TCP connection in state "
                                   f"{TCP_STATES.get(state, state)} (being made); retry once "
                                   "it is established")
        segs_out, segs_in = struct.unpack_from("=II", ti, 136) if len(ti) >= 144 else (0, 0)
        if segs_out or segs_in:  # it had a connection, or tried to
            self.connections.ended(ctx, sock, desc, ti, where)

    def _raw(self, ctx: DumpCtx, sock: socket.socket, desc: dict[str, Any],
             where: str) -> None:
        """A raw or ICMP (ping) socket: its peer (/proc/net tells a raw socket's, which
        getpeername does not); refused with packets queued, which no one could send
        again to it alone."""
        listed = proc_net.sockets(desc["family"], "raw" if desc["type"] == socket.SOCK_RAW
                                  else "icmp").get(desc["inode"])
        if desc["type"] == socket.SOCK_RAW and desc["addr"] is not None:
            # a raw socket's "port" is its protocol; bound to a wildcard means not bound
            desc["addr"] = (None if desc["addr"][0] in ("0.0.0.0", "::")
                            else [desc["addr"][0], 0, *desc["addr"][2:]])
        connected = listed is not None and listed.state == TCP_ESTABLISHED
        desc["state"] = TCP_ESTABLISHED if connected else TCP_CLOSE
        if connected:
            assert listed is not None
            desc["peer"] = [listed.remote[0], 0]
        if listed is not None and listed.rqueue:  # one that reads them will, once let run
            raise TransientError(f"{where}: packets queued for reading ({listed.rqueue} "
                                   "bytes); ckpt could not give them back to this socket "
                                   "alone: retry when the process has read them")
        desc["shutdown"] = _shutdown_by_poll(sock)
        ctx.images.need("socket-queues")  # raw and ping sockets

    def _udp(self, ctx: DumpCtx, sock: socket.socket, desc: dict[str, Any],
             where: str) -> None:
        try:
            desc["peer"] = list(sock.getpeername())
            desc["state"] = TCP_ESTABLISHED
        except OSError:
            desc["state"] = TCP_CLOSE
        key = (desc["family"], desc["proto"])
        if key not in self._udp_diag:
            self._udp_diag[key] = udp_sockets(*key)
        diag = self._udp_diag[key].get(desc["inode"])
        rqueue, wqueue = (diag.rqueue, diag.wqueue) if diag else (0, 0)
        desc["shutdown"] = diag.shutdown if diag else _shutdown_by_poll(sock)
        if rqueue:
            if self._queues is None:
                self._queues = ctx.images.raw(udp_queue.QUEUE_FILE)
            desc["queue"] = udp_queue.save(sock, self._queues, where)
        if desc["shutdown"] or desc.get("queue"):
            ctx.images.need("socket-queues")
        if desc["opts"].get("UDP_CORK") and wqueue:
            raise UnsupportedError(f"{where}: corked (UDP_CORK) with data not sent yet; "
                                   "not supported")

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        self.connections.after_dump(ctx, list(self.descriptions.values()))

    def before_kill(self) -> None:
        self.connections.before_kill()

    def close(self) -> None:
        self.connections.close()

    def check_connections(self, ctx: RestoreCtx) -> None:
        """Refuse TCP connections the restore's options do not allow (the restorer asks
        before anything is made, and before the network lock is touched)."""
        self.connections.check(ctx, [d for fid, d in self.descriptions.items()
                                     if "tcp" in d and fid not in ctx.replaced])

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        fam, proto = desc["family"], desc["proto"]
        where = (f"socket:[{desc['inode']}] ({_proto_name(desc['type'], proto)} "
                 f"{_FAMILIES.get(fam, fam)})")
        try:
            sock = new_socket(fam, desc["type"], proto, desc["owner"][1])
        except OSError as e:
            raise RestoreError(f"{where}: cannot make it again: {e.strerror}") from None
        table = opts_table(fam, proto, desc["type"])
        # with datagrams to deliver again: bound to a device and filtered once they are in
        later = _AFTER_QUEUE if desc.get("queue") else ()
        try:
            os.fchown(sock.fileno(), *desc["owner"])
            connection = "tcp" in desc
            # a connection's MSS is the negotiated one, set with the repair options
            apply_opts(sock, desc["opts"], table, where,
                       skip=("TCP_MAXSEG",) if connection else later)
            if connection:
                self.connections.rebuild(ctx, sock, desc, where)
            else:
                _unconnected(ctx, sock, desc, where, later)
        except BaseException:
            sock.close()
            raise
        return sock.detach()


def _unconnected(ctx: RestoreCtx, sock: socket.socket, desc: Description, where: str,
                 later: tuple[str, ...]) -> None:
    """A socket without a TCP connection: bound, then its queued datagrams delivered
    again and the options ``later`` set, then listening or (UDP) connected."""
    if desc["addr"] is not None:
        _bind(sock, desc, where)
    mcast.restore(sock, desc.get("mcast", []), where)
    if later:
        udp_queue.deliver(sock, desc["proto"], desc["queue"],
                          ctx.images.path(udp_queue.QUEUE_FILE), where)
        apply_opts(sock, {k: v for k, v in desc["opts"].items() if k in later},
                   opts_table(desc["family"], desc["proto"], desc["type"]), where)
    if desc["state"] == TCP_LISTEN:
        try:
            sock.listen(desc["backlog"])
        except OSError as e:
            raise RestoreError(f"{where}: cannot listen on "
                               f"{_fmt(sock.getsockname())}: {e.strerror}") from None
    if desc["peer"] is not None:
        try:
            sock.connect(tuple(desc["peer"]))
        except OSError as e:
            raise RestoreError(f"{where}: cannot connect to {_fmt(desc['peer'])}: "
                               f"{e.strerror}") from None
    _shut(sock, desc.get("shutdown", 0))


def _shut(sock: socket.socket, how: int) -> None:
    """Shut the new socket down as the old one was. An unconnected UDP socket says
    ENOTCONN, but is shut down all the same (as the process's was)."""
    if not how:
        return
    try:
        sock.shutdown({RCV_SHUTDOWN: socket.SHUT_RD, SEND_SHUTDOWN: socket.SHUT_WR}.get(
            how, socket.SHUT_RDWR))
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise


def _bind(sock: socket.socket, desc: dict[str, Any], where: str) -> None:
    """Bind to the saved address. A TCP port held only by connections in TIME_WAIT
    (those of the dumped socket, closed by the dump) is freed first: the kernel
    lets a listener bind over them only when they had SO_REUSEADDR too. An
    address this host does not have (any more) is bound with IP_FREEBIND (the
    socket's own setting put back after), as criu does."""
    addr = tuple(desc["addr"])
    try:
        sock.bind(addr)
        return
    except OSError as e:
        err = e
    if err.errno == errno.EADDRNOTAVAIL:
        name = "IP_FREEBIND" if desc["family"] == socket.AF_INET else "IPV6_FREEBIND"
        level, opt, _, _ = (IP if desc["family"] == socket.AF_INET else IPV6)[name]
        sock.setsockopt(level, opt, 1)
        try:
            sock.bind(addr)
            log.info("%s: %s is not an address of this host; bound with %s", where,
                     _fmt(addr), name)
            return
        except OSError as e:
            err = e
        finally:
            sock.setsockopt(level, opt, desc["opts"].get(name, 0))
    if err.errno == errno.EADDRINUSE and desc["proto"] == socket.IPPROTO_TCP:
        try:
            n = _destroy_time_wait(addr)
        except OSError as e:
            log.warning("%s: cannot close TIME_WAIT connections on %s: %s", where,
                        _fmt(addr), e.strerror)
            n = 0
        if n:
            log.info("%s: %d connection(s) in TIME_WAIT on %s closed", where, n, _fmt(addr))
            try:
                sock.bind(addr)
                return
            except OSError as e:
                err = e
    raise RestoreError(f"{where}: cannot bind {_fmt(addr)}: {err.strerror}"
                       + (f" ({taken_hint(desc['inode'])})"
                          if err.errno == errno.EADDRINUSE else "")) from None


def _destroy_time_wait(addr: tuple[Any, ...]) -> int:
    """Close (SOCK_DESTROY) the TCP connections in TIME_WAIT on local port ``addr[1]``
    (and local address ``addr[0]`` unless it is a wildcard); how many were closed."""
    host, port = addr[0], addr[1]
    n = 0
    for fam in (socket.AF_INET, socket.AF_INET6):
        for s in sock_diag.inet_sockets(fam, socket.IPPROTO_TCP, 1 << TCP_TIME_WAIT):
            if s.sport != port:
                continue
            if host not in ("0.0.0.0", "::") and s.src != _packed(host, fam):
                continue
            sock_diag.destroy(s)
            n += 1
    return n


def _packed(host: str, fam: int) -> bytes | None:
    try:
        return socket.inet_pton(fam, host)
    except OSError:
        return None

