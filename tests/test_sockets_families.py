"""Raw and ICMP (ping) sockets, netlink and packet sockets: restored and used from
inside the process, or refused naming the process. The tests run the target and
ckpt in a network namespace of their own (made and removed by the test), where
ping sockets are allowed and no other traffic reaches the loopback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt.kernel import libc
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Proc,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    dump_and_check_dead,
    is_alive,
    proc_ppid,
    proc_status,
    restore_detached,
    scaled,
    signal_report,
)


@pytest.fixture
def netns() -> Iterator[str]:
    for tool in ("ip", "nsenter", "sysctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (iproute2, util-linux, procps)")
    name = f"ckpt-sk-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True,
                   timeout=scaled(10))
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True,
                           capture_output=True, timeout=scaled(10))
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=scaled(10))


def _in(ns: str, argv: list[str | os.PathLike[str]]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *map(os.fspath, argv)]


def _ckpt(ns: str, *args: str | int | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_in(ns, [*ckpt_cmd(), *map(str, args)]), capture_output=True,
                          text=True, timeout=scaled(60), stdin=subprocess.DEVNULL)


def _dump_restore(procs: Procs, ns: str, target: Proc, images: Path) -> Proc:
    res = _ckpt(ns, "dump", "-t", target.pid, "-D", images)
    assert res.returncode == 0, res.stderr
    procs.wait_gone(target)
    res = _ckpt(ns, "restore", "-d", "-D", images)
    assert res.returncode == 0, res.stderr
    assert is_alive(target.pid) and proc_ppid(target.pid) == os.getpid()
    return procs.adopt(target.pid, target.out)


def test_raw_and_ping_sockets(procs: Procs, images: Path, netns: str) -> None:
    target = procs.start(_in(netns, [PYTHON, PROGS / "rawping.py"]))
    target.out.wait_line(r"^ready")
    before = signal_report(target)
    assert "icmp4 filter ffdfffff" in before and "icmp4 empty" in before, before
    assert "raw4 got to-myself" in before, before
    restored = _dump_restore(procs, netns, target, images)
    assert signal_report(restored) == before


def test_netlink_socket_never_bound(build: Builder, procs: Procs, images: Path) -> None:
    """An rtnetlink socket made and never bound (as dbus-daemon's audit socket), which
    sock_diag does not list: restored as a netlink socket of the same protocol, still
    unbound (no port id taken)."""
    target = procs.start([build("holdfd"), "netlink"])
    fd = int(target.out.wait_line(r"^ready ").split()[1])
    target.out.wait_numbers(3)
    nums = dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    with socket.socket(fileno=libc.pidfd_getfd(restored.pidfd, fd)) as sock:
        assert (sock.family, sock.proto) == (socket.AF_NETLINK, 0)  # NETLINK_ROUTE
        assert sock.getsockname() == (0, 0), "bound at restore"
    target.out.wait_numbers(len(nums) + 3)
    assert_consecutive(target.out.numbers())


def test_netlink_and_packet_sockets(procs: Procs, images: Path, netns: str) -> None:
    """The rtnetlink socket keeps its port id and group (an address added after the
    restore reaches it) and answers; the packet socket gets frames on lo."""
    target = procs.start(_in(netns, [PYTHON, PROGS / "netlinkpacket.py"]))
    target.out.wait_line(r"^ready")
    before = signal_report(target)
    assert "netlink events []" in before and "packet got frame!" in before, before
    restored = _dump_restore(procs, netns, target, images)
    subprocess.run(["ip", "-n", netns, "addr", "add", "127.0.0.77/8", "dev", "lo"],
                   check=True, capture_output=True, timeout=scaled(10))
    after = signal_report(restored)
    assert after == [ln.replace("events []", "events [20]") for ln in before], after


REFUSED = {
    "netlink-queued": (
        "import socket, time\n"
        "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)\n"
        "s.bind((0, 0x10))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n",
        r"fd \d+ \(netlink protocol 0 socket:\[\d+\]\): messages queued for reading"),
    "packet-ring": (
        "import socket, struct, time\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))\n"
        "s.setsockopt(263, 5, struct.pack('=IIII', 4096, 4, 2048, 8))  # PACKET_RX_RING\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n",
        r"fd \d+ \(packet socket:\[\d+\]\): has a ring \(PACKET_RX_RING or PACKET_TX_RING\)"),
}


@pytest.mark.parametrize("mode", sorted(REFUSED))
def test_refused_families(procs: Procs, images: Path, netns: str, mode: str) -> None:
    """Refused naming the process and fd; the process runs on, untouched."""
    code, message = REFUSED[mode]
    target = procs.start(_in(netns, [PYTHON, "-c", code]))
    target.out.wait_line(r"^ready")
    if mode == "netlink-queued":  # an event it has not read
        subprocess.run(["ip", "-n", netns, "addr", "add", "127.0.0.78/8", "dev", "lo"],
                       check=True, capture_output=True, timeout=scaled(10))
    res = _ckpt(netns, "dump", "-t", target.pid, "-D", images)
    assert res.returncode == 1 and re.search(rf"process {target.pid} {message}", res.stderr), \
        res.stderr
    assert is_alive(target.pid) and proc_status(target.pid)["TracerPid"] == "0"
    assert not (images / "inventory.json").exists()


SLOW_READER = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
s.setblocking(False)
print('ready', flush=True)
n = 0
while True:
    time.sleep(0.8)  # packets wait in the queue meanwhile
    try:
        while True:
            n += len(s.recv(100))
            print('got', n, flush=True)
    except BlockingIOError:
        pass
"""


def test_raw_socket_with_packets_read_a_moment_later(procs: Procs, images: Path,
                                                     netns: str) -> None:
    """A raw socket with a packet queued at the dump, which its process reads a moment
    later (squid's pinger sees every ICMPv6 message of the host): the dump, refused
    for it, is tried again once the process read it, and the restored socket gets
    the packets sent after."""
    target = procs.start(_in(netns, [PYTHON, "-c", SLOW_READER]))
    target.out.wait_line(r"^ready")

    def send(payload: bytes) -> None:
        subprocess.run(_in(netns, [PYTHON, "-c", (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253); "
            f"s.sendto({payload!r}, ('127.0.0.1', 0))")]), check=True, timeout=scaled(10))

    send(b"x" * 10)
    res = _ckpt(netns, "dump", "-t", target.pid, "-D", images)
    assert res.returncode == 0, res.stderr
    procs.wait_gone(target)
    assert target.out.lines()[-1] == "got 30", target.out.lines()  # IP header + 10
    restored = subprocess.run(_in(netns, [*ckpt_cmd(), "restore", "-D", images, "-d"]),
                              capture_output=True, text=True, timeout=scaled(60))
    assert restored.returncode == 0, restored.stderr
    procs.adopt(target.pid, target.out)
    send(b"y" * 20)
    target.out.wait_line(r"^got 70$")
