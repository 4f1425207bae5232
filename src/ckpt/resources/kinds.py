"""The registry: every kind of file ckpt knows, in the order in which they are asked
to claim an fd (the first whose ``claims`` is true dumps it). A new kind is one
module with one ``filekind.FileKind`` subclass, and one line here. (The kinds below
claim disjoint sets of fds today; a kind that narrows another's must come before it.)"""

from __future__ import annotations

from ..errors import RestoreError
from . import (
    chrdev,
    epoll,
    eventfd,
    fanotify,
    files_reg,
    inotify,
    memfd,
    mqueue,
    namespaces,
    opath,
    pidfd,
    pipes,
    signalfd,
    sk_inet,
    sk_netlink,
    sk_packet,
    sk_unix,
    timerfd,
    tty,
)
from .filekind import FileKind

KINDS: list[type[FileKind]] = [
    namespaces.NamespaceFiles,  # namespace files (net:[N]), regular files to fstat
    opath.PathFds,         # O_PATH fds but on regular files and directories (by flags)
    chrdev.CharDevices,    # character devices but terminals
    epoll.Epoll,
    eventfd.EventFds,
    fanotify.Fanotify,
    mqueue.MessageQueues,  # regular files of the mqueue file system: before files_reg
    files_reg.RegularFiles,  # regular files (not memfds) and directories
    inotify.Inotify,
    memfd.MemFds,
    pidfd.PidFds,
    pipes.Pipes,           # pipes and FIFOs
    signalfd.SignalFds,
    sk_netlink.NetlinkSockets,  # before inet, which takes every socket but unix ones
    sk_packet.PacketSockets,
    sk_inet.InetSockets,   # sockets that are not unix ones
    sk_unix.UnixSockets,
    timerfd.TimerFds,
    tty.Terminals,         # character devices of terminal majors
]


def kind_of(name: str) -> type[FileKind]:
    for k in KINDS:
        if k.KIND == name:
            return k
    raise RestoreError(f"the image holds a file of kind {name!r}, unknown to this ckpt")
