"""File locks (``--file-locks``): flock locks, POSIX record locks, OFD locks and
leases, saved at dump and taken again at restore before the processes run.

A lock shows in the fdinfo ("lock:" lines) of each fd on the open file it was
taken through. A POSIX lock belongs to a process (to its fd table); flock and
OFD locks and leases belong to the open file description, which parent and
child may share. Without ``file_locks`` a tree holding any lock is refused,
naming the process, the fd and the lock, and suggesting the flag, as criu does.

At restore each lock is taken again without waiting, inside a process that
holds it (an injected ``fcntl`` or ``flock``, while the process is still stopped
and still root): a POSIX lock by its owner, the others by the process that took
them when it holds the file, else by the first one that does. A lease's break
signal and the process it signals are its description's ``fown`` (files.py),
set again after the lease. A lock another process took meanwhile fails the
restore, naming the holder.

A flock or OFD lock belongs to an open file, which a memory mapping holds too:
a process may map a file, lock it and close its fd (the JVM's hsperfdata file).
Such a lock shows in /proc/locks only; it is saved with the mapping of a process
of the tree on that file instead of an fd, and taken again by mem.py on the fd
the restored mapping is made from, before that fd is closed.

Saved in ``locks.json`` (written only when there are locks): a list of
``{"kind": posix|ofd|flock|lease, "type": read|write, "start", "end" (the last
byte, null to the end of the file), "pid", "fd", "file"}``; a lock held through
a mapping has ``"mapping"`` (the start of the mapping of ``pid``) in place of
``fd`` and ``file``.
"""

from __future__ import annotations

import fcntl
import os
import struct

from ..errors import ImageError, RestoreError, UnsupportedError
from ..images import LOCKS
from ..kernel import procfs
from ..kernel.inject import InjectionError, Injector
from ..kernel.record import replace
from ..log import logger
from ..schema import NAT, PID, STR, Int, List, Null, Obj, Opt, Str
from .filekind import Description, OpenFd

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.locks")

IMAGE = LOCKS
FEATURE = "locks"  # the image feature of locks.json
MAPPED_FEATURE = "mapped-locks"  # locks held through a memory mapping only
BREAKING_FEATURE = "lease-breaking"  # leases being broken (``breaking``)
_KINDS = {"POSIX": "posix", "OFDLCK": "ofd", "FLOCK": "flock", "LEASE": "lease"}
# What locks.json holds (above); the fd and file are checked against the fd tables.
SCHEMA = List(Obj(kind=Str(choices=_KINDS.values()), type=Str(choices=("read", "write")),
                  start=NAT, end=Null(NAT), pid=PID, fd=Opt(Int(0, (1 << 31) - 1)),
                  file=Opt(STR), mapping=Opt(Int(0, 1 << 47)),  # fd and file, or mapping
                  breaking=Opt(Str(choices=("read", "unlock")))),  # what a lease breaks to
              max=1 << 20)
_SHOWN = {"posix": "POSIX lock", "ofd": "OFD lock", "flock": "flock lock", "lease": "lease"}
_TYPES = {"READ": "read", "WRITE": "write"}
F_OFD_SETLK = 37
F_SETLEASE = 1024
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: type, whence, start, len, pid


def _breaking_lease(f: OpenFd, raw: procfs.FileLock) -> dict[str, Any]:
    """A lease someone's open is breaking: /proc shows what it breaks to, a read lease
    (a write lease a reader broke) or none. A lease broken to none was a read lease if
    a read-only open of the file does not conflict with it (such an open changes
    nothing: a lease already breaking is not broken again)."""
    if raw.type == "READ":
        return {"kind": "lease", "type": "write", "start": raw.start, "end": raw.end,
                "pid": f.pid, "breaking": "read"}
    if raw.type != "UNLCK":
        raise UnsupportedError(f"{f.where} ({f.link}) holds a lease breaking to {raw.type}; "
                               "not supported")
    try:
        os.close(os.open(f"/proc/{f.pid}/fd/{f.fd}", os.O_RDONLY | os.O_NONBLOCK
                         | os.O_CLOEXEC | os.O_NOCTTY))
        was = "read"
    except BlockingIOError:
        was = "write"
    except OSError as e:
        raise UnsupportedError(f"{f.where} ({f.link}) holds a lease being broken, whose "
                               f"type ckpt cannot tell: {e.strerror}") from None
    return {"kind": "lease", "type": was, "start": raw.start, "end": raw.end, "pid": f.pid,
            "breaking": "unlock"}


def describe(lock: dict[str, Any]) -> str:
    """"a POSIX write lock on bytes 0-9", "a flock read lock", "a read lease"."""
    what = f"{lock['type']} {_SHOWN[lock['kind']]}"
    if "breaking" in lock:
        what += f" being broken (to {lock['breaking']})"
    if lock["kind"] in ("posix", "ofd") and (lock["start"], lock["end"]) != (0, None):
        end = "the end" if lock["end"] is None else lock["end"]
        what += f" on bytes {lock['start']}-{end}"
    return f"a {what}"


