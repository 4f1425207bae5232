"""inotify instances: every watch, by the path of the watched inode, its mask and
its watch descriptor (wd), made again under the same wd.

At dump ``/proc/PID/fdinfo/FD`` lists each watch::

    inotify wd:N ino:HEX sdev:HEX mask:HEX ignored_mask:0 fhandle-bytes:HEX
            fhandle-type:HEX f_handle:HEX

(all numbers hex, ``wd`` too; ``sdev`` is the kernel's internal dev_t,
major << 20 | minor). The watch holds an inode, not a path, so the path is found
again from the file handle: the filesystem's mounts are looked up in
``/proc/self/mountinfo`` by device number, a mount's root is opened (``O_RDONLY |
O_DIRECTORY``: on 6.18 an ``O_PATH`` mount fd gives EBADF), ``open_by_handle_at(...,
O_PATH)`` opens the inode, and ``/proc/self/fd/N`` names it. The name must lead back
to the same inode (``lstat``), through some mount of that filesystem. Filesystems
that cannot open handles (procfs, sysfs, cgroupfs) are covered when the watched
inode is the root of one of their mounts (a watch on ``/proc`` or on a cgroup
folder that is a mount point). A watched inode that was deleted (still held open
somewhere, else the kernel would have dropped the watch) cannot be watched again
and is refused, as is one whose path cannot be found.

Restore makes a new instance (``inotify_init1``) and adds the watches in wd order,
each by path with ``IN_DONT_FOLLOW`` (the path is the watched inode itself, a
symlink stays a symlink) and ``IN_MASK_CREATE`` (two watches that would land on
one inode fail instead of merging). The kernel hands out wds in increasing order
(``idr_alloc_cyclic`` from the last one given, never reusing a freed number until
it wraps), so a number the dump does not have is used up by a *filler*: a watch on
a directory no real watch is on (``/``, or ``/proc``, ...), added and removed at
once. Each wd the kernel returns is checked. Removing a filler queues an
IN_IGNORED event; the new instance is therefore read empty before the process gets
it, and then checked (``/proc/self/fdinfo``) to still hold every watch.

Not saved: events queued and not read at dump time. inotify has no way to read
them without consuming them nor to queue them again, so they are lost, like
events that happen while the process is down; the dump logs a warning with the
number of bytes lost (``FIONREAD``) instead of refusing, since a busy watcher
almost always has some. After the restore the next new watch gets the wd after
the highest restored one (a number freed after it at dump time may come again).
The instance is created by the restorer, so its watches count against root's
``max_user_watches``. The mask is saved as the kernel shows it (``IN_ONESHOT``
and ``IN_EXCL_UNLINK`` included; ``IN_MASK_ADD``/``IN_MASK_CREATE`` and
``IN_ONLYDIR`` only matter when a watch is added and are not kept by the kernel).
An inotify fd has no --inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import anon, procfs
from . import files

log = logging.getLogger("ckpt.inotify")

LINK = "anon_inode:inotify"
# mask bits given back to inotify_add_watch (the kernel may show internal bits too)
RESTORE_MASK = anon.IN_ALL_EVENTS | anon.IN_ONESHOT | anon.IN_EXCL_UNLINK
ADD_FLAGS = anon.IN_DONT_FOLLOW | anon.IN_MASK_CREATE
FILLERS = ("/", "/proc", "/sys", "/dev", "/tmp", "/etc", "/usr", "/var")
FILLER_MASK = anon.IN_DELETE_SELF
MAX_FILLERS = 1 << 24  # ~7 us each: about two minutes of restore
DRAIN_EVERY = 4096     # fillers between two reads of the queue (16384 events max)

_WATCH_RE = re.compile(
    r"^inotify\s+wd:([0-9a-fA-F]+)\s+ino:([0-9a-fA-F]+)\s+sdev:([0-9a-fA-F]+)"
    r"\s+mask:([0-9a-fA-F]+)\s+ignored_mask:([0-9a-fA-F]+)"
    r"(?:\s+fhandle-bytes:([0-9a-fA-F]+)\s+fhandle-type:([0-9a-fA-F]+)"
    r"\s+f_handle:([0-9a-fA-F]+))?")


@dataclass
class Watch:
    """One line of an inotify fd's fdinfo."""

    wd: int
    ino: int
    major: int
    minor: int
    mask: int
    handle_type: int | None = None
    handle: bytes | None = None

    @property
    def dev(self) -> int:
        return os.makedev(self.major, self.minor)

    def same(self, st: os.stat_result) -> bool:
        return st.st_ino == self.ino and st.st_dev == self.dev


