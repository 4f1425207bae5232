"""Unix domain sockets: connected pairs, listening sockets, bound and unbound
sockets, with the bytes or datagrams queued in them; sockets connected to a peer
outside the tree (``--external unix[INODE]`` at dump, ``--inherit-fd
fd[N]:socket:[INODE]`` at restore).

The kernel's sock_diag netlink interface tells each socket's type, state, peer,
address (and the inode of its socket file), backlog and pending connections;
queued data is read with MSG_PEEK and SO_PEEK_OFF so it stays in place,
message by message for datagram and seqpacket sockets, with each datagram's
sender address and the files each message carries (SCM_RIGHTS: the peek gives
ckpt its own fds of them, dumped like any process's fd, even files no process
holds any more, or the socket itself).

How each socket comes back:

* a connected stream or seqpacket socket, and a datagram socket connected both
  ways with a peer when at most one of the two is bound: a ``socketpair``, each
  end refilled from the other (a bound datagram end is bound again). A socket
  whose peer was closed is one end of a new pair whose other end is closed once
  the queue is refilled: it reads what was left, then end-of-file. A pair a process
  of the tree had made is made again by a short-lived child of ckpt's under that
  PID, with that process's uid and gid, so SO_PEERCRED names them as before; a
  connection accepted on a listener of the tree is made again through the restored
  listener, listen() and connect() each by such a child (``_connect_through``), so
  each end names its own peer process and the accepted end has its listener's name;
* every other socket on its own: ``socket``, ``bind`` to its name (a stale
  socket file is removed first; the new file gets the saved mode and owner),
  ``listen`` with its backlog; datagrams queued on it are sent again to its name
  from the socket of the tree that had sent them (or from an unbound socket when
  their sender was unbound); then datagram sockets ``connect`` to their peer's
  name.

Queues whose messages carry files are sent again once every file of the restore
is open (``after_open``), each message with its files.

Connections a listener had not accepted yet come back once every process exists
(``restore_across_tasks``): the listener listens from its process, then each
client, restored unconnected, connects from its own process, in the order
accept() takes them (so each end sees the other's credentials as before); a
client outside the tree (allowed with --ext-unix-sk) is replaced by a socket the
listener's process connects and closes at once: a connection whose client left.

Refused at dump: a connection not accepted yet on which its client sent data
(it waits in a socket no fd reaches), or whose client was closed, or from
outside the tree without --ext-unix-sk; a queued message carrying an epoll
instance (its watches are fd numbers of a process), queued messages on a socket
that receives credentials (SO_PASSCRED), a datagram queued from a socket outside
the tree, a connected stream socket that was bound by its process (the name of
an *accepted* socket is its listener's and is not needed).

A socket bound to a path gets its file in the path's folder as reached from /
following root's symbolic links only, whatever the names lead to by the time of
the bind (``_folder_of``, ``_bind_in``: a user's link planted since never leads
root's bind elsewhere). One whose file was removed or replaced since is bound
again to its name with a file no one reaches (``_bind_hidden``: from a child in
a mount namespace of its own, on a tmpfs there); a datagram socket connected to
a peer closed since is one end of a new pair whose other end, bound to the
peer's name the same way, sends the queue again and closes.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import select
import socket
import stat as st_mod
import struct
import time

from ..errors import DumpError, RestoreError, UnsupportedError
from ..images import RawWriter
from ..kernel import interrupts, libc, mountinfo, procfs, treeroot
from ..kernel.inject import Injector
from ..kernel.sock_diag import (
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_SYN_SENT,
    is_unix_socket,
    unix_socket,
    unix_sockets,
)
from ..log import logger
from ..schema import BOOL, NAT, PATH, STR, U64, UID, Hex, Int, List, Obj, Opt, Tup, refuse
from . import nspids
from .filekind import (
    Description,
    DumpCtx,
    ImageRefs,
    OpenFd,
    RestoreCtx,
    SocketKind,
    TaskFd,
    close_quietly,
    taken_hint,
)
from .sockopts import OPTIONS, SOCKET, apply_opts, read_opts, urgent_pending

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from ..kernel.sock_diag import UnixDiag

log = logger("ckpt.sk_unix")

SO_PEEK_OFF = 42
SCM_PIDFD = 4
_PEEK_BUF = 64 << 10
_ANC_BUF = socket.CMSG_SPACE(253 * 4) + socket.CMSG_SPACE(64)
RCV_SHUTDOWN = 1
QUEUE_FILE = "sk-queues.img"
_TYPES = {1: "stream", 2: "dgram", 5: "seqpacket"}
_SHUT = {1: socket.SHUT_RD, 2: socket.SHUT_WR, 3: socket.SHUT_RDWR}


# ------------------------------------------------------------------ names


def _kdev_to_dev(kdev: int) -> int:
    """A dev_t as the kernel keeps it inside (major << 20 | minor), as stat shows it."""
    return os.makedev(kdev >> 20, kdev & 0xFFFFF)


def _name_bytes(diag_hex: str) -> bytes:
    """An address as bind() takes it: abstract names whole (leading NUL), paths
    without the NUL the kernel keeps after them."""
    raw = bytes.fromhex(diag_hex)
    if raw[:1] == b"\0":
        return raw
    return raw.split(b"\0", 1)[0]


def show_name(raw: bytes) -> str:
    """An address for messages: a path, or @name for an abstract one."""
    if raw[:1] == b"\0":
        return "@" + raw[1:].decode("utf-8", "backslashreplace")
    return os.fsdecode(raw) if raw else "(unnamed)"


def _sender_bytes(addr: Any) -> bytes:
    if not addr:
        return b""
    if isinstance(addr, bytes):
        return addr
    return os.fsencode(addr)


def _bound_name(pid: int, where: str, me: UnixDiag) -> dict[str, Any]:
    """The ``name`` (and for a path, ``file``) fields of a socket bound again at restore."""
    raw = _name_bytes(me["name"])
    if raw[:1] == b"\0":
        return {"name": raw.hex()}
    path = os.fsdecode(raw)
    full = path if path.startswith("/") else os.path.join(procfs.cwd(pid), path)
    try:
        fst: os.stat_result | None = treeroot.stat(full, follow=False)
    except OSError:
        fst = None
    vfs = me["vfs"]
    if (fst is None or not st_mod.S_ISSOCK(fst.st_mode) or vfs is None
            or fst.st_ino != vfs[0] or fst.st_dev != _kdev_to_dev(vfs[1])):
        log.info("%s: bound to %r, whose socket file was removed or replaced since (or, a "
                 "relative name, is not found from the process's working directory): bound "
                 "again to a file nobody reaches", where, path)
        return {"name": raw.hex(), "file": {"path": full, "gone": True}}
    file = {"path": full, "mode": st_mod.S_IMODE(fst.st_mode), "uid": fst.st_uid,
            "gid": fst.st_gid}
    real = _real_path(full)
    if real != full:
        file["real"] = real
    return {"name": raw.hex(), "file": file}


def _real_path(full: str) -> str:
    """``full`` with its folder's symbolic links resolved as at dump: the restore reaches
    the folder this way, following root's links only (``_folder_of``): a link of a
    user's on the way (~/run -> /srv/x) is not followed then. A tree with a root of its
    own keeps its path (links there resolve inside its root)."""
    if treeroot.is_own():
        return full
    return os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))


def _in_own_mounts(work: Callable[[], None], failed: str) -> None:
    """Run ``work`` in a child with a mount namespace of its own (its mounts go when it
    does; sockets it binds are ckpt's too, the fds are shared by the fork), a copy of
    the tree's (a container's: its paths are then the child's own, from its ``/``). Its
    error: a RestoreError "FAILED: why"."""
    tree_ns = treeroot.proc("ns/mnt") if treeroot.is_own() else None
    r, w = os.pipe()
    pid = interrupts.fork()
    if pid == 0:  # the child: nothing of ckpt's but the socket and the pipe matter
        code = 1
        try:
            os.close(r)
            if tree_ns is not None:
                ns = os.open(tree_ns, os.O_RDONLY | os.O_CLOEXEC)
                libc.syscall("setns", ns, libc.CLONE_NEWNS)
                os.close(ns)
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount("none", "/", None, libc.MS_REC | libc.MS_PRIVATE)
            with treeroot.at(""):
                work()
            code = 0
        except BaseException as e:
            os.write(w, str(getattr(e, "strerror", None) or e).encode())
        finally:
            os._exit(code)
    os.close(w)
    with open(r, "rb") as pipe:
        why = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status:
        raise RestoreError(f"{failed}: {why or status}")


def _bind_hidden(sock: socket.socket, raw: bytes, path: str, where: str) -> int:
    """Bind ``sock`` to the path name ``raw`` (``path`` in full) with a socket file no
    one can reach, as the dumped socket's was removed or replaced: on a tmpfs of a mount
    namespace of its own, made the root of the child that binds (so even a name in
    ``/`` lands in it; the real path is not touched).
    Return an O_PATH fd of that folder, through which ckpt alone reaches the socket
    file (``_address``: its clients connect, its queued datagrams are sent)."""
    rel = os.fsdecode(raw)
    folder = os.path.dirname(path)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    def work() -> None:
        top = "/tmp"
        while not os.path.isdir(top):  # (a tree without /tmp: the folder's, or above)
            top = folder if top == "/tmp" else os.path.dirname(top)
        libc.mount("tmpfs", top, "tmpfs", 0, "mode=0755")
        os.chroot(top)
        os.makedirs(folder, exist_ok=True)
        os.chdir(path[:len(path) - len(rel)] or "/")  # a relative name from its folder
        sock.bind(raw)
        socket.send_fds(theirs, [b"f"], [os.open(folder, os.O_PATH | os.O_DIRECTORY)])

    try:
        _in_own_mounts(work, f"{where}: cannot bind {path} again (to a socket file no "
                             "one reaches, as it was)")
        _, fds, _, _ = socket.recv_fds(mine, 1, 1)
    finally:
        mine.close()
        theirs.close()
    return fds[0]


_FOLDER = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT = os.O_PATH | os.O_DIRECTORY


def _folder_of(path: str, where: str, shown: str = "") -> int:
    """An O_PATH fd of the folder of socket file ``path``, reached from the tree's / one
    name at a time following root's symbolic links only (a system's /var/run -> /run;
    an absolute one from the tree's /): a link a user planted since the dump, in a
    folder of theirs on the way, never leads root's bind, removal or chown elsewhere.
    ``shown``: the socket's name, in errors (``path`` by default)."""
    shown = shown or path
    todo = [p for p in os.path.dirname(path).split("/") if p]
    fd = treeroot.open_root(_ROOT)
    links = 0
    try:
        while todo:
            part = todo.pop(0)
            try:
                step = os.open(part, _FOLDER, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise RestoreError(f"{where}: cannot bind {shown}: {part}: {e.strerror}"
                                       ) from None
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                links += 1
                if not st_mod.S_ISLNK(st.st_mode) or st.st_uid != 0 or links > 40:
                    what = (f"a symbolic link of uid {st.st_uid}'s"
                            if st_mod.S_ISLNK(st.st_mode) else "not a folder")
                    raise RestoreError(f"{where}: cannot bind {shown}: {part} on the way is "
                                       f"{what} now (a restore follows root's links only)")
                target = os.readlink(part, dir_fd=fd)
                todo[:0] = [p for p in target.split("/") if p]
                if not target.startswith("/"):
                    continue
                step = treeroot.open_root(_ROOT)
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def _bind_in(sock: socket.socket, raw: bytes, path: str, where: str, reach: str) -> None:
    """Bind ``sock`` to the path name ``raw`` (``path`` in full) with its socket file
    made in path's folder as ``_folder_of`` reaches it, whatever the names on the way
    lead to by the time of the bind: from a child in a mount namespace of its own
    (where the folder is reached again: a bind mount takes a folder of the caller's
    namespace only), chrooted into a tmpfs where path's folder is a bind mount of
    the folder reached (``reach``'s: ``path`` with the links resolved at dump). The
    socket gets ``raw`` as its name, as the process gave it."""
    rel = os.fsdecode(raw)
    inner = os.path.dirname(path)

    def work() -> None:
        folder = _folder_of(reach, where, path)
        bound = mountinfo.open_tree("", mountinfo.OPEN_TREE_CLONE | mountinfo.OPEN_TREE_CLOEXEC
                                    | mountinfo.AT_EMPTY_PATH, folder)  # no /proc needed
        top = next((d for d in ("/tmp", "/mnt", "/run", "/dev") if os.path.isdir(d)), "/")
        libc.mount("tmpfs", top, "tmpfs", 0, "mode=0700")
        os.makedirs(top + inner, exist_ok=True)
        mountinfo.move_mount(bound, top + inner)
        os.chroot(top)
        os.chdir(path[:len(path) - len(rel)] or "/")  # a relative name from its folder
        sock.bind(raw)

    _in_own_mounts(work, f"{where}: cannot bind {path}")


def _bind_peer_name(sock: socket.socket, raw: bytes, where: str) -> None:
    """Bind the stand-in of a closed datagram peer to that peer's name: an abstract one
    if it is free, a path to a socket file no one reaches (a relative one under /tmp)."""
    try:
        if raw[:1] == b"\0":
            sock.bind(raw)
            return
    except OSError as e:
        raise RestoreError(f"{where}: its peer, closed since, was {show_name(raw)}, which it "
                           f"cannot be bound to again: {e.strerror}") from None
    rel = os.fsdecode(raw)
    os.close(_bind_hidden(sock, raw, rel if rel.startswith("/") else os.path.join("/tmp", rel),
                          where))  # (no one sends to it)


def _holder_of(st: os.stat_result) -> int | None:
    """The unix socket bound to the socket file ``st`` (its lstat) now, if any."""
    for ino, info in unix_sockets().items():
        vfs = info["vfs"]
        if vfs and vfs[0] == st.st_ino and _kdev_to_dev(vfs[1]) == st.st_dev:
            return ino
    return None


def _bind(sock: socket.socket, desc: dict[str, Any]) -> int | None:
    """Bind a new socket to the saved name; a path gets its saved mode and owner, its
    file made, a stale one removed, in its folder as ``_folder_of`` reaches it. For a
    socket file that was gone: the fd of the folder that hides it (``_bind_hidden``)."""
    raw = bytes.fromhex(desc["name"])
    ino = desc["inode"]
    if raw[:1] == b"\0":
        try:
            sock.bind(raw)
        except OSError as e:
            hint = (f" (in use by another socket: {taken_hint(ino)})"
                    if e.errno == errno.EADDRINUSE else "")
            raise RestoreError(f"socket:[{ino}]: cannot bind the abstract name "
                               f"{show_name(raw)}: {e.strerror}{hint}") from None
        return None
    f = desc["file"]
    path = f["path"]
    where = f"socket:[{ino}]"
    if f.get("gone"):
        return _bind_hidden(sock, raw, path, where)
    reach = f.get("real", path)
    folder = _folder_of(reach, where, path)
    name = os.path.basename(path)
    try:
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not st_mod.S_ISSOCK(st.st_mode):
                raise RestoreError(f"{where}: cannot bind {path}: it exists and is not a "
                                   "socket (left in place)")
            holder = _holder_of(st)
            if holder is not None:
                raise RestoreError(f"{where}: cannot bind {path}: socket:[{holder}] is "
                                   f"bound to it ({taken_hint(ino)})")
            log.info("removing the stale socket file %s", path)
            os.unlink(name, dir_fd=folder)
        umask = os.umask(0o777 & ~f["mode"])  # the file is made with its saved permissions
        try:
            _bind_in(sock, raw, path, where, reach)
        finally:
            os.umask(umask)
        _own_file(sock, folder, name, f, where)
    finally:
        os.close(folder)
    return None


def _own_file(sock: socket.socket, folder: int, name: str, f: dict[str, Any],
              where: str) -> None:
    """Give the socket file ``sock`` was just bound to (``name`` in ``folder``) its
    saved owner and mode, through an ``O_PATH`` fd of the file checked to be the one
    the socket is bound to (by its inode, from sock_diag): a name swapped meanwhile,
    in a folder others can write, never makes root change another file's owner or
    mode."""
    path = f["path"]
    try:
        node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError as e:
        raise RestoreError(f"{where}: {path} is gone once bound: {e.strerror}") from None
    try:
        st = os.fstat(node)
        me = unix_socket(os.fstat(sock.fileno()).st_ino)
        vfs = me["vfs"] if me is not None else None
        if not st_mod.S_ISSOCK(st.st_mode) or not vfs \
                or (vfs[0], _kdev_to_dev(vfs[1])) != (st.st_ino, st.st_dev):
            raise RestoreError(f"{where}: {path} was replaced by another file while "
                               "it was bound; its owner and mode are left alone")
        libc.fchown_empty(node, f["uid"], f["gid"])
        os.chmod(f"/proc/self/fd/{node}", f["mode"])  # the very inode, after chown
    except OSError as e:
        raise RestoreError(f"{where}: cannot set the owner and mode of {path}: "
                           f"{e.strerror}") from None
    finally:
        os.close(node)


# ------------------------------------------------------------------ queues


class Message:
    """One message (for a stream socket: a run of bytes) queued on a socket at dump (a
    plain class: typing's NamedTuple would cost the import of typing)."""

    __slots__ = ("data", "sender", "fds")

    def __init__(self, data: bytes, sender: bytes, fds: list[int]):
        self.data = data
        self.sender = sender  # the sender's address (datagrams only)
        self.fds = fds  # ckpt's copies of the files it carries (SCM_RIGHTS)


def _peek_queue(sock: socket.socket, stype: int, rqueue: int, shutdown: int,
                where: str) -> list[Message]:
    """The data queued for reading on ``sock``, left in place: for a stream socket runs
    of bytes, for datagram and seqpacket sockets each message, in order; each with
    the sender's address (meaningful for datagrams only) and the files it carries.

    ``rqueue`` (UNIX_DIAG_RQLEN) is no message count: for a datagram socket it
    is the length of the first message only. So the messages are peeked in
    turn until the queue says EAGAIN, each at its byte offset in the queue set
    with SO_PEEK_OFF, which makes a peek skip whole messages up to that offset
    (an empty message is skipped once it has been peeked). MSG_TRUNC gives a
    message's full length (a longer one is peeked again with a buffer that
    fits), so the next offset lands exactly past it. The first message is
    peeked with the offset disabled, so an empty one at the head is seen even
    if the process had peeked it before. The socket's own SO_PEEK_OFF is put
    back afterwards.

    A seqpacket socket whose peer shut down writing returns 0 (EOF) instead of
    EAGAIN at the end of its queue, like an empty message: there ``rqueue`` is
    the byte count of the whole queue, and a 0 once every byte was seen ends
    it (trailing empty messages read as EOF to the process too).

    Files passed with a message (SCM_RIGHTS) come to ckpt as fds of its own (a
    peek passes them too). On a stream socket a peek stops after the chunk that
    carries files, and brings them whatever its size: where that chunk starts
    cannot be seen, so the bytes since the previous one go with it (a reader
    reading fewer bytes than those gets the files earlier than it would have;
    one that reads them all sees no difference).
    """
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
    stream = stype == socket.SOCK_STREAM
    if not stream:
        flags |= socket.MSG_TRUNC
    eof_at_end = stream or (stype == socket.SOCK_SEQPACKET and shutdown & RCV_SHUTDOWN)
    saved_off = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    size = _PEEK_BUF
    msgs: list[Message] = []
    off = 0

    def peek(at: int, n: int) -> tuple[bytes, list[int], Any, int] | None:
        """(data, fds passed, sender, whole length) of a peek of ``n`` bytes at ``at``
        (-1: the head); None at the end of the queue."""
        buf = bytearray(n)
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, at)
        try:
            k, anc, mflags, addr = sock.recvmsg_into([buf], _ANC_BUF, flags)
        except BlockingIOError:
            return None
        return bytes(buf[:min(k, n)]), _passed(anc, mflags, where), addr, k

    try:
        while True:
            at = off if msgs or stream else -1
            got = peek(at, size)
            if got is None:
                break
            data, fds, addr, whole = got
            if whole > size or (stream and fds and whole == size):
                # a message longer than the buffer, or a stream's chunk with files that
                # may go on past it: peek it again with a buffer that fits
                _close(fds)
                size = max(whole, size * 4)
                continue
            if not data and eof_at_end and (stream or off >= rqueue):
                _close(fds)
                break
            msgs.append(Message(data, _sender_bytes(addr), fds))
            off += len(data)
    except BaseException:
        for m in msgs:
            _close(m.fds)
        raise
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, saved_off)
    if stream:
        return _merge_plain(msgs)
    return msgs


