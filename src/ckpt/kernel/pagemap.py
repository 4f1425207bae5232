"""/proc/PID/pagemap: its 8-byte entries read in bulk, and what this kernel shows in
them (soft-dirty bits, the zero page's frame), probed once on a page of ckpt's own."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from . import libc
from .record import dataclass

PAGE = libc.PAGE_SIZE
ENTRY = 8  # bytes per page
SOFT_DIRTY_BIT = 55


def read(fd: int, pid: int, start: int, npages: int) -> bytes:
    """The entries of ``npages`` pages from address ``start``, from pagemap ``fd`` of ``pid``."""
    raw = os.pread(fd, npages * ENTRY, start // PAGE * ENTRY)
    if len(raw) != npages * ENTRY:
        raise OSError(errno.EIO, f"short read of process {pid} pagemap at {start:#x}")
    return raw


def _own_entry(addr: int) -> int:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(struct.unpack("<Q", os.pread(fd, ENTRY, addr // PAGE * ENTRY))[0])
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Probe:
    """What pagemap shows on this kernel."""

    soft_dirty: bool  # bit 55 is set on a page just written (CONFIG_MEM_SOFT_DIRTY)
    zero_pfn: int | None  # the zero page's frame; None when frames read as 0 (no CAP_SYS_ADMIN)


_probed: Probe | None = None


def probe() -> Probe:
    """Soft-dirty support and the zero page's frame, seen on a page of ckpt's own (once)."""
    global _probed
    if _probed is None:
        addr = libc.anon_buffer(2 * PAGE)
        try:
            ctypes.memset(addr, 1, 1)  # written: soft-dirty if the kernel tracks it
            soft_dirty = bool(_own_entry(addr) >> SOFT_DIRTY_BIT & 1)
            ctypes.c_char.from_address(addr + PAGE).value  # noqa: B018  (read: the zero page)
            e = _own_entry(addr + PAGE)
            pfn = e & ((1 << 55) - 1)
            _probed = Probe(soft_dirty, pfn if e >> 63 and pfn else None)
        finally:
            libc.syscall("munmap", addr, 2 * PAGE)
    return _probed
