"""Sockets with many options set, a classic BPF filter, and shut-down ends; on SIGUSR1
prints one line "STATE <json>": every option read back from inside, and what the
sockets do (which datagrams the filter lets through, what a send on a shut-down
socket says, what poll shows).

Sockets: a connected UDP pair on 127.0.0.1 (u4 has most options and a filter that
drops datagrams starting with "X", locked), an IPv6 UDP socket (V6ONLY, FREEBIND),
a TCP listener with keepalive settings, a UDP socket shut down for writing and one
shut down both ways, and a unix stream pair with options and a filter.
"""

import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import sys
import time

SOL_SOCKET = socket.SOL_SOCKET
SO_NO_CHECK, SO_PASSCRED, SO_PASSSEC, SO_BUF_LOCK = 11, 16, 34, 72
SO_ATTACH_FILTER, SO_LOCK_FILTER, SO_PEEK_OFF = 26, 44, 42
IP_FREEBIND, IPV6_FREEBIND = 15, 78

# A classic BPF program for both families' first payload byte: drop "X...", keep the rest.
# For UDP the filter sees the UDP header first (8 bytes); for unix stream the data.
def bpf(offset):
    insns = [
        (0x30, 0, 0, offset),        # ldb [offset]
        (0x15, 0, 1, ord("X")),      # jeq #'X', drop, keep
        (0x06, 0, 0, 0),             # ret #0
        (0x06, 0, 0, 0xFFFF),        # ret #0xffff
    ]
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


_keep = []


def attach(sock, prog):
    buf = ctypes.create_string_buffer(prog, len(prog))
    _keep.append(buf)
    sock.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("=H6xQ", len(prog) // 8, ctypes.addressof(buf)))


def get_filter_len(sock):
    libc = ctypes.CDLL(None, use_errno=True)
    n = ctypes.c_uint32(0)
    if libc.getsockopt(sock.fileno(), SOL_SOCKET, SO_ATTACH_FILTER, None, ctypes.byref(n)):
        return -ctypes.get_errno()
    return n.value


u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u4.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)  # sets the priority too: first
for opt, val in ((SO_NO_CHECK, 1), (socket.SO_PRIORITY, 5), (socket.SO_MARK, 7),
                 (socket.SO_KEEPALIVE, 1), (socket.SO_REUSEADDR, 1), (socket.SO_REUSEPORT, 1),
                 (socket.SO_RCVLOWAT, 1), (socket.SO_SNDBUF, 65536), (socket.SO_RCVBUF, 90000)):
    u4.setsockopt(SOL_SOCKET, opt, val)
u4.setsockopt(SOL_SOCKET, SO_BUF_LOCK, 1)  # the send size locked, not the receive size
u4.setsockopt(SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("=qq", 1, 500000))
u4.setsockopt(SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("=qq", 2, 250000))
u4.setsockopt(SOL_SOCKET, socket.SO_LINGER, struct.pack("=ii", 1, 3))
u4.setsockopt(SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
u4.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
u4.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 9)
u4.bind(("127.0.0.1", 0))
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
peer.bind(("127.0.0.1", 0))
u4.connect(peer.getsockname())
peer.connect(u4.getsockname())
attach(u4, bpf(8))
u4.setsockopt(SOL_SOCKET, SO_LOCK_FILTER, 1)

u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
u6.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 17)
u6.bind(("::1", 0))

tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(SOL_SOCKET, socket.SO_KEEPALIVE, 1)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 33)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 7)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
tcp.setsockopt(SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", 0))
tcp.listen(5)

shut_wr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
shut_wr.connect(peer.getsockname())
shut_wr.shutdown(socket.SHUT_WR)
shut_rdwr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
shut_rdwr.connect(peer.getsockname())
shut_rdwr.shutdown(socket.SHUT_RDWR)

ua, ub = socket.socketpair()
ua.setsockopt(SOL_SOCKET, SO_PASSCRED, 1)
ua.setsockopt(SOL_SOCKET, SO_PASSSEC, 1)
ua.setsockopt(SOL_SOCKET, socket.SO_RCVLOWAT, 2)
ua.setsockopt(SOL_SOCKET, socket.SO_PRIORITY, 3)
ua.setsockopt(SOL_SOCKET, SO_PEEK_OFF, 0)
attach(ua, bpf(0))

SOCKS = {"u4": u4, "u6": u6, "tcp": tcp, "shut_wr": shut_wr, "shut_rdwr": shut_rdwr,
         "ua": ua}
READ = {
    "SO_NO_CHECK": (SOL_SOCKET, SO_NO_CHECK, 0), "SO_PRIORITY": (SOL_SOCKET, 12, 0),
    "SO_MARK": (SOL_SOCKET, 36, 0), "SO_KEEPALIVE": (SOL_SOCKET, 9, 0),
    "SO_REUSEADDR": (SOL_SOCKET, 2, 0), "SO_REUSEPORT": (SOL_SOCKET, 15, 0),
    "SO_RCVLOWAT": (SOL_SOCKET, 18, 0), "SO_SNDBUF": (SOL_SOCKET, 7, 0),
    "SO_RCVBUF": (SOL_SOCKET, 8, 0), "SO_BUF_LOCK": (SOL_SOCKET, SO_BUF_LOCK, 0),
    "SO_PASSCRED": (SOL_SOCKET, SO_PASSCRED, 0), "SO_PASSSEC": (SOL_SOCKET, SO_PASSSEC, 0),
    "SO_RCVTIMEO": (SOL_SOCKET, 20, 16), "SO_SNDTIMEO": (SOL_SOCKET, 21, 16),
    "SO_LINGER": (SOL_SOCKET, 13, 8), "SO_BINDTODEVICE": (SOL_SOCKET, 25, 16),
    "SO_LOCK_FILTER": (SOL_SOCKET, SO_LOCK_FILTER, 0), "SO_PEEK_OFF": (SOL_SOCKET, 42, 0),
    "IP_FREEBIND": (socket.IPPROTO_IP, IP_FREEBIND, 0), "IP_TOS": (socket.IPPROTO_IP, 1, 0),
    "IP_TTL": (socket.IPPROTO_IP, 2, 0),
    "IPV6_V6ONLY": (socket.IPPROTO_IPV6, 26, 0), "IPV6_FREEBIND": (socket.IPPROTO_IPV6, 78, 0),
    "IPV6_UNICAST_HOPS": (socket.IPPROTO_IPV6, 16, 0),
    "TCP_KEEPIDLE": (socket.IPPROTO_TCP, 4, 0), "TCP_KEEPINTVL": (socket.IPPROTO_TCP, 5, 0),
    "TCP_KEEPCNT": (socket.IPPROTO_TCP, 6, 0), "TCP_NODELAY": (socket.IPPROTO_TCP, 1, 0),
}


def options(sock):
    out = {}
    for name, (level, opt, size) in READ.items():
        try:
            v = sock.getsockopt(level, opt, size) if size else sock.getsockopt(level, opt)
            out[name] = v.hex() if isinstance(v, bytes) else v
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
    out["filter_len"] = get_filter_len(sock)
    out["name"] = repr(sock.getsockname())
    return out


def send_result(sock):
    try:
        sock.send(b"probe")
        return "sent"
    except OSError as e:
        return errno.errorcode[e.errno]


def poll_flags(sock):
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLOUT | select.POLLRDHUP)
    return sorted(name for name in ("POLLIN", "POLLOUT", "POLLHUP", "POLLRDHUP")
                  if p.poll(0) and p.poll(0)[0][1] & getattr(select, name))


def received(sock, n_sent):
    got = []
    sock.setblocking(False)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and len(got) < n_sent:
        try:
            got.append(sock.recv(100).decode())
        except BlockingIOError:
            time.sleep(0.01)
    sock.setblocking(True)
    return got


round_no = [0]


def report(*_):
    round_no[0] += 1
    state = {name: options(s) for name, s in SOCKS.items()}
    # The filters at work: "X" datagrams (and stream bytes) are dropped.
    peer.send(b"Xdrop")
    peer.send(b"keep")
    state["u4_got"] = received(u4, 1)
    ub.send(b"Xdrop")
    ub.send(b"ok")
    ua.setblocking(False)
    time.sleep(0.05)
    try:
        state["ua_got"] = ua.recv(100).decode()
    except BlockingIOError:
        state["ua_got"] = None
    ua.setblocking(True)
    state["u4_sends"] = send_result(u4)
    state["u4_peer_got"] = received(peer, 1)
    state["shut_wr_sends"] = send_result(shut_wr)
    state["shut_rdwr_sends"] = send_result(shut_rdwr)
    state["shut_wr_poll"] = poll_flags(shut_wr)
    state["shut_rdwr_poll"] = poll_flags(shut_rdwr)
    print("STATE " + json.dumps(state, sort_keys=True), flush=True)


signal.signal(signal.SIGUSR1, report)
print(f"ready {os.getpid()}", flush=True)
while True:
    time.sleep(0.05)
    sys.stdout.flush()
