"""signalfd: the set of signals it reads, made again with ``signalfd(-1, mask, flags)``.

A signalfd holds no signals itself: a read takes them from the reading
process's queues, which ckpt restores with the process (``signals.py``), so a
signal pending at dump is read from the new signalfd. fdinfo shows ``sigmask``
(hex, bit N-1 = signal N). No --inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import DumpError
from ..kernel import anon, procfs
from . import files

LINK = "anon_inode:[signalfd]"


class SignalFds:
    KIND = "signalfd"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return link == LINK

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: procfs.FdInfo) -> dict[str, Any]:
        if info.sigmask is None:
            raise DumpError(f"process {pid} fd {fd}: signalfd without a readable sigmask "
                            "in its fdinfo")
        return {"sigmask": info.sigmask}

    def keys(self, desc: dict[str, Any]) -> list[str]:
        return []

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        flags = anon.SFD_CLOEXEC
        if desc["flags"] & os.O_NONBLOCK:
            flags |= anon.SFD_NONBLOCK
        return anon.signalfd(int(desc["sigmask"]), flags)


files.register(SignalFds())
