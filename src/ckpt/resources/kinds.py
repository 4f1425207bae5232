"""The registry: every kind of file ckpt knows, in the order in which they are asked
to claim an fd (the first whose ``claims`` is true dumps it). A new kind is one
module with one ``filekind.FileKind`` subclass, and one line here. (The kinds below
claim disjoint sets of fds today; a kind that narrows another's must come before it.)

Each line also says which fds the kind may claim at all: a file type (``reg``, ``dir``,
``chr``, ``fifo``, ``sock``, ...), an anon-inode link, or ``O_PATH``. A kind's module
is imported only when an fd it may claim, or a description of its name, comes: a
command does not pay at start-up for kinds its processes do not have."""

from __future__ import annotations

import os
import stat as st_mod
import sys

from ..errors import RestoreError

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

    from .filekind import FileKind

# (name in files.json, module, class, the fds it may claim), in claim order.
REGISTRY: tuple[tuple[str, str, str, str], ...] = (
    ("ns", "namespaces", "NamespaceFiles", "reg"),  # namespace files (net:[N])
    ("path", "opath", "PathFds", "O_PATH"),  # O_PATH fds but on regular files, directories
    ("chr", "chrdev", "CharDevices", "chr"),  # character devices but terminals
    ("epoll", "epoll", "Epoll", "anon_inode:[eventpoll]"),
    ("eventfd", "eventfd", "EventFds", "anon_inode:[eventfd]"),
    ("fanotify", "fanotify", "Fanotify", "anon_inode:[fanotify]"),
    ("mqueue", "mqueue", "MessageQueues", "reg"),  # files of the mqueue fs: before reg
    ("reg", "files_reg", "RegularFiles", "reg dir"),  # regular files (not memfds), dirs
    ("inotify", "inotify", "Inotify", "anon_inode:inotify"),
    ("memfd", "memfd", "MemFds", "reg"),
    ("pidfd", "pidfd", "PidFds", "anon_inode:[pidfd]"),
    ("pipe", "pipes", "Pipes", "fifo"),  # pipes and FIFOs
    ("signalfd", "signalfd", "SignalFds", "anon_inode:[signalfd]"),
    ("netlink", "sk_netlink", "NetlinkSockets", "sock"),  # before inet, which takes all
    ("packet", "sk_packet", "PacketSockets", "sock"),
    ("inet", "sk_inet", "InetSockets", "sock"),  # sockets that are not unix ones
    ("unix", "sk_unix", "UnixSockets", "sock"),
    ("timerfd", "timerfd", "TimerFds", "anon_inode:[timerfd]"),
    ("tty", "tty", "Terminals", "chr"),  # character devices of terminal majors
)

_TYPES = {st_mod.S_IFREG: "reg", st_mod.S_IFDIR: "dir", st_mod.S_IFCHR: "chr",
          st_mod.S_IFBLK: "blk", st_mod.S_IFIFO: "fifo", st_mod.S_IFSOCK: "sock",
          st_mod.S_IFLNK: "lnk"}


def load(name: str) -> type[FileKind]:
    """The class of kind ``name`` (its module imported now if it was not)."""
    for kind, module, cls, _claims in REGISTRY:
        if kind == name:
            # __import__, not importlib.import_module: importlib's package (with
            # warnings) is one more import at a command's start-up
            name = f"{__package__}.{module}"
            __import__(name)
            loaded: type[FileKind] = getattr(sys.modules[name], cls)
            return loaded
    raise RestoreError(f"the image holds a file of kind {name!r}, unknown to this ckpt")


def kind_of(name: str) -> type[FileKind]:
    return load(name)


def may_claim(link: str, st: os.stat_result, flags: int) -> list[str]:
    """The names of the kinds that may claim an fd on ``link`` (``st`` its fstat,
    ``flags`` its file status flags), in claim order; each still decides itself."""
    facts = {_TYPES.get(st_mod.S_IFMT(st.st_mode), ""), link}
    if flags & os.O_PATH:
        facts.add("O_PATH")
    return [kind for kind, _m, _c, claims in REGISTRY if facts.intersection(claims.split())]


def all_kinds() -> list[type[FileKind]]:
    """Every kind, in claim order (every module imported)."""
    return [load(kind) for kind, *_ in REGISTRY]


def __getattr__(name: str) -> Any:
    if name == "KINDS":  # the list of every kind's class, as it was before kinds were lazy
        return all_kinds()
    raise AttributeError(name)
