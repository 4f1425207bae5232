"""What every kind of file module builds on: the ``FileKind`` base class and the
contexts its hooks get.

A kind of file (regular file, pipe, unix socket, epoll, ...) is one module with
one ``FileKind`` subclass, listed once in ``kinds.KINDS``. The registry makes one
object of it per dump and one per restore: its attributes are the kind's own
state between its hooks (data files it writes, pipes it made, sockets it
bound), and ``descriptions`` are its own descriptions only. Whatever every fd
needs whatever its kind (finding the kind, shared descriptions, the file status
flags, installing the fds in the new processes) is files.py's.
"""

from __future__ import annotations

import fcntl
import os

from ..errors import UnsupportedError
from ..images import ImageReader, ImageWriter
from ..kernel import procfs
from ..kernel.inject import Injector
from ..kernel.record import dataclass, field
from ..schema import Field, Opt, refuse

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

# The file status flags F_SETFL sets (the others are fixed at open: the access mode,
# O_CREAT, ...); fcntl(2).
STATUS_FLAGS = os.O_APPEND | os.O_NONBLOCK | os.O_DIRECT | os.O_NOATIME | fcntl.FASYNC

Description = dict[str, "Any"]  # one entry of files.json: "kind", "flags", then the kind's own

O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE: os.O_TMPFILE without its O_DIRECTORY
O_CLOEXEC_FDINFO = 0o2000000
# Flags that act only when a file is made or first opened: never given to a reopen.
_OPEN_ONLY = (os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | O_TMPFILE_BIT
              | O_CLOEXEC_FDINFO)


def reopen_flags(flags: int, directory: bool = False, through_proc: bool = False) -> int:
    """The flags to open a file again with, from its saved ``flags``: without those that
    act only when a file is made (O_CREAT, O_EXCL, O_TRUNC, O_NOCTTY, O_TMPFILE: a
    ``tempfile.TemporaryFile`` has them), O_DIRECTORY kept for a directory only, and
    O_NOFOLLOW left out when the file is reopened through a /proc/self/fd link, which
    is a symbolic link to follow (``tempfile.mkstemp`` opens with O_NOFOLLOW).
    O_CLOEXEC is added: the copy is ckpt's (close-on-exec is per fd, in the fd table)."""
    flags &= ~_OPEN_ONLY
    if not directory:
        flags &= ~os.O_DIRECTORY
    if through_proc:
        flags &= ~os.O_NOFOLLOW
    return flags | os.O_CLOEXEC


@dataclass(frozen=True)
class TcpFlags:
    """criu's TCP options, for dump and restore alike."""

    established: bool = False  # --tcp-established: save (restore) TCP connections
    close: bool = False  # --tcp-close: restore them closed (at dump: do not save them)
    skip_in_flight: bool = False  # --skip-in-flight: drop connections not yet accepted


@dataclass
class DumpCtx:
    """What every kind may need while dumping; ``holders``: (st_dev, st_ino) of a file ->
    (pid, fd, description id) of one fd of each description open on it so far."""

    images: ImageWriter
    shell_job: bool = False
    external: set[str] = field(default_factory=set)
    tcp: TcpFlags = field(default_factory=TcpFlags)
    ext_unix_sk: bool = False  # --ext-unix-sk: pending connections from outside allowed
    empty_net: bool = False  # the tree's own network namespace, not saved (--empty-ns net)
    orphan_pts: bool = False  # a pty slave whose master is outside may be saved (tty.py)
    # in_flight(fd, where, done): a file ckpt holds as ``fd`` (passed in a queued
    # SCM_RIGHTS message) to dump like any fd's, once the current description is
    # done; ``done`` gets its description id. ckpt closes ``fd`` at the dump's end.
    in_flight: Callable[[int, str, Callable[[str], None]], None] | None = None
    holders: dict[tuple[int, int], list[tuple[int, int, str]]] = field(default_factory=dict)

    def held(self, dev: int, ino: int) -> str | None:
        """The description of the first fd of the tree open on file (dev, ino): what a
        watch or mark of a deleted file is made again through, None if no fd holds it."""
        fds = self.holders.get((dev, ino))
        return fds[0][2] if fds else None

    def hold_deleted(self, deleted: list[tuple[str, dict[str, Any]]], feature: str,
                     again: str) -> None:
        """Each watch or mark of a deleted file, ``(where, entry)``: its ``file`` the
        description of an fd of the tree holding it (restored as a ghost, watched or
        marked again through it), or refused: ckpt cannot ``again`` it otherwise."""
        for where, entry in deleted:
            held = self.held(entry["dev"], entry["ino"])
            if held is None:
                raise UnsupportedError(f"{where}, and no process of the dumped tree holds it "
                                       "through an fd (a process outside the tree, or a "
                                       f"mapping, keeps it open); ckpt cannot {again} it again")
            entry["file"] = held
            self.images.need(feature)


