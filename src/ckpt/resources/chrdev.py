"""Character devices other than terminals (/dev/null, /dev/zero, /dev/urandom, ...),
reopened by path with their flags."""

from __future__ import annotations

import os
import stat as st_mod

from ..errors import RestoreError, UnsupportedError
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx

TTY_MAJORS = {3, 4, 5, 136, 137, 138, 139, 140, 141, 142, 143}
_OPEN_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | 0o2000000)


class CharDevices(FileKind):
    KIND = "chr"

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) not in TTY_MAJORS

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        if not f.link.startswith("/dev/"):
            raise UnsupportedError(f"{f.where}: character device {f.link} outside /dev")
        return {"path": f.link, "rdev": [os.major(f.st.st_rdev), os.minor(f.st.st_rdev)],
                "pos": f.info.pos}

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [desc["path"].lstrip("/"), desc["path"]]

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        try:
            fd = os.open(desc["path"], desc["flags"] & _OPEN_MASK)
        except OSError as e:
            raise RestoreError(f"cannot reopen {desc['path']}: {e.strerror}") from None
        st = os.fstat(fd)
        if [os.major(st.st_rdev), os.minor(st.st_rdev)] != desc["rdev"]:
            os.close(fd)
            raise RestoreError(f"{desc['path']} is now a different device")
        return fd

