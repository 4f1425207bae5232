"""eventfd: the counter and its mode (EFD_SEMAPHORE), made again with ``eventfd``.

fdinfo shows ``eventfd-count`` (hex) and, since Linux 6.6, ``eventfd-semaphore``.
An anon inode has no inode of its own to name it by, so there is no
--inherit-fd key but ``orig-fd[N]``.
"""

from __future__ import annotations

import os

from ..errors import DumpError, RestoreError
from ..log import logger
from ..schema import BOOL, U64
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx

log = logger("ckpt.eventfd")

_MAX_INIT = 0xFFFFFFFF  # eventfd()'s initial value is an unsigned int


class EventFds(FileKind):
    KIND = "eventfd"
    LINK = "anon_inode:[eventfd]"
    # its own fields in files.json
    SCHEMA = {"count": U64, "semaphore": BOOL}

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        info, pid, fd = f.info, f.pid, f.fd
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

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        flags = os.EFD_CLOEXEC
        if desc["semaphore"]:
            flags |= os.EFD_SEMAPHORE
        count = int(desc["count"])
        if not 0 <= count < 2**64 - 1:
            raise RestoreError(f"eventfd count {count} out of range")
        fd = os.eventfd(count if count <= _MAX_INIT else 0, flags)
        if count > _MAX_INIT:
            os.eventfd_write(fd, count)  # the counter was 0: this never blocks
        return fd

