"""Character devices other than terminals (/dev/null, /dev/zero, /dev/urandom, ...),
reopened by path with their flags."""

from __future__ import annotations

import os
import stat as st_mod
from typing import Any

from ..errors import RestoreError, UnsupportedError
from ..kernel import procfs
from . import files

TTY_MAJORS = {3, 4, 5, 136, 137, 138, 139, 140, 141, 142, 143}
_OPEN_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | 0o2000000)


class CharDevices:
    KIND = "chr"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) not in TTY_MAJORS

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: procfs.FdInfo) -> dict[str, Any]:
        if not link.startswith("/dev/"):
            raise UnsupportedError(f"process {pid} fd {fd}: character device {link} "
                                   "outside /dev")
        return {"path": link, "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
                "pos": info.pos}

    def keys(self, desc: dict[str, Any]) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        try:
            fd = os.open(desc["path"], desc["flags"] & _OPEN_MASK)
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']}: {e.strerror}") from None
        st = os.fstat(fd)
        if [os.major(st.st_rdev), os.minor(st.st_rdev)] != desc["rdev"]:
            os.close(fd)
            raise RestoreError(f"{desc['path']} is now a different device")
        return fd


files.register(CharDevices())
