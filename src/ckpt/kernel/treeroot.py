"""Where the dumped or restored tree's ``/`` is, seen from ckpt: paths the images hold
are the tree's, and ckpt reaches them through this root.

A tree in ckpt's own mount namespace has ckpt's root (the default: paths are used as
they are). A tree in a mount namespace of its own (a container) shows its paths from
its own root: the dump reaches them through ``/proc/ROOT/root``, the restore through the
folder where it built the tree's mounts (resources/mounts.py), both a process's
``/proc/PID/root``. A path of the tree is resolved as its processes would (``open``,
``stat``): inside that root, where absolute symbolic links and ``..`` stay, across the
tree's own mounts.
"""

from __future__ import annotations

import os

from .scoped import contextmanager

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator

_root = ""


def path(p: str) -> str:
    """The path ckpt uses for the tree's absolute path ``p``, to read (a symbolic link
    on the way is followed from ckpt's root: ``open_in`` and ``stat`` resolve in the
    tree's)."""
    return _root + p if _root and p.startswith("/") else p


def is_own() -> bool:
    """Whether the tree has a root other than ckpt's."""
    return bool(_root)


@contextmanager
def at(root: str) -> Iterator[None]:
    """The tree's ``/`` is ``root`` for the block ("" or "/": ckpt's)."""
    global _root
    before, _root = _root, root.rstrip("/")
    try:
        yield
    finally:
        _root = before


def open_root(flags: int = os.O_RDONLY | os.O_DIRECTORY) -> int:
    """ckpt's fd of the tree's ``/`` (``flags`` without O_NOFOLLOW: the tree's root is
    a /proc magic link)."""
    return os.open(_root or "/", flags | os.O_CLOEXEC)


def open_in(path: str, flags: int) -> int:
    """The tree's absolute ``path`` opened with ``flags``, resolved inside the tree's root
    as its processes see it (never through /proc's magic links)."""
    if not _root:
        return os.open(path, flags | os.O_CLOEXEC)
    from . import mountinfo  # here: only a tree with a root of its own needs it
    root = open_root(os.O_PATH | os.O_DIRECTORY)
    try:
        return mountinfo.openat2(root, path, flags, mountinfo.RESOLVE_IN_ROOT
                                 | mountinfo.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)


def stat(path: str, follow: bool = True) -> os.stat_result:
    """``os.stat`` (``os.lstat`` without ``follow``) of the tree's ``path``."""
    if not _root:
        return os.stat(path, follow_symlinks=follow)
    fd = open_in(path, os.O_PATH | (0 if follow else os.O_NOFOLLOW))
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def proc(name: str) -> str:
    """``/proc/PID/NAME`` of the process whose root is the tree's (``/proc/self/NAME``:
    ckpt's), such as its ``mountinfo`` or ``ns/mnt``."""
    return os.path.join(os.path.dirname(_root), name) if _root else f"/proc/self/{name}"


@contextmanager
def held(path: str) -> Iterator[str]:
    """A name of the tree's ``path`` itself (a symbolic link not followed) that calls
    taking a path resolve from anywhere, following it: ``/proc/self/fd/N`` of an
    ``O_PATH`` fd of it, open for the block."""
    fd = open_in(path, os.O_PATH | os.O_NOFOLLOW)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
