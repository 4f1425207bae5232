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

Each lock has a note, ``/run/ckpt/netlock/NAME.json``, written before its rules:
the rules' name, the images folder, and the sockets it locks (process, start time,
fd, inode, SO_REUSEADDR). The dump holds the note locked (flock) while it runs. A
ckpt killed mid-dump leaves rules that would cut the connections of a tree that
runs on, and maybe a socket in repair mode (which sends nothing): ``recover``,
which every dump and restore runs first, finds such a note unlocked with a locked
socket still open in its process, takes the socket out of repair mode and removes
the rules. A lock whose sockets are gone was left by a dump that killed its
processes: it is kept for their restore, which removes it and its note.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from .errors import CkptError
from .kernel import libc, procfs
from .kernel.record import asdict, dataclass, field
from .log import logger
from .recovery import netlock_dir as notes_dir
from .recovery import wait_for_recoverer
from .schema import U16, List, Obj, Str, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

log = logger("ckpt.netlock")

BACKENDS = ("nftables", "iptables")
CHOICES = (*BACKENDS, "skip")
_TIMEOUT = 30.0

_END = Tup(Str(64, pattern="[0-9a-fA-F.:%a-z]+"), U16)  # [host, port]
# The inventory's network_lock: what ``Lock.to_json`` writes.
SCHEMA = Obj(backend=Str(choices=CHOICES),
             name=Str(64, pattern="ckpt_[0-9a-z_]+|CKPT-[0-9A-Za-z-]+"),
             connections=List(Tup(_END, _END)))


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


def _wire(host: str) -> tuple[int, str]:
    from .kernel.tcp_repair import on_the_wire  # here: only locking needs it
    return on_the_wire(host)


def _mark() -> int:
    """The mark of the packets ckpt sends itself, which the lock lets pass."""
    from .kernel.tcp_repair import PEER_MARK
    return PEER_MARK


def _run(argv: list[str], text: str = "") -> str | None:
    import subprocess  # here: a command that finds no lock to undo runs no tool
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
            f"meta mark != {_mark():#x} counter drop")


def _nft_lock(name: str, conns: list[Conn], check: bool = False) -> str | None:
    """Add table ``name`` dropping the packets of ``conns``; with ``check``, only see
    whether the kernel would take it (nft -c: the kernel checks the batch, then drops
    it): nothing is made."""
    lines = [f"add table inet {name}",
             f"add chain inet {name} input {{ type filter hook input priority -300; }}",
             f"add chain inet {name} output {{ type filter hook output priority -300; }}"]
    for c in conns:
        lines.append(f"add rule inet {name} input {_nft_match(c, True)}")
        lines.append(f"add rule inet {name} output {_nft_match(c, False)}")
    return _run(["nft", *(["-c"] if check else []), "-f", "-"], "\n".join(lines) + "\n")


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
            f"-m mark ! --mark {_mark():#x} -j DROP")


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
    import shutil

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
    if backend == "nftables":  # checked only: a ckpt killed meanwhile leaves no table
        return _nft_lock(name, [], check=True)
    if backend == "iptables":
        chain = f"CKPT-PROBE-{os.getpid()}"
        try:
            return _ipt_lock(chain, [])
        finally:  # an interrupted probe's chain too
            _ipt_unlock(chain)
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


@dataclass(frozen=True)
class Holder:
    """A socket a lock locks, in the process that holds it: enough to find it again
    (a reused PID or fd number is not it) and to give it back as it was."""

    pid: int
    start: int  # the process's start time (/proc/PID/stat)
    fd: int
    inode: int
    reuse: int  # its SO_REUSEADDR (repair mode changes it)

    @classmethod
    def of(cls, pid: int, fd: int, inode: int) -> Holder:
        """The holder of socket ``inode`` at ``pid``'s fd ``fd``, as it is now."""
        with _socket_of(pid, fd) as sock:
            reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        return cls(pid, procfs.stat(pid).start_time, fd, inode, reuse)

    def still_open(self) -> bool:
        """Whether the process still runs and holds the socket at that fd."""
        try:
            return (procfs.stat(self.pid).start_time == self.start
                    and procfs.fd_link(self.pid, self.fd) == f"socket:[{self.inode}]")
        except (OSError, procfs.ProcessGone):
            return False


