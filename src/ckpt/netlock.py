"""The network lock: while a TCP connection is dumped and until it is restored, no
packet of it may pass, or the peer's retransmissions would meet a closed socket and
reset it, and the frozen socket would answer what it should not.

A lock is a set of netfilter rules dropping the packets of the given connections,
both ways, made with nftables (one table) or iptables (one chain, for IPv4 and IPv6),
all of it in one transaction and removed in one; packets ckpt sends itself (marked
``MARK``) pass. ``choose`` picks the backend that works here unless told which
(criu's ``--network-lock nftables|iptables|skip``) and says which it took. The
lock's name goes into the images: the dump takes it, the restore releases it, and
either releases it when it fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from .errors import CkptError
from .kernel.tcp_repair import PEER_MARK as MARK
from .kernel.tcp_repair import on_the_wire as _wire

log = logging.getLogger("ckpt.netlock")

BACKENDS = ("nftables", "iptables")
CHOICES = (*BACKENDS, "skip")
_TIMEOUT = 30.0


class LockError(CkptError):
    """The network could not be locked or unlocked."""


@dataclass(frozen=True)
class Conn:
    """One TCP connection as the lock sees it: our end and the peer's."""

    local: tuple[str, int]
    remote: tuple[str, int]

    def to_json(self) -> list[Any]:
        return [list(self.local), list(self.remote)]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Conn:
        return cls((str(raw[0][0]), int(raw[0][1])), (str(raw[1][0]), int(raw[1][1])))


def _run(argv: list[str], text: str = "") -> str | None:
    """Run a netfilter tool; None when it worked, else why not (one line)."""
    try:
        res = subprocess.run(argv, input=text, capture_output=True, text=True,
                             timeout=_TIMEOUT)
    except FileNotFoundError:
        return f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return f"{argv[0]} did not answer within {_TIMEOUT:.0f} s"
    except OSError as e:
        return f"cannot run {argv[0]}: {e.strerror}"
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        return f"{' '.join(argv)} failed: {lines[0] if lines else f'exit {res.returncode}'}"
    return None


# ------------------------------------------------------------------ nftables

def _nft_match(c: Conn, inbound: bool) -> str:
    fam, local = _wire(c.local[0])
    _, remote = _wire(c.remote[0])
    src, dst = (remote, local) if inbound else (local, remote)
    sport, dport = (c.remote[1], c.local[1]) if inbound else (c.local[1], c.remote[1])
    ip = "ip" if fam == socket.AF_INET else "ip6"
    return (f"{ip} saddr {src} {ip} daddr {dst} tcp sport {sport} tcp dport {dport} "
            f"meta mark != {MARK:#x} drop")


def _nft_lock(name: str, conns: list[Conn]) -> str | None:
    lines = [f"add table inet {name}",
             f"add chain inet {name} input {{ type filter hook input priority -300; }}",
             f"add chain inet {name} output {{ type filter hook output priority -300; }}"]
    for c in conns:
        lines.append(f"add rule inet {name} input {_nft_match(c, True)}")
        lines.append(f"add rule inet {name} output {_nft_match(c, False)}")
    return _run(["nft", "-f", "-"], "\n".join(lines) + "\n")


def _nft_unlock(name: str) -> str | None:
    # "destroy" needs nft 1.0.8; an add before the delete makes a missing table no error
    return _run(["nft", "-f", "-"], f"add table inet {name}\ndelete table inet {name}\n")


# ------------------------------------------------------------------ iptables

def _ipt_rule(chain: str, c: Conn, inbound: bool) -> str:
    _, local = _wire(c.local[0])
    _, remote = _wire(c.remote[0])
    src, dst = (remote, local) if inbound else (local, remote)
    sport, dport = (c.remote[1], c.local[1]) if inbound else (c.local[1], c.remote[1])
    return (f"-A {chain} -p tcp -s {src} -d {dst} --sport {sport} --dport {dport} "
            f"-m mark ! --mark {MARK:#x} -j DROP")


def _ipt_tools(fam: int) -> str:
    return "iptables-restore" if fam == socket.AF_INET else "ip6tables-restore"