@dataclass
class RestoreCtx:
    """What every kind may need while restoring: the images, and the files the
    restorer hands over itself (``--inherit-fd``): ``inherit`` by key,
    ``inherit_files`` by description id (``orig-fd[N]``)."""

    images: ImageReader
    shell_job: bool = False
    inherit: dict[str, int] = field(default_factory=dict)
    inherit_files: dict[str, int] = field(default_factory=dict)
    # the descriptions those fds stand for: no kind opens them
    replaced: set[str] = field(default_factory=set)
    tcp: TcpFlags = field(default_factory=TcpFlags)
    tree: set[int] = field(default_factory=set)  # the PIDs of the restored tree
    # each live process's uids and gids (credentials' real, effective, saved, fs)
    ids: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)
    # open_file(id): ckpt's fd for the description ``id``, opened now if need be (a
    # file a queued message carries); ckpt closes it with the others
    open_file: Callable[[str], int] | None = None
    # orphan_pts(master): hand the new master of a pty whose master was outside the tree
    # to the restore's caller (criu's orphan-pts-master notification); None: refused
    orphan_pts: Callable[[int], None] | None = None


@dataclass
class ImageRefs:
    """What a kind's ``check_image`` checks a description against: every description
    (files.json), the size of each raw image file of the folder, the tree's PIDs."""

    descriptions: dict[str, Description]
    sizes: dict[str, int]
    pids: set[int]

    def within(self, name: str, off: int, length: int, where: str, field: str) -> None:
        """Refuse ``length`` bytes at ``off`` of raw file ``name`` that it does not hold."""
        size = self.sizes.get(name, 0)
        if off + length > size:
            raise refuse(where, field, f"{length} bytes at {off}, past the end of {name} "
                         f"({size} bytes)")

    def described(self, fid: str, where: str, field: str) -> None:
        """Refuse a reference to a description files.json does not hold."""
        if fid not in self.descriptions:
            raise refuse(where, field, f"names file {fid!r}, which files.json does not "
                         "describe")

    def in_tree(self, pid: int, where: str, field: str) -> None:
        if pid not in self.pids:
            raise refuse(where, field, f"process {pid} is not in the tree")


@dataclass
class OpenFd:
    """One fd of a process being dumped, as a kind's ``dump`` sees it."""

    pid: int
    fd: int
    link: str              # what /proc/PID/fd/N points to
    st: os.stat_result     # fstat of the file
    dup: int               # ckpt's copy of the fd (pidfd_getfd): the same open file description
    info: procfs.FdInfo    # /proc/PID/fdinfo/N
    label: str = ""        # for a file no process holds (in flight): what names it

    @property
    def where(self) -> str:
        return self.label or f"process {self.pid} fd {self.fd}"


@dataclass
class TaskFd:
    """One fd of a restored process whose description is of the hook's kind."""

    fd: int
    file: str  # the description id
    desc: Description


