"""signalfd: the set of signals it reads, made again with ``signalfd(-1, mask, flags)``.

A signalfd holds no signals itself: a read takes them from the reading
process's queues, which ckpt restores with the process (``signals.py``), so a
signal pending at dump is read from the new signalfd. fdinfo shows ``sigmask``
(hex, bit N-1 = signal N). No --inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

from ..errors import DumpError
from ..kernel import anon
from ..schema import U64
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx


class SignalFds(FileKind):
    KIND = "signalfd"
    LINK = "anon_inode:[signalfd]"
    # its own fields in files.json
    SCHEMA = {"sigmask": U64}

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        if f.info.sigmask is None:
            raise DumpError(f"{f.where}: signalfd without a readable sigmask in its fdinfo")
        return {"sigmask": f.info.sigmask}

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        return anon.signalfd(int(desc["sigmask"]), anon.SFD_CLOEXEC)
