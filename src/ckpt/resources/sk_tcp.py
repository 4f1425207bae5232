"""TCP connections (``--tcp-established``): saved and rebuilt in TCP repair mode so that
the peer never notices. Part of the inet kind (sk_inet.py hands its connected TCP
sockets here).

Saved: both queues (bytes sent but not acknowledged, and those never sent; bytes
received but not read), where each starts in sequence space, the options the
handshake negotiated (MSS, window scale, SACK, timestamps), the timestamp clock and
the window (``TCP_REPAIR_WINDOW``). Half-closed connections keep their FINs: ours
(FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING) is queued as sent again, and the peer's
(CLOSE_WAIT, LAST_ACK, CLOSING) and its ACK of ours (FIN_WAIT2) are received again
from a segment ckpt sends as the peer. A connection that ended (both FINs, or a reset
whose error the process has read) comes back closed, its unread bytes read before
the end of file, as criu restores a connection in CLOSE: it is rebuilt in repair
mode to the same peer (SO_PEERNAME), our FIN queued, and closed by the peer's ACK and
FIN sent as the peer.

Connections not accepted yet (in a listener's queue: the kernel made them, no
process holds them; or held in SYN_RECV by a listener with TCP_DEFER_ACCEPT until the
client sends) whose client is in the tree, and received nothing: the client's
connection is saved as any, and at restore connects again to the restored listener
once the network is unlocked (a handshake over the same addresses), and sends what
it had sent and not seen acknowledged: the listener's queue holds a connection to
the restored client. Others (a client outside the tree, bytes or a FIN received)
are refused naming them, or dropped with --skip-in-flight, as criu does (their
client then sees a reset).

A connect() under way (SYN_SENT, its SYN not answered yet) is saved with its peer and
first sequence number; the restored socket is bound, given that sequence number, and
connected without waiting once the network is unlocked: the same SYN goes out again,
and the process's own connect() or poll() sees the handshake end.

A dump with --tcp-close (alone or with --tcp-established) saves no connection's
state: each is restored closed.

Refused: a connection with an error the process has not read yet (reset by the
peer while frozen, timed out, or an ICMP error with IP_RECVERR), and one with
messages on its error queue. The kernel gives a pending error only through
SO_ERROR, which clears it: read by a dump that then fails or lets the process run
(-R), the process would never see it. poll() shows it (POLLERR) without clearing
it; a retry once the process has seen it works, and the dump tries again by itself
for a moment (errors.TransientError): a process that polls its socket reads it as soon
as it runs.

At dump a socket is in repair mode only while it is read (the network lock keeps
its packets out, the freeze keeps its process still); it enters repair mode again
right before its process is killed, so that the close sends nothing. At restore
each socket is built in repair mode before the processes are created, and leaves it
once the network is unlocked (``finish``): a window probe then tells the peer where
we are, and bytes never sent go out.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import time

from ..errors import DumpError, RestoreError, TransientError, UnsupportedError
from ..images import RawWriter
from ..kernel import procfs, sock_diag
from ..kernel import tcp_repair as repair
from ..kernel.record import dataclass, field
from ..log import logger
from ..schema import BOOL, NAT, U32, Either, Enum, Int, Null, Obj, Opt, Tup
from .filekind import Description, DumpCtx, RestoreCtx
from .sockopts import urgent_pending

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.sk_tcp")

_WSCALE = Null(Int(0, 14))
# What ``dump`` writes: an inet description's ``tcp`` (docs/image-format.md).
_QUEUE = Obj(seq=U32, off=NAT, len=NAT)
SCHEMA = Either(
    Obj(closed=Enum(True)),  # dumped with --tcp-close
    Obj(ended=Enum(True), recv=_QUEUE, send=Obj(seq=U32)),  # tcp-ended
    Obj(syn_sent=Enum(True), send=Obj(seq=U32)),  # tcp-syn-sent: a connect() under way
    Obj(send=_QUEUE.extend(unsent=NAT), recv=_QUEUE,
        fin_unsent=BOOL, mss=Int(0, 0xFFFF), snd_wscale=_WSCALE, rcv_wscale=_WSCALE,
        sack=BOOL, timestamps=BOOL, timestamp=Null(U32), window=Tup(U32, U32, U32, U32, U32),
        reconnect=Opt(Enum(True)),  # tcp-reconnect: connected again, not accepted yet
        shut_rd=Opt(Enum(True))),  # tcp-shut-rd: shutdown(SHUT_RD) by the process
)

QUEUE_FILE = "tcp-queues.img"
(ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT,
 LAST_ACK, LISTEN, CLOSING) = range(1, 12)
CONNECTED = frozenset({ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING})
LOCKED = CONNECTED | {SYN_SENT}  # the network lock holds their packets during a dump
OUR_FIN = frozenset({FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING})  # we sent a FIN
PEER_FIN = frozenset({CLOSE_WAIT, LAST_ACK, CLOSING})  # we received the peer's FIN
SO_PEERNAME = 28
SO_BUF_LOCK = 72
_SEND_TIMEOUT = 30.0  # seconds to hand the bytes never sent to the kernel at restore


def pending_error(sock: socket.socket) -> bool:
    """Whether ``sock`` has an error the process has not read, or messages on its error
    queue (poll shows both as POLLERR, and reads neither)."""
    p = select.poll()
    p.register(sock, select.POLLERR)
    return any(ev & select.POLLERR for _, ev in p.poll(0))


def _ever_established(ti: bytes) -> bool:
    """From the TCP_INFO of a closed socket: whether its connection was established once
    (an attempt that was refused or timed out negotiated no option, measured no round
    trip, and moved no byte)."""
    rtt = struct.unpack_from("=I", ti, 68)[0]  # tcpi_rtt
    acked, received = struct.unpack_from("=QQ", ti, 120) if len(ti) >= 136 else (0, 0)
    return bool(ti[5] or rtt or acked or received)  # tcpi_options


def _fmt(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class TreeConnection:
    """A TCP connection of the tree: our end, the peer's, and the fds holding it."""

    local: tuple[str, int]
    peer: tuple[str, int]
    inode: int
    holders: tuple[tuple[int, int], ...]  # (pid, fd)