# ---------------------------------------------------------------- dump

class DumpLocks:
    """The locks of one dump, found fd by fd (``add``), then checked against the tree
    and /proc/locks (``check_tree``), read from when it is made (the tree frozen) while
    the dump goes on. ``saved`` is what goes into locks.json."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.saved: list[dict[str, Any]] = []
        self._by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._inodes: set[tuple[int, int, int]] = set()  # (major, minor, ino) of locks seen
        self._system = procfs.LocksSoon()  # made once the tree is frozen: read meanwhile

    def add(self, f: OpenFd, fid: str, owner: int) -> None:
        """The locks fd ``f`` shows (``fid`` its description; ``owner`` the process whose
        fd table it is, for POSIX locks)."""
        for line in f.info.unparsed:
            if line.startswith("lock:"):
                raise UnsupportedError(f"{f.where} ({f.link}) holds a lock ckpt cannot read: "
                                       f"{line[5:].strip()!r}")
        for raw in f.info.locks:
            lock = self._lock(f, raw)
            if not self.enabled:
                raise UnsupportedError(f"{f.where} holds {describe(lock)} on {f.link}; dump "
                                       "with --file-locks to save file locks")
            self._inodes.add((raw.major, raw.minor, raw.ino))
            if lock["kind"] == "posix":
                key: tuple[Any, ...] = ("posix", owner, fid, raw.start, raw.end, raw.type)
                lock["pid"] = owner
            else:
                key = (lock["kind"], fid, raw.start, raw.end, raw.type)
            lock.update(fd=f.fd, file=fid)
            have = self._by_key.get(key)
            if have is None:
                self._by_key[key] = lock
                self.saved.append(lock)
            elif raw.pid == f.pid and have["pid"] != f.pid and lock["kind"] != "posix":
                have.update(pid=f.pid, fd=f.fd)  # the process that took it holds it too

    @staticmethod
    def _lock(f: OpenFd, raw: procfs.FileLock) -> dict[str, Any]:
        kind = _KINDS.get(raw.kind)
        if kind is None:
            raise UnsupportedError(f"{f.where} ({f.link}) holds a {raw.kind} lock; not "
                                   "supported")
        if kind == "lease" and raw.state == "BREAKING":
            return _breaking_lease(f, raw)
        if kind == "lease" and raw.state != "ACTIVE":
            raise UnsupportedError(f"{f.where} ({f.link}) holds a lease in state "
                                   f"{raw.state}; not supported")
        if raw.type not in _TYPES:
            raise UnsupportedError(f"{f.where} ({f.link}) holds a {raw.kind} lock of type "
                                   f"{raw.type}; not supported")
        return {"kind": kind, "type": _TYPES[raw.type], "start": raw.start, "end": raw.end,
                "pid": f.pid}

    @property
    def breaking(self) -> bool:
        """Whether a lease being broken is saved (feature ``lease-breaking``)."""
        return any("breaking" in lock for lock in self.saved)

    def check_tree(self, pids: set[int],
                   mappings: dict[int, list[dict[str, Any]]] | None = None) -> None:
        """Save a flock or OFD lock a process of the tree holds through no fd with a
        mapping of its file (``mappings``: each process's saved mappings, parents
        first); refuse any other lock held through no fd (a file passed to a process
        outside, a POSIX lock): the restore could not take it again."""
        for raw in self._system.result():
            if (raw.waiting or raw.kind not in _KINDS or raw.state == "BREAKER"
                    or (raw.major, raw.minor, raw.ino) in self._inodes):
                continue
            what = f"a {raw.kind} lock on inode {raw.ino} of device {raw.major}:{raw.minor}"
            if raw.pid == -1:  # an OFD lock: /proc/locks names no process
                if not _ofd_of_tree(raw, pids, mappings or {}, what):
                    continue
                raw = replace(raw, pid=next(iter(mappings or {})))
            elif raw.pid not in pids:
                continue
            if not self.enabled:
                raise UnsupportedError(f"process {raw.pid} holds {what}; dump with "
                                       "--file-locks to save file locks")
            mapped = (_mapping_of(raw, mappings or {})
                      if raw.kind in ("FLOCK", "OFDLCK") else None)
            if mapped is None:
                raise UnsupportedError(f"process {raw.pid} holds {what} through no open fd "
                                       "and no mapping of the file in the tree; not "
                                       "supported")
            pid, vma = mapped
            lock = {"kind": _KINDS[raw.kind], "type": _TYPES.get(raw.type), "start": raw.start,
                    "end": raw.end, "pid": pid, "mapping": vma["start"]}
            if lock["type"] is None:
                raise UnsupportedError(f"process {raw.pid} holds {what} of type {raw.type}; "
                                       "not supported")
            log.info("process %d: %s on %s held through its mapping at %#x", pid,
                     describe(lock), vma["path"], vma["start"])
            self._inodes.add((raw.major, raw.minor, raw.ino))
            self.saved.append(lock)

    @property
    def mapped(self) -> bool:
        """Some lock is held through a mapping (the image feature it needs)."""
        return any("mapping" in lock for lock in self.saved)


def _ofd_of_tree(raw: procfs.FileLock, pids: set[int],
                 mappings: dict[int, list[dict[str, Any]]], what: str) -> bool:
    """Whether an OFD lock on no fd of the tree is the tree's: a process of it maps the
    file and no process outside has it open or mapped (whose the lock could be; then
    the dump is refused: ckpt cannot tell)."""
    if _mapping_of(raw, mappings) is None:
        return False
    outside = _holders(raw, pids)
    if outside:
        raise UnsupportedError(f"{what}, a file the tree maps, is held through no fd of the "
                               f"tree; process {outside[0]} outside the tree has the file "
                               "too, and the kernel does not say whose the lock is")
    return True


def _holders(raw: procfs.FileLock, pids: set[int]) -> list[int]:
    """The processes not in ``pids`` with an fd or a mapping on the locked inode."""
    # bytes: any process's mapped names may be no UTF-8 at all
    where = [f"{raw.major:02x}:{raw.minor:02x}".encode(), str(raw.ino).encode()]
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in pids or int(name) == os.getpid():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                if any(ln.split()[3:5] == where for ln in f):
                    found.append(pid)
                    continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) == (
                        raw.major, raw.minor, raw.ino):
                    found.append(pid)
                    break
        except OSError:
            continue  # gone, or a kernel thread
    return found


def _mapping_of(raw: procfs.FileLock, mappings: dict[int, list[dict[str, Any]]]
                ) -> tuple[int, dict[str, Any]] | None:
    """(pid, mapping) of the first process of the tree (parents first) that maps the
    locked file, a file still on disk; None if none does. The first is one whose
    mapping the restore makes anew (not one its children inherit from it), on an fd
    the lock can be taken through; the kernel does not say which open file of the
    inode holds the lock."""
    for pid, vmas in mappings.items():
        for v in vmas:
            if v["kind"] != "file" or "ghost" in v:
                continue
            try:
                st = os.stat(f"/proc/{pid}/map_files/{v['start']:x}-{v['end']:x}")
            except OSError:
                continue
            if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) == (
                    raw.major, raw.minor, raw.ino):
                return pid, v
    return None


# ---------------------------------------------------------------- restore

class RestoreLocks:
    """The saved locks, checked against the fd tables before anything is created;
    ``take`` takes one process's locks inside it."""

    def __init__(self, saved: Any, fd_tables: dict[int, list[dict[str, Any]]],
                 mms: dict[int, dict[str, Any]] | None = None):
        if not isinstance(saved, list):
            raise ImageError(f"{IMAGE}: not a list of locks")
        self.by_pid: dict[int, list[dict[str, Any]]] = {}
        self.by_mapping: dict[int, dict[int, dict[str, Any]]] = {}  # pid -> start -> lock
        for lock in saved:
            if isinstance(lock, dict) and "mapping" in lock:
                _validate_mapped(lock, mms or {})
                self.by_mapping.setdefault(lock["pid"], {})[lock["mapping"]] = lock
                continue
            _validate(lock, fd_tables)
            self.by_pid.setdefault(lock["pid"], []).append(lock)

    def take(self, pid: int, inj: Injector, scratch: int,
             descriptions: dict[str, Description]) -> None:
        for lock in self.by_pid.get(pid, []):
            try:
                _take(inj, scratch, lock)
            except InjectionError as e:
                path = descriptions[lock["file"]].get("path", "?")
                raise RestoreError(f"process {pid} fd {lock['fd']}: cannot take "
                                   f"{describe(lock)} on {path} again: "
                                   f"{_why(e, lock, path)}") from None
            if "breaking" in lock:
                _break(pid, lock, descriptions[lock["file"]].get("path", "?"))
            log.info("process %d fd %d: %s taken again", pid, lock["fd"], describe(lock))


