"""Character devices other than terminals (/dev/null, /dev/zero, /dev/urandom, ...),
reopened by path with their flags. The dump checks the path still leads to the
same device, without opening it (opening a device may act: a watchdog starts).
A device node deleted while open is a ghost (ghost.py): made again under its
name (``mknod``), opened and removed."""

from __future__ import annotations

import os
import stat as st_mod

from ..errors import RestoreError, UnsupportedError
from ..kernel import treeroot
from ..schema import NAT, PATH, U32, Opt, Tup
from . import ghost
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx, reopen_flags

TTY_MAJORS = {3, 4, 5, 136, 137, 138, 139, 140, 141, 142, 143}


class CharDevices(FileKind):
    KIND = "chr"
    # its own fields in files.json
    SCHEMA = {
        "path": PATH, "rdev": Tup(U32, U32), "pos": NAT, "ghost": Opt(ghost.SCHEMA)}

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) not in TTY_MAJORS

    def __init__(self) -> None:
        super().__init__()
        self._ghosts = ghost.Made()

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        desc: Description = {"path": f.link, "rdev": [os.major(f.st.st_rdev),
                                                     os.minor(f.st.st_rdev)], "pos": f.info.pos}
        if ghost.is_ghost(f.link, f.st):
            desc["ghost"] = ghost.save_fd(ctx.images, f.dup, f.st, f.link, f.where)
            desc["path"] = desc["ghost"]["path"]
        elif not f.link.startswith("/"):
            raise UnsupportedError(f"{f.where}: character device {f.link} has no path")
        return desc

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        if "ghost" in desc:
            ghost.check(desc["ghost"])
            return
        try:
            st = treeroot.stat(desc["path"])
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']}: {e.strerror}") from None
        if not st_mod.S_ISCHR(st.st_mode) or [os.major(st.st_rdev),
                                              os.minor(st.st_rdev)] != desc["rdev"]:
            raise RestoreError(f"{desc['path']} is now a different device")

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        if "ghost" in desc:
            return self._ghosts.reopen(ctx.images, desc)
        try:
            fd = treeroot.open_in(desc["path"], reopen_flags(desc["flags"]))
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']}: {e.strerror}") from None
        st = os.fstat(fd)
        if [os.major(st.st_rdev), os.minor(st.st_rdev)] != desc["rdev"]:
            os.close(fd)
            raise RestoreError(f"{desc['path']} is now a different device")
        return fd

    def close(self) -> None:
        self._ghosts.close()
