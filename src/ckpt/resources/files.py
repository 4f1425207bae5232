"""File descriptors: the fd table of each process, and the steps every fd goes
through whatever its kind.

An fd points to an *open file description* (offset, status flags, signal owner),
which several fds and processes may share. Each kind of file lives in its own module
(filekind.py says what one provides; kinds.py lists them). This module finds the
kind of each fd at dump, notices shared descriptions, and saves the status flags and
who gets the description's signals (``fown``); at restore it lets every kind refuse
before anything is opened, opens each description once (or takes the restorer's own
fd for it, ``--inherit-fd``), sets its status flags and signal, builds each
process's fd table, lets each kind finish inside the processes and, once every
process and thread exists, gives each description its signal owner again.
"""

from __future__ import annotations

import fcntl
import os
import stat as st_mod
import struct

from ..errors import RestoreError, UnsupportedError
from ..images import ImageReader, ImageWriter
from ..kernel import libc, procfs
from ..kernel.inject import Injector
from ..log import logger
from ..schema import BOOL, PID0, U32, Int, List, Obj, Opt, Str, check, refuse
from . import fdtable, kinds
from .fdtable import Want
from .filekind import (
    STATUS_FLAGS,
    Description,
    DumpCtx,
    FileKind,
    ImageRefs,
    OpenFd,
    RestoreCtx,
    TaskFd,
    TcpFlags,
    close_quietly,
)

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

log = logger("ckpt.files")

O_CLOEXEC_FDINFO = 0o2000000
# Who gets the SIGIO/SIGURG of a description, and which signal (fcntl(2)).
F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX = 10, 11, 15, 16
OWNER_TYPES = {0: "tid", 1: "pid", 2: "pgrp"}  # F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP

# What every description has in files.json, whatever its kind (the kind's own fields:
# its ``SCHEMA``); description ids are the keys of files.json.
FOWN = Obj(type=Str(choices=OWNER_TYPES.values()), pid=PID0, sig=Int(0, 64))
COMMON = {"kind": Str(32), "flags": U32, "fown": Opt(FOWN)}
FILE_ID = Str(20, pattern="[0-9]+")
# One entry of fds-PID.json.
FD_TABLE = List(Obj(fd=Int(0, (1 << 31) - 1), file=FILE_ID, cloexec=BOOL), max=1 << 24)
_SCHEMAS: dict[str, Obj] = {}


def description_schema(kind: type[FileKind]) -> Obj:
    """The schema of a description of ``kind``: the common fields and the kind's own."""
    if kind.KIND not in _SCHEMAS:
        _SCHEMAS[kind.KIND] = Obj({**COMMON, **kind.SCHEMA})
    return _SCHEMAS[kind.KIND]


def check_descriptions(descriptions: dict[str, Description], where: str,
                       refs: ImageRefs | None) -> None:
    """Refuse a description of files.json (``where``) that its kind's schema does not
    allow or (given ``refs``) that names what the other images lack."""
    for fid, desc in descriptions.items():
        at = f"{where}: {fid}"
        check(fid, FILE_ID, f"{where}: the id {fid[:20]!r}")
        if type(desc) is not dict or not isinstance(desc.get("kind"), str):
            raise refuse(where, fid, "not a description with a kind")
        try:
            kind = kinds.kind_of(desc["kind"])
        except RestoreError as e:
            raise refuse(where, f"{fid}.kind", str(e)) from None
        check(desc, description_schema(kind), at)
        if refs is not None:
            kind.check_image(desc, at, refs)


def check_table(pid: int, table: list[dict[str, Any]], where: str,
                descriptions: dict[str, Description], nr_open: int) -> None:
    """Refuse an fd table (``where``, schema-checked) whose fd numbers repeat or go past
    what the kernel allows (fs.nr_open), or that names a description files.json lacks."""
    seen: set[int] = set()
    for i, e in enumerate(table):
        if e["fd"] in seen:
            raise refuse(where, f"[{i}].fd", f"fd {e['fd']} twice")
        if e["fd"] >= nr_open:
            raise refuse(where, f"[{i}].fd", f"fd {e['fd']} is beyond fs.nr_open ({nr_open})")
        seen.add(e["fd"])
        if e["file"] not in descriptions:
            raise refuse(where, f"[{i}].file", f"file {e['file']} is not in files.json")