def take_mapped(inj: Injector, scratch: int, pid: int, lock: dict[str, Any], fd: int,
                path: str) -> None:
    """Take ``lock`` again on ``fd``, the fd process ``pid`` maps its file from (before
    it is closed: the mapping keeps that open file, and the lock with it)."""
    try:
        _take(inj, scratch, {**lock, "fd": fd})
    except InjectionError as e:
        raise RestoreError(f"process {pid}: cannot take {describe(lock)} on {path} "
                           f"again (held through its mapping at {lock['mapping']:#x}): "
                           f"{_why(e, lock, path)}") from None
    log.info("process %d: %s on %s taken again through its mapping", pid, describe(lock),
             path)


def _break(pid: int, lock: dict[str, Any], path: str) -> None:
    """Break the lease just taken again as it was being broken: ckpt opens its file as
    the breaker had (for writing: to none; for reading: a write lease to a read one),
    without waiting. The signal the break sends the process is dropped with its other
    pending signals before its own come back (signals.take_arrived)."""
    mode = os.O_WRONLY if lock["breaking"] == "unlock" else os.O_RDONLY
    try:
        fd = os.open(f"/proc/{pid}/fd/{lock['fd']}",
                     mode | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except BlockingIOError:
        return  # the break has begun
    except OSError as e:
        raise RestoreError(f"process {pid} fd {lock['fd']}: cannot break its lease on {path} "
                           f"again: {e.strerror}") from None
    os.close(fd)
    raise RestoreError(f"process {pid} fd {lock['fd']}: its lease on {path} did not "
                       "conflict with the open that was breaking it")


def _bad(lock: Any, why: str) -> ImageError:
    return ImageError(f"{IMAGE}: lock {lock!r}: {why}")


def _validate_common(lock: Any) -> None:
    """What every lock has: its kind, type and range."""
    if not isinstance(lock, dict):
        raise _bad(lock, "not an object")
    if lock.get("kind") not in _SHOWN or lock.get("type") not in _TYPES.values():
        raise _bad(lock, "unknown kind or type")
    start, end = lock.get("start"), lock.get("end")
    if not _int(start) or start < 0 or not (end is None or (_int(end) and end >= start)):
        raise _bad(lock, "bad range")
    if "breaking" in lock and lock["kind"] != "lease":
        raise _bad(lock, "only a lease is broken")


def _validate_mapped(lock: dict[str, Any], mms: dict[int, dict[str, Any]]) -> None:
    """A lock held through a mapping: a flock or OFD lock on a file mapping of ``pid``."""
    _validate_common(lock)
    if lock["kind"] not in ("flock", "ofd"):
        raise _bad(lock, "only flock and OFD locks are held through a mapping")
    pid, start = lock.get("pid"), lock.get("mapping")
    mm = mms.get(pid) if _int(pid) else None
    if mm is None:
        raise _bad(lock, "not held by a process of the tree")
    if not any(isinstance(v, dict) and v.get("start") == start and v.get("kind") == "file"
               and "ghost" not in v for v in mm.get("vmas", [])):
        raise _bad(lock, f"process {pid} has no mapping of a file at {start!r}")


def _validate(lock: Any, fd_tables: dict[int, list[dict[str, Any]]]) -> None:
    def bad(why: str) -> ImageError:
        return _bad(lock, why)

    _validate_common(lock)
    pid, fd = lock.get("pid"), lock.get("fd")
    table = fd_tables.get(pid) if _int(pid) else None
    if table is None:
        raise bad("not held by a process of the tree")
    if not any(isinstance(e, dict) and e.get("fd") == fd and e.get("file") == lock.get("file")
               for e in table):
        raise bad(f"process {pid} has no fd {fd} on file {lock.get('file')}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _take(inj: Injector, scratch: int, lock: dict[str, Any]) -> None:
    fd, kind = lock["fd"], lock["kind"]
    write = lock["type"] == "write"
    if kind == "flock":
        inj.call("flock", fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    elif kind == "lease":  # makes the taker the file's owner until set_owners runs
        inj.call("fcntl", fd, F_SETLEASE, fcntl.F_WRLCK if write else fcntl.F_RDLCK)
    else:
        length = 0 if lock["end"] is None else lock["end"] - lock["start"] + 1
        inj.write(scratch, _FLOCK.pack(fcntl.F_WRLCK if write else fcntl.F_RDLCK, os.SEEK_SET,
                                       lock["start"], length, 0))
        inj.call("fcntl", fd, fcntl.F_SETLK if kind == "posix" else F_OFD_SETLK, scratch)


def _why(e: InjectionError, lock: dict[str, Any], path: str) -> str:
    """Why a lock could not be taken: who holds the file now, when someone does."""
    try:
        st = os.stat(path)
    except OSError:
        return os.strerror(e.errno)
    holders = sorted({lk.pid for lk in procfs.locks()
                      if (lk.ino, lk.major, lk.minor) == (st.st_ino, *_split(st.st_dev))
                      and not lk.waiting and lk.pid != lock["pid"]})
    if not holders:
        return os.strerror(e.errno)
    who = ", ".join("a process through an OFD lock" if p == -1 else f"process {p}"
                    for p in holders)
    return f"{os.strerror(e.errno)} (the file is locked by {who})"


def _split(dev: int) -> tuple[int, int]:
    return os.major(dev), os.minor(dev)