def _merge_plain(msgs: list[Message]) -> list[Message]:
    """A stream's chunks with adjacent plain ones joined; a chunk that carries files stays
    one of its own (sent alone again, its files arrive with its first byte)."""
    out: list[Message] = []
    for m in msgs:
        if out and not m.fds and not out[-1].fds:
            out[-1] = Message(out[-1].data + m.data, b"", [])
        else:
            out.append(m)
    return out


def _passed(anc: list[tuple[int, int, bytes]], mflags: int, where: str) -> list[int]:
    """The fds a peek passed to ckpt (SCM_RIGHTS); pidfds (SCM_PIDFD) closed. Refuses a
    message whose control data did not fit."""
    fds: list[int] = []
    pidfds: list[int] = []
    for level, ctype, data in anc:
        if level == socket.SOL_SOCKET and ctype in (socket.SCM_RIGHTS, SCM_PIDFD):
            got = array.array("i")
            got.frombytes(data[:len(data) - len(data) % got.itemsize])
            (fds if ctype == socket.SCM_RIGHTS else pidfds).extend(got)
    _close(pidfds)
    if mflags & socket.MSG_CTRUNC:
        _close(fds)
        raise UnsupportedError(f"{where}: a message queued on it carries more control data "
                               "than ckpt can read")
    return fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _check_passed(fd: int, where: str) -> None:
    """Refuse a passed file that only makes sense in a process's fd table (an epoll's
    watches are fd numbers of the process holding it)."""
    link = os.readlink(f"/proc/self/fd/{fd}")
    if link == "anon_inode:[eventpoll]":
        raise UnsupportedError(f"{where}: a message queued on it carries an epoll instance "
                               "(SCM_RIGHTS), which ckpt cannot restore outside a process")