if TYPE_CHECKING:
    K = TypeVar("K", bound=FileKind)


def keys_of(desc: Description) -> list[str]:
    return kinds.kind_of(desc["kind"]).keys(desc)


def describe_unsupported(link: str, st: os.stat_result) -> str:
    if link.startswith("socket:"):
        return f"socket {link}"
    if link.startswith("anon_inode:"):
        return f"{link[len('anon_inode:'):]} (anon inode)"
    if st_mod.S_ISBLK(st.st_mode):
        return f"block device {link}"
    return link


# ---------------------------------------------------------------- dump

class DumpFiles:
    """Builds the description table shared by every task of one dump."""

    def __init__(self, images: ImageWriter, *, shell_job: bool = False,
                 external: set[str] | None = None, file_locks: bool = False,
                 tcp: TcpFlags | None = None, ext_unix_sk: bool = False,
                 empty_net: bool = False, orphan_pts: bool = False):
        self.ctx = DumpCtx(images, shell_job, external or set(), tcp or TcpFlags(),
                           ext_unix_sk=ext_unix_sk, empty_net=empty_net, orphan_pts=orphan_pts)
        self.kinds: dict[str, FileKind] = {}  # made when an fd they may claim comes
        self.descriptions: dict[str, Description] = {}
        from . import locks  # a dump's (a restore imports it for a tree with locks only)
        self.locks = locks.DumpLocks(file_locks)
        # What fds of one description share (the file, its offset and status flags) ->
        # [(pid, fd, id)] of the descriptions seen with those, in kcmp's order of open
        # file descriptions: found by bisection, N log N kcmp calls at worst.
        self._seen: dict[tuple[int, int, int, int], list[tuple[int, int, str]]] = {}
        self.tables: dict[int, list[dict[str, Any]]] = {}  # pid -> its fd table
        self._owners: list[tuple[str, dict[str, Any]]] = []  # (where, fown) to check
        # files passed in queued messages (SCM_RIGHTS), to describe: (ckpt's fd, where,
        # done); and ckpt's fds of them, kept open until the dump's end (kcmp finds them)
        self._in_flight: list[tuple[int, str, Callable[[str], None]]] = []
        self._held: list[int] = []
        self.ctx.in_flight = self._add_in_flight

    @staticmethod
    def _bucket(st: os.stat_result, info: procfs.FdInfo) -> tuple[int, int, int, int]:
        return st.st_dev, st.st_ino, info.pos, info.flags & ~O_CLOEXEC_FDINFO

    def _find_shared(self, pid: int, fd: int, bucket: tuple[int, int, int, int]
                     ) -> tuple[str | None, int]:
        """The id of the description ``fd`` of ``pid`` shares with an fd seen before, or
        None and where it goes in its bucket's ordered list."""
        seen = self._seen.get(bucket, [])
        lo, hi = 0, len(seen)
        while lo < hi:
            mid = (lo + hi) // 2
            opid, ofd, fid = seen[mid]
            order = libc.kcmp_file(pid, opid, fd, ofd)
            if order == 0:
                return fid, mid
            if order == 1:  # ours sorts first
                hi = mid
            else:
                lo = mid + 1
        return None, lo

    def _describe(self, f: OpenFd) -> str:
        """Describe a description seen for the first time; its id."""
        kind = next((k for k in map(self._kind, kinds.may_claim(f.link, f.st, f.info.flags))
                     if k.claims_fd(f)), None)
        if kind is None:
            raise UnsupportedError(f"{f.where}: {describe_unsupported(f.link, f.st)} is a kind "
                                   "of file ckpt cannot dump yet")
        desc = kind.dump(self.ctx, f)
        desc["kind"] = kind.KIND
        desc.setdefault("flags", f.info.flags & ~O_CLOEXEC_FDINFO)
        try:  # what the restore would refuse is refused now, before the kill
            kind.verify(self.ctx, desc)
        except RestoreError as e:
            raise UnsupportedError(f"{f.where}: {e} (the restore would fail)") from None
        fown = None if desc["flags"] & os.O_PATH else read_fown(f.dup)
        if fown is not None:
            desc["fown"] = fown
            self.ctx.images.need("fown")
            self._owners.append((f.where, fown))
        fid = str(len(self.descriptions) + 1)
        self.descriptions[fid] = kind.descriptions[fid] = desc
        return fid

    def _kind(self, name: str) -> FileKind:
        if name not in self.kinds:
            self.kinds[name] = kinds.load(name)()
        return self.kinds[name]

    def _made(self) -> list[FileKind]:
        """The kinds of this dump, in the registry's order."""
        return [self.kinds[name] for name, *_ in kinds.REGISTRY if name in self.kinds]

    def _add_in_flight(self, fd: int, where: str, done: Callable[[str], None]) -> None:
        self._held.append(fd)
        self._in_flight.append((fd, where, done))

    def _describe_in_flight(self) -> None:
        """Describe the files passed in queued messages (each once, shared with a process's
        fd if it is one), those they carry in turn too."""
        me = os.getpid()
        while self._in_flight:
            fd, where, done = self._in_flight.pop(0)
            st = os.fstat(fd)
            info = procfs.fdinfo(me, fd)
            bucket = self._bucket(st, info)
            fid, at = self._find_shared(me, fd, bucket)
            if fid is None:
                f = OpenFd(me, fd, os.readlink(f"/proc/self/fd/{fd}"), st, fd, info,
                           label=where)
                fid = self._describe(f)
                self._seen.setdefault(bucket, []).insert(at, (me, fd, fid))
            desc = self.descriptions[fid]
            if not self._kind(desc["kind"]).sent_back(desc):
                shown = self._kind(desc["kind"]).shown_path(desc)
                raise UnsupportedError(f"{where}: a {shown} passed in a message not received "
                                       "yet; ckpt cannot queue it again (not supported)")
            done(fid)

    def dump_task(self, pid: int, pidfd: int, owner: int = 0) -> list[dict[str, Any]]:
        """The fd table of ``pid``; ``owner``: the process whose fd table it is (the
        first of those sharing it, CLONE_FILES), which owns its POSIX locks."""
        table = []
        for fd in procfs.fd_numbers(pid):
            link = procfs.fd_link(pid, fd)
            info = procfs.fdinfo(pid, fd)
            dup = libc.pidfd_getfd(pidfd, fd)
            try:
                f = OpenFd(pid, fd, link, os.fstat(dup), dup, info)
                bucket = self._bucket(f.st, info)
                fid, at = self._find_shared(pid, fd, bucket)
                if fid is None:
                    fid = self._describe(f)
                    self.ctx.holders.setdefault((f.st.st_dev, f.st.st_ino), []).append(
                        (pid, fd, fid))
                    self._seen.setdefault(bucket, []).insert(at, (pid, fd, fid))
                self.locks.add(f, fid, owner or pid)
            finally:
                os.close(dup)
            table.append({"fd": fd, "file": fid, "cloexec": bool(info.flags & O_CLOEXEC_FDINFO)})
            log.debug("process %d fd %d -> file %s (%s)", pid, fd, fid, link)
            self._describe_in_flight()
        self.tables[pid] = table
        return table

    def after_dump(self, tasks: list[dict[str, Any]],
                   mappings: dict[int, list[dict[str, Any]]] | None = None) -> None:
        """Let every kind check what needs the whole tree, on its own descriptions; check
        that every signal owner comes back with the tree, that a restore here could
        hold them all (``check_limits``), and the locks held through no fd (through
        one of the processes' ``mappings``, parents first, or refused)."""
        for kind in self._made():
            kind.after_dump(self.ctx, tasks)
        for where, fown in self._owners:
            _check_owner(where, fown, tasks)
        self.locks.check_tree({t["pid"] for t in tasks}, mappings)
        problem = check_limits(self.tables, self.descriptions, fdtable.reachable_limit())
        if problem:
            raise UnsupportedError(f"{problem} (ckpt's hard RLIMIT_NOFILE: raise it, as a "
                                   "user with CAP_SYS_RESOURCE, before dumping)")

    def before_kill(self) -> None:
        for kind in self._made():
            kind.before_kill()

    def close(self) -> None:
        """The dump is over: what the kinds kept goes, and the files in flight."""
        for kind in self._made():
            kind.close()
        close_quietly(self._held)
        self._held.clear()


