"""epoll instances: the list of files each one watches, with their events and data.

The kernel keys an epoll watch by (file, fd number): the number is the one the
file had, in the process that called ``epoll_ctl``, when it was added. At dump
``/proc/PID/fdinfo/EPFD`` lists every watch (``tfd: N events: HEX data: HEX
pos: ... ino: HEX sdev: HEX``); each is checked against the fd table of the
process that holds the epoll fd (the first process of the dump that does, the
*owner*): fd N is the very file that is watched (``kcmp(KCMP_EPOLL_TFD)``, or
its inode and device when kcmp cannot tell).

A watch whose fd N was closed or now names another file (``dup2`` over it, a
reused number) lives on while its file is open elsewhere. Once every process is
dumped, that file is looked for among the tree's open files of the same inode,
compared with the watched one by ``kcmp(KCMP_EPOLL_TFD)``: the watch keeps the
description (``file``) and one fd of the tree holding it (``holder``: its process
and number). Held by no fd of the tree (by a process outside it, or only by a
mapping), it is refused, naming it.

At restore the description is an empty epoll instance (``epoll_create1``);
once the owner's fds are at their final numbers (after the other kinds' own
``restore_in_task``, which put a pidfd or a /dev/tty in place of its stand-in),
``restore_in_task`` injects
``epoll_ctl(EPFD, EPOLL_CTL_ADD, N, &event)`` in it for every watch, so the
registrations carry the owner's own fd numbers. An epoll shared by several
processes is filled once, in its owner. A watch whose file the owner no longer
has under N is added through a temporary fd N: the owner takes a copy of the
holder's fd (``pidfd_getfd``), puts it at N (moving aside what N holds), adds
the watch, and puts N back as it was.

Busy polling parameters (``EPIOCSPARAMS``: microseconds, budget, preference) are
read with ``EPIOCGPARAMS`` from ckpt's copy of the fd and set again on the new
instance; a budget above 64, which only ``CAP_NET_ADMIN`` may set, is refused at
dump (the restore would give it whether or not the process could).

Readiness is not saved: on EPOLL_CTL_ADD the kernel polls the file and queues
the watch as ready if it is, for level- and edge-triggered watches alike. A
level-triggered watch is therefore exactly as before. An edge-triggered one
reports one event after the restore if its file is ready then, even if the
process had already collected that edge before the dump (one spurious wake-up,
which edge-triggered code that reads until EAGAIN tolerates); an edge pending
at dump time is not lost, its file being still ready. A one-shot watch that
had fired (the kernel shows it with only its flag bits left) cannot be added
disarmed: the kernel always adds EPOLLERR and EPOLLHUP, so a hang-up would wake
a second thread while the first one still handles the file (what EPOLLONESHOT
is for). It is added first, armed for whatever its file is ready for, and fired
at once by an injected ``epoll_wait``, which disarms it as before; one whose
file is ready for nothing then is left armed for EPOLLERR and EPOLLHUP only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import libc, procfs
from ..kernel.inject import InjectionError, Injector
from ..kernel.record import dataclass
from ..log import logger
from ..schema import PID, STR, U32, U64, Int, List, Obj, Opt, Tup
from . import nspids
from .filekind import Description, DumpCtx, FileKind, ImageRefs, OpenFd, RestoreCtx, TaskFd

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.epoll")

# libc.NR lists only the syscalls ckpt needed before epoll; epoll adds its own
# (x86_64 numbers) here rather than in libc.py.
libc.NR.setdefault("epoll_ctl", 233)
libc.NR.setdefault("epoll_create1", 291)
libc.NR.setdefault("epoll_wait", 232)

EPOLL_CTL_ADD, EPOLL_CTL_MOD = 1, 3
EPOLL_CLOEXEC = 0o2000000
EPOLLET = 1 << 31
EPOLLONESHOT = 1 << 30
EPOLLWAKEUP = 1 << 29
EPOLLEXCLUSIVE = 1 << 28
FLAG_BITS = EPOLLET | EPOLLONESHOT | EPOLLWAKEUP | EPOLLEXCLUSIVE  # the kernel's private
# what a fired one-shot watch is armed for, to fire it again at restore: IN, PRI, OUT, RDHUP
ANY_READY = 0x1 | 0x2 | 0x4 | 0x2000
KCMP_EPOLL_TFD = 7
F_DUPFD_CLOEXEC = 1030
FEATURE = "epoll-moved"  # what a dump with a moved watch needs of its reader (images.py)
PARAMS_FEATURE = "epoll-params"  # ... and one with busy polling parameters
# struct epoll_params (u32 usecs, u16 budget, u8 prefer, u8 pad): _IOW/_IOR(0x8A, 1/2)
_EPIOCSPARAMS, _EPIOCGPARAMS = 0x40088A01, 0x80088A02
_BUDGET_MAX = 64  # NAPI_POLL_WEIGHT: above it, EPIOCSPARAMS needs CAP_NET_ADMIN

def _same_file(pid: int, epfd: int, w: procfs.EpollWatch, toff: int,
               holder: tuple[int, int] | None = None) -> bool | None:
    """Whether fd ``w.tfd`` of ``pid`` (or fd ``holder[1]`` of process ``holder[0]``) is
    the file epoll ``epfd`` of ``pid`` watches under ``w.tfd`` (``toff``: the index of
    this watch among those with the same fd number); None when kcmp cannot tell."""
    slot = (ctypes.c_uint32 * 3)(epfd, w.tfd, toff)
    hpid, hfd = holder or (pid, w.tfd)
    try:
        return libc.syscall("kcmp", hpid, pid, KCMP_EPOLL_TFD, hfd,
                            ctypes.addressof(slot)) == 0
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return None
        if e.errno in (errno.ENOENT, errno.EBADF):
            return False
        raise


@dataclass
class _Moved:
    """A watch whose fd number no longer names its file in the owner, to be found in
    the tree once every process is dumped."""

    watch: dict[str, Any]  # its entry in the description
    where: str
    pid: int
    epfd: int
    w: procfs.EpollWatch
    toff: int


def _check(pid: int, epfd: int, ws: list[procfs.EpollWatch]
           ) -> list[tuple[procfs.EpollWatch, int, str | None]]:
    """Each watch, the index among those of its fd number, and why its fd no longer
    names the watched file in ``pid`` (None when it does)."""
    seen: dict[int, int] = {}
    out = []
    for w in ws:
        tfd = w.tfd
        toff = seen.get(tfd, 0)
        seen[tfd] = toff + 1
        try:
            st = os.stat(f"/proc/{pid}/fd/{tfd}")
        except FileNotFoundError:
            out.append((w, toff, f"fd {tfd} is closed"))
            continue
        same = _same_file(pid, epfd, w, toff)
        if same is None:  # no kcmp: the inode and device must match
            same = st.st_ino == w.ino and st.st_dev == os.makedev(w.major, w.minor)
        out.append((w, toff, None if same else f"fd {tfd} is now another file "
                    f"(inode {st.st_ino})"))
    return out


class Epoll(FileKind):
    KIND = "epoll"
    LINK = "anon_inode:[eventpoll]"
    USES_OTHER_FDS = True  # a pidfd's, a /dev/tty's stand-in is not the file it watches
    # its own fields in files.json
    SCHEMA = {
        "owner": PID,
        "watches": List(Obj(tfd=Int(0, (1 << 31) - 1), events=U32, data=U64,
                            file=Opt(STR), holder=Opt(Tup(PID, Int(0, (1 << 31) - 1))))),
        "params": Opt(Tup(Int(0, (1 << 31) - 1), Int(0, _BUDGET_MAX), Int(0, 1))),
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        refs.in_tree(desc["owner"], where, "owner")
        for i, w in enumerate(desc["watches"]):
            if "file" in w:
                refs.described(w["file"], where, f"watches[{i}].file")
            if "holder" in w:
                refs.in_tree(w["holder"][0], where, f"watches[{i}].holder")

    def __init__(self) -> None:
        super().__init__()
        self._moved: list[_Moved] = []

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        if f.info.unparsed:
            raise DumpError(f"{f.where} (epoll): cannot parse the watch "
                            f"{f.info.unparsed[0]!r} in its fdinfo")
        watches = []
        for w, toff, moved in _check(f.pid, f.fd, f.info.epoll):
            watch: dict[str, Any] = {"tfd": w.tfd, "events": w.events, "data": w.data}
            watches.append(watch)
            if moved is not None:
                where = (f"{f.where} (epoll) watches fd {w.tfd} (inode {w.ino}), but "
                         f"{moved}")
                self._moved.append(_Moved(watch, where, f.pid, f.fd, w, toff))
        log.info("%s: epoll with %d watches", f.where, len(watches))
        desc: Description = {"owner": f.pid, "watches": watches}
        params = _params(f)
        if params is not None:
            desc["params"] = params
            ctx.images.need(PARAMS_FEATURE)
        return desc

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Find the file of each watch whose fd number moved: one fd of the tree holding
        it, or refuse."""
        for m in self._moved:
            found = None
            for hpid, hfd, fid in ctx.holders.get((os.makedev(m.w.major, m.w.minor),
                                                    m.w.ino), []):
                same = _same_file(m.pid, m.epfd, m.w, m.toff, (hpid, hfd))
                if same is None:
                    raise UnsupportedError(f"{m.where}; ckpt cannot find the watched file "
                                           "without kcmp(KCMP_EPOLL_TFD)")
                if same:
                    found = (hpid, hfd, fid)
                    break
            if found is None:
                raise UnsupportedError(
                    f"{m.where}, and no process of the dumped tree holds the watched file "
                    "through an fd (a process outside the tree, or a mapping, keeps it "
                    "open); ckpt cannot add that watch again")
            m.watch["file"], m.watch["holder"] = found[2], [found[0], found[1]]
            ctx.images.need(FEATURE)
            log.info("%s: the watched file is file %s, held by process %d fd %d", m.where,
                     found[2], found[0], found[1])

    def close(self) -> None:
        self._moved.clear()

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        fd = libc.syscall("epoll_create1", EPOLL_CLOEXEC)
        if "params" in desc:
            try:
                fcntl.ioctl(fd, _EPIOCSPARAMS, struct.pack("<IHBB", *desc["params"], 0))
            except OSError as e:
                os.close(fd)
                raise RestoreError(f"an epoll's busy polling parameters {desc['params']} "
                                   f"cannot be set again (EPIOCSPARAMS): {e.strerror}") from None
        return fd

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
            fired = [w for w in desc["watches"] if _fired(w)]
            for w in fired:
                _add(pid, inj, epfd, w, scratch, w["events"] | ANY_READY)
            if fired:
                _disarm(pid, inj, epfd, fired, scratch)
            for w in desc["watches"]:
                if not _fired(w):
                    _add(pid, inj, epfd, w, scratch, w["events"])
            log.info("process %d fd %d: epoll with %d watches restored", pid, epfd,
                     len(desc["watches"]))


