"""Job control while ckpt waits for a restored tree: a shell job restored in the
foreground gets ckpt's terminal, and ckpt follows it through stops as a shell does.

This is the restore driver's concern (how ckpt itself waits), not a kind of file:
the terminals a restored process holds are resources/tty.py.
"""

from __future__ import annotations

import _signal
import os
import select
from types import TracebackType

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any


class Foreground:
    """Lends ckpt's terminal to a restored shell job while ckpt waits for it in the
    foreground, the way a shell runs a job: Ctrl-C and Ctrl-Z reach the job, and when
    the job stops ckpt stops too, so the user's shell sees a stopped job that ``fg``
    continues. Does nothing unless ckpt is in the foreground of its terminal.
    ``close`` (or leaving a ``with`` block) takes the terminal back."""

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
        for sig in (_signal.SIGTTOU, _signal.SIGINT, _signal.SIGQUIT):
            self._saved[sig] = _signal.signal(sig, _signal.SIG_IGN)
        if pgid != os.getpgrp():
            os.tcsetpgrp(fd, pgid)

    def __enter__(self) -> Foreground:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

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
            self._job_stopped()

    def follow(self, ended: int, stops: int) -> None:
        """Until ``ended`` (a pidfd) is readable, take each 4-byte wait status on ``stops``
        as a stop of the job: the job's parent is not ckpt (a new PID namespace's init,
        which reports them)."""
        own_group = self.tty < 0 or self.pgid == os.getpgrp()
        while True:
            try:
                ready = select.select([ended, stops], [], [])[0]
            except InterruptedError:
                continue
            if ended in ready:
                return
            if len(os.read(stops, 4)) == 4 and not own_group:
                self._job_stopped()

    def _job_stopped(self) -> None:
        """Stop as the job did, so that the shell shows it stopped; at ``fg`` (ckpt is
        continued) hand the terminal back to the job and continue it."""
        os.tcsetpgrp(self.tty, os.getpgrp())
        os.kill(os.getpid(), _signal.SIGSTOP)
        os.tcsetpgrp(self.tty, self.pgid)
        os.killpg(self.pgid, _signal.SIGCONT)

    def close(self) -> None:
        if self.tty < 0:
            return
        try:
            os.tcsetpgrp(self.tty, os.getpgrp())
        except OSError:
            pass
        for sig, handler in self._saved.items():
            _signal.signal(sig, handler)
        os.close(self.tty)
        self.tty = -1


def wait_for_exit(pid: int) -> int:
    """The waitpid() status of child ``pid`` once it has ended (no job control)."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
