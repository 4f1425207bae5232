"""/proc/PID/pagemap: its 8-byte entries read in bulk, and what this kernel shows in
them (soft-dirty bits, the zero page's frame), probed once on a page of ckpt's own."""

from __future__ import annotations

import ctypes
import errno
import fcntl
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


PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg), Linux 6.7+
PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_GUARD = 1 << 3, 1 << 4, 1 << 8
_HELD = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD
_REGIONS = 256  # page regions per PAGEMAP_SCAN call


class _ScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


def held(fd: int, start: int, end: int) -> list[tuple[int, int]] | None:
    """The ranges of [start, end) whose pages are present, swapped out or guards, from
    pagemap ``fd`` by PAGEMAP_SCAN, which skips empty page tables whole (reading the
    entries of a reservation of terabytes takes minutes); None on a kernel without it,
    or one that does not show guard pages to it (before 6.15?)."""
    vec = (ctypes.c_uint64 * (3 * _REGIONS))()
    found: list[tuple[int, int]] = []
    at = start
    while at < end:
        arg = _ScanArg(ctypes.sizeof(_ScanArg), 0, at, end, 0, ctypes.addressof(vec),
                       _REGIONS, 0, 0, 0, _HELD, _HELD)
        try:
            n = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                return None
            raise
        for i in range(n):
            a, b = vec[3 * i], vec[3 * i + 1]
            if found and found[-1][1] == a:
                found[-1] = (found[-1][0], b)
            else:
                found.append((a, b))
        if arg.walk_end <= at:
            raise OSError(errno.EIO, f"PAGEMAP_SCAN made no progress at {at:#x}")
        at = arg.walk_end
    return found


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
