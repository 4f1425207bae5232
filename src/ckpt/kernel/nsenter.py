"""This process in other namespaces for a while: another process's (``entered``) or new
ones (``unshared``), and back in its own at the end of the block, whatever happens.

setns(2) and unshare(2) of uts, ipc and net work in a process with several threads;
ckpt only ever moves its one thread. The way back is an fd on each namespace it left,
opened before it moved.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from . import libc

CLONE_NEWNS = libc.CLONE_NEWNS
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000

# /proc/PID/ns/ names of the namespaces this module moves between, and their flags.
FLAGS = {"uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "net": CLONE_NEWNET}


def setns(fd: int, nstype: int) -> None:
    libc.syscall("setns", fd, nstype)


def _own(names: list[str]) -> list[tuple[int, int]]:
    """(fd, flag) of this process's namespaces ``names``, the way back."""
    back: list[tuple[int, int]] = []
    try:
        for name in names:
            back.append((os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC),
                         FLAGS[name]))
    except BaseException:
        _close(back)
        raise
    return back


def _close(back: list[tuple[int, int]]) -> None:
    for fd, _ in back:
        os.close(fd)


def _return(back: list[tuple[int, int]]) -> None:
    """Back into the namespaces left (a failure here is a bug ckpt cannot go on with)."""
    try:
        for fd, flag in back:
            setns(fd, flag)
    finally:
        _close(back)


@contextmanager
def entered(pid: int, names: list[str]) -> Iterator[None]:
    """Run the block in process ``pid``'s namespaces ``names`` (of FLAGS); none: as is."""
    if not names:
        yield
        return
    back = _own(names)
    try:
        for name in names:
            fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, FLAGS[name])
            finally:
                os.close(fd)
        yield
    finally:
        _return(back)


class Unshared:
    """New namespaces ``names`` made for this process; ``leave`` goes back to its own
    (the new ones live on in the processes created meanwhile, else they vanish)."""

    def __init__(self, names: list[str]):
        self.back = _own(names)
        flags = 0
        for name in names:
            flags |= FLAGS[name]
        try:
            if flags:
                libc.unshare(flags)
        except BaseException:
            _close(self.back)
            raise

    def leave(self) -> None:
        back, self.back = self.back, []
        _return(back)


def hostname() -> tuple[str, str]:
    """The node and domain names of this process's uts namespace."""
    with open("/proc/sys/kernel/hostname") as f, open("/proc/sys/kernel/domainname") as g:
        return f.read().rstrip("\n"), g.read().rstrip("\n")


def set_hostname(node: str, domain: str) -> None:
    """Name this process's uts namespace (the sysctl files write what sethostname does)."""
    for name, value in (("hostname", node), ("domainname", domain)):
        with open(f"/proc/sys/kernel/{name}", "w") as f:
            f.write(value)
