"""userfaultfd as typed Python: the handshake, registration of a range, the copies
that fill a missing page, and the messages read from the fd (include/uapi/linux/
userfaultfd.h). The fd may belong to another process's address space: every ioctl
acts on the address space that created it, whoever calls it."""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from . import libc
from .record import dataclass

UFFD_API = 0xAA
# features
EVENT_FORK, EVENT_REMAP, EVENT_REMOVE, EVENT_UNMAP = 1 << 1, 1 << 2, 1 << 3, 1 << 6
THREAD_ID = 1 << 8
# events
PAGEFAULT, FORK, REMAP, REMOVE, UNMAP = 0x12, 0x13, 0x14, 0x15, 0x16
REGISTER_MODE_MISSING = 1
MSG_SIZE = 32


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (UFFD_API << 8) | nr


class _Api(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


class _Range(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Register(ctypes.Structure):
    _fields_ = [("range", _Range), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _Copy(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_uint64), ("src", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("mode", ctypes.c_uint64), ("copy", ctypes.c_int64)]


class _Zeropage(ctypes.Structure):
    _fields_ = [("range", _Range), ("mode", ctypes.c_uint64), ("zeropage", ctypes.c_int64)]


_API = _iowr(0x3F, ctypes.sizeof(_Api))
_REGISTER = _iowr(0x00, ctypes.sizeof(_Register))
_COPY = _iowr(0x03, ctypes.sizeof(_Copy))
_ZEROPAGE = _iowr(0x04, ctypes.sizeof(_Zeropage))
_WAKE = (2 << 30) | (ctypes.sizeof(_Range) << 16) | (UFFD_API << 8) | 0x02

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def _call(fd: int, request: int, arg: ctypes.Structure, what: str) -> None:
    if _ioctl(fd, request, ctypes.addressof(arg)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def handshake(fd: int, features: int) -> int:
    """UFFDIO_API on ``fd`` asking for ``features``; the features the kernel gave."""
    api = _Api(UFFD_API, features, 0)
    _call(fd, _API, api, "UFFDIO_API")
    return int(api.features)


def register(fd: int, start: int, length: int) -> None:
    """Missing-page faults of [start, +length) go to ``fd``."""
    _call(fd, _REGISTER, _Register(_Range(start, length), REGISTER_MODE_MISSING, 0),
          "UFFDIO_REGISTER")


def copy(fd: int, dst: int, src: int, length: int) -> int:
    """Bytes at local ``src`` into the missing pages [dst, +length), waking whoever
    waits on them; the bytes copied (OSError with the errno otherwise: EEXIST a page
    is there already, after the first ``copied``; ENOENT/EFAULT the range is gone,
    ESRCH the address space is, EAGAIN its layout is changing)."""
    arg = _Copy(dst, src, length, 0, 0)
    if _ioctl(fd, _COPY, ctypes.addressof(arg)) == -1:
        err = ctypes.get_errno()
        raise CopyError(err, f"UFFDIO_COPY: {os.strerror(err)}", max(0, int(arg.copy)))
    return int(arg.copy)


def zeropage(fd: int, dst: int, length: int) -> None:
    """Zero pages into the missing pages [dst, +length)."""
    _call(fd, _ZEROPAGE, _Zeropage(_Range(dst, length), 0, 0), "UFFDIO_ZEROPAGE")


def wake(fd: int, start: int, length: int) -> None:
    """Wake the faults waiting on [start, +length) (their page came meanwhile)."""
    _call(fd, _WAKE, _Range(start, length), "UFFDIO_WAKE")


class CopyError(OSError):
    """A UFFDIO_COPY that failed after ``copied`` bytes."""

    def __init__(self, err: int, text: str, copied: int):
        super().__init__(err, text)
        self.copied = copied


@dataclass
class Msg:
    """One message read from a userfaultfd."""

    event: int
    address: int = 0  # PAGEFAULT
    tid: int = 0  # PAGEFAULT, with THREAD_ID
    fd: int = -1  # FORK: the child's userfaultfd, now ours
    start: int = 0  # REMAP (from), REMOVE, UNMAP
    end: int = 0  # REMOVE, UNMAP
    to: int = 0  # REMAP
    length: int = 0  # REMAP


def read_msgs(fd: int, buf: bytearray) -> list[Msg]:
    """The messages waiting on non-blocking ``fd`` (none: an empty list)."""
    try:
        n = os.readv(fd, [buf])
    except BlockingIOError:
        return []
    out: list[Msg] = []
    for off in range(0, n - n % MSG_SIZE, MSG_SIZE):
        event = buf[off]
        a, b, c = struct.unpack_from("<QQQ", buf, off + 8)
        if event == PAGEFAULT:
            out.append(Msg(event, address=b, tid=c & 0xFFFFFFFF))
        elif event == FORK:
            out.append(Msg(event, fd=a & 0xFFFFFFFF))
        elif event == REMAP:
            out.append(Msg(event, start=a, to=b, length=c))
        elif event in (REMOVE, UNMAP):
            out.append(Msg(event, start=a, end=b))
        else:
            out.append(Msg(event))
    return out


def set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def available() -> bool:
    """Whether this kernel lets this process make a userfaultfd."""
    try:
        fd = libc.syscall("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True
