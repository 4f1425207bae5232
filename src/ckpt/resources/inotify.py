"""inotify instances: every watch, by the path of the watched inode, its mask and
its watch descriptor (wd), made again under the same wd.

At dump ``/proc/PID/fdinfo/FD`` lists each watch::

    inotify wd:N ino:HEX sdev:HEX mask:HEX ignored_mask:0 fhandle-bytes:HEX
            fhandle-type:HEX f_handle:HEX

(all numbers hex, ``wd`` too; ``sdev`` is the kernel's internal dev_t,
major << 20 | minor). The watch holds an inode, not a path, so the path is found
again from the file handle, through a mount of its filesystem (kernel/inode_path.py).
A watched inode that was deleted (still held open somewhere, else the kernel would
have dropped the watch: ``tail -f`` on a log removed by its rotation) is watched
again through an fd of the tree holding it: the watch keeps that description
(``file``), which the restore makes again (a ghost file) and watches through ckpt's
fd of it. One held by no fd of the tree (a process outside it, a mapping only) is
refused, as is one whose path cannot be found.

Restore makes a new instance (``inotify_init1``) and adds the watches in wd order,
each on the path's inode itself (an ``O_PATH | O_NOFOLLOW`` fd of it named through
``/proc/self/fd``: a symlink stays a symlink; in a container the path is resolved in
its root and mounts, kernel/treeroot.py) with ``IN_MASK_CREATE`` (two watches that
would land on one inode fail instead of merging). The kernel hands out wds in increasing order
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
import os

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import anon, procfs, treeroot
from ..kernel.inode_path import Deleted, NotFound, PathFinder
from ..log import logger
from ..schema import PATH, STR, U32, U64, Int, List, Obj, Opt
from .filekind import Description, DumpCtx, FileKind, ImageRefs, OpenFd, RestoreCtx

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.inotify")

# mask bits given back to inotify_add_watch (the kernel may show internal bits too)
RESTORE_MASK = anon.IN_ALL_EVENTS | anon.IN_ONESHOT | anon.IN_EXCL_UNLINK
FILLERS = ("/", "/proc", "/sys", "/dev", "/tmp", "/etc", "/usr", "/var")
FILLER_MASK = anon.IN_DELETE_SELF
FEATURE = "inotify-deleted"  # what a dump watching a deleted file needs of its reader
MAX_FILLERS = 1 << 24  # ~7 us each: about two minutes of restore
DRAIN_EVERY = 4096     # fillers between two reads of the queue (16384 events max)


def watches(pid: int, fd: int, info: procfs.FdInfo | None = None) -> list[procfs.InotifyWatch]:
    """The watches of inotify ``fd`` of ``pid`` (``info``: its fdinfo), in wd order."""
    if info is None:
        info = procfs.fdinfo(pid, fd)
    if info.unparsed:
        raise DumpError(f"process {pid} fd {fd} (inotify): cannot parse the watch "
                        f"{info.unparsed[0]!r} in its fdinfo")
    return sorted(info.inotify, key=lambda w: w.wd)


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
            st = treeroot.stat(p, follow=False)
            taken.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    for p in FILLERS:
        try:
            st = treeroot.stat(p, follow=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in taken:
            return p
    raise RestoreError("inotify: every folder ckpt uses to skip watch descriptors "
                       f"({', '.join(FILLERS)}) is watched; cannot recreate the wd numbers")


def _add_watch(fd: int, path: str, mask: int) -> int:
    """inotify_add_watch on the tree's ``path`` itself (a symlink not followed), as the
    tree resolves it (a container's root, its mounts)."""
    with treeroot.held(path) as name:  # followed: the O_PATH fd's inode
        return anon.inotify_add_watch(fd, name, mask | anon.IN_MASK_CREATE)


class Inotify(FileKind):
    KIND = "inotify"
    LINK = "anon_inode:inotify"
    # its own fields in files.json
    SCHEMA = {
        "watches": List(Obj(wd=Int(1, (1 << 31) - 1), mask=U32, path=PATH, ino=U64, dev=U64,
                            file=Opt(STR)))}

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        for i, w in enumerate(desc["watches"]):
            if "file" in w:
                refs.described(w["file"], where, f"watches[{i}].file")

    def __init__(self) -> None:
        super().__init__()
        # dump: watches of deleted files, to find among the tree's fds: (where, watch)
        self._deleted: list[tuple[str, dict[str, Any]]] = []

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        what = f"{f.where} (inotify)"
        ws = watches(f.pid, f.fd, f.info)
        finder = PathFinder()
        out = []
        try:
            for w in ws:
                inode = w.inode
                deleted = False
                try:
                    path = finder.path(inode)
                except Deleted as e:
                    path, deleted = e.args[0], True
                except NotFound as e:
                    raise UnsupportedError(
                        f"{what}: cannot find the path of the file watched by wd {w.wd} "
                        f"(inode {inode.ino} on device {inode.major}:{inode.minor}): {e}"
                    ) from None
                out.append({"wd": w.wd, "mask": w.mask, "path": path, "ino": inode.ino,
                            "dev": inode.dev})
                if deleted:
                    self._deleted.append((f"{what}: watch {w.wd} is on {path}, which was "
                                          "deleted", out[-1]))
                log.debug("%s: wd %d mask %#x on %s%s", what, w.wd, w.mask, path,
                          " (deleted)" if deleted else "")
        finally:
            finder.close()
        fillers = (ws[-1].wd - len(ws)) if ws else 0
        if fillers > MAX_FILLERS:
            raise UnsupportedError(
                f"{what}: its highest watch descriptor is {ws[-1].wd}; recreating it would "
                f"take {fillers} filler watches (at most {MAX_FILLERS})")
        queued = anon.fionread(f.dup)
        if queued:
            log.warning("%s: %d bytes of inotify events were queued and not read; they are "
                        "lost (a restored inotify starts with an empty queue)", what, queued)
        log.info("%s: %d watches", what, len(out))
        return {"watches": out}

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Each watch of a deleted file: the description of an fd of the tree holding
        that file (restored as a ghost), or refuse."""
        ctx.hold_deleted(self._deleted, FEATURE, "watch")

    def close(self) -> None:
        self._deleted.clear()

    def before_restore(self, ctx: RestoreCtx) -> None:
        """Refuse before anything is created if a watched path is gone."""
        for fid, desc in self.descriptions.items():
            if fid in ctx.replaced:
                continue
            for w in desc["watches"]:
                if "file" in w:  # a deleted file, made again by the restore
                    continue
                try:
                    st = treeroot.stat(w["path"], follow=False)
                except OSError as e:
                    raise RestoreError(f"inotify (file {fid}): cannot watch {w['path']} "
                                       f"again (wd {w['wd']}): {e.strerror}") from None
                if (st.st_ino, st.st_dev) != (w["ino"], w["dev"]):
                    log.warning("inotify (file %s): %s is another file than at dump (inode "
                                "%d, was %d); wd %d watches the one there now", fid,
                                w["path"], st.st_ino, w["ino"], w["wd"])

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        # non-blocking while ckpt drains the fillers' events; the saved flags come after
        fd = anon.inotify_init1(anon.IN_NONBLOCK | anon.IN_CLOEXEC)
        try:
            self._fill(ctx, fd, sorted(desc["watches"], key=lambda w: w["wd"]))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _fill(self, ctx: RestoreCtx, fd: int, ws: list[dict[str, Any]]) -> None:
        filler: str | None = None
        used = 0
        last = 0
        for w in ws:
            wd, path = w["wd"], w["path"]
            while last < wd - 1:  # use up the numbers the dump does not have
                if filler is None:
                    filler = _filler([x["path"] for x in ws])
                try:
                    got = _add_watch(fd, filler, FILLER_MASK)
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
                if "file" in w:  # deleted: through ckpt's fd of the file made again
                    assert ctx.open_file is not None
                    got = anon.inotify_add_watch(
                        fd, f"/proc/self/fd/{ctx.open_file(w['file'])}",
                        (w["mask"] & RESTORE_MASK) | anon.IN_MASK_CREATE)
                else:
                    got = _add_watch(fd, path, w["mask"] & RESTORE_MASK)
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

