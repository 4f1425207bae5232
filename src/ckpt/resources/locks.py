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

Saved in ``locks.json`` (written only when there are locks): a list of
``{"kind": posix|ofd|flock|lease, "type": read|write, "start", "end" (the last
byte, null to the end of the file), "pid", "fd", "file"}``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from typing import Any

from ..errors import ImageError, RestoreError, UnsupportedError
from ..kernel import procfs
from ..kernel.inject import InjectionError, Injector
from .filekind import Description, OpenFd

log = logging.getLogger("ckpt.locks")

IMAGE = "locks.json"
FEATURE = "locks"  # the image feature of locks.json
_KINDS = {"POSIX": "posix", "OFDLCK": "ofd", "FLOCK": "flock", "LEASE": "lease"}
_SHOWN = {"posix": "POSIX lock", "ofd": "OFD lock", "flock": "flock lock", "lease": "lease"}
_TYPES = {"READ": "read", "WRITE": "write"}
F_OFD_SETLK = 37
F_SETLEASE = 1024
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: type, whence, start, len, pid


def describe(lock: dict[str, Any]) -> str:
    """"a POSIX write lock on bytes 0-9", "a flock read lock", "a read lease"."""
    what = f"{lock['type']} {_SHOWN[lock['kind']]}"
    if lock["kind"] in ("posix", "ofd") and (lock["start"], lock["end"]) != (0, None):
        end = "the end" if lock["end"] is None else lock["end"]
        what += f" on bytes {lock['start']}-{end}"
    return f"a {what}"


# ---------------------------------------------------------------- dump

class DumpLocks:
    """The locks of one dump, found fd by fd (``add``), then checked against the tree
    and /proc/locks (``check_tree``). ``saved`` is what goes into locks.json."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.saved: list[dict[str, Any]] = []
        self._by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._inodes: set[tuple[int, int, int]] = set()  # (major, minor, ino) of locks seen

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
        if kind == "lease" and raw.state != "ACTIVE":
            raise UnsupportedError(f"{f.where} ({f.link}) holds a lease that is being "
                                   "broken; dump again once it is released")
        if raw.type not in _TYPES:
            raise UnsupportedError(f"{f.where} ({f.link}) holds a {raw.kind} lock of type "
                                   f"{raw.type}; not supported")
        return {"kind": kind, "type": _TYPES[raw.type], "start": raw.start, "end": raw.end,
                "pid": f.pid}

    def check_tree(self, pids: set[int]) -> None:
        """Refuse a lock a process of the tree holds through no fd (a file kept open only
        by a memory mapping, or passed to a process outside): the restore could not take
        it again."""
        for raw in procfs.locks():
            if (raw.waiting or raw.pid not in pids or raw.kind not in _KINDS
                    or raw.state == "BREAKER"
                    or (raw.major, raw.minor, raw.ino) in self._inodes):
                continue
            what = f"a {raw.kind} lock on inode {raw.ino} of device {raw.major}:{raw.minor}"
            if not self.enabled:
                raise UnsupportedError(f"process {raw.pid} holds {what}; dump with "
                                       "--file-locks to save file locks")
            raise UnsupportedError(f"process {raw.pid} holds {what} through no open fd (a "
                                   "file kept only by a memory mapping?); not supported")


# ---------------------------------------------------------------- restore

class RestoreLocks:
    """The saved locks, checked against the fd tables before anything is created;
    ``take`` takes one process's locks inside it."""

    def __init__(self, saved: Any, fd_tables: dict[int, list[dict[str, Any]]]):
        if not isinstance(saved, list):
            raise ImageError(f"{IMAGE}: not a list of locks")
        self.by_pid: dict[int, list[dict[str, Any]]] = {}
        for lock in saved:
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
            log.info("process %d fd %d: %s taken again", pid, lock["fd"], describe(lock))


def _validate(lock: Any, fd_tables: dict[int, list[dict[str, Any]]]) -> None:
    def bad(why: str) -> ImageError:
        return ImageError(f"{IMAGE}: lock {lock!r}: {why}")

    if not isinstance(lock, dict):
        raise bad("not an object")
    if lock.get("kind") not in _SHOWN or lock.get("type") not in _TYPES.values():
        raise bad("unknown kind or type")
    start, end = lock.get("start"), lock.get("end")
    if not _int(start) or start < 0 or not (end is None or (_int(end) and end >= start)):
        raise bad("bad range")
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
