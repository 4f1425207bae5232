"""The page server: a receiving end that writes the images of one dump into its
folder as they come over TCP, and the client a dump sends them with.

``ckpt page-server -D DIR --port P`` accepts one connection, writes every file
the dump sends into DIR (page data as it is read from the process, the other
images as they are written, the inventory last), fsyncs them and the folder,
answers, and exits: ``ckpt restore -D DIR`` then works on the receiving side.
The sender keeps a copy of everything but the page data in its own ``-D``, so
that a later dump can name it with ``--prev-images-dir``.

Page data never becomes Python objects: the sender sends it from the reused
page buffer (``sendmsg`` of a memoryview, after ``process_vm_readv``), other
images from their files (``sendfile``); the receiver moves it from the socket
to the file with ``splice`` through a pipe (or ``recv_into`` one buffer and
``write``, where splice is refused, or with ``CKPT_PAGE_SERVER_COPY=1``).

Protocol (all integers little-endian), see docs/image-format.md:

    client: "CKPTPGSV" u32 version(1)
    server: u32 status(0 ok) u32 length, then that many bytes (JSON: dir, dev, ino)
    client: messages, each u8 op, u16 file id, u64 arg:
        1 OPEN   arg = name length, then the name (UTF-8)
        2 DATA   arg = length, then that many bytes, appended to the file
        3 CLOSE  arg = the file's size (the server checks it)
        4 FINISH (arg 0): write inventory.json (sent last), fsync the folder
    server: u32 status u32 length, message  (after FINISH, or at the first error)

criu's remote lazy migration (``dump --lazy-pages`` with a page server, runc's
``checkpoint --lazy-pages``, then ``lazy-pages --page-server`` where the restore runs)
is a copy here: the dump writes its images whole, then ``offer`` listens where criu's
page server would and sends them, as a dump sends them to a page server, to the
lazy-pages daemon that connects (``fetch``), which then serves the restore from them.
The daemon starts with "CKPTWANT" (send them) or "CKPTHAVE" (its folder holds them:
the same folder, on the same machine).
"""

from __future__ import annotations

import _signal
import errno
import fcntl
import json
import os
import socket
import stat
import struct
import time

from .errors import CkptError, DumpError
from .images import COMPLETE_MARK, INVENTORY, Folder, crc32
from .kernel.lazyre import LazyPattern
from .log import logger

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

log = logger("ckpt.page-server")

MAGIC = b"CKPTPGSV"
PROTO = 1
HDR = struct.Struct("<BHQ")
REPLY = struct.Struct("<II")
OPEN, DATA, CLOSE, FINISH = 1, 2, 3, 4
_NAME = LazyPattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
PIPE_SIZE = 1 << 20
COPY_BUF = 4 << 20
CONNECT_TIMEOUT = 10.0
_NO_SPLICE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class PageServerError(CkptError):
    """The page server refused something, or the connection broke."""


# ---------------------------------------------------------------- the client (dump side)

class RemoteRawWriter:
    """A raw image file written on the page server, checksummed as it is sent."""

    def __init__(self, client: Client, fid: int, name: str):
        self.client = client
        self.fid = fid
        self.name = name
        self.size = 0
        self.crc = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        off = self.size
        mv = memoryview(data)
        self.crc = crc32(mv, self.crc)
        self.client.send_data(self.fid, mv)
        self.size += len(mv)
        return off

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.send_msg(CLOSE, self.fid, self.size)