def watches(pid: int, fd: int) -> list[Watch]:
    """The watches of inotify ``fd`` of ``pid``, in wd order."""
    out = []
    for line in procfs.fdinfo_lines(pid, fd):
        m = _WATCH_RE.match(line)
        if not m:
            if line.startswith("inotify"):
                raise DumpError(f"process {pid} fd {fd} (inotify): cannot parse the watch "
                                f"{line.strip()!r} in its fdinfo")
            continue
        sdev = int(m[3], 16)
        w = Watch(int(m[1], 16), int(m[2], 16), sdev >> 20, sdev & 0xFFFFF, int(m[4], 16))
        if m[6] is not None:
            n = int(m[6], 16)
            raw = bytes.fromhex(m[8])
            if len(raw) == n:
                w.handle_type, w.handle = int(m[7], 16), raw
        out.append(w)
    return sorted(out, key=lambda w: w.wd)


@dataclass
class Mount:
    mount_id: int
    major: int
    minor: int
    root: str    # the folder of the filesystem mounted
    point: str   # where
    fstype: str


def _unescape(field: bytes) -> str:
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field))


def mounts() -> list[Mount]:
    """ckpt's mounts (/proc/self/mountinfo); the dumped tree shares them (no namespaces)."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.rstrip(b"\n").partition(b" - ")
            fields = left.split(b" ")
            major, minor = (int(x) for x in fields[2].split(b":"))
            out.append(Mount(int(fields[0]), major, minor, _unescape(fields[3]),
                             _unescape(fields[4]), os.fsdecode(right.split(b" ")[0])))
    return out


class NotFound(Exception):
    """The path of a watched inode cannot be found; the message says why."""


class Deleted(Exception):
    """The watched inode has no name any more; the argument is its last one."""


class PathFinder:
    """Finds the path of watched inodes; keeps one fd per mount it opened."""

    def __init__(self) -> None:
        self._mounts: list[Mount] | None = None
        self._fds: dict[str, int | None] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                os.close(fd)
        self._fds.clear()

    def _candidates(self, w: Watch) -> list[Mount]:
        if self._mounts is None:
            self._mounts = mounts()
        ms = [m for m in self._mounts if (m.major, m.minor) == (w.major, w.minor)]
        return sorted(ms, key=lambda m: m.root != "/")  # whole filesystems first

    def _mount_fd(self, m: Mount, w: Watch) -> int | None:
        if m.point not in self._fds:
            try:
                fd = os.open(m.point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                fd = None
            if fd is not None and os.fstat(fd).st_dev != w.dev:  # overmounted
                os.close(fd)
                fd = None
            self._fds[m.point] = fd
        return self._fds[m.point]

    def path(self, w: Watch) -> str:
        ms = self._candidates(w)
        if not ms:
            raise NotFound(f"no mount of device {w.major}:{w.minor} in /proc/self/mountinfo")
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
                    if w.same(os.lstat(link)):
                        return link
                except OSError:
                    pass
                reasons.append(f"its path {link} leads to another file (overmounted?)")
        for m in ms:  # the root of a mount (procfs, sysfs, ... cannot open handles)
            try:
                if w.same(os.lstat(m.point)):
                    return m.point
            except OSError:
                continue
        raise NotFound("; ".join(dict.fromkeys(reasons)) or "no mount of it is reachable")


def _drain(fd: int) -> int:
    """Read (and drop) every queued event of non-blocking inotify ``fd``; bytes read."""
    n = 0
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return n
        if not chunk:
            return n
        n += len(chunk)


def _filler(paths: list[str]) -> str:
    """A folder no watch of the instance is on, to use up wd numbers."""
    taken = set()
    for p in paths:
        try:
            st = os.lstat(p)
            taken.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    for p in FILLERS:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in taken:
            return p
    raise RestoreError("inotify: every folder ckpt uses to skip watch descriptors "
                       f"({', '.join(FILLERS)}) is watched; cannot recreate the wd numbers")


class Inotify:
    KIND = "inotify"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return link == LINK

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: dict[str, str]) -> dict[str, Any]:
        what = f"process {pid} fd {fd} (inotify)"
        ws = watches(pid, fd)
        finder = PathFinder()
        out = []
        try:
            for w in ws:
                try:
                    path = finder.path(w)
                except Deleted as e:
                    raise UnsupportedError(
                        f"{what}: watch {w.wd} is on {e.args[0]}, which was deleted (it is "
                        "still open somewhere); ckpt cannot watch a deleted file again"
                    ) from None
                except NotFound as e:
                    raise UnsupportedError(
                        f"{what}: cannot find the path of the file watched by wd {w.wd} "
                        f"(inode {w.ino} on device {w.major}:{w.minor}): {e}") from None
                out.append({"wd": w.wd, "mask": w.mask, "path": path, "ino": w.ino,
                            "dev": w.dev})
                log.debug("%s: wd %d mask %#x on %s", what, w.wd, w.mask, path)
        finally:
            finder.close()
        fillers = (ws[-1].wd - len(ws)) if ws else 0
        if fillers > MAX_FILLERS:
            raise UnsupportedError(
                f"{what}: its highest watch descriptor is {ws[-1].wd}; recreating it would "
                f"take {fillers} filler watches (at most {MAX_FILLERS})")
        queued = anon.fionread(dup)
        if queued:
            log.warning("%s: %d bytes of inotify events were queued and not read; they are "
                        "lost (a restored inotify starts with an empty queue)", what, queued)
        log.info("%s: %d watches", what, len(out))
        return {"watches": out}

    def keys(self, desc: dict[str, Any]) -> list[str]:
        return []  # an anon inode: only orig-fd[N] replaces it

    def before_restore(self, ctx: files.RestoreCtx,
                       descriptions: dict[str, dict[str, Any]]) -> None:
        """Refuse before any process exists if a watched path is gone."""
        for fid, desc in descriptions.items():
            if desc.get("kind") != self.KIND or fid in ctx.inherit_files:
                continue
            for w in desc["watches"]:
                try:
                    st = os.lstat(w["path"])
                except OSError as e:
                    raise RestoreError(f"inotify (file {fid}): cannot watch {w['path']} "
                                       f"again (wd {w['wd']}): {e.strerror}") from None
                if (st.st_ino, st.st_dev) != (w["ino"], w["dev"]):
                    log.warning("inotify (file %s): %s is another file than at dump (inode "
                                "%d, was %d); wd %d watches the one there now", fid,
                                w["path"], st.st_ino, w["ino"], w["wd"])

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        fd = anon.inotify_init1(anon.IN_NONBLOCK | anon.IN_CLOEXEC)
        try:
            self._fill(fd, sorted(desc["watches"], key=lambda w: w["wd"]))
            if not desc["flags"] & os.O_NONBLOCK:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _fill(self, fd: int, ws: list[dict[str, Any]]) -> None:
        filler: str | None = None
        used = 0
        last = 0
        for w in ws:
            wd, path = w["wd"], w["path"]
            while last < wd - 1:  # use up the numbers the dump does not have
                if filler is None:
                    filler = _filler([x["path"] for x in ws])
                try:
                    got = anon.inotify_add_watch(fd, filler, FILLER_MASK | ADD_FLAGS)
                    anon.inotify_rm_watch(fd, got)
                except OSError as e:
                    raise RestoreError(f"inotify: cannot add a filler watch on {filler} to "
                                       f"reach wd {wd}: {os.strerror(e.errno or 0)}") from None
                if got <= last or got >= wd:
                    raise RestoreError(f"inotify: the kernel gave wd {got} after {last}; "
                                       f"cannot recreate wd {wd} for {path}")
                last = got
                used += 1
                if used % DRAIN_EVERY == 0:
                    _drain(fd)
            try:
                got = anon.inotify_add_watch(fd, path, (w["mask"] & RESTORE_MASK) | ADD_FLAGS)
            except OSError as e:
                why = os.strerror(e.errno or 0)
                if e.errno == errno.EEXIST:
                    why = "it is the same file as another watch of this inotify"
                elif e.errno == errno.ENOSPC:
                    why += " (fs.inotify.max_user_watches reached)"
                raise RestoreError(f"inotify: cannot watch {path} again (wd {wd}, mask "
                                   f"{w['mask']:#x}): {why}") from None
            if got != wd:
                raise RestoreError(f"inotify: watching {path} again gave wd {got}, not {wd} "
                                   "as at dump")
            last = got
        _drain(fd)  # the fillers' IN_IGNORED, and events of the restore itself
        left = {w.wd for w in watches(os.getpid(), fd)}
        for w in ws:
            if w["wd"] not in left:
                raise RestoreError(f"inotify: the watch on {w['path']} (wd {w['wd']}) went "
                                   "away during the restore (file deleted, or a one-shot "
                                   "watch fired)")
        if used:
            log.info("inotify: %d watches restored, %d filler watches to skip numbers",
                     len(ws), used)


files.register(Inotify())
