"""Regular files and directories, reopened by path with their flags and offset.

A file that grew since the dump is reopened as it is (logs keep growing); a
file that shrank below the saved offset or size is refused, since bytes the
process wrote would be lost.

A regular file unlinked while open (``/path (deleted)``) is a ghost (ghost.py):
its content is saved once in ghost-data.img, and at restore it is made again
in its directory, filled, reopened with the saved flags and offset, and
unlinked again. memfds are memfd.py's.
"""

from __future__ import annotations

import os
import stat as st_mod

from ..errors import RestoreError, UnsupportedError
from . import ghost
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx

_OPEN_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | 0o2000000)


class RegularFiles(FileKind):
    KIND = "reg"

    def __init__(self) -> None:
        super().__init__()
        self._ghosts = ghost.Made()  # deleted files made again, by ghost id

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return ((st_mod.S_ISREG(st.st_mode) and not ghost.is_memfd(link, st))
                or st_mod.S_ISDIR(st.st_mode))

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        link, st = f.link, f.st
        if ghost.is_ghost(link, st):
            if st_mod.S_ISDIR(st.st_mode):
                raise UnsupportedError(f"{f.where}: {link} is a removed directory; not "
                                       "supported yet")
            obj = ghost.save_fd(ctx.images, f.dup, st, link, f.where)
            return {"path": obj["path"], "pos": f.info.pos, "size": st.st_size, "dir": False,
                    "ghost": obj}
        if st.st_nlink == 0:
            raise UnsupportedError(f"{f.where}: {link} is an unlinked file without a "
                                   "(deleted) path; not supported")
        if not link.startswith("/"):
            raise UnsupportedError(f"{f.where}: {link} has no path")
        return {"path": link, "pos": f.info.pos, "size": st.st_size,
                "dir": st_mod.S_ISDIR(st.st_mode)}

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        if "ghost" in desc:
            return self._ghosts.reopen(ctx.images, desc, _OPEN_MASK)
        path = desc["path"]
        try:
            fd = os.open(path, desc["flags"] & _OPEN_MASK)
        except OSError as e:
            raise RestoreError(f"cannot reopen {path}: {e.strerror}") from None
        try:
            if not desc.get("dir"):
                size = os.fstat(fd).st_size
                if size < desc["size"] or size < desc["pos"]:
                    raise RestoreError(
                        f"{path} shrank since the dump ({size} bytes, was {desc['size']} "
                        f"with the offset at {desc['pos']}); refusing to restore over lost data")
            if not desc["flags"] & os.O_PATH:  # an O_PATH fd has no offset
                os.lseek(fd, desc["pos"], os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd


    def close(self) -> None:
        self._ghosts.close()
