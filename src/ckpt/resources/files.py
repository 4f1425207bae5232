"""File descriptors: the fd table of each task and the registry of file kinds.

An fd points to an *open file description* (offset, flags), which several fds
and processes may share. Each kind of file (regular file, pipe, character
device, terminal, ...) lives in its own module that knows how to describe one
at dump time, which inherit-fd key names it, and how to open it again at
restore. This module finds the kind of each fd and keeps the table.
"""

from __future__ import annotations

import logging
import os
import stat as st_mod
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import RestoreError, UnsupportedError
from ..images import ImageReader, ImageWriter
from ..kernel import libc, procfs

log = logging.getLogger("ckpt.files")

O_CLOEXEC_FDINFO = 0o2000000


@dataclass
class DumpCtx:
    """What file kinds may need while dumping."""

    images: ImageWriter
    shell_job: bool = False
    external: set[str] = field(default_factory=set)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreCtx:
    """What file kinds may need while restoring; ``opened`` caches one fd per description."""

    images: ImageReader
    shell_job: bool = False
    inherit: dict[str, int] = field(default_factory=dict)
    inherit_files: dict[str, int] = field(default_factory=dict)  # description id -> fd
    used_keys: set[str] = field(default_factory=set)
    opened: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    descriptions: dict[str, dict[str, Any]] = field(default_factory=dict)


    def close_all(self) -> None:
        """Close ckpt's own copies once the new processes hold theirs."""
        for fd in set(self.opened.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        held = [fd for r, w in self.state.get("pipes", {}).values() for fd in {r, w}]
        held += list(self.state.get("unix", {}).values())
        held += self.state.get("held", [])  # any other fd a file kind keeps until the end
        for fd in held:
            try:
                os.close(fd)
            except OSError:
                pass
        self.opened.clear()
        self.state.clear()


class FileKind(Protocol):
    """The interface each file-kind module provides."""

    KIND: str

    def claims(self, link: str, st: os.stat_result) -> bool: ...
    def dump(self, ctx: DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: procfs.FdInfo) -> dict[str, Any]: ...
    def keys(self, desc: dict[str, Any]) -> list[str]: ...
    def open(self, ctx: RestoreCtx, desc: dict[str, Any]) -> int: ...

    # Optional, called once per dump / restore when every description is known:
    # after_dump(ctx, descriptions, tasks) checks or completes what needs the whole
    # tree (a pipe's other end, a socket's peer); before_restore(ctx, descriptions)
    # may warn or refuse before any process is created.
    # restore_in_task(ctx, pid, inj, scratch, fd_table, descriptions) runs once per
    # restored process (``inj`` its Injector, ``scratch`` a scratch page in it,
    # ``fd_table`` its fds-PID.json) when its fds are at their final numbers and
    # before its memory is restored: for what only the process itself can do with
    # its own fd numbers (epoll watches). ``ctx.opened``/``ctx.state`` are gone by then.


KINDS: list[FileKind] = []


def register(kind: FileKind) -> FileKind:
    KINDS.append(kind)
    return kind


def kind_of(name: str) -> FileKind:
    for k in KINDS:
        if k.KIND == name:
            return k
    raise RestoreError(f"the image holds a file of kind {name!r}, unknown to this ckpt")


def after_dump(ctx: DumpCtx, descriptions: dict[str, dict[str, Any]],
               tasks: list[dict[str, Any]]) -> None:
    """Let every kind check what needs the whole tree (see ``FileKind``)."""
    for kind in KINDS:
        hook = getattr(kind, "after_dump", None)
        if hook is not None:
            hook(ctx, descriptions, tasks)


def before_restore(ctx: RestoreCtx, descriptions: dict[str, dict[str, Any]]) -> None:
    for kind in KINDS:
        hook = getattr(kind, "before_restore", None)
        if hook is not None:
            hook(ctx, descriptions)


def restore_in_task(ctx: RestoreCtx, pid: int, inj: Any, scratch: int,
                    fd_table: list[dict[str, Any]],
                    descriptions: dict[str, dict[str, Any]]) -> None:
    """Let every kind finish inside restored process ``pid`` (see ``FileKind``)."""
    for kind in KINDS:
        hook = getattr(kind, "restore_in_task", None)
        if hook is not None:
            hook(ctx, pid, inj, scratch, fd_table, descriptions)


def describe_unsupported(link: str, st: os.stat_result) -> str:
    if link.startswith("socket:"):
        return f"socket {link}"
    if link.startswith("anon_inode:"):
        return f"{link[len('anon_inode:'):]} (anon inode)"
    if st_mod.S_ISBLK(st.st_mode):
        return f"block device {link}"
    return link


class DumpFiles:
    """Builds the description table shared by every task of one dump."""

    def __init__(self, ctx: DumpCtx):
        self.ctx = ctx
        self.descriptions: dict[str, dict[str, Any]] = {}
        # (st_dev, st_ino) -> [(pid, fd, id)] to find shared descriptions with kcmp
        self._seen: dict[tuple[int, int], list[tuple[int, int, str]]] = {}

    def _find_shared(self, pid: int, fd: int, st: os.stat_result) -> str | None:
        for opid, ofd, fid in self._seen.get((st.st_dev, st.st_ino), []):
            try:
                if libc.kcmp_file(pid, opid, fd, ofd) == 0:
                    return fid
            except OSError:
                continue
        return None

    def dump_task(self, pid: int, pidfd: int) -> list[dict[str, Any]]:
        table = []
        for fd in procfs.fd_numbers(pid):
            link = procfs.fd_link(pid, fd)
            info = procfs.fdinfo(pid, fd)
            cloexec = bool(info.flags & O_CLOEXEC_FDINFO)
            dup = libc.pidfd_getfd(pidfd, fd)
            try:
                st = os.fstat(dup)
                fid = self._find_shared(pid, fd, st)
                if fid is None:
                    kind = next((k for k in KINDS if k.claims(link, st)), None)
                    if kind is None:
                        raise UnsupportedError(
                            f"process {pid} fd {fd}: {describe_unsupported(link, st)} "
                            "is a kind of file ckpt cannot dump yet")
                    desc = kind.dump(self.ctx, pid, fd, link, st, dup, info)
                    desc["kind"] = kind.KIND
                    desc.setdefault("flags", info.flags & ~O_CLOEXEC_FDINFO)
                    fid = str(len(self.descriptions) + 1)
                    self.descriptions[fid] = desc
                    self._seen.setdefault((st.st_dev, st.st_ino), []).append((pid, fd, fid))
            finally:
                os.close(dup)
            table.append({"fd": fd, "file": fid, "cloexec": cloexec})
            log.debug("process %d fd %d -> file %s (%s)", pid, fd, fid, link)
        return table


def keys_of(desc: dict[str, Any]) -> list[str]:
    return kind_of(desc["kind"]).keys(desc)


def open_description(ctx: RestoreCtx, fid: str, desc: dict[str, Any]) -> int:
    """An fd in ckpt for description ``fid``: inherited if an --inherit-fd key matches."""
    if fid in ctx.opened:
        return ctx.opened[fid]
    if fid in ctx.inherit_files:
        fd = os.dup(ctx.inherit_files[fid])
        log.info("file %s replaced by the restorer's fd %d", fid, ctx.inherit_files[fid])
        ctx.opened[fid] = fd
        return fd
    for key in keys_of(desc):
        if key in ctx.inherit:
            ctx.used_keys.add(key)
            fd = os.dup(ctx.inherit[key])
            log.info("file %s (%s) replaced by the restorer's fd %d", fid, key, ctx.inherit[key])
            break
    else:
        fd = kind_of(desc["kind"]).open(ctx, desc)
    ctx.opened[fid] = fd
    return fd


def prepare_task(ctx: RestoreCtx, table: list[dict[str, Any]],
                 descriptions: dict[str, dict[str, Any]]) -> list[tuple[int, int, bool]]:
    """(target fd, ckpt's fd, close-on-exec) for each fd of one task."""
    return [(e["fd"], open_description(ctx, e["file"], descriptions[e["file"]]), e["cloexec"])
            for e in table]


def install_in_child(plan: list[tuple[int, int, bool]], keep: list[int]) -> list[int]:
    """Run in the fresh child: put every fd at its number, close all others.

    ``keep`` are ckpt's own fds that must survive; they are moved above every
    target fd and their new numbers returned.
    """
    top = max([t for t, _, _ in plan] + [s for _, s, _ in plan] + keep + [2]) + 1
    moved = [(t, os.dup2(s, top + i, inheritable=True), c) for i, (t, s, c) in enumerate(plan)]
    base = top + len(plan)
    new_keep = [os.dup2(k, base + i, inheritable=True) for i, k in enumerate(keep)]
    wanted = {t for t, _, _ in plan} | set(new_keep) | {m for _, m, _ in moved}
    for fd in range(0, base + len(keep)):
        if fd not in wanted:
            try:
                os.close(fd)
            except OSError:
                pass
    os.closerange(base + len(keep), 65536)
    for t, m, c in moved:
        os.dup2(m, t, inheritable=not c)
    for _, m, _ in moved:
        if m not in {t for t, _, _ in plan}:
            os.close(m)
    return new_keep
