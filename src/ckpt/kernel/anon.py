"""Typed ctypes bindings for the anon-inode fds ckpt saves: signalfd and timerfd (x86_64).

eventfd needs nothing here (``os.eventfd``). Like ``libc``, this module knows
nothing of checkpoints; failures raise ``OSError`` with the right errno.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL("libc.so.6", use_errno=True)  # no ctypes.util.find_library: see libc
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7

NR_TIMERFD_CREATE, NR_TIMERFD_SETTIME, NR_TIMERFD_GETTIME = 283, 286, 287
NR_SIGNALFD4 = 289
NR_IOCTL = 16

# timerfd
TFD_CLOEXEC, TFD_NONBLOCK = os.O_CLOEXEC, os.O_NONBLOCK
TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET = 1, 2
# _IOW('T', 0, __u64): exists when the kernel has CONFIG_CHECKPOINT_RESTORE
TFD_IOC_SET_TICKS = (1 << 30) | (8 << 16) | (ord("T") << 8) | 0

# clocks a timerfd may use
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME = 0, 1, 7
CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM = 8, 9

# signalfd
SFD_CLOEXEC, SFD_NONBLOCK = os.O_CLOEXEC, os.O_NONBLOCK
SIGSET_SIZE = 8  # the kernel's sigset_t on x86_64: 64 signals

NSEC = 1_000_000_000


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


class ITimerspec(ctypes.Structure):
    _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]


def _call(nr: int, what: str, *args: int) -> int:
    padded = list(args) + [0] * (6 - len(args))
    res = _syscall(nr, *padded)
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(res)


def signalfd(mask: int, flags: int = SFD_CLOEXEC, fd: int = -1) -> int:
    """A signalfd for the signals in ``mask`` (bit N-1 = signal N)."""
    m = ctypes.c_uint64(mask)
    return _call(NR_SIGNALFD4, "signalfd4", fd, ctypes.addressof(m), SIGSET_SIZE, flags)


def timerfd_create(clockid: int, flags: int = TFD_CLOEXEC) -> int:
    return _call(NR_TIMERFD_CREATE, "timerfd_create", clockid, flags)


def _ts(ns: int) -> Timespec:
    return Timespec(ns // NSEC, ns % NSEC)


def timerfd_settime(fd: int, flags: int, value_ns: int, interval_ns: int) -> None:
    """Arm (or, with both 0, disarm) timerfd ``fd``; times in nanoseconds."""
    new = ITimerspec(_ts(interval_ns), _ts(value_ns))
    _call(NR_TIMERFD_SETTIME, "timerfd_settime", fd, flags, ctypes.addressof(new), 0)


def timerfd_gettime(fd: int) -> tuple[int, int]:
    """(time to the next expiry, interval) in nanoseconds.

    The kernel folds the expirations of a periodic timer that fired and was not
    read yet into its tick count and re-arms it for the next one, as a read would
    (without consuming the ticks).
    """
    cur = ITimerspec()
    _call(NR_TIMERFD_GETTIME, "timerfd_gettime", fd, ctypes.addressof(cur))
    v, i = cur.it_value, cur.it_interval
    return v.tv_sec * NSEC + v.tv_nsec, i.tv_sec * NSEC + i.tv_nsec


def timerfd_set_ticks(fd: int, ticks: int) -> None:
    """Set the count of unread expirations (TFD_IOC_SET_TICKS; ENOTTY without
    CONFIG_CHECKPOINT_RESTORE)."""
    t = ctypes.c_uint64(ticks)
    _call(NR_IOCTL, "ioctl(TFD_IOC_SET_TICKS)", fd, TFD_IOC_SET_TICKS, ctypes.addressof(t))


# inotify (and what finds a watched inode again: open_by_handle_at)

NR_INOTIFY_ADD_WATCH, NR_INOTIFY_RM_WATCH = 254, 255
NR_INOTIFY_INIT1 = 294
NR_OPEN_BY_HANDLE_AT = 304

IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
IN_ACCESS, IN_MODIFY, IN_ATTRIB = 0x1, 0x2, 0x4
IN_CLOSE_WRITE, IN_CLOSE_NOWRITE, IN_OPEN = 0x8, 0x10, 0x20
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_ALL_EVENTS = 0xFFF
IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x2000, 0x4000, 0x8000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_CREATE = 0x10000000  # Linux 4.18+: EEXIST if the inode is already watched
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_ONESHOT = 0x80000000

FIONREAD = 0x541B
MAX_HANDLE_SZ = 128


def _path_arg(path: str | bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(os.fsencode(path))


def inotify_init1(flags: int = IN_CLOEXEC) -> int:
    return _call(NR_INOTIFY_INIT1, "inotify_init1", flags)


def inotify_add_watch(fd: int, path: str | bytes, mask: int) -> int:
    """The watch descriptor the kernel gives (or updates) for ``path``."""
    p = _path_arg(path)
    return _call(NR_INOTIFY_ADD_WATCH, "inotify_add_watch", fd, ctypes.addressof(p), mask)


def inotify_rm_watch(fd: int, wd: int) -> None:
    _call(NR_INOTIFY_RM_WATCH, "inotify_rm_watch", fd, wd)


def fionread(fd: int) -> int:
    """Bytes ready to read on ``fd`` (ioctl FIONREAD)."""
    n = ctypes.c_int(0)
    _call(NR_IOCTL, "ioctl(FIONREAD)", fd, FIONREAD, ctypes.addressof(n))
    return n.value


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """Open the object that ``handle`` (of type ``handle_type``) names on the
    filesystem of ``mount_fd`` (needs CAP_DAC_READ_SEARCH). On Linux 6.18
    ``mount_fd`` must not be an O_PATH fd (EBADF)."""
    if len(handle) > MAX_HANDLE_SZ:
        raise OSError(22, f"open_by_handle_at: a handle of {len(handle)} bytes is too long")
    buf = ctypes.create_string_buffer(
        len(handle).to_bytes(4, "little") + handle_type.to_bytes(4, "little", signed=True)
        + handle)
    return _call(NR_OPEN_BY_HANDLE_AT, "open_by_handle_at", mount_fd, ctypes.addressof(buf),
                 flags)


# fanotify

NR_FANOTIFY_INIT, NR_FANOTIFY_MARK = 300, 301
AT_FDCWD = -100

FAN_CLOEXEC, FAN_NONBLOCK = 0x1, 0x2
FAN_CLASS_CONTENT, FAN_CLASS_PRE_CONTENT = 0x4, 0x8
FAN_MARK_ADD = 0x1
FAN_MARK_DONT_FOLLOW = 0x4
FAN_MARK_MOUNT = 0x10
FAN_MARK_IGNORED_MASK = 0x20
FAN_MARK_IGNORED_SURV_MODIFY = 0x40
FAN_MARK_FILESYSTEM = 0x100
FAN_MARK_EVICTABLE = 0x200
FAN_MARK_IGNORE = 0x400


def fanotify_init(flags: int, event_f_flags: int) -> int:
    return _call(NR_FANOTIFY_INIT, "fanotify_init", flags, event_f_flags)


def fanotify_mark(fd: int, flags: int, mask: int, path: str | bytes,
                  dirfd: int = AT_FDCWD) -> None:
    p = _path_arg(path)
    _call(NR_FANOTIFY_MARK, "fanotify_mark", fd, flags, mask, dirfd, ctypes.addressof(p))
