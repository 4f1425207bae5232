"""Terminals. A process of a shell job (``-j``) keeps fds on the user's terminal;
at restore with ``-j`` they point to the terminal ckpt runs on, as in criu."""

from __future__ import annotations

import os
import signal
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


class Foreground:
    """Lends ckpt's terminal to a restored shell job while ckpt waits for it in the
    foreground, the way a shell runs a job: Ctrl-C and Ctrl-Z reach the job, and when
    the job stops ckpt stops too, so the user's shell sees a stopped job that ``fg``
    continues. Does nothing unless ckpt is in the foreground of its terminal."""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.tty = -1
        self._saved: dict[int, Any] = {}
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                os.close(fd)
                return
        except OSError:
            os.close(fd)
            return
        self.tty = fd
        # SIGTTOU: taking the terminal back from the job; SIGINT/SIGQUIT: the job may share
        # ckpt's group (its saved group was outside the tree) and ckpt must outlive it.
        for sig in (signal.SIGTTOU, signal.SIGINT, signal.SIGQUIT):
            self._saved[sig] = signal.signal(sig, signal.SIG_IGN)
        if pgid != os.getpgrp():
            os.tcsetpgrp(fd, pgid)

    def wait(self, pid: int) -> int:
        """waitpid() status of ``pid`` once it has ended, following it through stops."""
        own_group = self.tty < 0 or self.pgid == os.getpgrp()  # stops reach ckpt too
        while True:
            try:
                _, status = os.waitpid(pid, 0 if own_group else os.WUNTRACED)
            except InterruptedError:
                continue
            if not os.WIFSTOPPED(status):
                return status
            os.tcsetpgrp(self.tty, os.getpgrp())
            os.kill(os.getpid(), signal.SIGSTOP)  # the shell now shows the job stopped
            os.tcsetpgrp(self.tty, self.pgid)  # ``fg``: continued, hand the terminal back
            os.killpg(self.pgid, signal.SIGCONT)

    def close(self) -> None:
        if self.tty < 0:
            return
        try:
            os.tcsetpgrp(self.tty, os.getpgrp())
        except OSError:
            pass
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        os.close(self.tty)
        self.tty = -1