def _pass_files(ctx: DumpCtx, queue: list[Message], where: str) -> list[list[str]]:
    """The description ids of the files each message carries (in its order): each file
    handed to the dump as in flight (``DumpCtx.in_flight``), which fills them in."""
    assert ctx.in_flight is not None
    files: list[list[str]] = [[""] * len(m.fds) for m in queue]
    ctx.images.need("unix-files")
    for i, m in enumerate(queue):
        for j, fd in enumerate(m.fds):
            def done(fid: str, i: int = i, j: int = j) -> None:
                files[i][j] = fid
            ctx.in_flight(fd, f"{where}: file {j + 1} passed in message {i + 1} queued on "
                              "it", done)
    return files


def _send_queue(ctx: RestoreCtx, receiver: dict[str, Any]
                ) -> Iterator[tuple[bytes, str, list[int]]]:
    """The messages queued on ``receiver`` at dump: (data, sender name in hex, ckpt's
    fds of the files it carries)."""
    if not receiver["queue"]:
        return
    n = len(receiver["queue"])
    senders = receiver.get("senders") or [""] * n
    files = receiver.get("files") or [[]] * n
    with open(ctx.images.path(QUEUE_FILE), "rb") as f:
        for (off, length), sender, fids in zip(receiver["queue"], senders, files, strict=True):
            f.seek(off)
            fds = []
            for fid in fids:
                assert ctx.open_file is not None
                fds.append(ctx.open_file(fid))
            yield f.read(length), sender, fds