def tree_connections(pids: list[int]) -> list[TreeConnection]:
    """Every TCP connection held by an fd of ``pids``, and every one being made
    (SYN_SENT: the network lock keeps the peer's answer out until the restore)."""
    held: dict[int, list[tuple[int, int]]] = {}
    for pid in pids:
        for fd in procfs.fd_numbers(pid):
            try:
                link = procfs.fd_link(pid, fd)
            except (OSError, procfs.ProcessGone):
                continue
            if link.startswith("socket:["):
                held.setdefault(int(link[8:-1]), []).append((pid, fd))
    mask = sum(1 << s for s in LOCKED)
    out = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        for s in sock_diag.inet_sockets(fam, socket.IPPROTO_TCP, mask):
            if s.inode in held:
                local, peer = s.endpoints()
                out.append(TreeConnection(local, peer, s.inode, tuple(held[s.inode])))
    return out


@dataclass(frozen=True)
class _Waiting:
    """A connection in a listener's queue, not accepted yet, as sock_diag shows it."""

    local: tuple[str, int]  # the listener's side
    peer: tuple[str, int]  # the client
    state: int
    rqueue: int  # bytes received (a FIN received: CLOSE_WAIT)


def _wire(addr: Any) -> tuple[str, int]:
    """An address as packets carry it (IPv4-mapped IPv6 as IPv4), with its port."""
    return repair.on_the_wire(addr[0])[1], int(addr[1])


def _queued_on(listener: tuple[str, int],
               mask: int = (1 << ESTABLISHED) | (1 << CLOSE_WAIT)) -> list[_Waiting]:
    """The connections no process holds yet (no inode), in the states of ``mask``, whose
    local end is ``listener``'s address and port (any address, for a listener on a
    wildcard)."""
    host, port = _wire(listener)
    wildcard = host in ("0.0.0.0", "::")
    out = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        for s in sock_diag.inet_sockets(fam, socket.IPPROTO_TCP, mask):
            local, peer = s.endpoints()
            if s.inode or s.sport != port or not (wildcard or _wire(local)[0] == host):
                continue
            out.append(_Waiting(_wire(local), _wire(peer), s.state, s.rqueue))
    return out


@dataclass
class _Listener:
    """A listener of the tree with connections not accepted yet."""

    desc: Description
    where: str
    waiting: list[_Waiting]
    pending: int  # how many the listener says it has
    held: list[_Waiting] = field(default_factory=list)  # by TCP_DEFER_ACCEPT (SYN_RECV)


@dataclass


class _Rebuilt:
    """A socket rebuilt in repair mode, waiting for ``finish``."""

    sock: socket.socket
    where: str
    state: int
    unsent: bytes = b""
    fin_unsent: bool = False
    reuse: int = 0
    ended: bool = False  # closed already: it only leaves repair mode
    buffers: list[tuple[int, int]] = field(default_factory=list)  # put back at the end
    connect_to: tuple[str, int] | None = None  # not accepted at dump: connects again


