"""Regular files and directories, reopened by path with their flags and offset.

``reopen`` is the restore of one description; the dump runs it too (``verify``),
so that a file the restore could not reopen is refused before the kill.

A file changed between dump and restore (the rule, also in docs/state.md):
one that grew is reopened as it is (logs keep growing; ``O_APPEND`` writers go
on at its end); one that shrank below its size at dump is refused, since bytes
the process wrote or read up to its offset would be lost; one replaced by
another file under the same path (an editor's rename, an upgrade, another
machine) is reopened under the same rule, as ckpt cannot tell it from the same
file changed in place. A directory must still be a directory, a regular file a
regular file. An offset beyond the end of the file is kept as it was.

Files of pseudo file systems (procfs, sysfs, cgroupfs, ...) have sizes that
mean nothing and change all the time: they are reopened and seeked, never
compared. A file under ``/proc/PID`` names a process of the dumped tree, which
has the same PID after the restore (the dump refuses one that names a process
outside the tree: after a restore that PID is free or another process's). It
exists only once that process does, so it is opened *late*: the fd is a
placeholder while the tree is made, replaced inside each holding process once
every process exists (``restore_in_task``).

A removed name of a file that has other links (a hard link elsewhere) is saved
as a link: by another name of the file, found near the removed one
(``ghost.other_name``); the restore reopens the file by it, then through the
removed name made again for the moment (``ghost.as_deleted``), so /proc shows
``/path (deleted)`` and the file has the links it had. Nothing is copied and the
file system is not changed at dump (criu's ``--link-remap`` links the file under
a hidden name at dump instead: ckpt accepts the flag and needs no such link).

A regular file unlinked while open (``/path (deleted)``) is a ghost (ghost.py):
its content is saved once in ghost-data.img, and at restore it is made again
in its directory, filled, reopened with the saved flags and offset, and
unlinked again. memfds are memfd.py's.
"""

from __future__ import annotations

import os
import stat as st_mod

from ..errors import RestoreError, TransientError, UnsupportedError
from ..kernel import inode_path, libc, procfs, treeroot
from ..kernel.inject import Injector
from ..kernel.lazyre import LazyPattern
from ..log import logger
from ..schema import BOOL, NAT, PATH, PID, Opt, Str
from . import ghost
from .filekind import (
    Description,
    DumpCtx,
    FileKind,
    ImageRefs,
    OpenFd,
    RestoreCtx,
    TaskFd,
    install_own_fd,
    reopen_flags,
)

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.files_reg")

# File systems whose files are made up by the kernel as they are read: no size to check.
PSEUDO_FS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs",
    "bpf", "pstore", "efivarfs", "fusectl", "binfmt_misc",
})
_PROC_PID = LazyPattern(r"^/(\d+)(?:/task/(\d+))?(?:/|$)")


def _kind_of(st: os.stat_result) -> str:
    if st_mod.S_ISDIR(st.st_mode):
        return "a directory"
    if st_mod.S_ISREG(st.st_mode):
        return "a regular file"
    return f"a file of type {st_mod.filemode(st.st_mode)[0]!r}"


