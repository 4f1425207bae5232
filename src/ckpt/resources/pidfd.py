"""pidfds (``pidfd_open``, ``CLONE_PIDFD``) on processes and threads of the tree,
made again inside the restored processes so that they name the restored ones.

fdinfo tells which process a pidfd names (``Pid:``). A pidfd on a process outside
the dumped tree, or on one that has exited and been reaped, is refused at dump,
as criu does: the restore could not make it name that process. At restore the
first process holding the description calls ``pidfd_open`` itself (after the
whole tree exists, zombies too); the others share that file (inside.py). A
pidfd on a thread (``PIDFD_THREAD``) is refused: the restore makes threads after
the fds are in place. So is one passed in a message not received yet (SCM_RIGHTS):
queues are filled again before the processes exist.
"""

from __future__ import annotations

import os

from ..errors import ImageError, UnsupportedError
from ..kernel.inject import Injector
from ..schema import PID
from . import nspids
from .filekind import Description, DumpCtx, FileKind, ImageRefs, OpenFd, RestoreCtx, TaskFd
from .inside import OpenedInside

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

PIDFD_THREAD = os.O_EXCL  # pidfd_open(2): a pidfd on a thread, not its whole process


class PidFds(FileKind):
    KIND = "pidfd"
    LINK = "anon_inode:[pidfd]"
    # its own fields in files.json
    SCHEMA = {"pid": PID}

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        refs.in_tree(desc["pid"], where, "pid")

    def __init__(self) -> None:
        super().__init__()
        self._found: list[tuple[str, Description]] = []  # dump: where each was seen
        self._inside = OpenedInside()  # restore

    @classmethod
    def sent_back(cls, desc: Description) -> bool:
        return False  # opened by its restored process, after the queues are filled

    @classmethod
    def shown_path(cls, desc: Description) -> str:
        return f"pidfd of {desc['pid']}"

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        try:
            pid = int(f.info.other["Pid"])
        except (KeyError, ValueError):
            raise UnsupportedError(f"{f.where}: a pidfd whose process this kernel does not "
                                   "show (no Pid: in fdinfo); not supported") from None
        if pid == -1:
            raise UnsupportedError(f"{f.where}: a pidfd on a process that has exited and "
                                   "was reaped; not supported")
        if pid == 0:
            raise UnsupportedError(f"{f.where}: a pidfd on a process of another PID "
                                   "namespace; not supported")
        if f.info.flags & PIDFD_THREAD:
            raise UnsupportedError(f"{f.where}: a pidfd on thread {pid} (PIDFD_THREAD); not "
                                   "supported yet")
        desc: Description = {"pid": pid}
        self._found.append((f.where, desc))
        ctx.images.need("pidfd")
        return desc

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        pid = desc.get("pid")
        if isinstance(ctx, RestoreCtx) and (not isinstance(pid, int) or pid not in ctx.tree):
            raise ImageError(f"files.json: a pidfd on {pid!r}, not a process of the tree")

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        pids = {t["pid"] for t in tasks}
        for where, desc in self._found:
            if desc["pid"] not in pids:
                raise UnsupportedError(f"{where}: a pidfd on process {desc['pid']}, which is "
                                       "outside the dumped tree; dump it with the tree, or "
                                       "close the pidfd")

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        """A stand-in until the process opens the real pidfd (``restore_in_task``)."""
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def restore_in_task(self, ctx: RestoreCtx, pid: int, inj: Injector, scratch: int,
                        fds: list[TaskFd]) -> None:
        for t in fds:  # by the PID the process knows it by (its PID namespace's)
            self._inside.place(pid, inj, t, lambda t=t: inj.call(
                "pidfd_open", nspids.inner(t.desc["pid"]), 0))
