"""TCP repair mode (``TCP_REPAIR``, Linux 3.5+, closing states 4.10+): read and set
what a connection is made of (sequence numbers, both queues, negotiated options,
window, timestamp offset) without a packet going out, and raw TCP segments sent as
if from a connection's peer (to give a rebuilt socket the FIN or ACK it had
received). Typed wrappers of the socket options; see tcp(7) and the kernel's
Documentation/networking/tcp_repair.rst."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct

from .record import dataclass

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable

SOL_TCP = socket.IPPROTO_TCP
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
TCP_REPAIR_ON, TCP_REPAIR_OFF, TCP_REPAIR_OFF_NO_WP = 1, 0, -1
NO_QUEUE, RECV_QUEUE, SEND_QUEUE = 0, 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
IP_TRANSPARENT, IPV6_TRANSPARENT = 19, 75
SO_MARK = 36
MAX_USER_MSS = 32767  # the largest TCP_MAXSEG a socket takes (MAX_TCP_WINDOW)
TH_FIN, TH_RST, TH_ACK = 0x01, 0x04, 0x10
# The mark of the segments ckpt sends as a peer: the network lock lets them through.
PEER_MARK = 0xC4C7
CHUNK = 1 << 16  # bytes put into a queue per call: the kernel copies each into one skb
SO_PEEK_OFF = 42


def on(sock: socket.socket) -> None:
    """Enter repair mode: nothing this socket does goes on the wire, and its state
    can be read and set."""
    sock.setsockopt(SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)


def off(sock: socket.socket, probe: bool = True) -> None:
    """Leave repair mode; with ``probe`` the kernel sends a window probe, which makes
    the peer answer with its window at once (and retransmit what we lack)."""
    sock.setsockopt(SOL_TCP, TCP_REPAIR, TCP_REPAIR_OFF if probe else TCP_REPAIR_OFF_NO_WP)


def _u32(sock: socket.socket, opt: int) -> int:
    return int(struct.unpack("=I", sock.getsockopt(SOL_TCP, opt, 4))[0])


def _ioctl(sock: socket.socket, req: int) -> int:
    return int(struct.unpack("=i", fcntl.ioctl(sock.fileno(), req, b"\0" * 4))[0])


_libc = ctypes.CDLL(None, use_errno=True)


def disconnect(sock: socket.socket) -> None:
    """connect(AF_UNSPEC): the connection is dropped; in repair mode without a packet
    (the socket is left closed, with ECONNABORTED pending)."""
    unspec = (ctypes.c_ubyte * 16)()
    if _libc.connect(sock.fileno(), unspec, 16) != 0:
        err = ctypes.get_errno()
        if err != errno.ENOTCONN:
            raise OSError(err, os.strerror(err))


def state(sock: socket.socket) -> int:
    """The kernel's TCP state (TCP_ESTABLISHED = 1, ...), from TCP_INFO."""
    return sock.getsockopt(SOL_TCP, socket.TCP_INFO, 8)[0]


@dataclass(frozen=True)
class Queue:
    """One queue in repair mode: ``seq`` is the sequence number after its end
    (write_seq for the send queue, rcv_nxt for the receive queue) and ``data`` its
    bytes; ``unsent`` (send queue only) how many of them never went out."""

    seq: int
    data: bytes
    unsent: int = 0


def read_queue(sock: socket.socket, which: int) -> Queue:
    """The send (SEND_QUEUE) or receive (RECV_QUEUE) queue of a socket in repair mode,
    read without consuming it."""
    sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, which)
    try:
        seq = _u32(sock, TCP_QUEUE_SEQ)
        size = _ioctl(sock, SIOCOUTQ if which == SEND_QUEUE else SIOCINQ)
        unsent = _ioctl(sock, SIOCOUTQNSD) if which == SEND_QUEUE else 0
        if which == SEND_QUEUE:
            data = _peek(sock, size)
        else:
            data = _peek_received(sock, size)
        return Queue(seq, data, unsent)
    finally:
        sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)