@dataclass
class Connections:
    """The TCP connections of one dump or one restore."""

    queues: RawWriter | None = None  # dump: tcp-queues.img
    held: list[socket.socket] = field(default_factory=list)  # dump: ckpt's copies
    rebuilt: list[_Rebuilt] = field(default_factory=list)  # restore: in repair mode
    listeners: list[_Listener] = field(default_factory=list)  # dump: with a queue

    # ------------------------------------------------------------ dump

    def dump(self, ctx: DumpCtx, sock: socket.socket, desc: Description, where: str) -> None:
        """Save the connection of ``sock`` (state ``desc["state"]``) into ``desc["tcp"]``."""
        state = desc["state"]
        if not ctx.tcp.established and not ctx.tcp.close:
            raise UnsupportedError(
                f"{where}: {_name(state)} TCP connection to {_fmt(desc['peer'])}; dump "
                "with --tcp-established to save it (or --tcp-close to restore it closed)")
        ctx.images.need("tcp")
        if pending_error(sock):  # the process reads it as soon as it runs, mostly
            raise TransientError(
                f"{where}: {_name(state)} TCP connection to {_fmt(desc['peer'])} with an "
                "error the process has not read yet (an ICMP error), or messages on its "
                "error queue; ckpt cannot read either without taking it from the process: "
                "retry once the process has read them")
        if ctx.tcp.close:
            desc["tcp"] = {"closed": True}
            return
        if urgent_pending(sock):
            raise UnsupportedError(
                f"{where}: {_name(state)} TCP connection to {_fmt(desc['peer'])} with an "
                "out-of-band byte (MSG_OOB, urgent data) not read yet; ckpt cannot queue "
                "it again as urgent: it would come back as plain data")
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        # The receive queue is peeked before repair mode: in repair mode with that queue
        # selected, a write of the process (ckpt killed there) would be queued as
        # received; only its sequence number needs it, for two calls.
        received = repair.peek_received(sock)
        repair.on(sock)
        try:
            send = repair.read_queue(sock, repair.SEND_QUEUE)
            recv = repair.Queue(repair.queue_seq(sock, repair.RECV_QUEUE), received)
            if repair.received_now(sock) != len(received):  # bytes came meanwhile
                recv = repair.read_queue(sock, repair.RECV_QUEUE)
            opts = repair.read_options(sock)
            stamp = repair.timestamp(sock) if opts.timestamps else None
            window = repair.read_window(sock)
        finally:
            repair.off(sock, probe=False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
        our_fin, peer_fin = state in OUR_FIN, state in PEER_FIN
        fin_unsent = our_fin and send.unsent > 0  # the FIN is last: unsent if anything is
        unsent = send.unsent - fin_unsent
        if unsent > len(send.data):
            raise DumpError(f"{where}: the send queue holds {len(send.data)} bytes, less than "
                            f"the {unsent} not sent yet")
        desc["tcp"] = {
            "send": {"seq": (send.seq - our_fin) & 0xFFFFFFFF, **self._save(ctx, send.data),
                     "unsent": unsent},
            "recv": {"seq": (recv.seq - peer_fin) & 0xFFFFFFFF, **self._save(ctx, recv.data)},
            "fin_unsent": fin_unsent,
            "mss": opts.mss, "snd_wscale": opts.snd_wscale, "rcv_wscale": opts.rcv_wscale,
            "sack": opts.sack, "timestamps": opts.timestamps, "timestamp": stamp,
            "window": [window.snd_wl1, window.snd_wnd, window.max_window, window.rcv_wnd,
                       window.rcv_wup],
        }
        if state not in PEER_FIN and _shut_for_reading(sock):  # no FIN: the process's
            desc["tcp"]["shut_rd"] = True
            ctx.images.need("tcp-shut-rd")
        self.held.append(socket.socket(fileno=os.dup(sock.fileno())))
        log.info("%s: %s to %s, %d bytes to send (%d never sent), %d received unread",
                 where, _name(state), _fmt(desc["peer"]), len(send.data), unsent,
                 len(recv.data))

    def connecting(self, ctx: DumpCtx, sock: socket.socket, desc: Description,
                   where: str) -> None:
        """Save a connect() under way (SYN_SENT, its SYN not answered yet): the peer
        (getpeername does not tell it yet: sock_diag does) and the first sequence
        number, so that the restored socket's SYN is the same one again."""
        peer = _peer_of(desc["inode"], SYN_SENT)
        if peer is None:  # answered meanwhile (no lock without --tcp-established)
            raise TransientError(f"{where}: a TCP connection being made (SYN_SENT) "
                                 "changed state while it was read: retry")
        local = desc["addr"]
        desc["peer"] = [*peer, 0, local[3]] if len(local) == 4 else list(peer)  # IPv6: scope
        if not ctx.tcp.established and not ctx.tcp.close:
            raise UnsupportedError(
                f"{where}: TCP connection being made (SYN_SENT) to {_fmt(peer)}; dump "
                "with --tcp-established to save it (or --tcp-close to restore it closed)")
        ctx.images.need("tcp")
        if ctx.tcp.close:
            desc["tcp"] = {"closed": True}
            return
        ti = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
        notsent, data_out = (struct.unpack_from("=I", ti, 144)[0],
                             struct.unpack_from("=I", ti, 156)[0]) if len(ti) >= 160 else (0, 0)
        if notsent or data_out:  # the SYN carries data, or data waits for the handshake
            raise UnsupportedError(
                f"{where}: TCP connection being made (SYN_SENT) to {_fmt(peer)} with bytes "
                "in its SYN or waiting for the handshake (TCP Fast Open); not supported")
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        repair.on(sock)
        try:
            seq = repair.queue_seq(sock, repair.SEND_QUEUE)  # after the SYN
        finally:
            repair.off(sock, probe=False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
        desc["tcp"] = {"syn_sent": True, "send": {"seq": seq}}
        ctx.images.need("tcp-syn-sent")
        log.info("%s: connecting to %s (SYN_SENT)", where, _fmt(peer))

    def listening(self, ctx: DumpCtx, desc: Description, pending: int, where: str) -> None:
        """A listener with ``pending`` connections not accepted yet, or with
        TCP_DEFER_ACCEPT, which holds a connection whose client sent nothing yet in
        SYN_RECV, out of the count: which they are is settled once every socket of the
        tree is dumped (``after_dump``)."""
        addr = desc["addr"] or ["0.0.0.0", 0]
        held = (_queued_on((addr[0], addr[1]), 1 << SYN_RECV)
                if desc["opts"].get("TCP_DEFER_ACCEPT") else [])
        if not pending and not held:
            return
        if not ctx.tcp.established and not ctx.tcp.skip_in_flight:
            what = (f"{pending} connection(s) not accepted yet" if pending else
                    f"{len(held)} connection(s) held by TCP_DEFER_ACCEPT until their "
                    "client sends")
            raise UnsupportedError(
                f"{where}: listening on {_fmt(addr)} with {what}; dump with "
                "--tcp-established (those whose client is in the tree connect again at "
                "restore) or --skip-in-flight (dropped)")
        waiting = _queued_on((addr[0], addr[1])) if pending else []
        self.listeners.append(_Listener(desc, where, waiting, pending, held))

    def after_dump(self, ctx: DumpCtx, descs: list[Description]) -> None:
        """Each connection waiting in a listener's queue: its client's connection (in
        the tree) marked to connect again at restore, or refused, or dropped with
        --skip-in-flight."""
        if not self.listeners:
            return
        clients = {(_wire(d["addr"]), _wire(d["peer"])): d for d in descs
                   if "tcp" in d and "window" in d["tcp"]}  # saved live connections
        connecting = {(_wire(d["addr"]), _wire(d["peer"])) for d in descs
                      if d.get("tcp", {}).get("syn_sent")}  # their SYN goes again
        for lst in self.listeners:
            if len(lst.waiting) != lst.pending:
                self._cannot(ctx, lst, f"{lst.pending} connection(s) not accepted yet, of "
                             "which ckpt finds "
                             f"{len(lst.waiting)} (another listener on its port?)")
                continue
            again = []
            for w in lst.waiting + lst.held:
                if (w.peer, w.local) in connecting:
                    continue
                client = clients.get((w.peer, w.local))
                why = _why_not_again(w, client)
                if why:
                    kind = ("held by TCP_DEFER_ACCEPT until its client sends"
                            if w.state == SYN_RECV else "not accepted yet")
                    self._cannot(ctx, lst, f"a connection from {_fmt(w.peer)} {kind}, "
                                 f"{why}")
                    continue
                assert client is not None
                client["tcp"]["reconnect"] = True
                again.append(list(w.peer))
            lst.desc["in_flight"] = again
            if again:
                ctx.images.need("tcp-reconnect")
                log.info("%s: %d connection(s) not accepted yet, from the tree: connected "
                         "again at restore", lst.where, len(again))

    def _cannot(self, ctx: DumpCtx, lst: _Listener, what: str) -> None:
        if not ctx.tcp.skip_in_flight:
            raise UnsupportedError(f"{lst.where}: listening with {what}; ckpt cannot bring "
                                   "it back (--skip-in-flight drops it: its client sees a "
                                   "reset)")
        log.warning("%s: %s: dropped (--skip-in-flight)", lst.where, what)

    def ended(self, ctx: DumpCtx, sock: socket.socket, desc: Description, ti: bytes,
              where: str) -> None:
        """Save a socket whose connection ended (state CLOSE, ``ti`` its TCP_INFO): the
        bytes received and not read. It locks nothing and needs no --tcp-established
        (as criu's closed sockets)."""
        if pending_error(sock):  # reset between the freeze and the network lock
            raise TransientError(
                f"{where}: its TCP connection ended (state CLOSE) with an error the "
                "process has not read yet (reset by the peer, timed out or refused); "
                "reading it would clear it (SO_ERROR), and a dump that fails or lets the "
                "process run (-R) would leave it never seen: retry once the process has "
                "seen the error")
        if not _ever_established(ti):
            raise UnsupportedError(f"{where}: a TCP connection attempt that failed (state "
                                   "CLOSE, never established) is not supported")
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        repair.on(sock)
        try:
            recv = repair.read_queue(sock, repair.RECV_QUEUE)
            send = repair.read_queue(sock, repair.SEND_QUEUE)  # left unread: nobody can
        finally:
            repair.off(sock, probe=False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
        desc["peer"] = _peer_name(sock)
        desc["tcp"] = {"ended": True,
                       "recv": {"seq": recv.seq, **self._save(ctx, recv.data)},
                       "send": {"seq": send.seq}}
        ctx.images.need("tcp-ended")
        log.info("%s: its connection ended; %d bytes received unread", where,
                 len(recv.data))

    def _save(self, ctx: DumpCtx, data: bytes) -> dict[str, int]:
        if not data:
            return {"off": 0, "len": 0}
        if self.queues is None:
            self.queues = ctx.images.raw(QUEUE_FILE)
        return {"off": self.queues.write(data), "len": len(data)}

    def before_kill(self) -> None:
        """Repair mode again: the close that comes with the kill sends nothing (no FIN,
        no RST), so the peer waits for the restored connection."""
        for s in self.held:
            try:
                repair.on(s)
            except OSError as e:
                log.warning("socket %d: cannot enter repair mode before the kill: %s",
                            s.fileno(), e.strerror)

    def close(self) -> None:
        """The end of a dump: ckpt's copies go (after the kill: closed in repair mode)."""
        for s in self.held:
            s.close()
        self.held.clear()

    # ------------------------------------------------------------ restore

    def check(self, ctx: RestoreCtx, descs: list[Description]) -> None:
        """Refuse, before anything is made, connections the options do not allow."""
        live = [d for d in descs if not d["tcp"].get("closed") and not d["tcp"].get("ended")]
        if not live or ctx.tcp.established or ctx.tcp.close:
            return
        d = live[0]
        raise RestoreError(f"socket:[{d['inode']}]: the images hold {len(descs)} TCP "
                           f"connection(s) (this one to {_fmt(d['peer'])}); restore with "
                           "--tcp-established, or --tcp-close to restore them closed")

    def rebuild(self, ctx: RestoreCtx, sock: socket.socket, desc: Description,
                where: str) -> None:
        """Make ``sock`` (new, options set) the saved connection, in repair mode."""
        t = desc["tcp"]
        if t.get("ended"):
            self._rebuild_ended(ctx, sock, desc, where)
            return
        if t.get("closed") or ctx.tcp.close:
            _closed(sock, desc, where)
            return
        if t.get("reconnect"):
            self._to_connect_again(ctx, sock, desc, where)
            return
        if t.get("syn_sent"):
            self._to_connect(sock, desc, where)
            return
        state = desc["state"]
        send, recv = t["send"], t["recv"]
        send_data, recv_data = _load(ctx, send, where), _load(ctx, recv, where)
        sent = send_data[:len(send_data) - send["unsent"]]
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        grown = _grow_buffers(sock, len(send_data), len(recv_data))
        repair.on(sock)
        _bind(sock, desc, where)
        repair.set_seq(sock, repair.RECV_QUEUE, recv["seq"] - len(recv_data))
        repair.set_seq(sock, repair.SEND_QUEUE, send["seq"] - len(send_data))
        repair.connect_with_mss(sock, t["mss"], lambda: _connect(sock, desc, where))
        repair.set_options(sock, repair.Options(t["mss"], t["snd_wscale"], t["rcv_wscale"],
                                                t["sack"], t["timestamps"]))
        if t["timestamps"] and t["timestamp"] is not None:
            repair.set_timestamp(sock, t["timestamp"])
        try:
            repair.fill_queue(sock, repair.RECV_QUEUE, recv_data)
            repair.fill_queue(sock, repair.SEND_QUEUE, sent)
        except OSError as e:
            raise RestoreError(f"{where}: cannot refill the queues ({len(recv_data)} bytes "
                               f"received, {len(sent)} sent): {e.strerror}") from None
        una = (send["seq"] - len(send_data)) & 0xFFFFFFFF
        self._close_states(sock, desc, una, (una + len(sent)) & 0xFFFFFFFF, where)
        try:
            repair.set_window(sock, repair.Window(*t["window"]))
        except OSError as e:
            raise RestoreError(f"{where}: cannot set the window: {e.strerror}") from None
        if t.get("shut_rd"):
            sock.shutdown(socket.SHUT_RD)  # a flag of the socket's: no packet goes out
        got = repair.state(sock)
        expected = state
        if t["fin_unsent"]:  # our FIN goes out in finish (a FIN dropped on its way out
            # by a local firewall, the lock too, counts as not sent)
            expected = CLOSE_WAIT if state in PEER_FIN else ESTABLISHED
        if got != expected:
            raise RestoreError(f"{where}: rebuilt in state {_name(got)}, not "
                               f"{_name(expected)}")
        self.rebuilt.append(_Rebuilt(socket.socket(fileno=os.dup(sock.fileno())), where,
                                     state, send_data[len(sent):], t["fin_unsent"], reuse,
                                     buffers=grown))
        log.info("%s: %s to %s rebuilt (%d bytes to send, %d received unread)", where,
                 _name(state), _fmt(desc["peer"]), len(send_data), len(recv_data))

    def _to_connect_again(self, ctx: RestoreCtx, sock: socket.socket, desc: Description,
                          where: str) -> None:
        """A connection that was not accepted at dump: bound now, connected once the
        network is unlocked (``finish``), then what it had sent goes again (the other
        end had received none of it). It is bound in repair mode, which forces the
        port as the repaired connections' binds do: the client's port was most often
        picked by its connect, and the kernel gives such a port to other connects
        (to other peers) meanwhile, whose sockets a plain bind conflicts with
        (EADDRINUSE); the connect checks that its own four-tuple is free."""
        t = desc["tcp"]
        data = _load(ctx, t["send"], where)
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        repair.on(sock)
        try:
            _bind(sock, desc, where)
        finally:
            repair.off(sock, probe=False)  # a closed socket: connect shakes hands
        self.rebuilt.append(_Rebuilt(socket.socket(fileno=os.dup(sock.fileno())), where,
                                     desc["state"], unsent=data, reuse=reuse,
                                     connect_to=(desc["peer"][0], desc["peer"][1])))
        log.info("%s: not accepted at dump: connects again to %s (%d bytes to send)", where,
                 _fmt(desc["peer"]), len(data))

    def _to_connect(self, sock: socket.socket, desc: Description, where: str) -> None:
        """A connect() that was under way (SYN_SENT): bound now, its first sequence
        number set (in repair mode, which only that needs), and connected once the
        network is unlocked (``finish``) without waiting: its SYN goes out as the same
        one again, and the process's own connect() or poll() sees the answer."""
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        repair.on(sock)
        try:
            _bind(sock, desc, where)
            repair.set_seq(sock, repair.SEND_QUEUE, desc["tcp"]["send"]["seq"] - 1)
        finally:
            repair.off(sock, probe=False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
        self.rebuilt.append(_Rebuilt(socket.socket(fileno=os.dup(sock.fileno())), where,
                                     SYN_SENT, reuse=reuse,
                                     connect_to=(desc["peer"][0], desc["peer"][1])))
        log.info("%s: connects again to %s (it was SYN_SENT)", where, _fmt(desc["peer"]))

    def _rebuild_ended(self, ctx: RestoreCtx, sock: socket.socket, desc: Description,
                       where: str) -> None:
        """A connection that ended: in repair mode, bound to its address and "connected"
        to its peer's (no packet; images without the peer: to itself), the bytes
        received put back, then closed from our side first: our FIN queued as sent,
        then the peer's ACK of it and FIN, sent as the peer. State CLOSE: reads give
        the bytes, then the end of file; writes fail (EPIPE); SO_PEERNAME names the
        peer. Our side closes first because the socket answers the peer's FIN with an
        ACK, which, on its way to a peer that has no such connection, brings back a
        reset: it meets the TIME_WAIT left by the close, not the socket (closed the
        other way round, it reset the socket before its close was done)."""
        t = desc["tcp"]
        data = _load(ctx, t["recv"], where)
        rcv = (t["recv"]["seq"] - len(data) - 1) & 0xFFFFFFFF  # the peer's FIN last
        snd = (t["send"]["seq"] - 1) & 0xFFFFFFFF  # ours
        local = tuple(desc["addr"])
        peer = tuple(desc["peer"]) if desc.get("peer") else local
        reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        grown = _grow_buffers(sock, 0, len(data))
        repair.on(sock)
        _bind(sock, desc, where)
        repair.set_seq(sock, repair.RECV_QUEUE, rcv)
        repair.set_seq(sock, repair.SEND_QUEUE, snd)
        try:
            _connect_over_time_wait(sock, local, peer)
            repair.fill_queue(sock, repair.RECV_QUEUE, data)
            sock.setsockopt(repair.SOL_TCP, repair.TCP_REPAIR_QUEUE, repair.SEND_QUEUE)
            try:
                sock.shutdown(socket.SHUT_WR)  # queued as sent: nothing goes out
            finally:
                sock.setsockopt(repair.SOL_TCP, repair.TCP_REPAIR_QUEUE, repair.NO_QUEUE)
            fin_at = (rcv + len(data)) & 0xFFFFFFFF
            repair.send_as_peer(peer, local, fin_at, snd + 1, repair.TH_FIN | repair.TH_ACK)
            _wait_state(sock, CLOSE, where)
        except OSError as e:
            raise RestoreError(f"{where}: cannot rebuild the connection that ended: "
                               f"{e.strerror}") from None
        self.rebuilt.append(_Rebuilt(socket.socket(fileno=os.dup(sock.fileno())), where,
                                     CLOSE, reuse=reuse, ended=True, buffers=grown))
        log.info("%s: connection that ended rebuilt (%d bytes received unread)", where,
                 len(data))

    def _close_states(self, sock: socket.socket, desc: Description, una: int, snd_end: int,
                      where: str) -> None:
        """The FINs of a half-closed connection, in the order they happened. The peer's
        segments acknowledge nothing new (``una``: bytes sent but not acknowledged stay
        so), but our FIN in FIN_WAIT2 (``snd_end``: after the bytes that went out)."""
        state, t = desc["state"], desc["tcp"]
        local, peer = tuple(desc["addr"]), tuple(desc["peer"])
        rcv_end = t["recv"]["seq"]  # after the bytes received
        our_fin = state in OUR_FIN and not t["fin_unsent"]
        fin_ack = repair.TH_FIN | repair.TH_ACK
        try:
            if state in PEER_FIN and (state == LAST_ACK or not our_fin):
                # the peer's FIN came first (LAST_ACK), or ours is still to be sent
                repair.send_as_peer(peer, local, rcv_end, una, fin_ack)
                _wait_state(sock, CLOSE_WAIT, where)
            if our_fin:
                sock.setsockopt(repair.SOL_TCP, repair.TCP_REPAIR_QUEUE, repair.SEND_QUEUE)
                try:
                    sock.shutdown(socket.SHUT_WR)  # queued as sent: nothing goes out
                finally:
                    sock.setsockopt(repair.SOL_TCP, repair.TCP_REPAIR_QUEUE, repair.NO_QUEUE)
            if state == FIN_WAIT2:  # the peer acknowledged our FIN
                repair.send_as_peer(peer, local, rcv_end, snd_end + 1, repair.TH_ACK)
                _wait_state(sock, FIN_WAIT2, where)
            if state == CLOSING and our_fin:  # ours first, then the peer's
                repair.send_as_peer(peer, local, rcv_end, una, fin_ack)
                _wait_state(sock, CLOSING, where)
        except OSError as e:
            raise RestoreError(f"{where}: cannot rebuild the {_name(state)} state: "
                               f"{e.strerror}") from None

    def drop(self) -> None:
        """A failed restore: the rebuilt sockets are closed in repair mode, silently."""
        for r in self.rebuilt:
            r.sock.close()
        self.rebuilt.clear()

    def finish(self) -> None:
        """Once the network is unlocked: every rebuilt socket leaves repair mode (a window
        probe goes out), and what was never sent is sent."""
        errors = []
        # connects under way go last: their SYNs must not take a listener's place that
        # a connection not accepted at dump (connected again, waited for) had
        for r in sorted(self.rebuilt, key=lambda r: r.state == SYN_SENT):
            try:
                if r.state == SYN_SENT:
                    assert r.connect_to is not None
                    _start_connect(r.sock, r.connect_to)
                elif r.connect_to is not None:
                    _connect_again(r.sock, r.connect_to)
                else:
                    repair.off(r.sock, probe=not r.ended)
                r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, r.reuse)
                _send_all(r.sock, r.unsent)
                if r.fin_unsent:
                    r.sock.shutdown(socket.SHUT_WR)
                _shrink_back(r.sock, r.buffers)
            except OSError as e:
                errors.append(f"{r.where}: {e.strerror or e}")
            finally:
                r.sock.close()
        self.rebuilt.clear()
        if errors:
            raise RestoreError("cannot hand a TCP connection back: " + "; ".join(errors))


def _name(state: int) -> str:
    names = {ESTABLISHED: "ESTABLISHED", SYN_SENT: "SYN_SENT", SYN_RECV: "SYN_RECV",
             FIN_WAIT1: "FIN_WAIT1", FIN_WAIT2: "FIN_WAIT2", TIME_WAIT: "TIME_WAIT",
             CLOSE: "CLOSE", CLOSE_WAIT: "CLOSE_WAIT", LAST_ACK: "LAST_ACK", LISTEN: "LISTEN",
             CLOSING: "CLOSING"}
    return names.get(state, str(state))


def _load(ctx: RestoreCtx, q: dict[str, int], where: str) -> bytes:
    if not q["len"]:
        return b""
    with open(ctx.images.path(QUEUE_FILE), "rb") as f:
        f.seek(q["off"])
        data = f.read(q["len"])
    if len(data) != q["len"]:
        raise RestoreError(f"{where}: {QUEUE_FILE} is truncated")
    return data


def _grow_buffers(sock: socket.socket, send: int, recv: int) -> list[tuple[int, int]]:
    """Buffers big enough to take the queues back (each byte costs about twice its
    size in the kernel's accounting); what ``_shrink_back`` puts back once they are
    in: (the option that writes a size, the size before), then SO_BUF_LOCK's value."""
    grown = []
    for opt, force, size in ((socket.SO_SNDBUF, 32, send), (socket.SO_RCVBUF, 33, recv)):
        want = 2 * size + (64 << 10)
        had = sock.getsockopt(socket.SOL_SOCKET, opt) if size else want
        if had < want:
            if not grown:
                grown.append((SO_BUF_LOCK, sock.getsockopt(socket.SOL_SOCKET, SO_BUF_LOCK)))
            grown.append((force, had))
            sock.setsockopt(socket.SOL_SOCKET, force, want)
    return grown


def _shrink_back(sock: socket.socket, grown: list[tuple[int, int]]) -> None:
    """The buffer sizes the process had (and what of them it had locked), once the
    queues are in: a queue may hold more than its buffer, as it did."""
    for opt, value in reversed(grown):  # the lock last: setting a size locks it
        sock.setsockopt(socket.SOL_SOCKET, opt, value if opt == SO_BUF_LOCK else value // 2)


def _bind(sock: socket.socket, desc: Description, where: str) -> None:
    try:
        sock.bind(tuple(desc["addr"]))
    except OSError as e:
        raise RestoreError(f"{where}: cannot bind {_fmt(desc['addr'])}: {e.strerror}") from None


def _connect(sock: socket.socket, desc: Description, where: str) -> None:
    """In repair mode: no handshake, the socket is ESTABLISHED at once."""
    try:
        sock.connect(tuple(desc["peer"]))
    except OSError as e:
        hint = (" (the connection exists already: is the dumped process still running?)"
                if e.errno in (errno.EADDRNOTAVAIL, errno.EADDRINUSE) else "")
        raise RestoreError(f"{where}: cannot rebuild the connection {_fmt(desc['addr'])} -> "
                           f"{_fmt(desc['peer'])}: {e.strerror}{hint}") from None


def _wait_state(sock: socket.socket, state: int, where: str, timeout: float = 30.0) -> None:
    """The segment sent as the peer goes through loopback: wait until it was taken."""
    deadline = time.monotonic() + timeout
    while repair.state(sock) != state:
        if time.monotonic() > deadline:
            raise RestoreError(f"{where}: the segment sent as the peer did not bring the "
                               f"socket to {_name(state)} (it is {_name(repair.state(sock))})")
        time.sleep(0.001)


def _why_not_again(w: _Waiting, client: Description | None) -> str | None:
    """Why the connection ``w`` waiting in a listener's queue cannot connect again at
    restore (its client ``client``), or None if it can."""
    if client is None:
        return "whose client is outside the dumped tree"
    if w.rqueue or w.state == CLOSE_WAIT:
        return (f"which has received {w.rqueue} bytes"
                + (" and the end of the stream" if w.state == CLOSE_WAIT else "")
                + " that only the kernel holds")
    t = client["tcp"]
    if client["state"] != ESTABLISHED or t["recv"]["len"] or t.get("fin_unsent"):
        return "whose client has received bytes or closed its end"
    return None


def _connect_again(sock: socket.socket, peer: tuple[str, int]) -> None:
    """Connect ``sock`` to ``peer`` (blocking or not, as the process has it)."""
    err = sock.connect_ex(peer)
    if err == errno.EINPROGRESS:
        select.select([], [sock], [], _SEND_TIMEOUT)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # a new socket's own
    if err:
        raise OSError(err, f"cannot connect again to {_fmt(peer)}: {os.strerror(err)}")


def _shut_for_reading(sock: socket.socket) -> bool:
    """Whether ``sock`` reads the end of file once its queue is empty (RCV_SHUTDOWN:
    the peer's FIN, or shutdown(SHUT_RD)); poll tells it (POLLRDHUP)."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP)
    return any(ev & select.POLLRDHUP for _, ev in p.poll(0))


def _peer_name(sock: socket.socket) -> list[Any] | None:
    """The peer's address of a TCP socket, also in state CLOSE, where getpeername says
    ENOTCONN but SO_PEERNAME tells it (the kernel asks for a buffer no longer than the
    address)."""
    v6 = sock.family == socket.AF_INET6
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERNAME, 28 if v6 else 16)
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    if not v6:
        return [socket.inet_ntop(socket.AF_INET, raw[4:8]), port]
    flow, scope = struct.unpack_from("=I", raw, 4)[0], struct.unpack_from("=I", raw, 24)[0]
    return [socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope]


def _connect_over_time_wait(sock: socket.socket, local: tuple[Any, ...],
                            peer: tuple[Any, ...]) -> None:
    """connect() in repair mode to ``peer``; a TIME_WAIT left on the same addresses (by
    the dumped socket's own close, say) that the kernel does not let it take over
    (no timestamps) is closed first (SOCK_DESTROY)."""
    try:
        sock.connect(peer)
        return
    except OSError as e:
        if e.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
            raise
    ours, theirs = _wire(local), _wire(peer)
    for fam in (socket.AF_INET, socket.AF_INET6):
        for s in sock_diag.inet_sockets(fam, socket.IPPROTO_TCP, 1 << TIME_WAIT):
            if (_wire(s.endpoints()[0]), _wire(s.endpoints()[1])) == (ours, theirs):
                sock_diag.destroy(s)
    sock.connect(peer)


def _start_connect(sock: socket.socket, peer: tuple[str, int]) -> None:
    """Send the SYN of ``sock`` to ``peer`` and return (the socket is made non-blocking
    for this call only: the process, stopped still, has its own flags back)."""
    flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFL)
    sock.setblocking(False)
    try:
        err = sock.connect_ex(peer)
    finally:
        fcntl.fcntl(sock.fileno(), fcntl.F_SETFL, flags)
    if err not in (0, errno.EINPROGRESS):
        raise OSError(err, f"cannot connect again to {_fmt(peer)}: {os.strerror(err)}")


def _peer_of(inode: int, state: int) -> tuple[str, int] | None:
    """The peer of the TCP socket ``inode`` in ``state``, as sock_diag lists it."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        for s in sock_diag.inet_sockets(fam, socket.IPPROTO_TCP, 1 << state):
            if s.inode == inode:
                return s.endpoints()[1]
    return None


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + _SEND_TIMEOUT
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT):]
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(errno.ETIMEDOUT, f"{len(view)} bytes never sent could not be "
                              "queued again") from None
            select.select([], [sock], [], left)


def _closed(sock: socket.socket, desc: Description, where: str) -> None:
    """--tcp-close: the socket comes back closed, as a connection both ends closed
    (reads give the end of file, poll a hang-up, writes fail with EPIPE), and no
    packet goes out: "connected" and dropped in repair mode, which leaves an error
    (ECONNABORTED) ckpt takes, then shut down both ways."""
    repair.on(sock)
    try:
        _bind(sock, desc, where)
        try:
            sock.connect(tuple(desc["peer"]))
            repair.disconnect(sock)
        except OSError as e:
            log.info("%s: %s; left unconnected", where, e.strerror)
    finally:
        repair.off(sock, probe=False)
    sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # the disconnect's, not the process's
    try:
        sock.shutdown(socket.SHUT_RDWR)  # ENOTCONN, but shut down all the same
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
    log.info("%s: connection to %s restored closed", where, _fmt(desc["peer"]))
