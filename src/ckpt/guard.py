"""A guard: a process forked by ckpt that, should ckpt die (SIGKILL, the OOM killer)
while the processes it holds depend on it, puts them right at once.

A dump with ``--tcp-established`` drops the packets of the tree's connections and
puts each socket in repair mode while it reads it. Killed then, ckpt leaves
processes that run on (the kernel lets its tracees go) with their connections cut
and maybe a socket in repair mode, whose reads fail with EPERM. The notes of
netlock.py and recovery.py let the next ckpt undo that; the dump's guard
(``undo_killed_dump``) does it as soon as ckpt is gone. A restore lets its tree go
by clearing EXITKILL thread by thread: its guard kills the whole tree should ckpt die
before the last one (restorer.py), so that none is left half alive.

The guard is forked with what it needs in its memory and waits on a pipe whose
other end only ckpt holds. ckpt writes a word to it when nothing is left to guard
(``stand_down``); then the guard exits. If the pipe closes without that word, ckpt
died: the guard waits until the kernel has let its tracees go (ckpt's pidfd turns
readable once its exit is complete), then calls its ``on_death``.

The guard holds none of ckpt's files but the pipe, the pidfd, its log's and those
it is given (a copy of a socket or of a note's lock would keep them alive past
ckpt), and ignores the signals ckpt is interrupted by, in a session of its own.
"""

from __future__ import annotations

import _signal
import os
import select

from . import faults, recovery
from . import log as ckpt_log
from .kernel import interrupts

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

log = ckpt_log.logger("ckpt.guard")

_STAND_DOWN = b"x"


class Guard:
    """ckpt's end of one guard: ``start`` forks it, ``stand_down`` lets it go.
    ``on_death()`` runs in the guard should ckpt die first; ``keep``: the fds it needs
    then."""

    def __init__(self, on_death: Callable[[], None], keep: Iterable[int] = ()):
        self.on_death = on_death
        self.keep = set(keep)
        self.fd = -1
        self.pid = 0

    def start(self) -> None:
        """Fork the guard (once); it watches ckpt from now on."""
        if self.pid:
            return
        # Not cut by a signal between the fork and ckpt's note of the guard: a ckpt
        # interrupted then could not stand it down, and it took ckpt's exit for a death
        # (a restore said both "interrupted" and "ckpt died ...: its guard killed the tree").
        with interrupts.held():
            pidfd = os.pidfd_open(os.getpid())
            r, w = os.pipe2(os.O_CLOEXEC)
            keep = {0, 1, 2, r, pidfd, *self.keep, *ckpt_log.fds()}
            pid = interrupts.fork()
            if pid == 0:  # pragma: no cover (the guard's side; tests see what it does)
                code = 1
                try:
                    _become_guard(keep)
                    code = _watch(r, pidfd, self.on_death)
                finally:
                    os._exit(code)
            os.close(r)
            os.close(pidfd)
            self.fd, self.pid = w, pid
        log.debug("guard %d forked", pid)

    def stand_down(self) -> None:
        """Nothing left for the guard to undo: it exits (and is reaped)."""
        if self.fd < 0:
            return
        try:
            os.write(self.fd, _STAND_DOWN)
        finally:
            os.close(self.fd)
            self.fd = -1
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def undo_killed_dump() -> None:
    """A dump's guard, ckpt dead: what the next ckpt would do first, at once: locks no
    ckpt holds released (rules removed, sockets out of repair mode), parked threads
    woken and the scratch area unmapped."""
    from . import netlock  # here: start-up imports it only for a lock

    log.warning("ckpt died during the dump; its guard releases what it held")
    netlock.recover()  # each lock released is logged
    recovery.recover()


def _become_guard(keep: set[int]) -> None:
    """Drop every fd but ``keep``, leave ckpt's session, ignore what interrupts ckpt,
    disarm fault points."""
    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGPIPE):
        _signal.signal(sig, _signal.SIG_IGN)
    os.setsid()
    faults.arm("")  # the tests' fault points are ckpt's, not the guard's
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _watch(r: int, pidfd: int, on_death: Callable[[], None]) -> int:
    """Wait for ckpt's word or death; after its death, ``on_death``."""
    while True:
        got = os.read(r, 16)
        if _STAND_DOWN in got:
            return 0
        if not got:
            break
    select.select([pidfd], [], [])  # ckpt's exit complete: its tracees let go
    on_death()
    return 0
