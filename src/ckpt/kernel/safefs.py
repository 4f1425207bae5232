"""Files created in a folder held open by its fd, the way root must in a folder others
may write: never through a symlink, never into a file that was already there.

``create`` removes the name first, then creates the file with O_CREAT | O_EXCL |
O_NOFOLLOW relative to the folder's fd: a symlink or a hard link planted under
that name (towards a file of root's) is removed, never written through; one
planted again in between makes the creation fail (EEXIST) instead.
"""

from __future__ import annotations

import errno
import os

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_dir(path: str, create: bool = False, mode: int = 0o700) -> int:
    """An fd of folder ``path`` (made with ``mode`` if missing and ``create``). The folder
    itself may be a symlink only if it belongs to this user or to root: raises
    OSError(ELOOP) for another user's."""
    if create:
        os.makedirs(path, mode=mode, exist_ok=True)
    try:
        return os.open(path, _DIR | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    owner = os.lstat(path).st_uid
    if owner not in (0, os.geteuid()):
        raise OSError(errno.ELOOP, f"a symlink of user {owner}", path)
    return os.open(path, _DIR)


def create(dirfd: int, name: str, mode: int = 0o600, readable: bool = False) -> int:
    """A new file ``name`` in the folder, open for writing (and reading, with
    ``readable``); an old one is removed first."""
    remove(dirfd, name)
    access = os.O_RDWR if readable else os.O_WRONLY
    return os.open(name, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode, dir_fd=dirfd)


def remove(dirfd: int, name: str) -> bool:
    """Remove ``name`` from the folder if it is there (a symlink itself, not its target);
    True if it was."""
    try:
        os.unlink(name, dir_fd=dirfd)
        return True
    except FileNotFoundError:
        return False


def create_path(path: str, mode: int = 0o600) -> int:
    """``create`` for a path: the file ``path``, made anew in its folder."""
    folder, name = os.path.split(os.path.abspath(path))
    dirfd = open_dir(folder)
    try:
        return create(dirfd, name, mode)
    finally:
        os.close(dirfd)


def write_new(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path``, made anew as ``create_path`` makes it (a pidfile)."""
    fd = create_path(path, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