class FileKind:
    """One kind of file. Subclasses set ``KIND`` (its name in files.json) and define
    ``claims``, ``dump`` and ``open``; the other hooks are optional.

    Dump: ``claims`` is asked for every fd, in the registry's order; the first kind
    that claims it gets ``dump`` once per open file description (ckpt stores the
    result, with ``kind`` and the file status ``flags``, in files.json), then
    ``verify`` on it, then ``after_dump`` once every process is dumped.

    ``verify`` holds whatever the restore would check or refuse about one
    description: the dump runs it before the kill (a refusal then names the fd
    and leaves the process running), the restore before anything is opened.

    Restore: ``before_restore`` and ``verify`` run before anything is opened or
    created, to warn or refuse; ``open`` returns an fd of ckpt's for each description the restore
    needs (ckpt sets its status flags afterwards); ``restore_in_task`` runs in
    each restored process once its fds are at their final numbers; ``close``
    once every process holds its fds.
    """

    KIND: ClassVar[str]
    LINK: ClassVar[str] = ""  # the fd link of an anon-inode kind, e.g. "anon_inode:[eventfd]"
    # The fields its ``dump`` adds to a description in files.json, one line each
    # (schema.py): a field the schema lacks is refused at restore.
    SCHEMA: ClassVar[dict[str, Field | Opt]] = {}
    # Its ``restore_in_task`` uses the process's other fds (epoll adds watches on them):
    # it runs after every other kind's has put its real files in place of stand-ins.
    USES_OTHER_FDS: ClassVar[bool] = False

    def __init__(self) -> None:
        self.descriptions: dict[str, Description] = {}  # this kind's, by id

    # ---- what does not depend on one dump or restore

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        """Whether an fd pointing to ``link`` (``st`` its fstat) is of this kind."""
        return bool(cls.LINK) and link == cls.LINK

    @classmethod
    def claims_fd(cls, f: OpenFd) -> bool:
        """Whether fd ``f`` is of this kind: ``claims`` on its link and fstat, unless the
        kind decides by more (the fd's flags)."""
        return cls.claims(f.link, f.st)

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        """The ``--inherit-fd`` keys naming ``desc``, the usual one first (see
        docs/image-format.md)."""
        return []

    @classmethod
    def shown_path(cls, desc: Description) -> str:
        """What /proc/PID/fd/N showed for ``desc`` (for ``ckpt show --fds``)."""
        return str(desc["path"]) if "path" in desc else cls.LINK

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        """How many fds ckpt holds for ``desc`` while the tree is created, at most: its
        own fd of the description, and what ``open`` keeps to make it (files.check_limits
        checks at dump that a restore can hold them all at once)."""
        return 1

    @classmethod
    def borrowed(cls, desc: Description) -> bool:
        """Whether ``open`` hands out a file the restore does not own (the user's
        terminal of a shell job): ckpt then leaves its status flags alone."""
        return False

    def lent(self, fid: str, desc: Description) -> bool:
        """Whether the restored processes hold, for description ``fid``, one ckpt lends
        them (the user's terminal of a shell job) rather than one of their own: its
        signal owner is then left alone, as it is ckpt's and the shell's too."""
        return self.borrowed(desc)

    @classmethod
    def sent_back(cls, desc: Description) -> bool:
        """Whether a description passed in a queued message comes back: ckpt queues it
        again before the processes exist, so not one only a restored process opens."""
        return True

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        """Refuse what ``SCHEMA`` allows but the other images contradict (a description
        it names that files.json lacks, data past the end of a raw file), before the
        restore creates anything; ``where`` names the description."""

    # ---- dump

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        raise NotImplementedError

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        """Raise ``RestoreError`` for what ``open`` would refuse about ``desc`` on the
        system as it is now (at dump: as the restore would find it if nothing changed)."""

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Check or complete what needs every description of the tree (``tasks``: the
        inventory's tasks, with ``ctty`` for session leaders)."""

    def before_kill(self) -> None:
        """The images are complete and the dumped processes are about to be killed."""

    # ---- restore

    def before_restore(self, ctx: RestoreCtx) -> None:
        """Warn or refuse, before any file is opened and any process created."""

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        raise NotImplementedError

    def after_open(self, ctx: RestoreCtx) -> None:
        """Once every process's files are open: what needs other files open first (a
        unix socket's queue carrying fds, ``ctx.open_file``)."""

    def restore_across_tasks(self, ctx: RestoreCtx, holders: dict[str, list[tuple[int, int]]],
                             injector: Callable[[int], Injector], scratch: int) -> None:
        """Once every process exists with its fds, before any is restored: what takes
        several processes in turn (``holders``: this kind's descriptions by id, each
        with the (pid, fd) holding it; ``injector(pid)`` an injector in that process,
        ``scratch`` a scratch page there)."""

    def restore_in_task(self, ctx: RestoreCtx, pid: int, inj: Injector, scratch: int,
                        fds: list[TaskFd]) -> None:
        """In restored process ``pid`` (``inj`` its injector, ``scratch`` a scratch page
        in it), once its fds are at their final numbers and before its memory comes
        back: what only the process itself can do with its fd numbers. ``fds``: its
        fds of this kind, inherited ones left out."""

    def close(self) -> None:
        """Close what ckpt kept open for ``open`` (pipes, sockets, pty pairs, ghosts), or
        at the end of a dump, what it kept from ``dump``."""


class SocketKind(FileKind):
    """A kind of socket: its descriptions have the socket's ``inode``, which names it
    (``socket:[INODE]``) in /proc and for ``--inherit-fd``."""

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [cls.shown_path(desc)]

    @classmethod
    def shown_path(cls, desc: Description) -> str:
        return f"socket:[{desc['inode']}]"


def refuse_if_net_not_saved(ctx: DumpCtx, f: OpenFd, family: str) -> None:
    """Refuse a socket of ``family`` ("an inet", "a netlink", ...) of the tree's own
    network namespace when that namespace is not saved (``--empty-ns net``, runc's
    ``empty_ns``): it lives there, and the restore makes a new, empty one."""
    if ctx.empty_net:
        raise UnsupportedError(f"{f.where}: {f.link} is {family} socket of the tree's own "
                               "network namespace, which is not saved (--empty-ns net)")


def close_quietly(fds: list[int] | set[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def install_own_fd(inj: Injector, own: int, target: int) -> None:
    """Make fd ``target`` of the process ``inj`` runs in a copy of ckpt's fd ``own`` (the
    same open file description), keeping its close-on-exec flag: for files that can be
    opened only once the restored processes exist. The process takes the copy itself
    (``pidfd_getfd`` on ckpt, its tracer and parent, whose credentials it still has)."""
    pidfd = inj.call("pidfd_open", os.getpid(), 0)
    try:
        copy = inj.call("pidfd_getfd", pidfd, own, 0)
    finally:
        inj.call("close", pidfd)
    replace_fd(inj, target, copy)


def replace_fd(inj: Injector, target: int, new: int) -> None:
    """Put the process's fd ``new`` at ``target`` in place of what is there, keeping
    ``target``'s close-on-exec flag; ``new`` is closed."""
    try:
        cloexec = inj.call("fcntl", target, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        inj.call("dup3", new, target, os.O_CLOEXEC if cloexec else 0)
    finally:
        inj.call("close", new)


def taken_hint(inode: int) -> str:
    """What to say of a socket address in use at restore: images are never consumed, so
    the dumped tree or another restored copy of it may hold it (restore --new-pidns)."""
    return ("is the dumped process, or another restore of these images, still running? "
            f"give each copy a listener of its own with --inherit-fd 'fd[N]:socket:[{inode}]'")
