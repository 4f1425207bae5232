"""epoll instances: the list of files each one watches, with their events and data.

The kernel keys an epoll watch by (file, fd number): the number is the one the
file had, in the process that called ``epoll_ctl``, when it was added. At dump
``/proc/PID/fdinfo/EPFD`` lists every watch (``tfd: N events: HEX data: HEX
pos: ... ino: HEX sdev: HEX``); each is checked against the fd table of the
process that holds the epoll fd (the first process of the dump that does, the
*owner*): fd N must still be open and be the very file that is watched
(``kcmp(KCMP_EPOLL_TFD)``, or its inode and device when kcmp cannot tell).
A watch whose fd was closed or reused (the file is still held through another
fd or by another process, else the kernel would have dropped the watch)
cannot be made again and is refused.

At restore the description is an empty epoll instance (``epoll_create1``);
once the owner's fds are at their final numbers, ``restore_in_task`` injects
``epoll_ctl(EPFD, EPOLL_CTL_ADD, N, &event)`` in it for every watch, so the
registrations carry the owner's own fd numbers. An epoll shared by several
processes is filled once, in its owner.

Readiness is not saved: on EPOLL_CTL_ADD the kernel polls the file and queues
the watch as ready if it is, for level- and edge-triggered watches alike. A
level-triggered watch is therefore exactly as before. An edge-triggered one
reports one event after the restore if its file is ready then, even if the
process had already collected that edge before the dump (one spurious wake-up,
which edge-triggered code that reads until EAGAIN tolerates); an edge pending
at dump time is not lost, its file being still ready. A one-shot watch that
had fired (the kernel shows it with only its flag bits left) comes back
disarmed for everything but EPOLLERR and EPOLLHUP, which the kernel always
adds.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import libc, procfs
from ..kernel.inject import InjectionError, Injector
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx, TaskFd

log = logging.getLogger("ckpt.epoll")

# libc.NR lists only the syscalls ckpt needed before epoll; epoll adds its own
# (x86_64 numbers) here rather than in libc.py.
libc.NR.setdefault("epoll_ctl", 233)
libc.NR.setdefault("epoll_create1", 291)

EPOLL_CTL_ADD = 1
EPOLL_CLOEXEC = 0o2000000
EPOLLET = 1 << 31
EPOLLONESHOT = 1 << 30
EPOLLWAKEUP = 1 << 29
EPOLLEXCLUSIVE = 1 << 28
KCMP_EPOLL_TFD = 7

def _same_file(pid: int, epfd: int, w: procfs.EpollWatch, toff: int) -> bool | None:
    """Whether fd ``w.tfd`` of ``pid`` is the file epoll ``epfd`` watches there
    (``toff``: the index of this watch among those with the same fd number);
    None when kcmp cannot tell."""
    slot = (ctypes.c_uint32 * 3)(epfd, w.tfd, toff)
    try:
        return libc.syscall("kcmp", pid, pid, KCMP_EPOLL_TFD, w.tfd,
                            ctypes.addressof(slot)) == 0
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return None
        if e.errno in (errno.ENOENT, errno.EBADF):
            return False
        raise


def _check(pid: int, epfd: int, ws: list[procfs.EpollWatch]) -> None:
    """Refuse a watch whose fd number no longer names the watched file in ``pid``."""
    seen: dict[int, int] = {}
    for w in ws:
        tfd = w.tfd
        toff = seen.get(tfd, 0)
        seen[tfd] = toff + 1
        what = f"process {pid} fd {epfd} (epoll) watches fd {tfd} (inode {w.ino})"
        try:
            st = os.stat(f"/proc/{pid}/fd/{tfd}")
        except FileNotFoundError:
            raise UnsupportedError(
                f"{what}, but fd {tfd} is closed: the watched file is still open through "
                "another fd or process, and ckpt cannot restore a watch under an fd number "
                "the process no longer has") from None
        same = _same_file(pid, epfd, w, toff)
        if same is None:  # no kcmp: the inode and device must match
            same = st.st_ino == w.ino and st.st_dev == os.makedev(w.major, w.minor)
        if not same:
            raise UnsupportedError(
                f"{what}, but fd {tfd} is now another file (inode {st.st_ino}): the watched "
                "file was closed under that number while still open elsewhere, and ckpt "
                "cannot restore a watch under an fd number that names another file")


class Epoll(FileKind):
    KIND = "epoll"
    LINK = "anon_inode:[eventpoll]"

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        if f.info.unparsed:
            raise DumpError(f"{f.where} (epoll): cannot parse the watch "
                            f"{f.info.unparsed[0]!r} in its fdinfo")
        ws = f.info.epoll
        _check(f.pid, f.fd, ws)
        log.info("%s: epoll with %d watches", f.where, len(ws))
        return {"owner": f.pid,
                "watches": [{"tfd": w.tfd, "events": w.events, "data": w.data} for w in ws]}

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        return libc.syscall("epoll_create1", EPOLL_CLOEXEC)

    def restore_in_task(self, ctx: RestoreCtx, pid: int, inj: Injector, scratch: int,
                        fds: list[TaskFd]) -> None:
        """In the owner of each epoll: add its watches, with the owner's fd numbers."""
        done: set[str] = set()
        for f in fds:
            desc = f.desc
            if desc.get("owner") != pid or f.file in done:
                continue
            done.add(f.file)
            epfd = f.fd
            for w in desc["watches"]:
                inj.write(scratch, struct.pack("<IQ", w["events"], w["data"]))
                try:
                    inj.call("epoll_ctl", epfd, EPOLL_CTL_ADD, w["tfd"], scratch)
                except InjectionError as e:
                    raise RestoreError(
                        f"process {pid} fd {epfd} (epoll): cannot watch fd {w['tfd']} again "
                        f"(events {w['events']:#x}): {os.strerror(e.errno)}") from None
            log.info("process %d fd %d: epoll with %d watches restored", pid, epfd,
                     len(desc["watches"]))


