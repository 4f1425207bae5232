"""What the TCP tests share: the network lock as the images name it, a redis-server
with a tiny RESP client, a peer that stops answering (a test-made nftables table),
and network namespaces joined by a veth pair (made and removed by the tests)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ckpt_helpers import Proc, Procs, free_port, scaled, wait_until


def need(*tools: str) -> None:
    """Skip, saying why, when a tool the setup installs is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/bootstrap.sh installs it as root)")


def lock_of(images: Path) -> dict[str, object] | None:
    """The network lock the dump left held, as its inventory names it."""
    lock = json.loads((images / "inventory.json").read_text()).get("network_lock")
    assert lock is None or isinstance(lock, dict)
    return lock


def lock_present(lock: dict[str, object], ns: Netns | None = None) -> bool:
    """Whether the rules of ``lock`` are in the kernel (of network namespace ``ns``)."""
    name = str(lock["name"])
    if lock["backend"] == "nftables":
        return table_present(name, ns)
    res = subprocess.run(["iptables", "-w", "-n", "-L", name], capture_output=True)
    return res.returncode == 0


def ckpt_tables(pid: int) -> set[str]:
    """The nftables tables and iptables chains of the locks ckpt took to dump the tree
    of ``pid`` (their names carry it), present now. Other dumps' locks (other tests
    running at the same time) are not counted."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    found = set(re.findall(rf"table inet (ckpt_{pid}_[0-9a-f]{{8}})\b", out))
    if shutil.which("iptables"):
        out = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
        found |= set(re.findall(rf"-N (CKPT-{pid}-[0-9a-f]{{8}})\b", out))
    return found


def table_present(name: str, ns: Netns | None = None) -> bool:
    """Whether nftables table ``name`` (inet) exists (in network namespace ``ns``)."""
    argv = ["nft", "list", "table", "inet", name]
    return subprocess.run(ns.enter_argv(argv) if ns else argv,
                          capture_output=True).returncode == 0


def lock_drops(name: str, ns: Netns | None = None) -> int:
    """How many packets coming in the nftables lock ``name`` dropped so far."""
    argv = ["nft", "list", "chain", "inet", name, "input"]
    out = subprocess.run(ns.enter_argv(argv) if ns else argv, capture_output=True,
                         text=True, check=True).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


# ------------------------------------------------------------------ redis


def start_redis(procs: Procs, tmp_path: Path) -> tuple[Proc, int]:
    """redis-server on 127.0.0.1, no persistence; a free port (``free_port``), again with
    another if it was taken meanwhile."""
    need("redis-server")
    for attempt in range(5):
        port = free_port()
        work = tmp_path / f"redis{attempt}"
        work.mkdir()
        proc = procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", str(work),
                            "--protected-mode", "no"], name=f"redis{attempt}")

        def state(proc: Proc = proc) -> str | None:
            text = "\n".join(proc.out.lines())
            if "Ready to accept connections" in text:
                return "ready"
            if proc.popen is not None and proc.popen.poll() is not None:
                return "exited"
            return None

        if wait_until(state, 20, "redis-server to start") == "ready":
            return proc, port
        if "Address already in use" not in "\n".join(proc.out.lines()):
            raise AssertionError("redis-server failed:\n" + "\n".join(proc.out.lines()))
    raise AssertionError("no free port for redis-server after 5 tries")


def resp(*args: str | bytes) -> bytes:
    """One command in redis's protocol."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespReader:
    """Replies read off one connection, in order."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()  # grows in place: bytes += made reading 50 MB quadratic

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise AssertionError("redis closed the connection")
            self.buf += chunk
        end = self.buf.index(b"\r\n")
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    def reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise AssertionError("redis closed the connection")
                self.buf += chunk
            data = self.buf[:n].decode()
            del self.buf[:n + 2]
            return data
        raise AssertionError(f"unexpected reply {line!r}")


# ------------------------------------------------------------------ a quiet peer


@contextmanager
def dropped(local: tuple[str, int], peer: tuple[str, int]) -> Iterator[None]:
    """Packets from ``local`` to ``peer`` vanish (as if the peer's host went quiet) until
    the block ends: a table of the test's own, removed after."""
    need("nft")
    name = f"ckpttest_{os.urandom(4).hex()}"
    ip = "ip6" if ":" in local[0] else "ip"
    rules = (f"add table inet {name}\n"
             f"add chain inet {name} out {{ type filter hook output priority 0; }}\n"
             f"add rule inet {name} out {ip} saddr {local[0]} {ip} daddr {peer[0]} "
             f"tcp sport {local[1]} tcp dport {peer[1]} drop\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", name], check=True)


# ------------------------------------------------------------------ network namespaces


class Netns:
    """A network namespace joined to this one by a veth pair, with link-local
    addresses (169.254.N.1 here, .2 there): made by the test, removed after."""

    def __init__(self) -> None:
        need("ip")
        tag = os.urandom(3).hex()
        self.name = f"ckpt-t-{tag}"
        self.here_dev, self.there_dev = f"ckh{tag}", f"ckt{tag}"
        octet = int(tag[:2], 16) % 250 + 2
        self.here, self.there = f"169.254.{octet}.1", f"169.254.{octet}.2"
        self._made = False

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True,
                       timeout=scaled(30))

    def __enter__(self) -> Netns:
        self._ip("netns", "add", self.name)
        self._made = True
        self._ip("link", "add", self.here_dev, "type", "veth", "peer", "name", self.there_dev)
        self._ip("link", "set", self.there_dev, "netns", self.name)
        self._ip("addr", "add", f"{self.here}/30", "dev", self.here_dev)
        self._ip("link", "set", self.here_dev, "up")
        self.run_ip("addr", "add", f"{self.there}/30", "dev", self.there_dev)
        self.run_ip("link", "set", self.there_dev, "up")
        self.run_ip("link", "set", "lo", "up")
        return self

    def run_ip(self, *args: str) -> None:
        self._ip("-n", self.name, *args)

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def enter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run in the namespace's network only (``ip netns exec`` gives each
        command a mount namespace of its own too: ckpt and its target must share one)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", *argv]

    def holds(self, pid: int) -> bool:
        """Whether process ``pid`` is in this network namespace."""
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{self.name}").st_ino

    def quiet(self, on: bool) -> None:
        """The far host stops answering (its end of the veth down), or comes back."""
        self.run_ip("link", "set", self.there_dev, "down" if on else "up")

    def __exit__(self, *exc: object) -> None:
        if not self._made:
            return
        subprocess.run(["ip", "link", "del", self.here_dev], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