def _send(sock: socket.socket, data: bytes, fds: list[int], to: Any = None) -> None:
    """Send one message (or a stream's run of bytes) with the files it carries."""
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sent = sock.sendmsg([data], anc, 0, to) if to is not None else sock.sendmsg([data], anc)
    if sent < len(data):  # a stream: the rest, the files gone with the first part
        sock.sendall(data[sent:])


def _refill(ctx: RestoreCtx, sender: socket.socket, receiver: dict[str, Any]) -> None:
    """Queue again, from the peer, what ``receiver`` had not read yet."""
    for data, _, fds in _send_queue(ctx, receiver):
        _send(sender, data, fds)


def _carries_files(*descs: dict[str, Any]) -> bool:
    return any(any(d.get("files") or ()) for d in descs)


# ------------------------------------------------------------------ the file kind


def _state(d: dict[str, Any]) -> int:
    return d.get("state", TCP_ESTABLISHED)  # images before "state" held connected ones only


def _pair_mode(d: dict[str, Any], by_ino: dict[int, dict[str, Any]]) -> bool:
    """Whether ``d`` comes back as one end of a socketpair (else on its own)."""
    if _state(d) != TCP_ESTABLISHED or "connecting_to" in d:
        return False
    if d["type"] != socket.SOCK_DGRAM:
        return True
    peer = by_ino.get(d["peer"])
    if peer is None:
        return True  # outside the tree: replaced by --inherit-fd, or refused
    mutual = _state(peer) == TCP_ESTABLISHED and peer["peer"] == d["inode"]
    return mutual and not (d.get("name") and peer.get("name"))


