"""A pipe made larger than ``fs.pipe-max-size`` lets anyone (root without
CAP_SYS_RESOURCE, as here): the limit is raised for the instant of the resize and put
back at once, under a lock that ckpts share; the value it had is written in the
lock's file first, so that should ckpt die in that instant, the next one to take the
lock (``restore_limit``: every dump's recovery) puts it back.

A pipe keeps its size once resized: only the resize needs the higher limit.
"""

from __future__ import annotations

import fcntl
import os

from .libc import F_GETPIPE_SZ, F_SETPIPE_SZ

LIMIT = "/proc/sys/fs/pipe-max-size"
NOTE = "/run/ckpt/pipe-max-size"  # the lock, and the limit to put back while raised


def resize(fd: int, sizes: tuple[int, ...]) -> int:
    """Give the pipe ``fd`` the first of ``sizes`` (largest first) it can have, raising
    the limit for it if need be; its size then (what it had if none could be set)."""
    for size in sizes:
        try:
            return int(fcntl.fcntl(fd, F_SETPIPE_SZ, size))
        except PermissionError:  # above the limit
            try:
                return _raised(fd, size)
            except OSError:
                continue
        except OSError:  # ENOMEM: a ring that large cannot be allocated now
            continue
    return int(fcntl.fcntl(fd, F_GETPIPE_SZ))


def _raised(fd: int, size: int) -> int:
    note = _lock()
    try:
        _put_back(note)
        with open(LIMIT) as f:
            limit = int(f.read())
        os.write(note, b"%d\n" % limit)  # no fsync: after a crash of the machine, the
        # limit is back to its default anyway
        try:
            _write_limit(size)
            return int(fcntl.fcntl(fd, F_SETPIPE_SZ, size))
        finally:
            _write_limit(limit)
            os.ftruncate(note, 0)
    finally:
        os.close(note)


def restore_limit() -> None:
    """Put back the limit a ckpt that died while it had it raised left (if any)."""
    try:
        if os.path.getsize(NOTE) == 0:
            return
        note = _lock()
    except OSError:
        return
    try:
        _put_back(note)
    finally:
        os.close(note)


def _lock() -> int:
    os.makedirs(os.path.dirname(NOTE), mode=0o700, exist_ok=True)
    note = os.open(NOTE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(note, fcntl.LOCK_EX)
    return note


def _put_back(note: int) -> None:
    """The limit noted in the locked ``note`` (by a ckpt that died), put back."""
    noted = os.pread(note, 32, 0).strip()
    if noted:
        _write_limit(int(noted))
        os.ftruncate(note, 0)


def _write_limit(value: int) -> None:
    with open(LIMIT, "w") as f:
        f.write(f"{value}\n")