# ---------------------------------------------------------------- restore

class RestoreFiles:
    """Every file of one restore: the kinds' objects, and one fd of ckpt's per
    description, kept until every new process holds its own."""

    def __init__(self, images: ImageReader, descriptions: dict[str, Description], *,
                 shell_job: bool = False, inherit: dict[str, int] | None = None,
                 inherit_files: dict[str, int] | None = None, tcp: TcpFlags | None = None,
                 tree: set[int] | None = None, orphan_pts: Callable[[int], None] | None = None,
                 ids: dict[int, tuple[list[int], list[int]]] | None = None):
        self.ctx = RestoreCtx(images, shell_job, inherit or {}, inherit_files or {},
                              tcp=tcp or TcpFlags(), tree=tree or set(), orphan_pts=orphan_pts,
                              ids=ids or {})
        self.descriptions = descriptions
        self.kinds: dict[str, FileKind] = {}  # made for the descriptions of their kind
        self.used_keys: set[str] = set()  # the --inherit-fd keys that name a description
        self._theirs: dict[str, int] = {}  # description id -> the restorer's fd for it
        for fid, desc in descriptions.items():
            self._kind(desc).descriptions[fid] = desc
            theirs = self._inherited_fd(fid, desc)
            if theirs is not None:
                self._theirs[fid] = theirs
        self.ctx.replaced = set(self._theirs)
        self.opened: dict[str, int] = {}
        self.ctx.open_file = self.open_description
        self._holders: dict[str, tuple[int, int]] = {}  # id -> (pid, fd) of a new process

    def _kind(self, desc: Description) -> FileKind:
        name = desc.get("kind")
        if not isinstance(name, str):
            raise RestoreError(f"the image holds a file of kind {name!r}, unknown to this ckpt")
        if name not in self.kinds:
            self.kinds[name] = kinds.load(name)()
        return self.kinds[name]

    def _made(self) -> list[FileKind]:
        """The kinds of this restore, in the registry's order."""
        return [self.kinds[name] for name, *_ in kinds.REGISTRY if name in self.kinds]

    def kind(self, cls: type[K]) -> K:
        """This restore's object of kind ``cls``."""
        kind = self._kind({"kind": cls.KIND})
        assert isinstance(kind, cls)
        return kind

    def _inherited_fd(self, fid: str, desc: Description) -> int | None:
        """The restorer's fd standing for description ``fid``, if ``--inherit-fd`` gives one
        (by its id, or by the first of its keys given)."""
        if fid in self.ctx.inherit_files:
            return self.ctx.inherit_files[fid]
        for key in self._kind(desc).keys(desc):
            if key in self.ctx.inherit:
                self.used_keys.add(key)
                return self.ctx.inherit[key]
        return None

    def check(self) -> None:
        """Let every kind warn or refuse (``before_restore``, and ``verify`` on each
        description it is to open), before anything is opened."""
        for kind in self._made():
            kind.before_restore(self.ctx)
        for fid, desc in self.descriptions.items():
            if fid not in self.ctx.replaced:
                self._kind(desc).verify(self.ctx, desc)

    def open_description(self, fid: str) -> int:
        """An fd in ckpt for description ``fid``, its status flags set."""
        if fid in self.opened:
            return self.opened[fid]
        desc = self.descriptions[fid]
        kind = self._kind(desc)
        theirs = self._theirs.get(fid)
        if theirs is not None:
            fd = os.dup(theirs)
            log.info("file %s (%s) replaced by the restorer's fd %d", fid, desc["kind"], theirs)
        else:
            fd = kind.open(self.ctx, desc)
            if not kind.borrowed(desc):
                try:
                    set_status_flags(fd, desc)
                except BaseException:
                    os.close(fd)
                    raise
        self.opened[fid] = fd
        return fd

    def prepare_task(self, table: list[dict[str, Any]]) -> list[Want]:
        """Each fd of one task: its number, ckpt's fd of its description, close-on-exec."""
        return [Want(e["fd"], self.open_description(e["file"]), e["cloexec"]) for e in table]

    def after_open(self) -> None:
        """Once every process's files are open: let each kind finish what needs other
        files open (``FileKind.after_open``)."""
        for kind in self._made():
            kind.after_open(self.ctx)

    def held_ghosts(self) -> dict[int, int]:
        """Ghost id (ghost.py) -> ckpt's fd of a description open on that object."""
        out: dict[int, int] = {}
        for fid, fd in self.opened.items():
            desc = self.descriptions[fid]
            if "ghost" in desc and fid not in self.ctx.replaced:
                out.setdefault(int(desc["ghost"]["id"]), fd)
        return out

    def close_all(self) -> None:
        """Close ckpt's own copies once the new processes hold theirs."""
        close_quietly(set(self.opened.values()))
        self.opened.clear()
        for kind in self._made():
            kind.close()

    def restore_across_tasks(self, holders: dict[str, list[tuple[int, int]]],
                             injector: Callable[[int], Injector], scratch: int) -> None:
        """Let every kind act in several new processes in turn (``FileKind``), on its
        descriptions the restore made; ``holders``: (pid, fd) holding each."""
        for kind in self._made():
            mine = {fid: holders[fid] for fid in kind.descriptions
                    if fid in holders and fid not in self.ctx.replaced}
            if mine:
                kind.restore_across_tasks(self.ctx, mine, injector, scratch)

    def restore_in_task(self, pid: int, inj: Injector, scratch: int,
                        table: list[dict[str, Any]]) -> None:
        """Let every kind finish inside restored process ``pid`` (see ``FileKind``), on
        its fds of that kind that the restore made (inherited ones are the restorer's)."""
        mine: dict[str, list[TaskFd]] = {}
        asynchronous: list[TaskFd] = []
        for e in table:
            fid, fd = e["file"], e["fd"]
            first = fid not in self._holders
            self._holders.setdefault(fid, (pid, fd))
            if fid in self.ctx.replaced:
                continue
            desc = self.descriptions[fid]
            mine.setdefault(desc["kind"], []).append(TaskFd(fd, fid, desc))
            if first and desc["flags"] & fcntl.FASYNC and not self._kind(desc).borrowed(desc):
                asynchronous.append(TaskFd(fd, fid, desc))
        for kind in sorted(self._made(), key=lambda k: k.USES_OTHER_FDS):
            if kind.KIND in mine:
                kind.restore_in_task(self.ctx, pid, inj, scratch, mine[kind.KIND])
        for t in asynchronous:  # after the kinds, which may have put another file there
            _set_async(pid, inj, t.fd, t.desc)

    def set_owners(self) -> None:
        """Once every process and thread of the tree exists: give each description its
        saved signal owner (``F_SETOWN_EX`` on a copy of a restored process's fd), as the
        owner's number must exist when it is set."""
        for fid, desc in self.descriptions.items():
            fown = desc.get("fown") or {"type": "pid", "pid": 0}
            if fid in self.ctx.replaced or not (fown["pid"] or (
                    _owner_given(desc) and fid in self._holders)):
                continue
            if self._kind(desc).lent(fid, desc):
                if fown["pid"]:
                    log.warning("file %s: its signals went to %s %d; they do not on ckpt's own "
                                "terminal, which stands for it", fid, fown["type"],
                                fown["pid"])
                continue
            pid, fd = self._holders[fid]
            pidfd = os.pidfd_open(pid)
            try:
                copy = libc.pidfd_getfd(pidfd, fd)
            finally:
                os.close(pidfd)
            kind = next((k for k, v in OWNER_TYPES.items() if v == fown["type"]), -1)
            try:
                fcntl.fcntl(copy, F_SETOWN_EX, struct.pack("ii", kind, fown["pid"]))
            except OSError as e:
                raise RestoreError(f"process {pid} fd {fd}: cannot send its signals to "
                                   f"{fown['type']} {fown['pid']} again: {e.strerror}"
                                   ) from None
            finally:
                os.close(copy)
            log.info("process %d fd %d: its signals go to %s %d", pid, fd, fown["type"],
                     fown["pid"])


