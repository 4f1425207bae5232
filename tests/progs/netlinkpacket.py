"""A netlink (rtnetlink) socket bound to the IPv4 address group, with NETLINK_EXT_ACK,
and an AF_PACKET socket for ethertype 0x88b5 on lo, with PACKET_AUXDATA and a
promiscuous membership. Prints "ready"; on SIGUSR1 prints the netlink socket's port
id and groups, its option, the events it got (addresses added), the answer to an
RTM_GETLINK request; the packet socket's name and option, and a frame it receives
from another packet socket; then "END"."""

import signal
import socket
import struct
import time

RTMGRP_IPV4_IFADDR, NETLINK_EXT_ACK = 0x10, 11
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR = 16, 18, 20
ETH_P = 0x88B5
nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
nl.setsockopt(270, NETLINK_EXT_ACK, 1)
nl.bind((0, RTMGRP_IPV4_IFADDR))
pk = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P))
pk.bind(("lo", ETH_P))
pk.setsockopt(263, 8, 1)  # PACKET_AUXDATA
pk.setsockopt(263, 1, struct.pack("=iHH8s", socket.if_nametoindex("lo"), 1, 0, b""))


def messages(data):
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        yield mtype
        off += (length + 3) & ~3


def report(*_):
    print(f"netlink {nl.getsockname()} ext_ack {nl.getsockopt(270, NETLINK_EXT_ACK)}",
          flush=True)
    events = []
    while True:
        try:
            events += [m for m in messages(nl.recv(65536, socket.MSG_DONTWAIT))]
        except (BlockingIOError, TimeoutError):
            break
    print(f"netlink events {events}", flush=True)
    req = struct.pack("=IHHII", 32, RTM_GETLINK, 1, 7, 0) + struct.pack(
        "=BxHiII", socket.AF_UNSPEC, 0, socket.if_nametoindex("lo"), 0, 0)
    nl.sendto(req, (0, 0))
    nl.settimeout(5)
    print(f"netlink answer {list(messages(nl.recv(65536)))}", flush=True)
    print(f"packet {pk.getsockname()[:2]} auxdata {pk.getsockopt(263, 8)}", flush=True)
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P)) as out:
        out.sendto(b"frame!", ("lo", ETH_P, 0, 0, b"\0" * 6))
    pk.settimeout(5)
    print(f"packet got {pk.recv(100)[:6].decode()}", flush=True)
    print("END", flush=True)


signal.signal(signal.SIGUSR1, report)
print("ready", flush=True)
while True:
    time.sleep(0.05)
