"""Binds a UDP socket and a TCP listener to ADDR (IPv6) without IPV6_FREEBIND; on
SIGUSR1 prints "STATE <json>": their names, their IPV6_FREEBIND, and the datagrams
that reached the UDP socket."""

import json
import signal
import socket
import sys
import time

IPV6_FREEBIND = 78
addr = sys.argv[1]
udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp.bind((addr, 0))
tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
tcp.bind((addr, 0))
tcp.listen(4)
udp.setblocking(False)


def report(*_):
    got = []
    while True:
        try:
            got.append(udp.recv(100).decode())
        except BlockingIOError:
            break
    state = {"udp": list(udp.getsockname()[:2]), "tcp": list(tcp.getsockname()[:2]),
             "freebind": [s.getsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND) for s in (udp, tcp)],
             "got": got}
    print("STATE " + json.dumps(state), flush=True)


signal.signal(signal.SIGUSR1, report)
print("ready", flush=True)
while True:
    time.sleep(0.05)
