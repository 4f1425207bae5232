"""The guard of a dump that locks the network: a process forked by ckpt that, should
ckpt die (SIGKILL, the OOM killer) before the lock is handed over, releases it at once.

A dump with ``--tcp-established`` drops the packets of the tree's connections and
puts each socket in repair mode while it reads it. Killed then, ckpt leaves
processes that run on (the kernel lets its tracees go) with their connections cut
and maybe a socket in repair mode, whose reads fail with EPERM. The notes of
netlock.py and recovery.py let the next ckpt undo that; the guard does it as soon
as ckpt is gone: forked before the lock is taken, it waits on a pipe whose other
end only ckpt holds. ckpt writes to it when the lock needs no guard any more (it
was released, or the processes are bound to die with ckpt: EXITKILL is set and the
lock stays for their restore); then the guard exits. If the pipe closes without a
word, ckpt died: the guard waits until the kernel has let its tracees go (ckpt's
pidfd turns readable once its exit is complete), then runs what the next ckpt would
run first: ``netlock.recover`` (rules removed, sockets out of repair mode) and
``recovery.recover`` (parked threads woken, the scratch area unmapped).

The guard holds none of ckpt's files but the pipe, the pidfd and its log's (a copy
of a socket or of a note's lock would keep them alive past ckpt), and ignores the
signals ckpt is interrupted by, in a session of its own.
"""

from __future__ import annotations

import logging
import os
import select
import signal

from . import faults, recovery

log = logging.getLogger("ckpt.guard")

_STAND_DOWN = b"x"


class Guard:
    """ckpt's end of one guard; ``start`` forks it, ``stand_down`` lets it go."""

    def __init__(self) -> None:
        self.fd = -1
        self.pid = 0

    def start(self) -> None:
        """Fork the guard (once); it watches ckpt from now on."""
        if self.pid:
            return
        pidfd = os.pidfd_open(os.getpid())
        r, w = os.pipe2(os.O_CLOEXEC)
        keep = {0, 1, 2, r, pidfd, *_log_fds()}
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the guard's side; tests see what it does)
            code = 1
            try:
                _become_guard(keep)
                code = _watch(r, pidfd)
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


def _log_fds() -> list[int]:
    """The fds ckpt's log handlers write to (the guard logs there too)."""
    fds = []
    for h in logging.getLogger("ckpt").handlers:
        stream = getattr(h, "stream", None)
        try:
            fds.append(stream.fileno())  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            pass
    return fds


def _become_guard(keep: set[int]) -> None:
    """Drop every fd but ``keep``, leave ckpt's session, ignore what interrupts ckpt,
    disarm fault points."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    os.setsid()
    faults.arm("")  # the tests' fault points are ckpt's, not the guard's
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _watch(r: int, pidfd: int) -> int:
    """Wait for ckpt's word or death; after its death, undo what it left."""
    while True:
        got = os.read(r, 16)
        if _STAND_DOWN in got:
            return 0
        if not got:
            break
    select.select([pidfd], [], [])  # ckpt's exit complete: its tracees let go
    from . import netlock  # here: start-up imports it only for a lock

    log.warning("ckpt died during the dump; its guard releases what it held")
    netlock.recover()  # each lock released is logged
    recovery.recover()
    return 0