def _ipt_lock(name: str, conns: list[Conn]) -> str | None:
    done: list[int] = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        mine = [c for c in conns if _wire(c.local[0])[0] == fam]
        if not mine and fam == socket.AF_INET6:
            continue
        rules = [_ipt_rule(name, c, True) for c in mine]
        rules += [_ipt_rule(name, c, False) for c in mine]
        text = "\n".join(["*filter", f":{name} - [0:0]", f"-I INPUT -j {name}",
                          f"-I OUTPUT -j {name}", *rules, "COMMIT", ""])
        err = _run([_ipt_tools(fam), "-w", "--noflush"], text)
        if err is not None:
            for f in done:
                _ipt_unlock_family(name, f)
            return err
        done.append(fam)
    return None


def _ipt_unlock_family(name: str, fam: int) -> str | None:
    tool = "iptables" if fam == socket.AF_INET else "ip6tables"
    if shutil.which(tool) is None:
        return None
    present = _run([tool, "-w", "-n", "-L", name]) is None
    if not present:
        return None
    text = "\n".join(["*filter", f"-D INPUT -j {name}", f"-D OUTPUT -j {name}",
                      f"-F {name}", f"-X {name}", "COMMIT", ""])
    return _run([_ipt_tools(fam), "-w", "--noflush"], text)


def _ipt_unlock(name: str) -> str | None:
    errors = [e for fam in (socket.AF_INET, socket.AF_INET6)
              if (e := _ipt_unlock_family(name, fam)) is not None]
    return errors[0] if errors else None


# ------------------------------------------------------------------ the interface

def probe(backend: str) -> str | None:
    """None if ``backend`` can lock the network here, else why not."""
    name = f"ckpt_probe_{os.getpid()}"
    if backend == "nftables":
        err = _nft_lock(name, [])
        if err is None:
            err = _nft_unlock(name)
        return err
    if backend == "iptables":
        chain = f"CKPT-PROBE-{os.getpid()}"
        err = _ipt_lock(chain, [])
        _ipt_unlock(chain)
        return err
    return None


def choose(wanted: str | None) -> str:
    """The backend to use: ``wanted`` if given (and working), else the first that
    works here. Says which it took."""
    if wanted == "skip":
        log.warning("network lock: skipped (--network-lock skip); packets reach the "
                    "connections while they are dumped and restored")
        return "skip"
    if wanted is not None:
        if wanted not in BACKENDS:
            raise LockError(f"--network-lock {wanted}: expected one of {', '.join(CHOICES)}")
        err = probe(wanted)
        if err is not None:
            raise LockError(f"network lock with {wanted} does not work here: {err}")
        log.warning("network lock: %s", wanted)
        return wanted
    why = []
    for backend in BACKENDS:
        err = probe(backend)
        if err is None:
            log.warning("network lock: %s (the first that works here)", backend)
            return backend
        why.append(f"{backend}: {err}")
    raise LockError("no network lock works here (" + "; ".join(why) + "); install Debian's "
                    "nftables or iptables package, or dump with --network-lock skip")


@dataclass
class Lock:
    """The rules that drop the packets of ``conns``, under ``name``."""

    backend: str
    name: str
    conns: list[Conn]
    held: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "name": self.name,
                "connections": [c.to_json() for c in self.conns]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Lock:
        backend, name = raw.get("backend"), raw.get("name")
        if backend not in CHOICES or not isinstance(name, str) or not name.isascii() \
                or not name.replace("_", "").replace("-", "").isalnum():
            raise LockError(f"the image names an invalid network lock: {raw!r}")
        return cls(backend, name, [Conn.from_json(c) for c in raw.get("connections", [])],
                   held=True)


def lock(conns: list[Conn], backend: str) -> Lock:
    """Drop every packet of ``conns`` from now on, until ``unlock``."""
    token = os.urandom(4).hex()
    lk = Lock(backend, f"ckpt_{token}" if backend == "nftables" else f"CKPT-{token}", conns)
    if backend == "skip" or not conns:
        return lk
    lk.held = True  # set first: an interrupted lock is undone too
    err = (_nft_lock if backend == "nftables" else _ipt_lock)(lk.name, conns)
    if err is not None:
        unlock(lk)
        raise LockError(f"cannot lock the network with {backend}: {err}")
    log.info("network locked with %s (%s): %d connection(s)", backend, lk.name, len(conns))
    return lk


def unlock(lk: Lock) -> None:
    """Remove the rules of ``lk``; gone already is fine."""
    if not lk.held or lk.backend == "skip":
        return
    err = (_nft_unlock if lk.backend == "nftables" else _ipt_unlock)(lk.name)
    if err is not None:
        raise LockError(f"cannot unlock the network ({lk.backend} {lk.name}): {err}")
    lk.held = False
    log.info("network unlocked (%s %s)", lk.backend, lk.name)