def _params(f: OpenFd) -> list[int] | None:
    """The epoll's busy polling parameters (microseconds, budget, preference) when any
    is set; refused when the budget is one only CAP_NET_ADMIN may set."""
    buf = bytearray(8)
    try:
        fcntl.ioctl(f.dup, _EPIOCGPARAMS, buf, True)
    except OSError as e:
        if e.errno in (errno.ENOTTY, errno.EINVAL):  # a kernel without them (before 6.9)
            return None
        raise
    usecs, budget, prefer, _ = struct.unpack("<IHBB", buf)
    if not (usecs or budget or prefer):
        return None
    if budget > _BUDGET_MAX:
        raise UnsupportedError(f"{f.where} (epoll) has a busy polling budget of {budget}, "
                               f"above {_BUDGET_MAX}, which only CAP_NET_ADMIN may set; "
                               "not supported")
    return [usecs, budget, prefer]


def _fired(w: dict[str, Any]) -> bool:
    """Whether a watch is a one-shot one that fired (only its flag bits left), on a
    file its owner holds under its number (a moved one is added as it was)."""
    return bool(w["events"] & EPOLLONESHOT) and not w["events"] & ~FLAG_BITS \
        and "holder" not in w


def _add(pid: int, inj: Injector, epfd: int, w: dict[str, Any], scratch: int,
         events: int) -> None:
    """epoll_ctl ADD of watch ``w`` with ``events``, in the owner ``pid``."""
    inj.write(scratch, struct.pack("<IQ", events, w["data"]))
    try:
        if "holder" in w:
            _add_moved(inj, epfd, w["tfd"], w["holder"], scratch)
        else:
            inj.call("epoll_ctl", epfd, EPOLL_CTL_ADD, w["tfd"], scratch)
    except InjectionError as e:
        raise RestoreError(
            f"process {pid} fd {epfd} (epoll): cannot watch fd {w['tfd']} again "
            f"(events {w['events']:#x}): {os.strerror(e.errno)}") from None


