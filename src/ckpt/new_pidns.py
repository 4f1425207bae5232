"""A restore into a PID namespace of its own (``restore --new-pidns``): every process
keeps its saved PID there, whatever holds that PID on the host, so one set of images
may run any number of times side by side.

ckpt forks the namespace's first process, its init (PID 1; kernel/pidns.py), which
takes a mount namespace of its own whose /proc shows the new PID namespace (every
other mount shared as before) and runs the whole restore there, where the saved PIDs
are the real ones: the root is the init's child. Then the init becomes the
namespace's minimal init: it reaps orphans and, when the root exits, exits with the
root's status (the kernel then ends whatever is left in the namespace).

ckpt, outside, follows over a socket: at ``pre-resume`` the init sends a pidfd of the
root, ckpt gives a shell job its terminal (as a shell would, with the root's group as
the host numbers it) and says go; the init lets the tree run, says so, and becomes
the reaper. Until go, the init dies with ckpt (its parent-death signal), taking the
unfinished tree along; from then on the tree runs on whatever happens to ckpt. ckpt
writes the pidfile with the root's PID as the host sees it and, without -d, waits for
the init, following a shell job's stops that the reaper reports on the socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import errors
from .errors import RestoreError
from .job_control import Foreground
from .kernel import libc, pidns, procfs

log = logging.getLogger("ckpt.restore")

_MSG = 65536
INIT_GRACE_SECONDS = 10.0  # an interrupted init's own rollback


@dataclass
class Outcome:
    """A restore in a new PID namespace, as the host sees it."""

    pid: int  # the root's PID on the host
    init_pid: int  # the namespace's init, on the host
    exit_status: int | None = None  # without detach: the root's, as waitstatus_to_exitcode
    pids: list[int] = field(default_factory=list)  # every process's, in the namespace


class Handshake:
    """The init's end of the socket: the restore calls ``ready`` at pre-resume."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.follow_stops = False

    def ready(self, root_pid: int, shell_job: bool, pids: list[int]) -> None:
        """Send a pidfd of the root, wait for ckpt's go, then outlive ckpt."""
        fd = os.pidfd_open(root_pid)
        try:
            socket.send_fds(self.sock, [json.dumps({"restored": root_pid, "pids": pids,
                                                    "shell_job": shell_job}).encode()], [fd])
        finally:
            os.close(fd)
        reply = json.loads(self.sock.recv(_MSG) or b"{}")
        if "go" not in reply:
            raise RestoreError("ckpt, outside the new PID namespace, is gone")
        self.follow_stops = bool(reply["go"])
        libc.prctl(libc.PR_SET_PDEATHSIG, 0)

    def send(self, **msg: object) -> None:
        self.sock.send(json.dumps(msg).encode())


def _init_main(sock: socket.socket, restore: Callable[[Handshake], int]) -> None:
    """The init: its namespace's /proc, the restore, then the reaper; never returns."""
    code = 1
    hs = Handshake(sock)
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        pidns.mount_own_proc()
        root = restore(hs)
        hs.send(running=root)
        code = 0
        pidns.become_reaper(root, sock.fileno() if hs.follow_stops else -1)
    except BaseException as e:  # noqa: BLE001 - everything goes to ckpt, outside
        with contextlib.suppress(OSError):
            hs.send(error=str(e) or type(e).__name__, kind=type(e).__name__)
    finally:
        os._exit(code)


class _Host:
    """ckpt's side: the init it forked and what it reported."""

    def __init__(self, init_pid: int, sock: socket.socket):
        self.init_pid = init_pid
        self.sock = sock
        self.root_fd = -1
        self.root_pid = 0
        self.foreground: Foreground | None = None

    def receive(self) -> dict[str, object]:
        data, fds, _, _ = socket.recv_fds(self.sock, _MSG, 1)
        for fd in fds:
            self.root_fd = fd
        if not data:
            status = self._reap(INIT_GRACE_SECONDS)
            raise RestoreError(f"the new PID namespace's init (process {self.init_pid}) "
                               f"died during the restore ({_describe(status)})")
        msg = json.loads(data)
        if "error" in msg:
            self._reap(INIT_GRACE_SECONDS)
            kind = getattr(errors, str(msg.get("kind")), None)
            if not (isinstance(kind, type) and issubclass(kind, errors.CkptError)):
                kind = RestoreError
            raise kind(str(msg["error"]))
        return msg

    def _reap(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.init_pid, os.WNOHANG)
            if pid:
                self.init_pid = 0
                return status
            if time.monotonic() > deadline:
                os.kill(self.init_pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)

    def abandon(self) -> None:
        """ckpt failed or was interrupted before the tree ran: the init rolls back (it
        gets SIGTERM, as ckpt would) and is reaped."""
        if self.init_pid:
            with contextlib.suppress(OSError):
                os.kill(self.init_pid, signal.SIGTERM)
            self._reap(INIT_GRACE_SECONDS)

    def close(self) -> None:
        if self.foreground is not None:
            self.foreground.close()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        self.sock.close()


def _describe(status: int | None) -> str:
    if status is None:
        return "status unknown"
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def restore(run: Callable[[Handshake], int], *, detach: bool, pidfile: str | None
            ) -> Outcome:
    """Fork the init of a new PID namespace, let ``run`` restore the tree in it (``run``
    calls the handshake's ``ready`` at pre-resume and returns the root's PID in the
    namespace), then write the host's PID of the root to ``pidfile`` and, without
    ``detach``, wait for the root's end. The init itself is left to run."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        init_pid = pidns.fork_init()
    except OSError as e:
        ours.close()
        theirs.close()
        raise RestoreError(f"cannot create a PID namespace: {e.strerror}") from None
    if init_pid == 0:
        ours.close()
        _init_main(theirs, run)
    theirs.close()
    host = _Host(init_pid, ours)
    try:
        try:
            msg = host.receive()
            host.root_pid = pidns.pidfd_pid(host.root_fd)
            if msg.get("shell_job") and not detach:
                host.foreground = Foreground(procfs.stat(host.root_pid).pgid)
            host.sock.send(json.dumps({"go": host.foreground is not None}).encode())
            host.receive()
        except BaseException:
            host.abandon()
            raise
        log.info("the tree runs in a PID namespace of its own: root %d (%d in it), init %d",
                 host.root_pid, msg["restored"], init_pid)
        if pidfile:
            with open(pidfile, "w") as f:
                f.write(f"{host.root_pid}\n")
        pids = [int(p) for p in msg["pids"]]  # type: ignore[attr-defined]
        if detach:
            return Outcome(host.root_pid, init_pid, None, pids)
        return Outcome(host.root_pid, init_pid, _wait(host), pids)
    finally:
        host.close()


def _wait(host: _Host) -> int:
    """Wait for the init, which ends with the root: the root's exit status (the exact
    one from its pidfd where the kernel keeps it, else the init's exit code)."""
    if host.foreground is not None:
        fd = os.pidfd_open(host.init_pid)
        try:
            host.foreground.follow(fd, host.sock.fileno())
        finally:
            os.close(fd)
    while True:
        try:
            _, status = os.waitpid(host.init_pid, 0)
            break
        except InterruptedError:
            continue
    exact = pidns.pidfd_exit_status(host.root_fd)
    if exact is None:
        exact = pidns.exit_code_status(os.waitstatus_to_exitcode(status))
    return os.waitstatus_to_exitcode(exact)

