"""Character devices other than terminals (/dev/null, /dev/zero, /dev/urandom, ...),
reopened by path with their flags. The dump checks the path still leads to the
same device, without opening it (opening a device may act: a watchdog starts).
A device node deleted while open is a ghost (ghost.py): made again under its
name (``mknod``), opened and removed.

A device whose open file holds state a new open would not have is refused at dump,
naming it: a FUSE daemon's /dev/fuse (the channel its mount is served through), a
tun/tap file attached to an interface, the virtual devices of /dev/uinput and
/dev/uhid, vhost, CUSE and PPP files, and sound, DRM, RTC and watchdog devices
(criu refuses any device it does not know).

A reader of /dev/kmsg (``dmesg -w``, journald) has a place in the kernel's log: the
sequence number of the next record it reads, which a new open sets to the oldest
record (all read again). The dump finds it without moving it when the reader read
everything (poll: nothing to read; then it is the number after the last record
ckpt reads on a file of its own), else by reading one record from the reader's
file and going back (lseek to the oldest, then reading up to it again); the
restore reads the new file up to that place before the process gets it.
Records the kernel logged between dump and restore are read after it."""

from __future__ import annotations

import errno
import os
import stat as st_mod

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import treeroot
from ..schema import NAT, PATH, U32, Opt, Tup
from . import ghost
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx, reopen_flags

TTY_MAJORS = {3, 4, 5, 136, 137, 138, 139, 140, 141, 142, 143}
KMSG = [1, 11]  # /dev/kmsg
# (major, minor) -> what its open file holds that a new open would not
_STATEFUL = {
    (10, 229): "is the channel a FUSE daemon serves its mount through (a new open serves none)",
    (10, 223): "made a virtual input device (uinput), which goes away with its file",
    (10, 239): "made a virtual HID device (uhid), which goes away with its file",
    (10, 238): "holds a vhost-net device's state", (10, 241): "holds a vhost-vsock device's state",
    (10, 203): "is a CUSE device's channel (a new open serves none)",
    (10, 130): "is a watchdog, which a new open would start again",
    (108, 0): "holds a PPP unit or channel",
}
# subsystems (/sys/dev/char/M:m/subsystem) whose devices keep state per open file
_STATEFUL_CLASSES = {"sound", "drm", "rtc", "watchdog", "vfio"}
TUN = (10, 200)


def _stateful(f: OpenFd, rdev: tuple[int, int]) -> str:
    """Why the device of ``f`` cannot be opened again in the state it has ("" when it
    can)."""
    if rdev == TUN:
        iff = f.info.other.get("iff")
        return f"is attached to network interface {iff} (TUNSETIFF)" if iff else ""
    if rdev in _STATEFUL:
        return _STATEFUL[rdev]
    try:
        cls = os.path.basename(os.readlink(f"/sys/dev/char/{rdev[0]}:{rdev[1]}/subsystem"))
    except OSError:
        return ""
    if cls in _STATEFUL_CLASSES:
        return f"is a {cls} device, whose open file holds state a new open would not have"
    return ""
_RECORD = 8192  # more than a /dev/kmsg record holds


def _record_seq(fd: int) -> int | None:
    """The sequence number of the next /dev/kmsg record read from ``fd`` (which
    that read consumes), None when there is none (EAGAIN). A record overwritten
    before it was read (EPIPE) is skipped, as the kernel skips it for the reader."""
    while True:
        try:
            rec = os.read(fd, _RECORD)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EPIPE:
                continue
            raise
        return int(rec.split(b";", 1)[0].split(b",")[1])


def _kmsg_end(fd: int) -> int:
    """The sequence number after the last record of the kernel's log, read on a
    file of ckpt's (/dev/kmsg opened again through ``fd``)."""
    own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        last = -1
        while (seq := _record_seq(own)) is not None:
            last = seq
        return last + 1
    finally:
        os.close(own)