class Client:
    """One dump's connection to a page server."""

    def __init__(self, address: str, port: int, images_dir: str,
                 sock: socket.socket | None = None):
        """``sock``: a connection made already (``offer``: the receiver connected)."""
        _check_port(port)
        self.where = f"{address}:{port}"
        try:
            self.sock = sock or socket.create_connection((address, port),
                                                         timeout=CONNECT_TIMEOUT)
        except OSError as e:
            raise DumpError(f"cannot connect to the page server at {self.where}: "
                            f"{e.strerror or e}") from None
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next = 0
        self.sent = 0
        self.seconds = 0.0
        try:
            self.sock.sendall(MAGIC + struct.pack("<I", PROTO), socket.MSG_NOSIGNAL)
            info = json.loads(self._reply("hello"))
        except (OSError, ValueError) as e:
            self.sock.close()
            raise DumpError(f"page server at {self.where}: {e}") from None
        try:
            here = os.stat(images_dir)
            if (here.st_dev, here.st_ino) == (info.get("dev"), info.get("ino")):
                self.sock.close()
                raise DumpError(f"the page server at {self.where} writes into {images_dir} "
                                "itself; give the dump another -D")
        except FileNotFoundError:
            pass
        self.remote_dir = info.get("dir", "?")
        log.info("connected to the page server at %s (folder %s)", self.where, self.remote_dir)

    def _reply(self, what: str) -> str:
        head = _recv_exact(self.sock, REPLY.size)
        if head is None:  # it says why before it closes: it died
            raise self._broke(f"before its reply to the {what}")
        status, n = REPLY.unpack(head)
        msg = (_recv_exact(self.sock, n) or b"").decode(errors="replace")
        if status != 0:
            raise PageServerError(f"page server at {self.where}: {msg}")
        return msg

    def _fail(self, e: OSError) -> PageServerError:
        """A send failed: the server may have said why before closing; else the
        connection itself broke (the server died, or its machine went away)."""
        try:
            self.sock.settimeout(2.0)
            said = self.sock.recv(REPLY.size, socket.MSG_PEEK | socket.MSG_WAITALL)
            if len(said) == REPLY.size:  # its reply, not the end of the stream
                self._reply("send")
        except PageServerError as why:
            return why
        except OSError:
            pass
        return self._broke("while the dump sent it images", e)

    def _broke(self, when: str, e: OSError | None = None) -> PageServerError:
        """The server gone (killed, its machine away): whether the dump's next send or
        its wait for a reply sees it first depends on when the kernel took the end of the
        connection in (under load, after the dump's last sends); one message either way."""
        why = f" ({e.strerror or e})" if e is not None else ""
        return PageServerError(f"the connection to the page server at {self.where} broke "
                               f"{when}{why}; the dump is not complete")

    def _send(self, bufs: list[Any]) -> None:
        views = [memoryview(b).cast("B") for b in bufs]
        t0 = time.monotonic()
        try:
            while views:
                n = self.sock.sendmsg(views, (), socket.MSG_NOSIGNAL)
                self.sent += n
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
        except OSError as e:
            raise self._fail(e) from None
        self.seconds += time.monotonic() - t0

    def send_msg(self, op: int, fid: int = 0, arg: int = 0, payload: bytes = b"") -> None:
        self._send([HDR.pack(op, fid, arg), payload] if payload else [HDR.pack(op, fid, arg)])

    def send_data(self, fid: int, mv: memoryview) -> None:
        if len(mv):
            self._send([HDR.pack(DATA, fid, len(mv)), mv])

    def _open(self, name: str) -> int:
        fid = self._next
        self._next = (self._next + 1) & 0xFFFF
        raw = name.encode()
        self.send_msg(OPEN, fid, len(raw), raw)
        return fid

    def raw(self, name: str) -> RemoteRawWriter:
        return RemoteRawWriter(self, self._open(name), name)

    def send_file(self, name: str, fd: int) -> None:
        """Send the file open as ``fd`` whole, as ``name``, by the kernel (``sendfile``)."""
        fid = self._open(name)
        size = os.fstat(fd).st_size
        self.send_msg(DATA, fid, size)
        t0 = time.monotonic()
        done = 0
        try:
            with _own_sigpipe():
                while done < size:
                    n = os.sendfile(self.sock.fileno(), fd, done, size - done)
                    if n == 0:
                        break
                    done += n
        except OSError as e:
            raise self._fail(e) from None
        self.seconds += time.monotonic() - t0
        self.sent += done
        if done != size:
            raise PageServerError(f"{name}: sent {done} of {size} bytes to the page server")
        self.send_msg(CLOSE, fid, size)

    def finish(self) -> None:
        """The dump is complete: wait until the page server has it all on disk."""
        self.send_msg(FINISH)
        try:
            self._reply("finish")
        except OSError as e:
            raise self._broke("before its reply to the finish", e) from None
        finally:
            self.sock.close()
        log.info("page server at %s has the images: %d bytes sent in %.3f s", self.where,
                 self.sent, self.seconds)

    def abort(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _own_sigpipe:
    """SIGPIPE held while ``sendfile`` (which takes no MSG_NOSIGNAL) writes to the
    connection; the one its EPIPE raised is taken back, so that a page server gone
    away fails the dump as a broken connection naming it, not as ckpt interrupted."""

    def __enter__(self) -> None:
        self._old = _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGPIPE,))

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(value, OSError) and value.errno == errno.EPIPE:
            _signal.sigtimedwait((_signal.SIGPIPE,), 0)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self._old)


# ---------------------------------------------------------------- the server

def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Exactly ``n`` bytes (headers and names only), or None at end of stream."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            if got == 0:
                return None
            raise PageServerError("the connection closed in the middle of a message")
        got += k
    return bytes(buf)


