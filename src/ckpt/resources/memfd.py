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
from typing import Any

from ..kernel import procfs
from . import files, ghost

_OPEN_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | 0o2000000)


class MemFds:
    KIND = "memfd"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return ghost.is_memfd(link, st)

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: procfs.FdInfo) -> dict[str, Any]:
        obj = ghost.save_fd(ctx.images, dup, st, link, f"process {pid} fd {fd}")
        return {"path": link, "pos": info.pos, "ghost": obj}

    def keys(self, desc: dict[str, Any]) -> list[str]:
        return []

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        return ghost.open_description(ctx, desc, _OPEN_MASK)


files.register(MemFds())
