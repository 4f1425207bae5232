"""Pipes and FIFOs: both ends, their flags, capacity and the bytes buffered in them.

Buffered bytes are read without consuming them: the pipe is opened again
through /proc/PID/fd/N and ``tee``d into a pipe of ckpt's. At restore a new
pipe per saved pipe is filled with those bytes before the process runs. A FIFO
is reopened by its path (the dump checks it is still there); one deleted while
open is a ghost (ghost.py), made again under its name and removed; a FIFO
refilled gets its modification time back.

A pipe in packet mode (O_DIRECT) keeps each write apart: a read returns one write at
most. Reading ckpt's copy read by read gives those packets (the copy keeps which
buffers are packets); their lengths are saved, and the restore writes each in packet
mode. Bytes written in normal mode just before a packet are read with it and come
back as part of it.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat as st_mod

from ..errors import DumpError, RestoreError
from ..images import RawWriter
from ..kernel import libc, treeroot
from ..log import logger
from ..schema import BOOL, NAT, PATH, U64, Int, List, Opt
from . import ghost
from .filekind import (
    Description,
    DumpCtx,
    FileKind,
    ImageRefs,
    OpenFd,
    RestoreCtx,
    close_quietly,
)

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.pipes")

DATA_FILE = "pipes-data.img"
O_LARGEFILE = 0o100000  # x86-64's (Python's os.O_LARGEFILE is 0 there): set by open() only


def _read_buffered(pid: int, fd: int, capacity: int) -> list[bytes]:
    """The bytes in the pipe behind ``pid``'s ``fd``, left in place, as reads return
    them (one read per packet of a pipe in packet mode)."""
    src = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, libc.F_SETPIPE_SZ, capacity)
        try:
            n = libc.tee(src, w, capacity)
        except BlockingIOError:
            return []
        except OSError as e:
            if e.errno == 11:
                return []
            raise
        reads: list[bytes] = []
        while n > 0:
            reads.append(os.read(r, n))
            n -= len(reads[-1])
        return reads
    finally:
        for x in (src, r, w):
            os.close(x)


def _refill(w: int, data: bytes, packets: list[int] | None) -> None:
    """Write ``data`` into the pipe's write end ``w``: as the packets of those lengths
    (in packet mode, then back to the mode ``w`` had), or at once."""
    if packets is None:
        os.write(w, data)
        return
    if sum(packets) != len(data) or min(packets, default=1) <= 0:
        raise RestoreError("a pipe's packets do not add up to its bytes")
    mode = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, mode | os.O_DIRECT)
    try:
        view = memoryview(data)
        for size in packets:
            os.write(w, view[:size])
            view = view[size:]
    finally:
        fcntl.fcntl(w, fcntl.F_SETFL, mode)


def _other_end_closed(end: int, flags: int) -> bool:
    """Whether no process holds the other end of the pipe whose end ``end`` is (an
    open file description ckpt holds too): the kernel's poll says so, a hang-up on a
    read end without writers, an error on a write end without readers."""
    mode = flags & os.O_ACCMODE
    if mode == os.O_RDWR:
        return False
    poller = select.poll()
    poller.register(end, select.POLLIN if mode == os.O_RDONLY else select.POLLOUT)
    events = dict(poller.poll(0)).get(end, 0)
    return bool(events & (select.POLLHUP if mode == os.O_RDONLY else select.POLLERR))


def _fifo_path_fd(path: str) -> int:
    """An O_PATH fd of the FIFO at ``path`` (as /proc showed it: its last name is no
    symbolic link; under the tree's root, treeroot), refused in one line when it is
    gone or no longer a FIFO."""
    try:
        fd = treeroot.open_in(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError as e:
        raise RestoreError(f"cannot reopen the FIFO {path}: {e.strerror}") from None
    if not st_mod.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise RestoreError(f"{path} is no longer a FIFO")
    return fd


class Pipes(FileKind):
    KIND = "pipe"
    # its own fields in files.json
    SCHEMA = {
        "inode": U64, "capacity": Int(0, 1 << 31), "data_off": NAT, "data_len": Int(0, 1 << 31),
        "fifo": Opt(PATH),  # a named pipe's path
        "ghost": Opt(ghost.SCHEMA),  # a deleted FIFO
        "external": Opt(BOOL),
        "packets": Opt(List(Int(1, 1 << 31), max=1 << 20)),  # in packet mode (O_DIRECT)
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        refs.within(DATA_FILE, desc["data_off"], desc["data_len"], where, "data_len")

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        return 3  # a pipe made for one end: both its ends, and the end handed out

    def __init__(self) -> None:
        super().__init__()
        self._saved: dict[int, dict[str, Any]] = {}  # dump: inode -> capacity, data_off, _len
        self._data: RawWriter | None = None          # dump: pipes-data.img
        self._made: dict[int, tuple[int, int]] = {}  # restore: inode -> (read, write) ends
        self._widowed: set[int] = set()  # dump: pipes whose other end is closed everywhere

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISFIFO(st.st_mode)

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        keys = [f"pipe:[{desc['inode']}]"]
        if "fifo" in desc:
            keys += [desc["fifo"].lstrip("/"), desc["fifo"]]
        return keys

    @classmethod
    def shown_path(cls, desc: Description) -> str:
        return str(desc.get("fifo") or f"pipe:[{desc['inode']}]")

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        ino = f.st.st_ino
        if ino not in self._saved:
            capacity = fcntl.fcntl(f.dup, libc.F_GETPIPE_SZ)
            try:
                reads = _read_buffered(f.pid, f.fd, capacity)
            except OSError as e:
                raise DumpError(f"{f.where}: cannot read the data buffered in {f.link}: "
                                f"{e.strerror}") from None
            data = b"".join(reads)
            if self._data is None:
                self._data = ctx.images.raw(DATA_FILE)
            off = self._data.write(data)
            self._saved[ino] = {"capacity": capacity, "data_off": off, "data_len": len(data)}
            if len(reads) > 1 or (reads and f.info.flags & os.O_DIRECT):
                self._saved[ino]["packets"] = [len(x) for x in reads]
                ctx.images.need("pipe-packets")
            log.info("pipe %s: %d bytes buffered", f.link, len(data))
        desc: Description = {"inode": ino, **self._saved[ino]}
        if ghost.is_ghost(f.link, f.st):  # a FIFO deleted while open
            desc["ghost"] = ghost.save_fd(ctx.images, f.dup, f.st, f.link, f.where)
            desc["fifo"] = desc["ghost"]["path"]
        elif not f.link.startswith("pipe:"):
            desc["fifo"] = f.link  # a named pipe
        elif _other_end_closed(f.dup, f.info.flags):
            self._widowed.add(ino)
        return desc

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        """A FIFO is reopened by its path: it must still be one (a deleted one is made
        again: ghost.py)."""
        if "ghost" in desc:
            ghost.check(desc["ghost"])
        elif "fifo" in desc:
            os.close(_fifo_path_fd(desc["fifo"]))

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Mark pipes with an end outside the dumped tree; the restore needs to know. A
        pipe whose other end no process holds (a writer that ended: a pipeline's first
        command done, the input of ``xargs``) is not one: restored alike, both ends
        made and the other closed, it reads as before."""
        unnamed = [d for d in self.descriptions.values() if "fifo" not in d]
        ends: dict[int, set[int]] = {}
        for desc in unnamed:
            ends.setdefault(desc["inode"], set()).add(desc["flags"] & os.O_ACCMODE)
        for desc in unnamed:
            modes = ends[desc["inode"]]
            desc["external"] = not ({os.O_RDONLY, os.O_WRONLY} <= modes or os.O_RDWR in modes
                                    or desc["inode"] in self._widowed)

    def before_restore(self, ctx: RestoreCtx) -> None:
        """Say which pipes lost their outside end, and how to give them a new one."""
        for fid, desc in self.descriptions.items():
            if desc.get("external") and fid not in ctx.replaced:
                log.warning("pipe:[%s] had its other end outside the dumped tree; it is "
                            "restored as a new pipe whose other end nobody holds (give one "
                            "with --inherit-fd 'fd[N]:pipe:[%s]')", desc["inode"], desc["inode"])

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        ino = desc["inode"]
        if ino not in self._made:
            self._made[ino] = self._make(ctx, desc)
        r, w = self._made[ino]
        flags = desc["flags"]
        if "fifo" in desc or flags & O_LARGEFILE or flags & os.O_ACCMODE == os.O_RDWR:
            # a FIFO, or a pipe opened again through /proc/PID/fd/N ("/dev/stdin" of a
            # pipeline's command, "exec 3<>/proc/self/fd/N"): an open() of its own, not
            # an end pipe() made (O_LARGEFILE shows it), maybe read-write
            return os.open(f"/proc/self/fd/{r}", (desc["flags"] & ~0o2000000) | os.O_NONBLOCK)
        return os.dup(r if desc["flags"] & os.O_ACCMODE == os.O_RDONLY else w)

    def _make(self, ctx: RestoreCtx, desc: Description) -> tuple[int, int]:
        """A new pipe for ``desc``'s, with its capacity and buffered bytes."""
        ino = desc["inode"]
        times = None  # a FIFO's times, put back once it is refilled
        if "ghost" in desc:  # made again, both ends open
            rw = ghost.create(ctx.images.path(ghost.DATA_FILE), desc["ghost"])
            r, w = rw, rw
            times = (desc["ghost"]["atime_ns"], desc["ghost"]["mtime_ns"])
        elif "fifo" in desc:
            # A named pipe: open both ends on the FIFO so its bytes can go back in, on
            # the very FIFO checked (a file swapped in since never gets them).
            node = _fifo_path_fd(desc["fifo"])
            try:
                rw = os.open(f"/proc/self/fd/{node}", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            finally:
                os.close(node)
            r, w = rw, rw
            st = os.fstat(rw)
            times = (st.st_atime_ns, st.st_mtime_ns)
        else:
            r, w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(w, libc.F_SETPIPE_SZ, desc["capacity"])
            except OSError as e:
                log.warning("pipe:[%s]: capacity %d not restored: %s", ino, desc["capacity"],
                            e.strerror)
            if desc["data_len"]:
                with open(ctx.images.path(DATA_FILE), "rb") as f:
                    f.seek(desc["data_off"])
                    data = f.read(desc["data_len"])
                if len(data) != desc["data_len"]:
                    raise RestoreError(f"{DATA_FILE}: truncated")
                _refill(w, data, desc.get("packets"))
            if times is not None and desc["data_len"]:
                os.utime(w, ns=times)  # the refill is not a write of the process's
        except BaseException:
            close_quietly({r, w})
            raise
        return r, w

    def close(self) -> None:
        close_quietly({fd for ends in self._made.values() for fd in ends})
        self._made.clear()
