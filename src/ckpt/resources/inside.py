"""Open files only a restored process can open itself (its ``/dev/tty``, a pidfd on a
process of the tree), shared again by every process that held them.

ckpt gives such an fd a stand-in when the tree is forked. Then, in the first
restored process holding the description, the real file is opened inside (an
injected syscall) and put at the fd's number; every later holder takes that very
file from the first (``pidfd_getfd``, injected), so one open file description is
shared again, as it was. (Files ckpt can open itself once the processes exist,
a /proc/PID file, are files_reg's: ``filekind.install_own_fd``.)
"""

from __future__ import annotations

import fcntl
import os

from ..kernel import libc
from ..kernel.inject import Injector
from .filekind import STATUS_FLAGS, Description, TaskFd, install_own_fd, replace_fd

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable


class OpenedInside:
    """The descriptions of one kind that restored processes opened themselves, by id:
    the (pid, fd) of the first one holding each."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[int, int]] = {}

    def __contains__(self, fid: str) -> bool:
        """Whether a restored process opened description ``fid`` itself."""
        return fid in self._first

    def place(self, pid: int, inj: Injector, t: TaskFd, open_inside: Callable[[], int]
              ) -> None:
        """Put the real file of ``t`` at its fd in process ``pid``: ``open_inside`` opens it
        there (returning the new fd) if no process holds it yet, else it is taken from
        the first holder."""
        first = self._first.get(t.file)
        if first is None:
            new = open_inside()
            set_status_flags(inj, new, t.desc)
            replace_fd(inj, t.fd, new)
            self._first[t.file] = (pid, t.fd)
            return
        holder = libc.pidfd_open(first[0])
        try:
            own = libc.pidfd_getfd(holder, first[1])
        finally:
            os.close(holder)
        try:
            install_own_fd(inj, own, t.fd)
        finally:
            os.close(own)


def set_status_flags(inj: Injector, fd: int, desc: Description) -> None:
    """The saved file status flags (O_ASYNC too: set from inside, the kernel names this
    fd in the signal)."""
    inj.call("fcntl", fd, fcntl.F_SETFL, desc["flags"] & STATUS_FLAGS)
