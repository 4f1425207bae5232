"""This process in other namespaces for a while: another process's (``entered``) or new
ones (``unshared``), and back in its own at the end of the block, whatever happens.

setns(2) and unshare(2) of uts, ipc and net work in a process with several threads;
a mount namespace needs a thread whose fs struct is its own, which unshare makes it.
The way back is an fd on each namespace it left, opened before it moved.
"""

from __future__ import annotations

import os

from . import libc
from .scoped import contextmanager

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator

CLONE_NEWNS = libc.CLONE_NEWNS
CLONE_FS = libc.CLONE_FS
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWCGROUP = 0x02000000

# /proc/PID/ns/ names of the namespaces this module moves between, and their flags.
FLAGS = {"uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "net": CLONE_NEWNET, "mnt": CLONE_NEWNS,
         "cgroup": CLONE_NEWCGROUP}


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
    """Run the block in process ``pid``'s namespaces ``names`` (of FLAGS); none: as is.
    Entering a mount namespace moves to its root: the working directory is put back."""
    if not names:
        yield
        return
    back = _own(names)
    cwd = -1
    if "mnt" in names:
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        libc.unshare(CLONE_FS)  # setns of a mount namespace wants an fs struct of its own
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
        if cwd >= 0:
            os.fchdir(cwd)
            os.close(cwd)


class Unshared:
    """New namespaces ``names`` made for this process; ``leave`` goes back to its own
    (the new ones live on in the processes created meanwhile, else they vanish)."""

    def __init__(self, names: list[str], join: dict[str, int] | None = None):
        """``join``: namespaces entered instead of made, {name: fd on it}."""
        join = join or {}
        self.back = _own([*names, *join])
        flags = 0
        for name in names:
            flags |= FLAGS[name]
        try:
            if flags:
                libc.unshare(flags)
        except BaseException:
            _close(self.back)
            raise
        try:
            for name, fd in join.items():
                setns(fd, FLAGS[name])
        except BaseException:
            self.leave()
            raise

    def leave(self) -> None:
        back, self.back = self.back, []
        _return(back)


def loopback_up() -> None:
    """Bring up ``lo`` of this process's network namespace (SIOCSIFFLAGS, IFF_UP)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s.fileno(), siocgifflags, req))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def hostname() -> tuple[str, str]:
    """The node and domain names of this process's uts namespace."""
    with open("/proc/sys/kernel/hostname") as f, open("/proc/sys/kernel/domainname") as g:
        return f.read().rstrip("\n"), g.read().rstrip("\n")


def set_hostname(node: str, domain: str) -> None:
    """Name this process's uts namespace (the sysctl files write what sethostname does)."""
    for name, value in (("hostname", node), ("domainname", domain)):
        with open(f"/proc/sys/kernel/{name}", "w") as f:
            f.write(value)
