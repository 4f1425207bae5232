"""``O_PATH`` fds on what is neither a regular file nor a directory: symbolic links
themselves (``O_PATH | O_NOFOLLOW``), FIFOs, device nodes and socket files, which
an ``O_PATH`` fd names without opening (no data, no offset, no status flags).

Reopened by path with ``O_PATH`` (and ``O_NOFOLLOW`` for a symlink), checked to be
of the same type (and, for a device, the same device). A deleted one is a ghost
(ghost.py): made again under its old name, opened, and removed. ``O_PATH`` fds on
regular files and directories are files_reg.py's, as the other fds on them.
"""

from __future__ import annotations

import os
import stat as st_mod

from ..errors import RestoreError, UnsupportedError
from ..kernel import treeroot
from ..schema import PATH, U32, Opt, Str, Tup
from . import ghost
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx, reopen_flags

_TYPES = {st_mod.S_IFLNK: "link", st_mod.S_IFIFO: "fifo", st_mod.S_IFCHR: "chr",
          st_mod.S_IFBLK: "blk", st_mod.S_IFSOCK: "sock"}


def _type(st: os.stat_result) -> str:
    return _TYPES.get(st_mod.S_IFMT(st.st_mode), "?")


def _rdev(st: os.stat_result) -> list[int]:
    return [os.major(st.st_rdev), os.minor(st.st_rdev)]


def reopen(desc: Description) -> int:
    """The node of ``desc`` opened again by its path with ``O_PATH``, checked."""
    path = desc["path"]
    flags = reopen_flags(desc["flags"]) | os.O_PATH
    if desc["type"] == "link":
        flags |= os.O_NOFOLLOW
    try:
        fd = treeroot.open_in(path, flags)
    except OSError as e:
        raise RestoreError(f"cannot reopen {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if _type(st) != desc["type"] or ("rdev" in desc and _rdev(st) != desc["rdev"]):
        os.close(fd)
        raise RestoreError(f"{path} is now another file (a {st_mod.filemode(st.st_mode)[0]!r}"
                           f" file); it was a {desc['type']}")
    return fd


class PathFds(FileKind):
    KIND = "path"
    # its own fields in files.json
    SCHEMA = {
        "path": PATH, "type": Str(choices=_TYPES.values()), "rdev": Opt(Tup(U32, U32)),
        "ghost": Opt(ghost.SCHEMA)}

    def __init__(self) -> None:
        super().__init__()
        self._ghosts = ghost.Made()

    @classmethod
    def claims_fd(cls, f: OpenFd) -> bool:
        return bool(f.info.flags & os.O_PATH) and not (
            st_mod.S_ISREG(f.st.st_mode) or st_mod.S_ISDIR(f.st.st_mode))

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return False  # only by its flags (claims_fd)

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        ctx.images.need("ghost-nodes")
        if ghost.is_ghost(f.link, f.st):
            obj = ghost.save_fd(ctx.images, f.dup, f.st, f.link, f.where)
            return {"path": obj["path"], "type": _type(f.st), "ghost": obj}
        if not f.link.startswith("/"):
            raise UnsupportedError(f"{f.where}: {f.link} has no path")
        desc: Description = {"path": f.link, "type": _type(f.st)}
        if desc["type"] in ("chr", "blk"):
            desc["rdev"] = _rdev(f.st)
        try:
            now = os.lstat(f.link)
        except OSError as e:
            raise UnsupportedError(f"{f.where}: {f.link} cannot be found by its path "
                                   f"({e.strerror})") from None
        if (now.st_dev, now.st_ino) != (f.st.st_dev, f.st.st_ino):
            raise UnsupportedError(f"{f.where}: the path {f.link} leads to another file than "
                                   "the one open (mounted over?)")
        return desc

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        if "ghost" in desc:
            ghost.check(desc["ghost"])
        else:
            os.close(reopen(desc))

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        if "ghost" in desc:
            return self._ghosts.reopen(ctx.images, desc)
        return reopen(desc)

    def close(self) -> None:
        self._ghosts.close()