def _socket_of(pid: int, fd: int) -> socket.socket:
    """ckpt's own copy of ``pid``'s fd ``fd`` (a socket)."""
    pidfd = libc.pidfd_open(pid)
    try:
        return socket.socket(fileno=libc.pidfd_getfd(pidfd, fd))
    finally:
        os.close(pidfd)


@dataclass
class Lock:
    """The rules that drop the packets of ``conns``, under ``name``."""

    backend: str
    name: str
    conns: list[Conn]
    held: bool = False
    holders: list[Holder] = field(default_factory=list)
    note_fd: int = -1  # the note, flocked while the dump that took the lock runs

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


def lock_name(backend: str, tag: int) -> str:
    """A new lock's name: ckpt's prefix, ``tag`` (the dumped tree's root PID: a dump's
    lock is found by it) and a random part."""
    token = os.urandom(4).hex()
    return f"ckpt_{tag}_{token}" if backend == "nftables" else f"CKPT-{tag}-{token}"


def lock(conns: list[Conn], backend: str, tag: int = 0,
         holders: list[Holder] | None = None) -> Lock:
    """Drop every packet of ``conns`` from now on, until ``unlock``. ``holders``: the
    sockets of the connections, in the note a later ckpt reads should this one die."""
    lk = Lock(backend, lock_name(backend, tag), conns, holders=list(holders or []))
    if backend == "skip" or not conns:
        return lk
    _write_note(lk, images=None)
    lk.held = True  # set first: an interrupted lock is undone too
    try:
        err = (_nft_lock if backend == "nftables" else _ipt_lock)(lk.name, conns)
    except BaseException:  # interrupted (SIGTERM) while the tool ran: its rules may be in,
        # and the caller never gets the lock to release: undone here
        _undo(lk)
        raise
    if err is not None:
        unlock(lk)
        raise LockError(f"cannot lock the network with {backend}: {err}")
    log.info("network locked with %s (%s): %d connection(s)", backend, lk.name, len(conns))
    return lk


def _undo(lk: Lock) -> None:
    """Unlock after an interruption: a failure is logged (the note stays, for the
    next ckpt), not raised over the interruption."""
    try:
        unlock(lk)
    except LockError as e:
        log.warning("%s", e)


def keep(lk: Lock, images_dir: str) -> None:
    """The dump killed the processes: the lock stays for their restore from
    ``images_dir`` (named in its note), and this ckpt no longer owns it."""
    if lk.note_fd < 0:
        return
    try:
        _fill_note(lk, images_dir)
    except OSError as e:
        log.warning("network lock %s: cannot update its note: %s", lk.name, e)
    os.close(lk.note_fd)
    lk.note_fd = -1


def unlock(lk: Lock) -> None:
    """Remove the rules of ``lk``, then its note; gone already is fine."""
    if lk.held and lk.backend != "skip":
        err = (_nft_unlock if lk.backend == "nftables" else _ipt_unlock)(lk.name)
        if err is not None:
            raise LockError(f"cannot unlock the network ({lk.backend} {lk.name}): {err}")
        lk.held = False
        log.info("network unlocked (%s %s)", lk.backend, lk.name)
    _remove_note(lk)


# ------------------------------------------------------------------ notes


def _note_path(name: str) -> str:
    return os.path.join(notes_dir(), f"{name}.json")


def _netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def _fill_note(lk: Lock, images: str | None) -> None:
    body = {"backend": lk.backend, "name": lk.name, "netns": _netns(),
            "images": os.path.abspath(images) if images else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "owner": os.getpid(),
            "connections": [c.to_json() for c in lk.conns],
            "sockets": [asdict(h) for h in lk.holders]}
    data = json.dumps(body, indent=1).encode() + b"\n"
    os.ftruncate(lk.note_fd, 0)
    os.pwrite(lk.note_fd, data, 0)
    os.fsync(lk.note_fd)


def _write_note(lk: Lock, images: str | None) -> None:
    """Create the note of ``lk``, flocked (by a name no reader looks at until the lock
    is taken), then give it its name. Without a note the lock still works: a warning."""
    folder = notes_dir()
    tmp = os.path.join(folder, f".{lk.name}.new")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        log.warning("cannot keep a note of network lock %s in %s (%s): if ckpt is killed, "
                    "no later ckpt will find it", lk.name, folder, e)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        lk.note_fd = fd
        _fill_note(lk, images)
        os.rename(tmp, _note_path(lk.name))
    except OSError as e:
        os.close(fd)
        lk.note_fd = -1
        try:
            os.unlink(tmp)
        except OSError:
            pass
        log.warning("cannot keep a note of network lock %s: %s", lk.name, e)


