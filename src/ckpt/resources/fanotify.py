"""fanotify groups: the ``fanotify_init`` flags and every mark (on an inode, a
mount or a whole filesystem), made again with ``fanotify_mark``.

``/proc/PID/fdinfo/FD`` shows the group and its marks (numbers in hex)::

    fanotify flags:F event-flags:E
    fanotify ino:I sdev:D mflags:M mask:X ignored_mask:Y fhandle-bytes:.. fhandle-type:..
             f_handle:..
    fanotify mnt_id:N mflags:M mask:X ignored_mask:Y
    fanotify sdev:D mflags:M mask:X ignored_mask:Y

An inode mark's path is found as for inotify (kernel/inode_path.py: file handle,
``open_by_handle_at``, ``/proc/self/fd``). A mark on a deleted file still open (a
log watched and removed) keeps the description of an fd of the tree holding it
(``file``), as inotify does: the restore makes that file again (a ghost) and marks
it through ckpt's fd of it; one held by no fd of the tree is refused. A mount mark
is saved as the mount point of mount N (``/proc/self/mountinfo``), refused when
another mount hides it; a filesystem mark as a mount point of that device.
``mflags`` are the mark flags the kernel keeps (FAN_MARK_IGNORED_SURV_MODIFY 0x40,
FAN_MARK_EVICTABLE 0x200, FAN_MARK_IGNORE 0x400); ``mask`` and ``ignored_mask`` are
the kernel's (FAN_ONDIR, FAN_EVENT_ON_CHILD included).

Restore: ``fanotify_init(flags, event-flags)`` as saved (``O_NONBLOCK`` then set
from the fd's flags), then, oldest mark first, ``fanotify_mark(FAN_MARK_ADD | type,
mask, path)`` and, for an ignore mask, a second call with FAN_MARK_IGNORED_MASK (or
FAN_MARK_IGNORE) and FAN_MARK_IGNORED_SURV_MODIFY as saved; FAN_MARK_EVICTABLE is
given on every call. Each path is the marked inode itself (an ``O_PATH | O_NOFOLLOW``
fd of it named through ``/proc/self/fd``), resolved as the tree sees it (a
container's root and mounts, kernel/treeroot.py); mount points are read from the
tree's mountinfo.

Not saved, as for inotify: events queued and not read at dump time (a warning
gives their size). For permission classes (FAN_CLASS_CONTENT, PRE_CONTENT) the
kernel answers FAN_ALLOW to every request still pending when the dumped process
dies; a response the restored process writes for a request it had read before
the dump is refused by the new group (ENOENT). Mount-namespace marks (Linux
6.14+) are refused. The group is created by the restorer (root): its limits are
root's. A fanotify fd has no --inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import os

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import anon, procfs, treeroot
from ..kernel.inode_path import Deleted, Mount, NotFound, PathFinder, mounts
from ..log import logger
from ..schema import PATH, STR, U32, U64, List, Obj, Opt, Str
from .filekind import Description, DumpCtx, FileKind, ImageRefs, OpenFd, RestoreCtx

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.fanotify")

MARK_FLAGS = anon.FAN_MARK_IGNORED_SURV_MODIFY | anon.FAN_MARK_EVICTABLE | anon.FAN_MARK_IGNORE
FEATURE = "fanotify-deleted"  # what a dump marking a deleted file needs of its reader

def _mnt_id(path: str) -> int | None:
    """The mount the tree's ``path`` resolves to (fdinfo's ``mnt_id``)."""
    try:
        fd = treeroot.open_in(path, os.O_PATH)
    except OSError:
        return None
    try:
        return procfs.fdinfo(os.getpid(), fd).mnt_id
    finally:
        os.close(fd)


def _visible(ms: list[Mount]) -> Mount | None:
    """The first of ``ms`` whose mount point leads to it."""
    return next((m for m in ms if _mnt_id(m.point) == m.mount_id), None)


class Fanotify(FileKind):
    KIND = "fanotify"
    LINK = "anon_inode:[fanotify]"
    # its own fields in files.json
    SCHEMA = {
        "init_flags": U32, "event_flags": U32,
        "marks": List(Obj(type=Str(choices=("inode", "mount", "filesystem")), path=PATH,
                          ino=Opt(U64), dev=Opt(U64), mflags=U32, mask=U64, ignored_mask=U64,
                          file=Opt(STR))),
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        for i, mk in enumerate(desc["marks"]):
            if "file" in mk:
                refs.described(mk["file"], where, f"marks[{i}].file")

    def __init__(self) -> None:
        super().__init__()
        # dump: marks of deleted files, to find among the tree's fds: (where, mark)
        self._deleted: list[tuple[str, dict[str, Any]]] = []

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        what = f"{f.where} (fanotify)"
        info = f.info
        group = info.fanotify
        if group is None:
            raise DumpError(f"{what}: no 'fanotify flags:' line in its fdinfo")
        if info.unparsed:
            raise UnsupportedError(f"{what}: a mark ckpt does not know: {info.unparsed[0]!r}")
        finder = PathFinder()
        table = mounts()
        marks: list[dict[str, Any]] = []
        try:
            for mark in group.marks:
                marks.append(self._mark(what, mark, finder, table))
        finally:
            finder.close()
        marks.reverse()  # the kernel lists the newest first
        queued = anon.fionread(f.dup)
        if queued:
            log.warning("%s: %d bytes of fanotify events were queued and not read; they are "
                        "lost (a restored fanotify starts with an empty queue)", what, queued)
        log.info("%s: %d marks", what, len(marks))
        return {"init_flags": group.flags, "event_flags": group.event_flags, "marks": marks}

    def _mark(self, what: str, fm: procfs.FanotifyMark, finder: PathFinder,
              table: list[Mount]) -> dict[str, Any]:
        if fm.inode is not None:
            w = fm.inode
            deleted = False
            try:
                path = finder.path(w)
            except Deleted as e:
                path, deleted = e.args[0], True
            except NotFound as e:
                raise UnsupportedError(f"{what}: cannot find the path of the marked inode "
                                       f"{w.ino} on device {w.major}:{w.minor}: {e}") from None
            mark: dict[str, Any] = {"type": "inode", "path": path, "ino": w.ino, "dev": w.dev}
            if deleted:
                self._deleted.append((f"{what}: a mark is on {path}, which was deleted", mark))
        elif fm.type == "mount":
            mount = _visible([x for x in table if x.mount_id == fm.mnt_id])
            if mount is None:
                raise UnsupportedError(f"{what}: mount {fm.mnt_id} is marked, and ckpt cannot "
                                       "reach it (not in /proc/self/mountinfo, or hidden "
                                       "under another mount)")
            mark = {"type": "mount", "path": mount.point}
        else:
            mount = _visible([x for x in table if (x.major, x.minor) == (fm.major, fm.minor)])
            if mount is None:
                raise UnsupportedError(f"{what}: the filesystem on device {fm.major}:{fm.minor} "
                                       "is marked, and ckpt finds no mount of it")
            mark = {"type": "filesystem", "path": mount.point,
                    "dev": os.makedev(fm.major, fm.minor)}
        mark.update(mflags=fm.mflags, mask=fm.mask, ignored_mask=fm.ignored_mask)
        log.debug("%s: %s", what, mark)
        return mark

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Each mark of a deleted file: the description of an fd of the tree holding
        that file (restored as a ghost), or refuse."""
        ctx.hold_deleted(self._deleted, FEATURE, "mark")

    def close(self) -> None:
        self._deleted.clear()

    def before_restore(self, ctx: RestoreCtx) -> None:
        """Refuse before anything is created if a marked path is gone."""
        for fid, desc in self.descriptions.items():
            if fid in ctx.replaced:
                continue
            for mk in desc["marks"]:
                if "file" in mk:  # a deleted file, made again by the restore
                    continue
                try:
                    st = treeroot.stat(mk["path"], follow=False)
                except OSError as e:
                    raise RestoreError(f"fanotify (file {fid}): cannot mark {mk['path']} "
                                       f"again: {e.strerror}") from None
                if mk["type"] == "inode" and (st.st_ino, st.st_dev) != (mk["ino"], mk["dev"]):
                    log.warning("fanotify (file %s): %s is another file than at dump; it is "
                                "marked instead", fid, mk["path"])

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        flags = desc["init_flags"]  # as given (fdinfo shows them), FAN_CLOEXEC or not
        try:
            fd = anon.fanotify_init(flags, desc["event_flags"])
        except OSError as e:
            raise RestoreError(f"fanotify_init({flags:#x}, {desc['event_flags']:#x}): "
                               f"{os.strerror(e.errno or 0)}") from None
        try:
            os.set_inheritable(fd, False)
            for mk in desc["marks"]:
                self._add(ctx, fd, mk)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _add(self, ctx: RestoreCtx, fd: int, mk: dict[str, Any]) -> None:
        base = anon.FAN_MARK_ADD | (mk["mflags"] & anon.FAN_MARK_EVICTABLE)
        base |= {"inode": 0, "mount": anon.FAN_MARK_MOUNT,
                 "filesystem": anon.FAN_MARK_FILESYSTEM}[mk["type"]]
        calls = []
        if mk["mask"] or not mk["ignored_mask"]:
            calls.append((base, mk["mask"]))
        if mk["ignored_mask"]:
            ign = anon.FAN_MARK_IGNORE if mk["mflags"] & anon.FAN_MARK_IGNORE \
                else anon.FAN_MARK_IGNORED_MASK
            calls.append((base | ign | (mk["mflags"] & anon.FAN_MARK_IGNORED_SURV_MODIFY),
                          mk["ignored_mask"]))
        for flags, mask in calls:
            try:
                if "file" in mk:  # deleted: through ckpt's fd of the file made again
                    assert ctx.open_file is not None
                    held = ctx.open_file(mk["file"])
                    anon.fanotify_mark(fd, flags, mask, f"/proc/self/fd/{held}")
                else:
                    with treeroot.held(mk["path"]) as name:  # followed: the path's inode
                        anon.fanotify_mark(fd, flags, mask, name)
            except OSError as e:
                raise RestoreError(f"fanotify: cannot mark {mk['type']} {mk['path']} again "
                                   f"(flags {flags:#x}, mask {mask:#x}): "
                                   f"{os.strerror(e.errno or 0)}") from None

