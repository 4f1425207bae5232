"""/proc/PID/mountinfo as typed entries, and the mount calls a restore of a mount tree
makes (mount, umount2, pivot_root, open_tree, openat2).

Paths in mountinfo are shown relative to the reading process's root where they are
below it, else from the root of their mount namespace: a process in a namespace of
its own (after pivot_root) shows its own tree, ``/`` first.
"""

from __future__ import annotations

import ctypes
import os

from . import libc
from .record import dataclass, field

# mount(2) flags, and the per-mount ones shown in mountinfo's fifth field
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, libc.MS_REC, libc.MS_PRIVATE
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
MNT_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
             "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
MNT_DETACH = 2
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_RECURSIVE = 0x8000
RESOLVE_NO_MAGICLINKS, RESOLVE_BENEATH, RESOLVE_IN_ROOT = 0x02, 0x08, 0x10


@dataclass
class Mount:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    parent_id: int
    dev: str  # "major:minor"
    root: str  # the folder of the filesystem mounted
    point: str  # where, from the reader's root (or its namespace's)
    options: list[str]  # per-mount: rw/ro, nosuid, nodev, noexec, relatime...
    tags: list[str]  # optional fields: shared:N, master:N, propagate_from:N, unbindable
    fstype: str
    source: str
    super_options: list[str] = field(default_factory=list)


def _unescape(text: bytes) -> str:
    """The kernel's ``\\ooo`` escapes (of blanks, newlines, backslashes) undone, without
    a regular expression: every restore imports this module, few read a mount."""
    if b"\\" not in text:
        return os.fsdecode(text)
    first, *rest = text.split(b"\\")
    out = [first]
    for part in rest:
        code = part[:3]
        if len(code) == 3 and all(0x30 <= c <= 0x37 for c in code):
            out.append(bytes([int(code, 8)]) + part[3:])
        else:
            out.append(b"\\" + part)
    return os.fsdecode(b"".join(out))


def parse(data: bytes) -> list[Mount]:
    """Every mount of a mountinfo file, in its order."""
    out = []
    for line in data.splitlines():
        left, _, right = line.partition(b" - ")
        f = left.split(b" ")
        r = right.split(b" ")
        out.append(Mount(int(f[0]), int(f[1]), f[2].decode(), _unescape(f[3]),
                         _unescape(f[4]), f[5].decode().split(","),
                         [t.decode() for t in f[6:]], _unescape(r[0]),
                         _unescape(r[1]) if len(r) > 1 else "",
                         r[2].decode().split(",") if len(r) > 2 else []))
    return out


def read(pid: int | str) -> list[Mount]:
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse(f.read())


STATX_MNT_ID, STATX_MNT_ID_UNIQUE = 0x1000, 0x4000
AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT = 0x100, 0x800
_STX_MASK, _STX_MNT_ID = 0, 144  # offsets in struct statx


def mount_ids(path: str) -> tuple[int, int] | None:
    """The ids of the mount ``path`` is on: the one mountinfo shows, and the unique one
    (Linux 6.8) that a later mount always has bigger; None without the unique one."""
    name = _path(path)
    buf = ctypes.create_string_buffer(256)
    ids = []
    for mask in (STATX_MNT_ID, STATX_MNT_ID_UNIQUE):
        libc.syscall("statx", -100, ctypes.addressof(name),
                     AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, mask, ctypes.addressof(buf))
        if not int.from_bytes(buf.raw[_STX_MASK:_STX_MASK + 4], "little") & mask:
            return None
        ids.append(int.from_bytes(buf.raw[_STX_MNT_ID:_STX_MNT_ID + 8], "little"))
    return ids[0], ids[1]


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    libc.mount(source or "none", target, fstype, flags, data)


def _path(path: str) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(os.fsencode(path))


def umount2(target: str, flags: int) -> None:
    name = _path(target)
    libc.syscall("umount2", ctypes.addressof(name), flags)


def pivot_root(new_root: str, put_old: str) -> None:
    new, old = _path(new_root), _path(put_old)
    libc.syscall("pivot_root", ctypes.addressof(new), ctypes.addressof(old))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): ``path`` under ``dirfd`` resolved as ``resolve`` says."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    name = _path(path)
    return libc.syscall("openat2", dirfd, ctypes.addressof(name), ctypes.addressof(how),
                        ctypes.sizeof(how))


AT_EMPTY_PATH = 0x1000


def open_tree(path: str, flags: int, dirfd: int = -100) -> int:
    """open_tree(2) of ``path`` under ``dirfd`` (``""`` and AT_EMPTY_PATH: ``dirfd``)."""
    name = _path(path)
    return libc.syscall("open_tree", dirfd, ctypes.addressof(name), flags)


MOVE_MOUNT_F_EMPTY_PATH = 0x4
FSCONFIG_SET_STRING, FSCONFIG_SET_FD, FSCONFIG_CMD_CREATE = 1, 5, 6
FSOPEN_CLOEXEC, FSMOUNT_CLOEXEC = 1, 1


def move_mount(mount_fd: int, target: str) -> None:
    """Attach the mount ``mount_fd`` (a detached one: open_tree, fsmount) at ``target``."""
    empty, to = _path(""), _path(target)
    libc.syscall("move_mount", mount_fd, ctypes.addressof(empty), -100, ctypes.addressof(to),
                 MOVE_MOUNT_F_EMPTY_PATH)


def new_mount(fstype: str, options: list[tuple[str, str]], fds: list[tuple[str, int]]
              ) -> int:
    """A detached new mount of ``fstype`` with string ``options`` and fd ones (proc's
    pidns), by fsopen, fsconfig and fsmount; its fd."""
    name = _path(fstype)
    fs = libc.syscall("fsopen", ctypes.addressof(name), FSOPEN_CLOEXEC)
    try:
        for key, value in options:
            k, v = _path(key), _path(value)
            libc.syscall("fsconfig", fs, FSCONFIG_SET_STRING, ctypes.addressof(k),
                         ctypes.addressof(v), 0)
        for key, fd in fds:
            k = _path(key)
            libc.syscall("fsconfig", fs, FSCONFIG_SET_FD, ctypes.addressof(k), 0, fd)
        libc.syscall("fsconfig", fs, FSCONFIG_CMD_CREATE, 0, 0, 0)
        return libc.syscall("fsmount", fs, FSMOUNT_CLOEXEC, 0)
    finally:
        os.close(fs)
