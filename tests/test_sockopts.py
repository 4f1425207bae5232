"""Socket options, filters and shutdown come back as they were, read from inside the
restored process: buffer sizes and their locks, timeouts, linger, priority, mark,
keepalive (and TCP's keepalive settings), SO_BINDTODEVICE, FREEBIND, V6ONLY, reuse
flags, SO_PASSCRED/SO_PASSSEC, rcvlowat, SO_NO_CHECK; a classic BPF filter (still
dropping what it dropped) and its lock; UDP sockets shut down for writing or both
ways still refuse to send; sockets bound to an address gone at restore."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Proc,
    Procs,
    ckpt_ok,
    restore_detached,
    scaled,
    signal_report,
    wait_until,
)


def _state(proc: Proc) -> dict[str, Any]:
    start = len(proc.out.lines())
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
    line = proc.out.wait_line(r"^STATE ", start=start)
    return json.loads(line[len("STATE "):])


def test_options_filters_and_shutdown(procs: Procs, images: Path) -> None:
    target = procs.start([PYTHON, PROGS / "sockopts.py"])
    target.out.wait_line(r"^ready ")
    before = _state(target)
    # what the program set is what it reads (so the comparison below means something)
    u4 = before["u4"]
    assert (u4["SO_NO_CHECK"], u4["SO_PRIORITY"], u4["SO_MARK"], u4["SO_BUF_LOCK"]) == (1, 5, 7, 1)
    assert u4["filter_len"] == 4 and u4["SO_LOCK_FILTER"] == 1 and u4["IP_FREEBIND"] == 1
    assert before["u6"]["IPV6_V6ONLY"] == 1 and before["tcp"]["TCP_KEEPIDLE"] == 33
    assert before["u4_got"] == ["keep"], "the filter should drop the X datagram"
    assert before["shut_wr_sends"] == before["shut_rdwr_sends"] == "EPIPE"
    assert "POLLHUP" in before["shut_rdwr_poll"]

    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    restored = restore_detached(procs, target.pid, target.out, images)
    after = _state(restored)
    for name in before:
        assert after[name] == before[name], (name, before[name], after[name])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=scaled(10))


def test_bound_to_an_address_gone_since(procs: Procs, images: Path) -> None:
    """Sockets bound to an IPv6 address that is gone at restore are bound again with
    IPV6_FREEBIND (their own setting put back), and receive once it is back."""
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) is not installed")
    addr = f"2001:db8:c4:{os.getpid() & 0xFFFF:x}::1"
    _ip("-6", "addr", "add", f"{addr}/128", "dev", "lo", "nodad")
    try:
        target = procs.start([PYTHON, PROGS / "bindaddr.py", addr])
        target.out.wait_line(r"^ready")
        before = _state(target)
        assert before["udp"][0] == addr and before["freebind"] == [0, 0]
        ckpt_ok("dump", "-t", target.pid, "-D", images)
        procs.wait_gone(target)
        _ip("-6", "addr", "del", f"{addr}/128", "dev", "lo")
        restored = restore_detached(procs, target.pid, target.out, images)
        assert _state(restored) == before
        _ip("-6", "addr", "add", f"{addr}/128", "dev", "lo", "nodad")

        def arrived() -> list[str]:
            # sent again until one arrives: the address may take a moment to be usable
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.sendto(b"hello", (addr, before["udp"][1]))
            return _state(restored)["got"]

        got = wait_until(arrived, 10, "a datagram to arrive")
        assert set(got) == {"hello"}
    finally:
        subprocess.run(["ip", "-6", "addr", "del", f"{addr}/128", "dev", "lo"],
                       capture_output=True, timeout=scaled(10))


def _send(family: int, proto: int, data: bytes, to: tuple[str, int],
          ttl: int | None = None) -> str:
    """Send one datagram from a new socket, closed after; its address as host:port."""
    with socket.socket(family, socket.SOCK_DGRAM, proto) as s:
        if ttl is not None:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        s.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
        s.sendto(data, to)
        host, port = s.getsockname()[:2]
        return f"{host}:{port}"


def test_udp_queues(procs: Procs, images: Path) -> None:
    """Datagrams queued on UDP and UDP-Lite sockets come back in order, each from its
    sender's address and port, to the address it was sent to, with its TTL; from
    senders gone since, from a socket of the tree, empty ones, IPv4 on a dual-stack
    IPv6 socket, on a connected socket from its peer."""
    target = procs.start([PYTHON, PROGS / "udpqueue.py"])
    _, u4, u6, lite, inner, peer = target.out.wait_line(r"^ready ").split()
    v4, v6 = socket.AF_INET, socket.AF_INET6
    udp, udplite = socket.IPPROTO_UDP, 136
    a = _send(v4, udp, b"one", ("127.0.0.1", int(u4)), ttl=33)
    b = _send(v4, udp, b"", ("127.0.0.2", int(u4)))
    c = _send(v4, udp, b"three", ("127.0.0.1", int(u4)))
    d = _send(v6, udp, b"six", ("::1", int(u6)))
    e = _send(v4, udp, b"mapped", ("127.0.0.1", int(u6)))
    f = _send(v4, udplite, b"lite", ("127.0.0.1", int(lite)))
    expected = [
        f"GOT u4 from-inner 127.0.0.1:{inner} 127.0.0.1 64",
        f"GOT u4 one {a} 127.0.0.1 33", f"GOT u4 (empty) {b} 127.0.0.2 64",
        f"GOT u4 three {c} 127.0.0.1 64", f"GOT u6 six {d} ::1 -",
        f"GOT u6 mapped ::ffff:{e} ::ffff:127.0.0.1 -", f"GOT lite lite {f} - -",
        f"GOT conn c1 127.0.0.1:{peer} - -", f"GOT conn c2 127.0.0.1:{peer} - -"]
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert signal_report(restored) == expected
