"""Landlock domains: a process confined by one (``landlock_restrict_self``) stays
confined for good, and no interface lets another process read its rules or give them
to a new process, so a restore would bring it back unconfined, with access it did not
have: refused at dump, naming it.

Nothing in /proc shows a domain. What does is Landlock's ptrace restriction: a
confined process may not inspect a process outside its domain. ckpt makes such a
process, a child with the target's real ids, no capabilities, dumpable, which the
target could inspect were it not confined, and has the target compare itself with
it (an injected ``kcmp``): EPERM says confined.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..errors import UnsupportedError
from ..kernel import interrupts, libc, procfs

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from ..kernel.inject import Injector

KCMP_VM = 1
PR_SET_DUMPABLE, PR_SET_PDEATHSIG = 4, 1
SIGKILL = 9  # (the signal module is not imported by a dump)
_CAP_VERSION_3 = 0x20080522


class Probe:
    """The unconfined processes one dump compares its targets with, one per (uid, gid);
    ``close`` kills them (each is killed by the kernel too, should ckpt die first)."""

    def __init__(self) -> None:
        self._helpers: dict[tuple[int, int], int] = {}  # ids -> pid
        self._own_caps: int | None = None  # ckpt's permitted capabilities, read once

    def check(self, pid: int, inj: Injector, st: procfs.Status) -> None:
        """Refuse process ``pid`` (``st``: its status; ``inj`` runs in it) if a Landlock
        domain confines it."""
        if len(st.nspids) > 1:
            return  # in a PID namespace of its own: it cannot name the helper (no check)
        uid, gid = st.uids[0], st.gids[0]
        if self._ckpt_will_do(uid, gid, st):
            helper = os.getpid()  # ckpt itself: no process to make
        else:
            helper = self._helper(uid, gid)
        if inj.raw("kcmp", pid, helper, KCMP_VM, 0, 0) == -errno.EPERM:
            raise UnsupportedError(
                f"process {pid} is confined by a Landlock domain (landlock_restrict_self), "
                "whose rules no process can read or give to another: a restored process "
                "would run unconfined; not supported")

    def _ckpt_will_do(self, uid: int, gid: int, st: procfs.Status) -> bool:
        """Whether the process could inspect ckpt itself were it not confined: root's
        ids and every capability ckpt has (the usual root target)."""
        if (uid, gid) != (0, 0) or set(st.uids + st.gids) != {0}:
            return False
        if self._own_caps is None:
            self._own_caps = procfs.status(os.getpid()).cap_permitted
        return self._own_caps & ~st.cap_permitted == 0

    def _helper(self, uid: int, gid: int) -> int:
        if (uid, gid) not in self._helpers:
            me = os.getpid()
            r, w = os.pipe2(os.O_CLOEXEC)
            pid = interrupts.fork()
            if pid == 0:  # the child: simple code, out by os._exit
                try:
                    _become(uid, gid)
                    libc.syscall("prctl", PR_SET_PDEATHSIG, SIGKILL)  # after _become
                    if os.getppid() == me:
                        os.close(w)  # ready
                        while True:
                            libc.syscall("pause")
                finally:
                    os._exit(0)
            os.close(w)
            os.read(r, 1)  # until the child has its ids (or died)
            os.close(r)
            self._helpers[uid, gid] = pid
        return self._helpers[uid, gid]

    def close(self) -> None:
        for pid in self._helpers.values():
            os.kill(pid, SIGKILL)
            os.waitpid(pid, 0)
        self._helpers.clear()


def _become(uid: int, gid: int) -> None:
    """Take ids ``uid``/``gid`` (real, effective, saved), no groups, no capabilities, and
    stay dumpable (a change of ids makes a process undumpable)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    head = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice: all none
    libc.syscall("capset", ctypes.addressof(head), ctypes.addressof(data))
    libc.syscall("prctl", PR_SET_DUMPABLE, 1)
