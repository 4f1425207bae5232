"""Terminals. A process of a shell job (``-j``) keeps fds on the user's terminal;
at restore with ``-j`` they point to the terminal ckpt runs on, as in criu."""

from __future__ import annotations

import os
import stat as st_mod
from typing import Any

from ..errors import RestoreError, UnsupportedError
from . import files
from .chrdev import TTY_MAJORS


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


class Terminals:
    KIND = "tty"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in TTY_MAJORS

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: dict[str, str]) -> dict[str, Any]:
        if link in ("/dev/ptmx", "/dev/pts/ptmx"):
            raise UnsupportedError(f"process {pid} fd {fd}: a pseudo-terminal master; "
                                   "not supported yet")
        if not ctx.shell_job:
            raise UnsupportedError(f"process {pid} fd {fd} is the terminal {link}; dump it "
                                   "as a shell job with -j (--shell-job)")
        return {"path": link, "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
                "dev": st.st_dev}

    def keys(self, desc: dict[str, Any]) -> list[str]:
        ma, mi = desc["rdev"]
        return [f"tty[{os.makedev(ma, mi):x}:{desc['dev']:x}]"]

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        if not ctx.shell_job:
            raise RestoreError(f"the image holds the terminal {desc['path']}: restore it "
                               "as a shell job with -j (--shell-job)")
        fd = os.dup(restorer_terminal())
        return fd


files.register(Terminals())