def _by_ino(descriptions: dict[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {d["inode"]: d for d in descriptions.values()}


class UnixSockets(SocketKind):
    KIND = "unix"
    # its own fields in files.json
    SCHEMA = {
        "inode": U64, "type": Int(1, 5), "state": Int(1, 10), "peer": U64,
        "shutdown": Int(0, 3), "queue": List(Tup(NAT, Int(0, 1 << 31))),
        "owner": Tup(UID, UID), "sndbuf": NAT, "rcvbuf": NAT, "opts": OPTIONS,
        "name": Opt(Hex(108)),  # the address it is bound to
        "file": Opt(Obj(path=PATH, mode=Opt(Int(0, 0o7777)), uid=Opt(UID), gid=Opt(UID),
                        gone=Opt(BOOL), real=Opt(PATH))),  # real: path, links resolved
        "backlog": Opt(NAT),
        "senders": Opt(List(Hex(108))),  # each queued datagram's sender
        "files": Opt(List(List(STR))),  # the files each queued message carries
        "peer_name": Opt(Hex(108)),
        "pending": Opt(List(U64)),  # a listener's connections not accepted yet
        "connecting_to": Opt(U64),
        "accepted_on": Opt(Hex(108)),
        "external": Opt(BOOL),
        "peercred": Opt(Tup(NAT, UID, UID)),  # SO_PEERCRED: the pair's creator, as pid uid gid
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        for i, (off, length) in enumerate(desc["queue"]):
            refs.within(QUEUE_FILE, off, length, where, f"queue[{i}]")
        for i, carried in enumerate(desc.get("files", [])):
            for fid in carried:
                refs.described(fid, where, f"files[{i}]")
        if desc.get("pending") and "backlog" not in desc:
            raise refuse(where, "backlog", "missing, but the socket has clients waiting")
        if len(desc.get("senders", desc["queue"])) != len(desc["queue"]):
            raise refuse(where, "senders", "not one per queued message")
        f = desc.get("file")
        if f is not None and not f.get("gone") and {"mode", "uid", "gid"} - f.keys():
            raise refuse(where, "file", "a socket file needs its mode, uid and gid")

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        return 2  # the socket made, and the dup handed out

    def __init__(self) -> None:
        super().__init__()
        self._table: dict[int, dict[str, Any]] | None = None  # dump: sock_diag of them all
        self._queues: RawWriter | None = None                 # dump: sk-queues.img
        self._socks: dict[int, int] = {}      # restore: inode -> ckpt's fd of the new socket
        self._listening: set[str] = set()     # restore: listeners already listening
        self._deferred: list[Callable[[], None]] = []  # restore: queues carrying files
        self._hidden: dict[int, int] = {}     # restore: inode -> folder hiding its file

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return (st_mod.S_ISSOCK(st.st_mode) and link.startswith("socket:")
                and is_unix_socket(st.st_ino))

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        sock = socket.socket(fileno=os.dup(f.dup))
        try:
            if sock.family != socket.AF_UNIX:
                raise UnsupportedError(f"{f.where}: {f.link} is a {sock.family.name} "
                                       "socket, not a unix socket")
            if self._table is None:
                self._table = unix_sockets()
            ino = f.st.st_ino
            me = self._table.get(ino) or unix_socket(ino)
            if me is None:
                raise DumpError(f"{f.where}: {f.link} not found by sock_diag")
            desc = self._describe(ctx, f.pid, sock, ino, me, self._table,
                                  f"{f.where} ({_TYPES.get(me['type'], me['type'])} {f.link})",
                                  f.st)
            if "peer_name" in desc or desc.get("file", {}).get("gone"):
                ctx.images.need("unix-files")
            if "real" in desc.get("file", {}):
                ctx.images.need("unix-real-path")
            return desc
        finally:
            sock.close()

    def _describe(self, ctx: DumpCtx, pid: int, sock: socket.socket, ino: int,
                  me: UnixDiag, table: dict[int, UnixDiag], where: str,
                  st: os.stat_result) -> dict[str, Any]:
        stype, state = me["type"], me["state"]
        if stype == socket.SOCK_DGRAM and state != TCP_LISTEN:
            # a datagram socket another one connected to is TCP_ESTABLISHED too
            state = TCP_ESTABLISHED if me["has_peer"] else TCP_CLOSE
        with socket.socket(socket.AF_UNIX, stype) as fresh:
            opts = read_opts(sock, SOCKET, fresh, where)
        desc: dict[str, Any] = {
            "inode": ino, "type": stype, "state": state, "peer": me["peer"],
            "shutdown": me["shutdown"], "queue": [], "owner": [st.st_uid, st.st_gid],
            "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), "opts": opts}
        name = me["name"]
        if state == TCP_LISTEN:
            desc["backlog"] = me["wqueue"]
            if name:
                desc.update(_bound_name(pid, where, me))
            if me["rqueue"]:
                # its clients, in the order accept() takes them (checked in after_dump)
                desc["pending"] = list(me["icons"])
                ctx.images.need("unix-files")
            return desc
        if state == TCP_SYN_SENT:
            raise UnsupportedError(f"{where}: a connection in progress is not supported")
        if state not in (TCP_ESTABLISHED, TCP_CLOSE):
            raise UnsupportedError(f"{where}: unix socket in state {state}, unknown to ckpt")
        if state == TCP_ESTABLISHED and stype != socket.SOCK_DGRAM:
            if not me["peer"]:
                listener = next((i for i, o in table.items()
                                 if o["state"] == TCP_LISTEN and ino in o["icons"]), None)
                if listener is not None:
                    return self._connecting(pid, where, desc, me, listener)
            if name:
                if not any(o["state"] == TCP_LISTEN and o["name"] == name
                           for o in table.values()):
                    raise UnsupportedError(
                        f"{where}: connected, and bound to {show_name(_name_bytes(name))} "
                        "by its process; ckpt cannot restore the name of a connected "
                        "stream socket")
                desc["accepted_on"] = _name_bytes(name).hex()
        else:
            if state == TCP_ESTABLISHED and not me["peer"]:
                # connected to a socket closed since: its name is still the peer's name
                desc["peer_name"] = _sender_bytes(sock.getpeername()).hex()
            if name:
                desc.update(_bound_name(pid, where, me))
        if state == TCP_ESTABLISHED:
            pid, uid, gid = struct.unpack(
                "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if pid > 0:  # a socketpair's end, or a connection's
                desc["peercred"] = [pid, uid, gid]
                ctx.images.need("unix-peercred")
        if state == TCP_ESTABLISHED or stype == socket.SOCK_DGRAM:
            queue = _peek_queue(sock, stype, me.get("rqueue", 0), me["shutdown"], where)
            try:
                if queue and stype == socket.SOCK_STREAM and urgent_pending(sock):
                    raise UnsupportedError(
                        f"{where}: an out-of-band byte (send with MSG_OOB) waits in its "
                        "queue; ckpt cannot queue it again at its mark, it would come "
                        "back as plain data")
                if queue and (opts.get("SO_PASSCRED") or opts.get("SO_PASSPIDFD")):
                    raise UnsupportedError(
                        f"{where}: {len(queue)} message(s) queued on a socket that receives "
                        "their senders' credentials (SO_PASSCRED): ckpt cannot send them "
                        "again with those credentials")
                for m in queue:
                    for fd in m.fds:
                        _check_passed(fd, where)
            except BaseException:
                for m in queue:
                    _close(m.fds)
                raise
            if self._queues is None:
                self._queues = ctx.images.raw(QUEUE_FILE)
            desc["queue"] = [[self._queues.write(m.data), len(m.data)] for m in queue]
            if stype == socket.SOCK_DGRAM:
                desc["senders"] = [m.sender.hex() for m in queue]
            if any(m.fds for m in queue):
                desc["files"] = _pass_files(ctx, queue, where)
        return desc

    def _connecting(self, pid: int, where: str, desc: dict[str, Any], me: UnixDiag,
                    listener: int) -> dict[str, Any]:
        """A client whose connection to ``listener`` is not accepted yet: restored
        unconnected, then connected again from its process (``restore_across_tasks``).
        What it sent is in a socket no fd reaches but accept()'s, which no dump may
        call (it cannot be undone): refused."""
        assert self._table is not None
        lname = show_name(_name_bytes(self._table[listener]["name"] or ""))
        if me["wqueue"]:
            raise UnsupportedError(
                f"{where}: sent data on its connection to {lname} "
                f"(socket:[{listener}]), not accepted yet; ckpt cannot read them back "
                "without accepting the connection, which a dump that fails or leaves the "
                "process running could not undo (retry once the connection is accepted)")
        desc.update(state=TCP_CLOSE, connecting_to=listener)
        if me["name"]:
            desc.update(_bound_name(pid, where, me))
        return desc

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        _check_external(self.descriptions, ctx.external)
        _check_senders(self.descriptions)
        self._check_pending(ctx)

    def _check_pending(self, ctx: DumpCtx) -> None:
        """Each connection a listener of the tree has not accepted yet comes from a client
        of the tree, or (with --ext-unix-sk) from one outside that sent nothing: marked 0,
        it comes back as a connection whose client left."""
        inodes = {d["inode"] for d in self.descriptions.values()}
        table = self._table or {}
        for d in self.descriptions.values():
            where = f"socket:[{d['inode']}] ({show_name(bytes.fromhex(d.get('name', '')))})"
            for i, client in enumerate(d.get("pending", ())):
                if client in inodes:
                    continue
                info = table.get(client)
                if client == 0 or info is None:
                    raise UnsupportedError(
                        f"{where}: a connection not accepted yet whose client was closed; "
                        "what it sent cannot be read back (retry once it is accepted)")
                if info["wqueue"]:
                    raise UnsupportedError(
                        f"{where}: socket:[{client}] outside the dumped tree sent data on "
                        "a connection not accepted yet; ckpt cannot read it back")
                if not ctx.ext_unix_sk:
                    raise UnsupportedError(
                        f"{where}: socket:[{client}] outside the dumped tree connected to it "
                        "and is not accepted yet; dump with --ext-unix-sk to restore it as a "
                        "connection whose client left")
                d["pending"][i] = 0

    def restore_across_tasks(self, ctx: RestoreCtx, holders: dict[str, list[tuple[int, int]]],
                             injector: Callable[[int], Injector], scratch: int) -> None:
        """Connections not accepted yet, in the order accept() takes them: the listener
        listens in its process, then each client connects from its own (so each end
        sees the other's credentials, as before), or, for a client outside the tree,
        the listener's process connects a socket it closes at once."""
        fid_of = {d["inode"]: fid for fid, d in self.descriptions.items()}
        for fid, d in self.descriptions.items():
            if not d.get("pending") or fid not in holders:
                continue
            lpid, lfd = holders[fid][0]
            linj = injector(lpid)
            where = f"socket:[{d['inode']}]"
            addr = _sockaddr(d)
            # A listener may have lowered its backlog (listen again) below the clients
            # already waiting, which the kernel kept: room for them all while they
            # connect (a connect beyond the backlog would wait for ever), then its own.
            room = max(d["backlog"], len(d["pending"]))
            try:
                linj.call("listen", lfd, room)
                self._listening.add(fid)
                for client in d["pending"]:
                    cfid = fid_of.get(client)
                    if cfid is None or cfid not in holders:  # outside the tree, or replaced
                        fd = linj.call("socket", socket.AF_UNIX, d["type"] | socket.SOCK_CLOEXEC,
                                       0)
                        linj.write(scratch, addr)
                        linj.call("connect", fd, scratch, len(addr))
                        linj.call("close", fd)
                        continue
                    cpid, cfd = holders[cfid][0]
                    cinj = injector(cpid)
                    cinj.write(scratch, addr)
                    cinj.call("connect", cfd, scratch, len(addr))
                    how = _SHUT.get(self.descriptions[cfid]["shutdown"])
                    if how is not None:
                        cinj.call("shutdown", cfd, how)
                if room != d["backlog"]:
                    linj.call("listen", lfd, d["backlog"])
            except OSError as e:
                raise RestoreError(f"{where}: cannot connect its clients not accepted yet "
                                   f"again: {e.strerror}") from None

    def restore_in_task(self, ctx: RestoreCtx, pid: int, inj: Injector, scratch: int,
                        fds: list[TaskFd]) -> None:
        """The first restored process holding a listener calls listen() on it, so its
        clients' SO_PEERCRED name that process, as before the dump."""
        for f in fds:
            d = f.desc
            if "backlog" not in d or f.file in self._listening:
                continue
            self._listening.add(f.file)
            try:
                inj.call("listen", f.fd, d["backlog"])
            except OSError as e:
                raise RestoreError(f"process {pid} fd {f.fd}: cannot listen on "
                                   f"socket:[{d['inode']}] again: {os.strerror(e.errno)}"
                                   ) from None

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        ino = desc["inode"]
        if ino not in self._socks:
            if _pair_mode(desc, _by_ino(self.descriptions)):
                self._open_pair(ctx, desc)
            else:
                self._open_alone(ctx)
        return os.dup(self._socks[ino])

    def close(self) -> None:
        close_quietly(set(self._socks.values()) | set(self._hidden.values()))
        self._socks.clear()
        self._hidden.clear()

    def _bind(self, sock: socket.socket, d: dict[str, Any]) -> None:
        folder = _bind(sock, d)
        if folder is not None:
            self._hidden[d["inode"]] = folder


    def after_open(self, ctx: RestoreCtx) -> None:
        """Fill the queues that carry files, now that the files can be opened (opening
        one may defer another socket's)."""
        while self._deferred:
            self._deferred.pop(0)()

    def _when_files_open(self, fill: Callable[[], None], *descs: dict[str, Any]) -> None:
        """Run ``fill`` now, or once every file is open if a queue of ``descs`` carries
        files."""
        if _carries_files(*descs):
            self._deferred.append(fill)
        else:
            fill()

    def _open_pair(self, ctx: RestoreCtx, desc: Description) -> None:
        """A socketpair for ``desc`` and its peer (or for ``desc`` alone if its peer was
        closed: the other end is closed once the queue is refilled)."""
        socks = self._socks
        ino = desc["inode"]
        if desc["peer"] == 0:
            a, b = _socketpair(ctx, desc)
            try:
                _setup(a, desc)
                if desc.get("name"):  # a datagram socket, bound
                    self._bind(a, desc)
                if desc.get("peer_name"):  # its peer's name, which its datagrams came from
                    _bind_peer_name(b, bytes.fromhex(desc["peer_name"]), f"socket:[{ino}]")
            except BaseException:
                a.close()
                b.close()
                raise
            socks[ino] = a.detach()
            other = b.detach()  # closed once the queue is sent

            def fill_alone() -> None:
                try:
                    with _borrow(other) as s:
                        _refill(ctx, s, desc)
                finally:
                    os.close(other)
                with _borrow(socks[ino]) as s:
                    _finish(s, desc)

            self._when_files_open(fill_alone, desc)
            return
        peer = _by_ino(self.descriptions).get(desc["peer"])
        if peer is None:
            raise RestoreError(
                f"socket:[{ino}] was connected to a peer outside the dumped tree; "
                f"give its replacement with --inherit-fd 'fd[N]:socket:[{ino}]'")
        a, b = self._connection(ctx, desc, peer) or _socketpair(ctx, desc, peer)
        try:
            for s, d in ((a, desc), (b, peer)):
                _setup(s, d)
                if d.get("name"):  # a datagram end bound after socketpair()
                    self._bind(s, d)
        except BaseException:
            a.close()
            b.close()
            raise
        socks[ino] = a.detach()
        socks[peer["inode"]] = b.detach()

        def fill() -> None:
            with _borrow(socks[ino]) as a, _borrow(socks[peer["inode"]]) as b:
                _refill(ctx, b, desc)
                _refill(ctx, a, peer)
                for s, d in ((a, desc), (b, peer)):
                    how = _SHUT.get(d["shutdown"])
                    if how is not None:
                        s.shutdown(how)
                    _finish(s, d)

        self._when_files_open(fill, desc, peer)

    def _connection(self, ctx: RestoreCtx, desc: Description, peer: Description
                    ) -> tuple[socket.socket, socket.socket] | None:
        """``desc`` and ``peer`` as the two ends of a connection accepted by a listener
        restored here, made again through it (``_connect_through``), in that order; None
        for a pair that is no such connection."""
        if "accepted_on" in desc:
            accepted, client = desc, peer
        elif "accepted_on" in peer:
            accepted, client = peer, desc
        else:
            return None
        listener = next((d for fid, d in self.descriptions.items()
                         if _state(d) == TCP_LISTEN and d["type"] == accepted["type"]
                         and d.get("name") == accepted["accepted_on"]
                         and fid not in ctx.replaced), None)
        if listener is None:
            return None
        if listener["inode"] not in self._socks:
            self._open_alone(ctx)
        ends = _connect_through(ctx, self._socks[listener["inode"]], listener, accepted,
                                client)
        if ends is None or accepted is desc:
            return ends
        return ends[1], ends[0]

    def _open_alone(self, ctx: RestoreCtx) -> None:
        """Every unix socket of the image that is no end of a socketpair, at once: created
        and bound (listening), then their queued datagrams sent again, then the datagram
        sockets connected (in an order the kernel accepts)."""
        socks = self._socks
        by_ino = _by_ino(self.descriptions)
        alone = [d for fid, d in self.descriptions.items()
                 if d["inode"] not in socks and not _pair_mode(d, by_ino)
                 and fid not in ctx.replaced]
        for d in alone:
            with socket.socket(socket.AF_UNIX, d["type"]) as s:
                _setup(s, d)
                if d.get("name"):
                    self._bind(s, d)
                # A listener listens from inside its process (``restore_in_task``): clients
                # see the listener's SO_PEERCRED, which is whoever called listen().
                socks[d["inode"]] = s.detach()
        self._when_files_open(lambda: self._fill_alone(ctx, alone), *alone)

    def _fill_alone(self, ctx: RestoreCtx, alone: list[dict[str, Any]]) -> None:
        """The sockets of ``_open_alone``: their queued datagrams sent again, then the
        datagram sockets connected, then shutdown and options."""
        socks = self._socks
        by_ino = _by_ino(self.descriptions)
        with contextlib.ExitStack() as stack:
            anon: socket.socket | None = None
            for d in alone:
                for data, sender, fds in _send_queue(ctx, d):
                    to = _address(d, self._hidden)
                    if sender:
                        src = self._sender(ctx, by_ino, sender, d)
                        with _borrow(socks[src]) as s:
                            _send(s, data, fds, to)
                    else:
                        if anon is None:
                            anon = stack.enter_context(socket.socket(socket.AF_UNIX,
                                                                     socket.SOCK_DGRAM))
                        _send(anon, data, fds, to)
        waiting = [d for d in alone if _state(d) == TCP_ESTABLISHED]
        while waiting:
            # X may connect to P unless P is connected already to a third socket: those
            # that connect to X go first.
            ready = next((d for d in waiting
                          if not any(o["peer"] == d["inode"] and d["peer"] != o["inode"]
                                     for o in waiting if o is not d)), None)
            if ready is None:
                raise RestoreError("unix datagram sockets connected in a cycle: "
                                   + ", ".join(f"socket:[{d['inode']}]" for d in waiting))
            waiting.remove(ready)
            peer = by_ino.get(ready["peer"])
            ino = ready["inode"]
            if peer is None or not peer.get("name"):
                raise RestoreError(f"socket:[{ino}] was connected to a peer outside the dumped "
                                   f"tree; give its replacement with --inherit-fd "
                                   f"'fd[N]:socket:[{ino}]'")
            with _borrow(socks[ino]) as s:
                try:
                    s.connect(_address(peer, self._hidden))
                except OSError as e:
                    raise RestoreError(f"socket:[{ino}]: cannot connect again to "
                                       f"{show_name(bytes.fromhex(peer['name']))}: "
                                       f"{e.strerror}") from None
        for d in alone:
            with _borrow(socks[d["inode"]]) as s:
                how = _SHUT.get(d["shutdown"])
                if how is not None and "connecting_to" not in d:  # shut once connected
                    s.shutdown(how)
                _finish(s, d)

    def _sender(self, ctx: RestoreCtx, by_ino: dict[int, dict[str, Any]], name: str,
                receiver: dict[str, Any]) -> int:
        """The inode of the restored socket named ``name`` (opened now if needed)."""
        socks = self._socks
        for d in by_ino.values():
            if d["type"] == socket.SOCK_DGRAM and d.get("name") == name:
                if d["inode"] not in socks:
                    if not _pair_mode(d, by_ino):
                        break  # replaced by --inherit-fd
                    self._open_pair(ctx, d)
                return d["inode"]
        raise RestoreError(f"socket:[{receiver['inode']}] holds a datagram from "
                           f"{show_name(bytes.fromhex(name))}, whose socket is not restored "
                           "(replaced by --inherit-fd?)")


Cred = tuple[int, int, int]  # SO_PEERCRED: pid, uid, gid


def _maker(ctx: RestoreCtx, cred: Any, where: str) -> Cred | None:
    """``cred`` (a saved SO_PEERCRED) if it names a process of the tree that has those
    ids among its own: a socket may be made again under that PID and with those ids;
    else None (ckpt makes it: an image cannot make a socket claim anyone else).
    Never where PIDs inside a PID namespace are not ckpt's."""
    if not cred or nspids.active():
        return None
    pid, uid, gid = cred
    ids = ctx.ids.get(pid)
    if ids is not None and uid in ids[0] and gid in ids[1]:
        return pid, uid, gid
    log.info("%s: %d (uid %d, gid %d) is not a process of the tree with those ids: "
             "ckpt stands in for it", where, pid, uid, gid)
    return None


def _socketpair(ctx: RestoreCtx, *ends: dict[str, Any]) -> tuple[socket.socket, socket.socket]:
    """A socketpair for ``ends`` (one or both ends of a saved pair). Made by a process
    of the tree (both ends' ``peercred``), with credentials that process has, it is
    made under that PID and with those ids, so SO_PEERCRED names them as before;
    otherwise ckpt makes it (SO_PEERCRED then names ckpt)."""
    stype = ends[0]["type"]
    creds = {tuple(d.get("peercred", ())) for d in ends}
    where = f"socket:[{ends[0]['inode']}]"
    maker = _maker(ctx, creds.pop(), where) if len(creds) == 1 else None
    if maker is not None:
        def pair() -> list[int]:
            a, b = socket.socketpair(socket.AF_UNIX, stype)
            return [a.detach(), b.detach()]
        try:
            fa, fb = _as_process(maker, pair)
            return socket.socket(fileno=fa), socket.socket(fileno=fb)
        except OSError as e:
            log.warning("%s: made by ckpt, not under PID %d (%s): its SO_PEERCRED "
                        "names ckpt", where, maker[0], e.strerror or e)
    return socket.socketpair(socket.AF_UNIX, stype)


_PID_WAIT = 5.0  # seconds: a PID held by a zombie its parent (or init) has yet to reap


def _as_process(cred: Cred | None, work: Callable[[], list[int]]) -> list[int]:
    """``work`` (which returns at most 8 numbers: fds, say) run by a child of ckpt under
    PID ``cred[0]`` with effective ids ``cred[1:]`` for the moment it takes (the process
    of the tree gets the PID later), or by ckpt itself when ``cred`` is None. The child
    shares ckpt's fd table (CLONE_FILES): sockets it makes are ckpt's."""
    if cred is None:
        return work()
    pid, uid, gid = cred
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + _PID_WAIT
        while True:
            try:
                child = libc.clone3_with_pid(pid, flags=libc.CLONE_FILES, blocked=True)
                break
            except OSError as e:
                if e.errno != errno.EEXIST or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if child == 0:  # a fork Python does not know of: simple code, out by os._exit
            code = 1
            try:
                libc.syscall("setresgid", 0xFFFFFFFF, gid, 0xFFFFFFFF)
                libc.syscall("setresuid", 0xFFFFFFFF, uid, 0xFFFFFFFF)
                got = work()
                os.write(w, struct.pack(f"{len(got) + 1}i", len(got), *got))
                code = 0
            except OSError as e:
                os.write(w, struct.pack("i", -(e.errno or errno.EIO)))
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        os.set_blocking(r, False)  # the child wrote all it will (its w is ckpt's too)
        try:
            got = os.read(r, 64)
        except BlockingIOError:
            got = b""
        head = struct.unpack_from("i", got)[0] if len(got) >= 4 else None
        if status or head is None or head < 0 or len(got) != 4 * (head + 1):
            err = -head if head is not None and head < 0 else 0
            raise OSError(err or errno.EIO, os.strerror(err) if err else
                          f"the child under PID {pid} failed (status {status})")
        return list(struct.unpack_from(f"{head}i", got, 4))
    finally:
        os.close(r)
        os.close(w)


def _reach(lfd: int, listener: dict[str, Any], where: str
           ) -> tuple[bytes | str, int | None] | None:
    """Where a connect() reaches ``listener`` (restored as ckpt's ``lfd``) and no other
    socket: its
    abstract name, or ``/proc/self/fd/N`` of an O_PATH fd (returned too, for the caller
    to close) of its socket file, checked to be the one it is bound to; None if its
    file is no longer reachable."""
    raw = bytes.fromhex(listener["name"])
    if raw[:1] == b"\0":
        return raw, None
    f = listener["file"]
    me = unix_socket(os.fstat(lfd).st_ino) if not f.get("gone") else None
    if me is None or not me["vfs"]:
        return None
    folder = _folder_of(f.get("real", f["path"]), where, f["path"])
    try:
        fd = os.open(os.path.basename(f["path"]), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    st = os.fstat(fd)
    if (st.st_ino, st.st_dev) != (me["vfs"][0], _kdev_to_dev(me["vfs"][1])):
        os.close(fd)
        return None
    return f"/proc/self/fd/{fd}", fd


def _connect_through(ctx: RestoreCtx, lfd: int, listener: dict[str, Any],
                     accepted: dict[str, Any], client: dict[str, Any]
                     ) -> tuple[socket.socket, socket.socket] | None:
    """The connection ``client`` -> ``accepted`` made again through its restored
    listener (ckpt's ``lfd``): listen() by a child under the PID the client's
    SO_PEERCRED named, connect() by one under the PID the accepted end's named, accept()
    by ckpt; so each end names its peer process again (and the accepted end has its
    listener's name). Returns (accepted, client); None if the listener cannot be
    reached or neither peer is a process of the tree."""
    where = f"socket:[{accepted['inode']}]"
    listen_by = _maker(ctx, client.get("peercred"), f"socket:[{client['inode']}]")
    connect_by = _maker(ctx, accepted.get("peercred"), where)
    if listen_by is None and connect_by is None:
        return None
    target = _reach(lfd, listener, where)
    if target is None:
        log.info("%s: its listener socket:[%d] cannot be reached: made as a pair by ckpt",
                 where, listener["inode"])
        return None
    addr, opath = target
    cli = socket.socket(socket.AF_UNIX, accepted["type"])
    try:
        with _borrow(lfd) as lsock:
            def listen() -> list[int]:
                lsock.listen(listener.get("backlog", 0))
                return []

            def connect() -> list[int]:
                cli.connect(addr)
                return []
            _as_process(listen_by, listen)
            _as_process(connect_by, connect)
            me = os.fstat(cli.fileno()).st_ino
            while select.select([lfd], [], [], 0)[0]:  # connected: accept() waits not
                conn, _ = lsock.accept()
                info = unix_socket(os.fstat(conn.fileno()).st_ino)
                if info is not None and info["peer"] == me:
                    return conn, cli
                log.warning("%s: a client came to its listener socket:[%d] during the "
                            "restore: closed", where, listener["inode"])
                conn.close()
        raise OSError(errno.ECONNREFUSED, "the connection did not reach the listener")
    except OSError as e:
        log.warning("%s: made as a pair by ckpt, not through its listener (%s): its "
                    "SO_PEERCRED names ckpt", where, e.strerror or e)
        cli.close()
        return None
    finally:
        if opath is not None:
            os.close(opath)


def _setup(sock: socket.socket, d: dict[str, Any]) -> None:
    """Owner and buffer sizes of a new socket (options come once it is filled)."""
    if "owner" in d:
        os.fchown(sock.fileno(), *d["owner"])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(d["sndbuf"] // 2, 1024))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(d["rcvbuf"] // 2, 1024))


def _finish(sock: socket.socket, d: dict[str, Any]) -> None:
    apply_opts(sock, d.get("opts", {}), SOCKET, f"socket:[{d['inode']}]")


@contextlib.contextmanager
def _borrow(fd: int) -> Iterator[socket.socket]:
    """A socket object on ``fd`` that leaves ``fd`` open."""
    s = socket.socket(fileno=fd)
    try:
        yield s
    finally:
        s.detach()


def _sockaddr(d: dict[str, Any]) -> bytes:
    """The struct sockaddr_un of the socket of ``d`` (a path ends with its NUL)."""
    to = _address(d)
    raw = os.fsencode(to) + b"\0" if isinstance(to, str) else to
    return struct.pack("=H", socket.AF_UNIX) + raw


def _address(d: dict[str, Any], hidden: dict[int, int] | None = None) -> bytes | str:
    """Where to send to (or connect to) the socket of ``d``; ``hidden``: the folders
    of ckpt's that hide the files of sockets whose file was gone (``_bind_hidden``)."""
    if not d.get("name"):
        raise RestoreError(f"socket:[{d['inode']}] has datagrams queued but no name "
                           "to send them to")
    if "file" in d:
        folder = (hidden or {}).get(d["inode"])
        if folder is not None:
            return f"/proc/self/fd/{folder}/{os.path.basename(d['file']['path'])}"
        return d["file"]["path"]
    return bytes.fromhex(d["name"])


def _check_external(descriptions: dict[str, dict[str, Any]], external: set[str]) -> None:
    """At dump: a socket whose peer is outside the tree needs ``--external unix[INODE]``."""
    inodes = {d["inode"] for d in descriptions.values() if d["kind"] == "unix"}
    for d in descriptions.values():
        if (d["kind"] != "unix" or _state(d) != TCP_ESTABLISHED or d["peer"] == 0
                or d["peer"] in inodes):
            continue
        if f"unix[{d['inode']}]" in external or f"unix[{d['peer']}]" in external:
            d["external"] = True
            continue
        raise UnsupportedError(
            f"socket:[{d['inode']}] is connected to socket:[{d['peer']}] outside the dumped "
            f"tree; dump with --external 'unix[{d['inode']}]' and restore with "
            f"--inherit-fd 'fd[N]:socket:[{d['inode']}]'")


def _check_senders(descriptions: dict[str, dict[str, Any]]) -> None:
    """At dump: every datagram queued on a socket that comes back on its own must be
    sendable again, from its sender's socket in the tree (or an unbound one)."""
    by_ino = _by_ino(descriptions)
    names = {d["name"] for d in by_ino.values()
             if d["type"] == socket.SOCK_DGRAM and d.get("name")}
    for d in by_ino.values():
        if not d["queue"] or d["type"] != socket.SOCK_DGRAM or _pair_mode(d, by_ino):
            continue
        where = f"socket:[{d['inode']}]"
        if not d.get("name"):
            raise UnsupportedError(f"{where}: unbound, unconnected, with {len(d['queue'])} "
                                   "datagram(s) queued: ckpt cannot queue them again")
        for sender in d["senders"]:
            if sender and sender not in names:
                raise UnsupportedError(
                    f"{where} ({show_name(bytes.fromhex(d['name']))}) holds a datagram "
                    f"from {show_name(bytes.fromhex(sender))}, a socket outside the dumped "
                    "tree; ckpt cannot send it again from that address")

