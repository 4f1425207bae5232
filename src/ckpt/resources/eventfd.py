"""eventfd: the counter and its mode (EFD_SEMAPHORE), made again with ``eventfd``.

fdinfo shows ``eventfd-count`` (hex) and, since Linux 6.6, ``eventfd-semaphore``.
An anon inode has no inode of its own to name it by, so there is no
--inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import DumpError, RestoreError
from ..kernel import procfs
from . import files

log = logging.getLogger("ckpt.eventfd")

LINK = "anon_inode:[eventfd]"
_MAX_INIT = 0xFFFFFFFF  # eventfd()'s initial value is an unsigned int


class EventFds:
    KIND = "eventfd"

    def claims(self, link: str, st: os.stat_result) -> bool:
        return link == LINK

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: procfs.FdInfo) -> dict[str, Any]:
        if info.eventfd_count is None:
            raise DumpError(f"process {pid} fd {fd}: eventfd without a readable "
                            "eventfd-count in its fdinfo")
        count = info.eventfd_count
        if info.eventfd_semaphore is not None:
            semaphore = info.eventfd_semaphore
        else:  # kernels before 6.6 do not say
            semaphore = False
            log.warning("process %d fd %d: this kernel does not show whether the eventfd is "
                        "in EFD_SEMAPHORE mode; it is restored as a plain counter", pid, fd)
        log.info("process %d fd %d: eventfd count %d%s", pid, fd, count,
                 " (semaphore)" if semaphore else "")
        return {"count": count, "semaphore": semaphore}

    def keys(self, desc: dict[str, Any]) -> list[str]:
        return []

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        flags = os.EFD_CLOEXEC
        if desc["semaphore"]:
            flags |= os.EFD_SEMAPHORE
        if desc["flags"] & os.O_NONBLOCK:
            flags |= os.EFD_NONBLOCK
        count = int(desc["count"])
        if not 0 <= count < 2**64 - 1:
            raise RestoreError(f"eventfd count {count} out of range")
        fd = os.eventfd(count if count <= _MAX_INIT else 0, flags)
        if count > _MAX_INIT:
            os.eventfd_write(fd, count)  # the counter was 0: this never blocks
        return fd


files.register(EventFds())
