"""Typed ctypes bindings for the anon-inode fds ckpt saves: signalfd and timerfd (x86_64).

eventfd needs nothing here (``os.eventfd``). Like ``libc``, this module knows
nothing of checkpoints; failures raise ``OSError`` with the right errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
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