def _remove_note(lk: Lock) -> None:
    try:
        os.unlink(_note_path(lk.name))
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("network lock %s: cannot remove its note: %s", lk.name, e)
    if lk.note_fd >= 0:
        os.close(lk.note_fd)
        lk.note_fd = -1


@dataclass
class Note:
    """A lock as its note describes it."""

    lock: Lock
    netns: int
    images: str | None
    holders: list[Holder]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Note:
        lk = Lock.from_json(raw)
        holders = [Holder(**{k: int(h[k]) for k in ("pid", "start", "fd", "inode", "reuse")})
                   for h in raw.get("sockets", [])]
        lk.holders = holders
        images = raw.get("images")
        return cls(lk, int(raw["netns"]), images if isinstance(images, str) else None, holders)


def _notes() -> list[str]:
    try:
        return sorted(n for n in os.listdir(notes_dir())
                      if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return []


def _each_note(mode: int, wait: bool = False) -> Iterator[tuple[Note, bool]]:
    """Each lock noted in this network namespace, and whether its note was free to
    flock with ``mode`` (no running dump owns it): read, and yielded, under that flock.
    ``wait``: for a note another ckpt holds to recover it (recovery.wait_for_recoverer)."""
    for name in _notes():
        path = os.path.join(notes_dir(), name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                free = True
            except BlockingIOError:
                free = wait and wait_for_recoverer(fd, _owner(fd), path)
            if free and os.fstat(fd).st_nlink == 0:
                continue  # released meanwhile
            with os.fdopen(os.dup(fd), "rb") as f:
                note = Note.parse(json.loads(f.read()))
            if note.netns == _netns():  # another namespace's is for a ckpt running there
                yield note, free
        except (OSError, ValueError, KeyError, TypeError, LockError) as e:
            log.warning("network lock note %s: %s", path, e)
        finally:
            os.close(fd)


def _owner(fd: int) -> str:
    """The PID of the dump that wrote the note open as ``fd`` ("" if unreadable)."""
    try:
        return str(int(json.loads(os.pread(fd, 1 << 20, 0))["owner"]))
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def held() -> list[tuple[Note, bool]]:
    """Every lock with a note in this network namespace, and whether a ckpt owns it
    now (a dump running); for ``ckpt check``."""
    return [(note, not free) for note, free in _each_note(fcntl.LOCK_SH)]


def recover() -> list[str]:
    """Undo what killed dumps left: for each lock whose note no ckpt owns and whose
    sockets are still open in their processes (the dump never killed them), take those
    sockets out of repair mode and remove the rules. What was done, one line each."""
    done = []
    for note, free in _each_note(fcntl.LOCK_EX, wait=True):
        if not free:
            continue  # a running dump's
        try:
            line = _recover(note)
        except LockError as e:
            log.warning("%s", e)
            continue
        if line:
            done.append(line)
            log.warning("%s", line)
    return done


def _recover(note: Note) -> str | None:
    """Release the lock of ``note`` if its sockets are still open; None if it is held
    for a restore. The sockets leave repair mode first: the process may run already,
    and meets EPERM there until then; removing the rules takes the longest (nft)."""
    running = [h for h in note.holders if h.still_open()]
    if not running and note.holders:
        return None
    lk = note.lock
    repaired = 0
    for h in running:
        try:
            with _socket_of(h.pid, h.fd) as sock:
                from .kernel import tcp_repair as repair

                if sock.getsockopt(repair.SOL_TCP, repair.TCP_REPAIR):
                    repair.off(sock)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, h.reuse)
                    repaired += 1
        except OSError as e:
            log.warning("process %d fd %d: cannot take it out of repair mode: %s", h.pid,
                        h.fd, e)
    unlock(lk)
    pids = sorted({h.pid for h in running})
    return (f"network lock {lk.name} ({lk.backend}) left by a ckpt killed during a dump "
            f"released: process(es) {', '.join(map(str, pids)) or 'none'} run on"
            + (f"; {repaired} socket(s) taken out of repair mode" if repaired else ""))
