"""The path of an inode known only by its device, number and file handle, as the
fdinfo of inotify and fanotify shows it, found again through a mount of its filesystem.

The filesystem's mounts are looked up in the tree's mountinfo by device number, a
mount's root is opened (``O_RDONLY | O_DIRECTORY``: on 6.18 an ``O_PATH`` mount fd
gives EBADF), ``open_by_handle_at(..., O_PATH)`` opens the inode, and
``/proc/self/fd/N`` names it. The name must lead back to the same inode (``lstat``),
through some mount of that filesystem. Filesystems that cannot open handles (procfs,
sysfs, cgroupfs) are covered when the inode is the root of one of their mounts (a
watch on ``/proc`` or on a cgroup folder that is a mount point). An inode that was
deleted (still held open somewhere) has no path: ``Deleted``.
"""

from __future__ import annotations

import os

from . import anon, treeroot
from .procfs import Inode
from .record import dataclass


@dataclass
class Mount:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    major: int
    minor: int
    root: str    # the folder of the filesystem mounted
    point: str   # where
    fstype: str


def _unescape(field: bytes) -> str:
    if b"\\" not in field:  # nothing escaped: no pattern compiled (start-up)
        return os.fsdecode(field)
    import re
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field))


def mounts(tree: bool = True) -> list[Mount]:
    """The tree's mounts (ckpt's, or its own in a container: kernel/treeroot.py), their
    points as its processes see them; ckpt's own without ``tree``."""
    out = []
    with open(treeroot.proc("mountinfo") if tree else "/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.rstrip(b"\n").partition(b" - ")
            fields = left.split(b" ")
            major, minor = (int(x) for x in fields[2].split(b":"))
            out.append(Mount(int(fields[0]), major, minor, _unescape(fields[3]),
                             _unescape(fields[4]), os.fsdecode(right.split(b" ")[0])))
    return out


class NotFound(Exception):
    """The path of an inode cannot be found; the message says why."""


class Deleted(Exception):
    """The inode has no name any more; the argument is its last one."""


class PathFinder:
    """Finds the path of inodes; keeps one fd per mount it opened."""

    def __init__(self) -> None:
        self._mounts: list[Mount] | None = None
        self._fds: dict[str, int | None] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()

    def _candidates(self, w: Inode) -> list[Mount]:
        if self._mounts is None:
            self._mounts = mounts()
        ms = [m for m in self._mounts if (m.major, m.minor) == (w.major, w.minor)]
        return sorted(ms, key=lambda m: m.root != "/")  # whole filesystems first

    def _mount_fd(self, m: Mount, w: Inode) -> int | None:
        if m.point not in self._fds:
            try:
                fd = treeroot.open_in(m.point, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                fd = None
            if fd is not None and os.fstat(fd).st_dev != w.dev:  # overmounted
                os.close(fd)
                fd = None
            self._fds[m.point] = fd
        return self._fds[m.point]

    def path(self, w: Inode) -> str:
        """The path of ``w`` now: leads to that very inode (raises NotFound, Deleted)."""
        ms = self._candidates(w)
        if not ms:
            raise NotFound(f"no mount of device {w.major}:{w.minor} in "
                           f"{treeroot.proc('mountinfo')}")
        reasons = []
        if w.handle is None or w.handle_type is None:
            reasons.append("the kernel gives no file handle for it")
        else:
            for m in ms:
                mfd = self._mount_fd(m, w)
                if mfd is None:
                    continue
                try:
                    h = anon.open_by_handle_at(mfd, w.handle_type, w.handle,
                                               os.O_PATH | os.O_CLOEXEC)
                except OSError as e:
                    reasons.append(f"open_by_handle_at through {m.point} ({m.fstype}): "
                                   f"{os.strerror(e.errno or 0)}")
                    continue
                try:
                    st = os.fstat(h)
                    link = os.readlink(f"/proc/self/fd/{h}")
                finally:
                    os.close(h)
                if not w.same(st):
                    reasons.append(f"the handle opens inode {st.st_ino}, another file")
                    continue
                if st.st_nlink == 0:
                    raise Deleted(link.removesuffix(" (deleted)"))
                if link.endswith(" (deleted)") or not link.startswith("/"):
                    reasons.append(f"the name it is known by ({link}) was deleted and ckpt "
                                   "cannot find its other links")
                    continue
                try:
                    if w.same(treeroot.stat(link, follow=False)):
                        return link
                except OSError:
                    pass
                reasons.append(f"its path {link} leads to another file (overmounted?)")
        for m in ms:  # the root of a mount (procfs, sysfs, ... cannot open handles)
            try:
                if w.same(treeroot.stat(m.point, follow=False)):
                    return m.point
            except OSError:
                continue
        raise NotFound("; ".join(dict.fromkeys(reasons)) or "no mount of it is reachable")
