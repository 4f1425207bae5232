"""memfd (``memfd_create``): name, content, size, mode and seals, made again with
``memfd_create`` and ``F_ADD_SEALS``.

The object is a ghost (see ghost.py): saved once per dump whoever holds it (fds,
mappings, exe), and made once per restore; each fd description reopens it with
its flags and offset. MFD_CLOEXEC is per fd (``cloexec`` of the fd table);
MFD_ALLOW_SEALING shows as seals without F_SEAL_SEAL. There is no
--inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import os

from ..schema import NAT, STR
from . import ghost
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx


class MemFds(FileKind):
    KIND = "memfd"
    # its own fields in files.json
    SCHEMA = {"path": STR, "pos": NAT, "ghost": ghost.SCHEMA}

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        return 2  # the memfd made again, and its reopen

    def __init__(self) -> None:
        super().__init__()
        self._made = ghost.Made()  # memfds made again, by ghost id

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return ghost.is_memfd(link, st)

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        obj = ghost.save_fd(ctx.images, f.dup, f.st, f.link, f.where)
        return {"path": f.link, "pos": f.info.pos, "ghost": obj}

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        return self._made.reopen(ctx.images, desc)

    def close(self) -> None:
        self._made.close()