class _Receiver:
    """Moves ``n`` bytes from the socket to a file: splice through a pipe, or a copy."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pipe: tuple[int, int] | None = None
        self.buf: bytearray | None = None
        self.mode = "copy" if os.environ.get("CKPT_PAGE_SERVER_COPY") == "1" else "splice"
        if self.mode == "splice":
            r, w = os.pipe2(os.O_CLOEXEC)
            try:
                fcntl.fcntl(w, 1031, PIPE_SIZE)  # F_SETPIPE_SZ
            except OSError:
                pass
            self.pipe = (r, w)
            self.pipe_size = fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ

    def close(self) -> None:
        if self.pipe is not None:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None

    def to_file(self, fd: int, n: int) -> None:
        if self.mode == "splice":
            n = self._splice(fd, n)
        if n:
            self._copy(self.sock.recv_into, fd, n)

    def _splice(self, fd: int, n: int) -> int:
        """Splice what it can; return what is left to copy (splice refused)."""
        assert self.pipe is not None
        r, w = self.pipe
        sfd = self.sock.fileno()
        while n:
            try:
                got = os.splice(sfd, w, min(n, self.pipe_size), flags=1)  # SPLICE_F_MOVE
            except OSError as e:
                if e.errno not in _NO_SPLICE:
                    raise
                self._fall_back(e)
                return n
            if got == 0:
                raise PageServerError("the connection closed in the middle of a file")
            n -= got
            try:
                while got:
                    got -= os.splice(r, fd, got, flags=1)
            except OSError as e:
                if e.errno not in _NO_SPLICE:
                    raise
                self._fall_back(e)
                self._copy(lambda v: os.readv(r, [v]), fd, got)  # what is in the pipe
                return n
        return 0

    def _fall_back(self, e: OSError) -> None:
        log.info("splice refused (%s); copying through a buffer", e.strerror or e)
        self.mode = "copy"

    def _copy(self, read_into: Callable[[memoryview], int], fd: int, n: int) -> None:
        if self.buf is None:
            self.buf = bytearray(COPY_BUF)
        view = memoryview(self.buf)
        while n:
            k = read_into(view[:min(n, COPY_BUF)])
            if k == 0:
                raise PageServerError("the connection closed in the middle of a file")
            done = 0
            while done < k:
                done += os.write(fd, view[done:k])
            n -= k


def _reply(sock: socket.socket, status: int, msg: str) -> None:
    raw = msg.encode()
    try:
        sock.sendall(REPLY.pack(status, len(raw)) + raw, socket.MSG_NOSIGNAL)
    except OSError:
        pass


def serve(directory: str, port: int, address: str = "0.0.0.0",
          ready: Callable[[str, int], None] | None = None, overwrite: bool = False) -> int:
    """Receive one dump into ``directory``; return its size in bytes.

    ``ready(address, port)`` is called once the server listens (``port`` 0 picks one).
    ``overwrite``: as for a dump (images.Folder.for_dump): unless given, a folder that
    holds images already or belongs to another user is refused.
    """
    _check_port(port)
    folder = Folder.for_dump(directory, overwrite)
    try:
        return _listen(folder, port, address, ready)
    finally:
        folder.close()


WANT, HAVE = b"CKPTWANT", b"CKPTHAVE"


def offer(images_dir: str, address: str, port: int,
          ready: Callable[[], None] | None = None) -> None:
    """The dump side of a lazy migration: listen on ``address``:``port``, call
    ``ready()``, and give the complete images of ``images_dir`` to the lazy-pages
    daemon that connects (``fetch``), unless it has them."""
    _check_port(port)
    with _listening(address, port) as lsock:
        log.info("images offered to a lazy-pages daemon on %s:%d", address, port)
        if ready is not None:
            ready()
        conn, peer = lsock.accept()
    with conn:
        asked = _recv_exact(conn, len(WANT))
        if asked == HAVE:
            log.info("the lazy-pages daemon at %s has the images", peer[0])
            return
        if asked != WANT:
            raise CkptError(f"{peer[0]}:{peer[1]} is not a ckpt lazy-pages daemon")
        client = Client(address, port, images_dir, conn.dup())
        try:
            folder = os.open(images_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                names = sorted(n for n in os.listdir(folder)
                               if n not in (INVENTORY, COMPLETE_MARK) and _NAME.fullmatch(n))
                for name in [*names, INVENTORY]:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 dir_fd=folder)
                    try:
                        if stat.S_ISREG(os.fstat(fd).st_mode):
                            client.send_file(name, fd)
                    finally:
                        os.close(fd)
            finally:
                os.close(folder)
            client.finish()
        except BaseException:
            client.abort()
            raise


def fetch(images_dir: str, address: str, port: int, wait: float = 30.0) -> None:
    """The restore side of a lazy migration: connect to the dump's ``offer`` (waiting
    up to ``wait`` seconds for it to listen) and receive its images into
    ``images_dir``, unless that holds a complete dump already."""
    _check_port(port)
    deadline = time.monotonic() + wait
    while True:
        try:
            sock = socket.create_connection((address, port), timeout=CONNECT_TIMEOUT)
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise CkptError(f"cannot connect to the dump at {address}:{port}: "
                                f"{e.strerror or e}") from None
            time.sleep(0.1)
    with sock:
        sock.settimeout(None)
        if os.path.exists(os.path.join(images_dir, COMPLETE_MARK)):
            sock.sendall(HAVE)
            log.info("%s holds the images already", images_dir)
            return
        sock.sendall(WANT)
        folder = Folder.for_dump(images_dir, overwrite=True)
        try:
            total = _session(sock, folder)
        finally:
            folder.close()
        log.info("received the images from %s:%d: %d bytes", address, port, total)


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise CkptError(f"port {port} is out of range (0-65535)")


def _listening(address: str, port: int) -> socket.socket:
    """A TCP socket listening on ``address``:``port`` for one connection."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    lsock = socket.socket(family, socket.SOCK_STREAM)
    try:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((address, port))
        lsock.listen(1)
    except OSError as e:
        lsock.close()
        raise CkptError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
    return lsock