def peek_received(sock: socket.socket) -> bytes:
    """The bytes received and not read, peeked outside repair mode: the bytes a peek
    of RECV_QUEUE in repair mode gives (the same code and limits in the kernel), read
    while a write of the process, should ckpt die, could not be queued as received."""
    return _peek_received(sock, _ioctl(sock, SIOCINQ))


def _peek(sock: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes from the head of the selected queue, left in place."""
    if size <= 0:
        return b""
    try:
        return sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def _peek_received(sock: socket.socket, size: int) -> bytes:
    """Every byte received and not read, left in place. A peek (and SIOCINQ, ``size``)
    stops at the mark of urgent data (MSG_OOB) even once its byte was read out of
    band: the bytes after it are peeked from there on with SO_PEEK_OFF (Linux 6.9+),
    the byte itself left out as a read leaves it. The socket's own SO_PEEK_OFF is put
    back."""
    data = _peek(sock, size)
    try:
        saved = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, len(data))
    except OSError:  # no SO_PEEK_OFF for TCP in this kernel
        return data
    try:
        while True:
            try:
                more = sock.recv(CHUNK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not more:  # the peer's FIN
                break
            data += more
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved)
    return data


def queue_seq(sock: socket.socket, which: int) -> int:
    """The sequence number after the end of a queue of a socket in repair mode, that
    queue selected for these three calls only."""
    sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, which)
    try:
        return _u32(sock, TCP_QUEUE_SEQ)
    finally:
        sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)


def received_now(sock: socket.socket) -> int:
    """How many received bytes the socket holds unread (SIOCINQ), in or out of repair
    mode."""
    return _ioctl(sock, SIOCINQ)


def set_seq(sock: socket.socket, which: int, seq: int) -> None:
    """Where a queue of an unconnected socket in repair mode starts."""
    sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, which)
    try:
        sock.setsockopt(SOL_TCP, TCP_QUEUE_SEQ, struct.pack("=I", seq & 0xFFFFFFFF))
    finally:
        sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)


def fill_queue(sock: socket.socket, which: int, data: bytes) -> None:
    """Put ``data`` into a queue of a connected socket in repair mode: the receive
    queue as if received, the send queue as if sent and not yet acknowledged."""
    sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, which)
    try:
        view = memoryview(data)
        while view:
            n = sock.send(view[:CHUNK])
            if n <= 0:
                raise OSError(11, "the queue takes no more data")
            view = view[n:]
    finally:
        sock.setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, NO_QUEUE)


@dataclass(frozen=True)
class Options:
    """What the handshake negotiated."""

    mss: int
    snd_wscale: int | None  # None: no window scaling
    rcv_wscale: int | None
    sack: bool
    timestamps: bool


def read_options(sock: socket.socket) -> Options:
    info = sock.getsockopt(SOL_TCP, socket.TCP_INFO, 8)
    opts, wscale = info[5], info[6]
    scaled = bool(opts & TCPI_OPT_WSCALE)
    return Options(mss=sock.getsockopt(SOL_TCP, socket.TCP_MAXSEG),
                   snd_wscale=wscale & 0xF if scaled else None,
                   rcv_wscale=wscale >> 4 if scaled else None,
                   sack=bool(opts & TCPI_OPT_SACK), timestamps=bool(opts & TCPI_OPT_TIMESTAMPS))


def connect_with_mss(sock: socket.socket, mss: int, connect: Callable[[], None]) -> None:
    """Run ``connect`` (of ``sock`` in repair mode) so that the segment size the
    connection starts with comes from the peer's ``mss``: the kernel works it out at
    connect from the clamp it has then, and the MSS set later by ``set_options`` only
    moves the clamp. Without this a restored connection sent segments of 524 bytes
    (from the default clamp of 536) for the rest of its life, a loopback one too. The
    clamp goes in as the socket's own TCP_MAXSEG for the connect (at most 32767, all
    the kernel takes there: a loopback peer's 65495 gives segments of 32767 where they
    had 32768), then is taken off (0: none), as the process had none to be seen."""
    sock.setsockopt(SOL_TCP, socket.TCP_MAXSEG, min(mss, MAX_USER_MSS))
    try:
        connect()
    finally:
        sock.setsockopt(SOL_TCP, socket.TCP_MAXSEG, 0)


def set_options(sock: socket.socket, o: Options) -> None:
    """Set the negotiated options on a connected socket in repair mode."""
    pairs = [(TCPOPT_MSS, o.mss)]
    if o.snd_wscale is not None and o.rcv_wscale is not None:
        pairs.append((TCPOPT_WINDOW, o.snd_wscale | (o.rcv_wscale << 16)))
    if o.sack:
        pairs.append((TCPOPT_SACK_PERM, 0))
    if o.timestamps:
        pairs.append((TCPOPT_TIMESTAMP, 0))
    sock.setsockopt(SOL_TCP, TCP_REPAIR_OPTIONS, b"".join(struct.pack("=II", *p) for p in pairs))


def timestamp(sock: socket.socket) -> int:
    """The connection's current TCP timestamp clock (with its offset)."""
    return _u32(sock, TCP_TIMESTAMP)


