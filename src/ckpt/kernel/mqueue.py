"""POSIX message queues by raw syscalls (mq_open and the others take the name without
its leading slash), struct mq_attr, and the mqueue file system's magic."""

from __future__ import annotations

import ctypes
import errno
import os

from . import libc

MQUEUE_MAGIC = 0x19800202
_NR = {"mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
       "mq_getsetattr": 245}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class MqAttr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long),
                ("reserved", ctypes.c_long * 4)]


def _call(name: str, *args: object) -> int:
    res = _libc.syscall(ctypes.c_long(_NR[name]), *args)
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return int(res)


def is_mqueue(fd: int) -> bool:
    """Whether ``fd`` is a file of the mqueue file system."""
    return libc.fs_type(fd) == MQUEUE_MAGIC


def mq_open(name: str, flags: int, mode: int = 0, attr: MqAttr | None = None) -> int:
    """Open (or make, with O_CREAT) queue ``name`` ("/NAME" or "NAME")."""
    raw = ctypes.create_string_buffer(os.fsencode(name.lstrip("/")))
    return _call("mq_open", raw, ctypes.c_int(flags | os.O_CLOEXEC), ctypes.c_int(mode),
                 ctypes.byref(attr) if attr is not None else None)


def mq_unlink(name: str) -> None:
    _call("mq_unlink", ctypes.create_string_buffer(os.fsencode(name.lstrip("/"))))


def getattr_(fd: int) -> MqAttr:
    attr = MqAttr()
    _call("mq_getsetattr", ctypes.c_int(fd), None, ctypes.byref(attr))
    return attr


def receive(fd: int, buf: ctypes.Array[ctypes.c_char]) -> tuple[int, int] | None:
    """The next message (``fd`` non-blocking) into ``buf``: (length, priority), or None
    when the queue is empty."""
    prio = ctypes.c_uint()
    try:
        n = _call("mq_timedreceive", ctypes.c_int(fd), buf, ctypes.c_size_t(len(buf)),
                  ctypes.byref(prio), None)
    except OSError as e:
        if e.errno == errno.EAGAIN:
            return None
        raise
    return n, prio.value


def send(fd: int, data: bytes, prio: int) -> None:
    """Queue ``data`` with ``prio`` (``fd`` non-blocking: never waits)."""
    _call("mq_timedsend", ctypes.c_int(fd), data, ctypes.c_size_t(len(data)),
          ctypes.c_uint(prio), None)


def limits() -> tuple[int, int]:
    """(msg_max, msgsize_max) of this IPC namespace: what an unprivileged queue may have."""
    def read(name: str) -> int:
        with open(f"/proc/sys/fs/mqueue/{name}") as f:
            return int(f.read())
    return read("msg_max"), read("msgsize_max")