def _kmsg_skip_to(fd: int, seq: int) -> None:
    """Read /dev/kmsg file ``fd`` (at its oldest record) up to record ``seq``: the
    next read gives ``seq``, or the oldest record still there when ``seq`` is gone.
    Its reads never wait when record ``seq`` is there, or ``fd`` is non-blocking."""
    own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        oldest = _record_seq(own)
    finally:
        os.close(own)
    if oldest is None or oldest >= seq:
        return
    while (got := _record_seq(fd)) is not None and got < seq - 1:
        pass


def _kmsg_place(f: OpenFd) -> int:
    """Where the process's /dev/kmsg file ``f`` reads next, left there (its flags
    untouched: each read below has a record to give)."""
    import select  # here: a restore of a tree holding /dev/null needs it not (start-up)
    end = _kmsg_end(f.dup)  # first: the process, frozen, cannot read past it
    poller = select.poll()
    poller.register(f.dup, select.POLLIN)
    if not poller.poll(0):
        return end  # it read everything
    seq = _record_seq(f.dup)
    if seq is None:  # (poll said there was one)
        return end
    os.lseek(f.dup, 0, os.SEEK_SET)  # to the oldest record, then up to seq again
    _kmsg_skip_to(f.dup, seq)
    return seq


class CharDevices(FileKind):
    KIND = "chr"
    # its own fields in files.json
    SCHEMA = {
        "path": PATH, "rdev": Tup(U32, U32), "pos": NAT, "ghost": Opt(ghost.SCHEMA),
        "kmsg_seq": Opt(NAT)}  # /dev/kmsg: the sequence number of the next record read

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) not in TTY_MAJORS

    def __init__(self) -> None:
        super().__init__()
        self._ghosts = ghost.Made()

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        desc: Description = {"path": f.link, "rdev": [os.major(f.st.st_rdev),
                                                     os.minor(f.st.st_rdev)], "pos": f.info.pos}
        if ghost.is_ghost(f.link, f.st):
            desc["ghost"] = ghost.save_fd(ctx.images, f.dup, f.st, f.link, f.where)
            desc["path"] = desc["ghost"]["path"]
        elif not f.link.startswith("/"):
            raise UnsupportedError(f"{f.where}: character device {f.link} has no path")
        why = _stateful(f, (desc["rdev"][0], desc["rdev"][1]))
        if why:
            raise UnsupportedError(f"{f.where}: {f.link} {why}; ckpt cannot make that again")
        if desc["rdev"] == KMSG and f.info.flags & os.O_ACCMODE != os.O_WRONLY:
            try:
                desc["kmsg_seq"] = _kmsg_place(f)
            except (OSError, ValueError, IndexError) as e:
                raise DumpError(f"{f.where}: cannot find where it reads {f.link}: {e}"
                                ) from None
            ctx.images.need("kmsg-place")
        return desc

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        if "ghost" in desc:
            ghost.check(desc["ghost"])
            return
        try:
            st = treeroot.stat(desc["path"])
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']}: {e.strerror}") from None
        if not st_mod.S_ISCHR(st.st_mode) or [os.major(st.st_rdev),
                                              os.minor(st.st_rdev)] != desc["rdev"]:
            raise RestoreError(f"{desc['path']} is now a different device")

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        if "ghost" in desc:
            return self._ghosts.reopen(ctx.images, desc)
        try:
            fd = treeroot.open_in(desc["path"], reopen_flags(desc["flags"]))
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']}: {e.strerror}") from None
        st = os.fstat(fd)
        if [os.major(st.st_rdev), os.minor(st.st_rdev)] != desc["rdev"]:
            os.close(fd)
            raise RestoreError(f"{desc['path']} is now a different device")
        if "kmsg_seq" in desc:
            try:
                os.set_blocking(fd, False)  # (ckpt's file yet) the log may end before it
                _kmsg_skip_to(fd, desc["kmsg_seq"])
                os.set_blocking(fd, not desc["flags"] & os.O_NONBLOCK)
            except (OSError, ValueError, IndexError) as e:
                os.close(fd)
                raise RestoreError(f"{desc['path']}: cannot read up to where the process "
                                   f"read: {e}") from None
        return fd

    def close(self) -> None:
        self._ghosts.close()
