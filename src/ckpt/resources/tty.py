"""Terminals: a shell job's fds on the user's terminal, and pseudo-terminal pairs made
inside the tree, made again with their settings and controlling terminals.

Two cases. A process of a shell job (``-j``) keeps fds on the user's terminal,
outside the tree; at restore with ``-j`` they point to the terminal ckpt runs on,
as in criu. A tree that made its own pseudo-terminal pair (both the ``/dev/ptmx``
master and the ``/dev/pts/N`` slave inside, like ``script`` or a terminal
multiplexer) gets a new pair with the same settings (termios, window size); the
session whose controlling terminal the slave was gets the new slave as its
controlling terminal, with the same foreground process group. Bytes buffered in
the pair at dump time are not saved.
"""

from __future__ import annotations

import fcntl
import os
import stat as st_mod
import struct
import termios
from typing import Any

from ..errors import RestoreError, UnsupportedError
from .chrdev import TTY_MAJORS
from .filekind import (
    Description,
    DumpCtx,
    FileKind,
    OpenFd,
    RestoreCtx,
    close_quietly,
)

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TIOCSCTTY = 0x540E
PTMX_RDEV = os.makedev(5, 2)
PTS_MAJORS = range(136, 144)


def restorer_terminal() -> int:
    """An fd of ckpt's terminal (stdin, stdout or stderr, else /dev/tty)."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return fd
        except OSError:
            continue
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise RestoreError("restoring a shell job (-j) needs a terminal, and ckpt has "
                           "none (stdin, stdout, stderr and /dev/tty)") from None


def pts_index(rdev: int) -> int | None:
    """N of /dev/pts/N for a pty slave's device number, else None."""
    if os.major(rdev) not in PTS_MAJORS:
        return None
    return (os.major(rdev) - PTS_MAJORS.start) * 256 + os.minor(rdev)


def _settings(slave: int) -> dict[str, Any]:
    attrs = termios.tcgetattr(slave)
    cc = [c if isinstance(c, int) else c[0] for c in attrs[6]]
    winsize = struct.unpack("4H", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    return {"termios": attrs[:6] + [cc], "winsize": list(winsize)}


def _apply_settings(slave: int, desc: dict[str, Any]) -> None:
    termios.tcsetattr(slave, termios.TCSANOW, desc["termios"])
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("4H", *desc["winsize"]))


class Terminals(FileKind):
    KIND = "tty"

    def __init__(self) -> None:
        super().__init__()
        self._terminals: list[tuple[OpenFd, Description]] = []  # dump: those not masters
        self._pairs: dict[int, tuple[int, int]] = {}  # restore: old index -> (master, slave)

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in TTY_MAJORS

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        ma, mi = desc["rdev"]
        return [f"tty[{os.makedev(ma, mi):x}:{desc['dev']:x}]"]

    @classmethod
    def borrowed(cls, desc: Description) -> bool:
        return desc.get("pty") != "master" and not desc.get("internal")  # the user's

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        st = f.st
        desc: Description = {"path": f.link, "rdev": [os.major(st.st_rdev),
                                                       os.minor(st.st_rdev)],
                             "dev": st.st_dev}
        if st.st_rdev == PTMX_RDEV:
            index = struct.unpack("I", fcntl.ioctl(f.dup, TIOCGPTN, b"\0" * 4))[0]
            slave = fcntl.ioctl(f.dup, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                desc.update(pty="master", index=index, **_settings(slave))
            finally:
                os.close(slave)
            return desc
        index = pts_index(st.st_rdev)
        if index is not None:
            desc.update(pty="slave", index=index)
        self._terminals.append((f, desc))
        return desc

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Once every fd is known: a pty slave whose master is in the tree is part of an
        inner pair; any other terminal is the user's, which needs ``-j``. A session
        leader's controlling terminal must be an inner pty (or none)."""
        masters = {d["index"] for d in self.descriptions.values() if d.get("pty") == "master"}
        for f, desc in self._terminals:
            desc["internal"] = desc.get("pty") == "slave" and desc["index"] in masters
            if not desc["internal"] and not ctx.shell_job:
                raise UnsupportedError(f"{f.where} is the terminal {desc['path']}; dump it "
                                       "as a shell job with -j (--shell-job)")
        for t in tasks:
            if "ctty" in t and pts_index(t["ctty"]) not in masters:
                raise UnsupportedError(
                    f"process {t['pid']} leads a session whose controlling terminal "
                    f"{os.major(t['ctty'])}:{os.minor(t['ctty'])} is outside the dumped "
                    "tree; not supported")

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        if desc.get("pty") == "master":
            return os.dup(self._pair(desc["index"])[0])
        if desc.get("internal"):
            master = self._pair(desc["index"])[0]
            return fcntl.ioctl(master, TIOCGPTPEER, (desc["flags"] & (
                os.O_ACCMODE | os.O_NONBLOCK)) | os.O_NOCTTY)
        if not ctx.shell_job:
            raise RestoreError(f"the image holds the terminal {desc['path']}: restore it "
                               "as a shell job with -j (--shell-job)")
        return os.dup(restorer_terminal())

    def _pair(self, index: int) -> tuple[int, int]:
        """(master, slave) fds in ckpt of the new pair standing for old pair ``index``."""
        if index not in self._pairs:
            master_desc = next((d for d in self.descriptions.values()
                                if d.get("pty") == "master" and d["index"] == index), None)
            if master_desc is None:
                raise RestoreError(f"the image has no master for /dev/pts/{index}")
            master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
                slave = fcntl.ioctl(master, TIOCGPTPEER,
                                    os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except BaseException:
                os.close(master)
                raise
            self._pairs[index] = (master, slave)
            _apply_settings(slave, master_desc)
        return self._pairs[index]

    def controlling_slave(self, task: dict[str, Any]) -> int | None:
        """For a session leader whose controlling terminal was an inner pty: ckpt's fd of
        the new slave, to make it the controlling terminal again (TIOCSCTTY)."""
        if "ctty" not in task:
            return None
        index = pts_index(task["ctty"])
        assert index is not None  # checked at dump
        return self._pair(index)[1]

    def close(self) -> None:
        close_quietly({fd for pair in self._pairs.values() for fd in pair})
        self._pairs.clear()


def acquire_controlling(slave: int) -> None:
    """In a fresh session leader: make ``slave`` its controlling terminal. The
    terminal's foreground group becomes the leader's own."""
    fcntl.ioctl(slave, TIOCSCTTY, 0)