def _owner_given(desc: Description) -> bool:
    """Whether the restore gave ``desc`` an owner it did not have: O_ASYNC
    set on a terminal makes the terminal's foreground group (ckpt's, while a shell job
    is restored) its owner."""
    return bool(desc["flags"] & fcntl.FASYNC) and desc["kind"] == "tty"


def read_fown(fd: int) -> dict[str, Any] | None:
    """Who gets the signals of ``fd``'s description and which (F_GETOWN_EX, F_GETSIG), or
    None when nobody does and the signal is the default."""
    kind, pid = struct.unpack("ii", fcntl.fcntl(fd, F_GETOWN_EX, bytes(8)))
    sig = fcntl.fcntl(fd, F_GETSIG)
    if not pid and not sig:
        return None
    return {"type": OWNER_TYPES.get(kind, str(kind)), "pid": pid, "sig": sig}


def _check_owner(where: str, fown: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    """Refuse a signal owner the restore cannot name again: a process, thread or
    process group outside the dumped tree."""
    pid, what = fown["pid"], fown["type"]
    if not pid:
        return
    if what == "pid":
        ok = any(t["pid"] == pid for t in tasks)
    elif what == "pgrp":  # the groups the restore makes again: those led in the tree
        ok = any(t["pid"] == pid and t["pgid"] == pid for t in tasks)
    elif what == "tid":
        ok = any(not t.get("zombie") and pid in procfs.threads(t["pid"]) for t in tasks)
    else:
        ok = False
    if not ok:
        raise UnsupportedError(f"{where}: its signals (O_ASYNC, SIGURG) go to {what} {pid}, "
                               "outside the dumped tree; ckpt cannot restore that owner")


def check_limits(tables: dict[int, list[dict[str, Any]]], descriptions: dict[str, Description],
                 limit: int) -> str | None:
    """Why a restore allowed ``limit`` open files could not make these fd tables (each
    process's highest fd, and the fds ckpt holds meanwhile); None when it can. The dump
    asks it too, with the limit a restore here will have."""
    held = sum(kinds.kind_of(d["kind"]).held_at_restore(d) for d in descriptions.values())
    return fdtable.limit_problem({pid: [e["fd"] for e in t] for pid, t in tables.items()},
                                 held, limit)


def set_status_flags(fd: int, desc: Description) -> None:
    """The one step that gives every description made by a kind its saved file status
    flags (O_NONBLOCK, O_APPEND, O_DIRECT, O_NOATIME) and the signal it sends
    (F_SETSIG), whatever the kind. O_ASYNC comes from inside a process (``_set_async``),
    the owner once every process exists (``RestoreFiles.set_owners``)."""
    if desc["flags"] & os.O_PATH:
        return  # a path only, without status flags (fcntl refuses them)
    flags = desc["flags"] & STATUS_FLAGS & ~fcntl.FASYNC
    try:
        sig = desc.get("fown", {}).get("sig", 0)
        if sig:
            fcntl.fcntl(fd, F_SETSIG, sig)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    except OSError as e:
        raise RestoreError(f"{desc['kind']} file {kinds.kind_of(desc['kind']).shown_path(desc)}: "
                           f"cannot set its status flags {flags:#o}: {e.strerror}") from None


def _set_async(pid: int, inj: Injector, fd: int, desc: Description) -> None:
    """O_ASYNC set by restored process ``pid`` itself on its fd ``fd``: the kernel
    sends that fd number with the signal (``si_fd``), the number of the fd O_ASYNC was
    set through; ckpt's own would be wrong."""
    flags = desc["flags"] & STATUS_FLAGS
    try:
        inj.call("fcntl", fd, fcntl.F_SETFL, flags)
    except OSError as e:
        raise RestoreError(f"process {pid} fd {fd}: cannot set O_ASYNC again: "
                           f"{os.strerror(e.errno or 0)}") from None