def _listen(folder: Folder, port: int, address: str,
            ready: Callable[[str, int], None] | None) -> int:
    directory = folder.path
    with _listening(address, port) as lsock:
        bound = lsock.getsockname()
        log.info("listening on %s:%d, images into %s", bound[0], bound[1], directory)
        if ready is not None:
            ready(bound[0], bound[1])
        conn, peer = lsock.accept()
    with conn:
        log.info("connection from %s:%d", peer[0], peer[1])
        return _session(conn, folder)


def _session(sock: socket.socket, folder: Folder) -> int:
    directory = folder.path
    hello = _recv_exact(sock, len(MAGIC) + 4)
    if hello is None or hello[:len(MAGIC)] != MAGIC:
        _reply(sock, 1, "not a ckpt page server client")
        raise CkptError("the client is not a ckpt dump")
    version = struct.unpack("<I", hello[len(MAGIC):])[0]
    if version != PROTO:
        _reply(sock, 1, f"protocol version {version} is not supported (this server speaks "
                        f"{PROTO})")
        raise CkptError(f"the client speaks protocol version {version}, not {PROTO}")
    folder.remove(COMPLETE_MARK)  # a stale inventory must never describe new files
    folder.remove(INVENTORY)
    st = os.fstat(folder.fd)
    _reply(sock, 0, json.dumps({"dir": os.path.abspath(directory), "dev": st.st_dev,
                                "ino": st.st_ino}))
    recv = _Receiver(sock)
    files: dict[int, list[Any]] = {}  # id -> [fd, name, size]
    total = 0
    t0 = time.monotonic()
    try:
        while True:
            head = _recv_exact(sock, HDR.size)
            if head is None:
                raise CkptError(f"the dump stopped before it was complete; {directory} holds "
                                "no complete dump")
            op, fid, arg = HDR.unpack(head)
            if op == OPEN:
                name = (_recv_exact(sock, arg) or b"").decode(errors="replace")
                if not _NAME.fullmatch(name):
                    raise CkptError(f"refused file name {name!r}")
                if fid in files:
                    raise CkptError(f"file id {fid} opened twice")
                fd = folder.create(name + (".tmp" if name == INVENTORY else ""))
                files[fid] = [fd, name, 0]
            elif op == DATA:
                f = files.get(fid)
                if f is None:
                    raise CkptError(f"data for file id {fid}, which is not open")
                recv.to_file(f[0], arg)
                f[2] += arg
                total += arg
            elif op == CLOSE:
                f = files.pop(fid, None)
                if f is None:
                    raise CkptError(f"close of file id {fid}, which is not open")
                fd, name, size = f
                try:
                    if size != arg:
                        raise CkptError(f"{name}: {size} bytes received, the sender says {arg}")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            elif op == FINISH:
                if files:
                    raise CkptError(f"finished with files still open: "
                                    f"{sorted(f[1] for f in files.values())}")
                try:
                    folder.rename(INVENTORY + ".tmp", INVENTORY)
                except FileNotFoundError:
                    raise CkptError("finished without an inventory") from None
                folder.mark_complete()
                dt = time.monotonic() - t0
                log.info("received %d bytes in %.3f s (%s) into %s", total, dt, recv.mode,
                         directory)
                _reply(sock, 0, "")
                return total
            else:
                raise CkptError(f"unknown message {op}")
    except (CkptError, OSError) as e:
        msg = str(e) if isinstance(e, CkptError) else f"{directory}: {e.strerror or e}"
        _reply(sock, 1, msg)
        raise CkptError(msg) from None
    finally:
        recv.close()
        for f in files.values():
            os.close(f[0])