def _disarm(pid: int, inj: Injector, epfd: int, fired: list[dict[str, Any]],
            scratch: int) -> None:
    """Fire the one-shot watches ``fired``, the only ones in the epoll yet, so that the
    kernel disarms them; those whose file was ready for nothing are armed for its
    flags alone (EPOLLERR and EPOLLHUP then)."""
    inj.call("epoll_wait", epfd, scratch, len(fired), 0)
    armed = {(x.tfd, x.data) for x in procfs.fdinfo(pid, epfd).epoll
             if x.events & ~FLAG_BITS}
    for w in fired:
        if (w["tfd"], w["data"]) not in armed:
            continue
        inj.write(scratch, struct.pack("<IQ", w["events"], w["data"]))
        inj.call("epoll_ctl", epfd, EPOLL_CTL_MOD, w["tfd"], scratch)


def _add_moved(inj: Injector, epfd: int, tfd: int, holder: list[int], event: int) -> None:
    """Add a watch on the file fd ``holder[1]`` of process ``holder[0]`` holds, under fd
    number ``tfd``, which the process no longer has on that file: a copy of the
    holder's fd at ``tfd`` for the time of ``epoll_ctl``, what ``tfd`` held put back."""
    pidfd = inj.call("pidfd_open", nspids.inner(holder[0]), 0)
    try:
        copy = inj.call("pidfd_getfd", pidfd, holder[1], 0)
    finally:
        inj.call("close", pidfd)
    aside = flags = -1
    try:
        try:
            flags = inj.call("fcntl", tfd, fcntl.F_GETFD)
            aside = inj.call("fcntl", tfd, F_DUPFD_CLOEXEC, 0)
        except InjectionError as e:
            if e.errno != errno.EBADF:
                raise
        inj.call("dup3", copy, tfd, os.O_CLOEXEC)
        try:
            inj.call("epoll_ctl", epfd, EPOLL_CTL_ADD, tfd, event)
        finally:
            if aside >= 0:
                inj.call("dup3", aside, tfd, os.O_CLOEXEC if flags & fcntl.FD_CLOEXEC else 0)
            else:
                inj.call("close", tfd)
    finally:
        if aside >= 0:
            inj.call("close", aside)
        inj.call("close", copy)