def reopen(desc: Description, path_only: bool = False) -> int:
    """The file of ``desc`` opened again by its path, as the restore does it: with its
    flags, checked against what it was (the module docstring says the rule), at its
    offset. Raises RestoreError naming what is wrong. ``path_only``: opened with
    O_PATH, which checks all but the permission to open it."""
    path, directory, pseudo = desc["path"], bool(desc.get("dir")), "fs" in desc
    flags = reopen_flags(desc["flags"], directory)
    if path_only:
        flags = os.O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    elif not pseudo:
        flags |= os.O_NONBLOCK  # a FIFO put in its place must not block; flags are set after
    try:
        fd = treeroot.open_in(path, flags)
    except OSError as e:
        raise RestoreError(f"cannot reopen {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st_mod.S_ISDIR(st.st_mode) != directory or not (directory or st_mod.S_ISREG(
                st.st_mode)):
            raise RestoreError(f"{path} is now {_kind_of(st)}; it was "
                               f"{'a directory' if directory else 'a regular file'}")
        if not pseudo and not directory and st.st_size < desc["size"]:
            raise RestoreError(f"{path} shrank since the dump (now {st.st_size} bytes, "
                               f"{desc['size']} then); refusing to restore over lost data")
        if not (desc["flags"] & os.O_PATH or path_only):  # an O_PATH fd has no offset
            try:
                os.lseek(fd, desc["pos"], os.SEEK_SET)
            except OSError as e:
                raise RestoreError(f"{path}: cannot seek to offset {desc['pos']}: "
                                   f"{e.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _leased(path: str) -> bool:
    """Whether someone holds a lease on the file at ``path`` (/proc/locks)."""
    try:
        st = os.stat(path)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    me = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(" LEASE " in ln and me in ln.split() for ln in lines)


def proc_owner(path: str, mount_point: str) -> tuple[int, int | None] | None:
    """(PID, TID or None) of a procfs path under ``/proc/PID`` (or ``/proc/PID/task/TID``)
    of a procfs mounted at ``mount_point``; None for other procfs paths (/proc/loadavg)."""
    rel = path[len(mount_point.rstrip("/")):]
    m = _PROC_PID.match(rel)
    if not path.startswith(mount_point) or m is None:
        return None
    return int(m[1]), (int(m[2]) if m[2] else None)


class RegularFiles(FileKind):
    KIND = "reg"
    # its own fields in files.json
    SCHEMA = {
        "path": PATH, "pos": NAT, "size": NAT, "dir": BOOL,
        "fs": Opt(Str(64)),  # a pseudo file system's type
        "proc_pid": Opt(PID),  # a file under /proc/PID of a process of the tree
        "ghost": Opt(ghost.SCHEMA),  # a deleted file
        "deleted": Opt(PATH),  # a removed name of a file with other links (path)
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        if "proc_pid" in desc:
            refs.in_tree(desc["proc_pid"], where, "proc_pid")

    @classmethod
    def sent_back(cls, desc: Description) -> bool:
        return "proc_pid" not in desc  # opened once its process exists

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        return 2 if "ghost" in desc else 1  # a deleted file made again, and its reopen

    def __init__(self) -> None:
        super().__init__()
        self._ghosts = ghost.Made()  # deleted files made again, by ghost id
        self._mounts: dict[int, inode_path.Mount] | None = None  # dump: by mount id
        self._proc_refs: list[tuple[str, str, set[int]]] = []  # dump: (where, path, ids)
        self._late: dict[str, tuple[int, int]] = {}  # restore: id -> (pid, fd) holding it

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return ((st_mod.S_ISREG(st.st_mode) and not ghost.is_memfd(link, st))
                or st_mod.S_ISDIR(st.st_mode))

    # ---- dump

    def _mount(self, mnt_id: int) -> inode_path.Mount | None:
        if self._mounts is None:
            # ckpt's: a container's /proc files are reopened by path in its own /proc
            self._mounts = {m.mount_id: m for m in inode_path.mounts(tree=False)}
        return self._mounts.get(mnt_id)

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        link, st = f.link, f.st
        if ghost.is_secretmem(link, os.major(st.st_dev)):
            raise UnsupportedError(f"{f.where}: {ghost.SECRETMEM_REFUSAL}")
        if ghost.is_ghost(link, st) and st.st_nlink and st_mod.S_ISREG(st.st_mode):
            return self._dump_link(f)
        if ghost.is_ghost(link, st):
            obj = ghost.save_fd(ctx.images, f.dup, st, link, f.where)
            return {"path": obj["path"], "pos": f.info.pos, "size": st.st_size,
                    "dir": st_mod.S_ISDIR(st.st_mode), "ghost": obj}
        if st.st_nlink == 0:
            raise UnsupportedError(f"{f.where}: {link} is an unlinked file without a "
                                   "(deleted) path; not supported")
        if not link.startswith("/"):
            raise UnsupportedError(f"{f.where}: {link} has no path")
        desc: Description = {"path": link, "pos": f.info.pos, "size": st.st_size,
                             "dir": st_mod.S_ISDIR(st.st_mode)}
        mount = self._mount(f.info.mnt_id)
        if mount is not None and mount.fstype in PSEUDO_FS:
            desc["fs"] = mount.fstype
            owner = proc_owner(link, mount.point) if mount.fstype == "proc" else None
            if owner is not None:
                desc["proc_pid"] = owner[0]
                self._proc_refs.append((f.where, link, {n for n in owner if n is not None}))
            return desc
        try:
            now = treeroot.stat(link)
        except OSError as e:
            raise UnsupportedError(f"{f.where}: {link} cannot be found by its path "
                                   f"({e.strerror}); ckpt reopens files by path") from None
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UnsupportedError(f"{f.where}: the path {link} leads to another file than "
                                   "the one open (mounted over, or in another mount "
                                   "namespace); ckpt reopens files by path")
        return desc

    def _dump_link(self, f: OpenFd) -> Description:
        """A removed name of a file that still has other links: saved as a link, by one
        of its other names (the file, whose data is elsewhere, is not copied)."""
        deleted = f.link[:-len(ghost.DELETED)]
        other = ghost.other_name(f.st, deleted)
        if other is None:
            raise UnsupportedError(
                f"{f.where}: {f.link} was unlinked but the file still has {f.st.st_nlink} "
                f"other link(s), which ckpt did not find near {os.path.dirname(deleted)}")
        log.info("%s: %s is %s under another name", f.where, f.link, other)
        return {"path": other, "pos": f.info.pos, "size": f.st.st_size, "dir": False,
                "deleted": deleted}

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        if "ghost" in desc:
            ghost.check(desc["ghost"])
        elif "proc_pid" in desc and isinstance(ctx, RestoreCtx):
            return  # opened once its process exists (and checked then)
        elif isinstance(ctx, DumpCtx) and _leased(desc["path"]):
            # Opening a leased file (for writing, or any open of a write-leased one)
            # would start breaking the lease of the process being dumped.
            os.close(reopen(desc, path_only=True))
        else:
            os.close(reopen(desc))

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Refuse a /proc/PID file of a process outside the tree."""
        if not self._proc_refs:
            return
        ids = {t["pid"] for t in tasks}
        for t in tasks:
            if not t.get("zombie"):
                ids.update(procfs.threads(t["pid"]))
        for where, path, named in self._proc_refs:
            outside = sorted(named - ids)
            if outside:
                raise TransientError(  # top, ps: open while read, then closed
                    f"{where}: {path} is a file of process {outside[0]}, outside the dumped "
                    "tree; after a restore that PID would be free or another process's")

    # ---- restore

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        if "ghost" in desc:
            return self._ghosts.reopen(ctx.images, desc)
        if "proc_pid" in desc:  # a placeholder until its process exists
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        fd = reopen(desc)
        if "deleted" not in desc:
            return fd
        try:  # a removed name of a file with other links: under that name again
            named = ghost.as_deleted(fd, desc["deleted"], reopen_flags(desc["flags"]))
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']} as {desc['deleted']}: "
                               f"{e.strerror}") from None
        finally:
            os.close(fd)
        os.lseek(named, desc["pos"], os.SEEK_SET)
        return named

    def restore_in_task(self, ctx: RestoreCtx, pid: int, inj: Injector, scratch: int,
                        fds: list[TaskFd]) -> None:
        """Every process of the tree exists now: open its /proc/PID files (once per
        description) and put them in place of their placeholders."""
        for t in fds:
            if "proc_pid" not in t.desc:
                continue
            if t.file in self._late:  # shared with an fd restored before
                holder = libc.pidfd_open(self._late[t.file][0])
                try:
                    own = libc.pidfd_getfd(holder, self._late[t.file][1])
                finally:
                    os.close(holder)
            else:
                own = reopen(t.desc)
                self._late[t.file] = (pid, t.fd)
            try:
                install_own_fd(inj, own, t.fd)
            finally:
                os.close(own)

    def close(self) -> None:
        self._ghosts.close()