def set_timestamp(sock: socket.socket, value: int) -> None:
    """Make the connection's timestamp clock go on from ``value``."""
    sock.setsockopt(SOL_TCP, TCP_TIMESTAMP, struct.pack("=I", value & 0xFFFFFFFF))


@dataclass(frozen=True)
class Window:
    """TCP_REPAIR_WINDOW: struct tcp_repair_window."""

    snd_wl1: int
    snd_wnd: int
    max_window: int
    rcv_wnd: int
    rcv_wup: int

    FORMAT = "=5I"


def read_window(sock: socket.socket) -> Window:
    return Window(*struct.unpack(Window.FORMAT, sock.getsockopt(SOL_TCP, TCP_REPAIR_WINDOW, 20)))


def set_window(sock: socket.socket, w: Window) -> None:
    sock.setsockopt(SOL_TCP, TCP_REPAIR_WINDOW,
                    struct.pack(Window.FORMAT, w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd,
                                w.rcv_wup))


# ------------------------------------------------------------------ raw segments


def on_the_wire(addr: str) -> tuple[int, str]:
    """(family, address) as packets carry it: an IPv4-mapped IPv6 address (an IPv6
    socket talking to an IPv4 peer) travels as IPv4."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return socket.AF_INET, str(ip.ipv4_mapped)
    return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), str(ip)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: TCP's, UDP's, ICMP's."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def segment(family: int, src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int,
            flags: int, window: int = 65535) -> bytes:
    """A TCP header without options, its checksum computed over the pseudo-header."""
    hdr = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, min(window, 0xFFFF), 0, 0)
    s, d = socket.inet_pton(family, src[0]), socket.inet_pton(family, dst[0])
    if family == socket.AF_INET:
        pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(hdr))
    else:
        pseudo = s + d + struct.pack("!I3xB", len(hdr), socket.IPPROTO_TCP)
    return hdr[:16] + struct.pack("!H", checksum(pseudo + hdr)) + hdr[18:]


def send_as_peer(src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int,
                 flags: int) -> None:
    """Send a TCP segment from ``src`` (a connection's peer, local or not) to ``dst``
    (our end, a local address), marked with ``PEER_MARK`` so that the network lock
    lets it through."""
    family, src_ip = on_the_wire(src[0])
    _, dst_ip = on_the_wire(dst[0])
    src, dst = (src_ip, src[1]), (dst_ip, dst[1])
    raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        if family == socket.AF_INET:
            raw.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)  # a source that is not ours
        else:
            raw.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        raw.setsockopt(socket.SOL_SOCKET, SO_MARK, PEER_MARK)
        raw.bind((src[0], 0))
        raw.sendto(segment(family, src, dst, seq, ack, flags), (dst[0], 0))
    finally:
        raw.close()
