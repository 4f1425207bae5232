"""``ckpt swrk FD``: criu's RPC served on an inherited SOCK_SEQPACKET socket, one
protobuf message per packet, the way runc and podman drive ``criu swrk``.

The client sends a request; ckpt answers it with one response, sending NOTIFY
messages before it when the request asked for them (``notify_scripts``), each
answered by the client before ckpt goes on. A session serves one request, or
several when each asks ``keep_open`` (VERSION, FEATURE_CHECK, PAGE_SERVER, as
in criu), or a series of PRE_DUMPs ended by a DUMP. A request ckpt cannot
serve, and a packet that is not a request, get a response with success=false,
cr_errno and cr_errmsg, and end the session; nothing is ever left unanswered.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import struct
import sys

from .. import __version__
from .. import log as ckpt_log
from ..errors import CkptError, UnsupportedError
from . import schema as s
from . import stats
from .options import Dirs, RequestError, args_for, screen
from .wire import WireError, decode, encode

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

log = logging.getLogger("ckpt.rpc")

# The criu version ckpt answers VERSION with: it serves criu 4.0's protocol.
CRIU_VERSION = (4, 0)
MAX_PACKET = 1 << 20
# Requests after which the session may go on (criu allows no others).
KEEP_OPEN = {s.VERSION, s.FEATURE_CHECK, s.PAGE_SERVER, s.PAGE_SERVER_CHLD}


class ClientGone(CkptError):
    """The client closed the connection."""


class Session:
    """One client on one socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        pid, _uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        self.peer = pid
        self.children: set[int] = set()  # page servers started for the client

    # ------------------------------------------------------------ packets

    def recv(self) -> dict[str, Any]:
        """The next request; ClientGone at the end, WireError for a bad packet."""
        try:
            data, anc, flags, _ = self.sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(64))
        except ConnectionResetError:
            raise ClientGone("the client closed the connection") from None
        for level, kind, payload in anc:  # fds are never part of a request: close them
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]):
                    os.close(fd)
        if flags & socket.MSG_TRUNC:
            raise WireError(f"request larger than {MAX_PACKET} bytes")
        if not data and self._hung_up():
            raise ClientGone("the client closed the connection")
        return decode(data, "req")

    def _hung_up(self) -> bool:
        p = select.poll()
        p.register(self.sock, select.POLLIN | select.POLLRDHUP)
        return any(ev & (select.POLLHUP | select.POLLRDHUP) for _, ev in p.poll(0))

    def send(self, resp: dict[str, Any], fd: int = -1) -> None:
        """Send ``resp``, with ``fd`` attached (SCM_RIGHTS) when it is one."""
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))] if fd >= 0 else []
        try:
            self.sock.sendmsg([encode(resp, "resp")], rights)
        except (BrokenPipeError, ConnectionResetError):
            raise ClientGone("the client closed the connection") from None

    def notify(self, action: str, pid: int, fd: int = -1) -> Sequence[str] | None:
        """Tell the client ``action`` and wait for its acknowledgement (hooks.Notify);
        ``fd`` goes with the message."""
        note: dict[str, Any] = {"script": action}
        if pid:
            note["pid"] = pid
        log.info("notifying the client: %s", action)
        self.send({"type": s.NOTIFY, "success": True, "notify": note}, fd)
        try:
            ack = self.recv()
        except ClientGone:
            raise ClientGone(f"the client closed the connection instead of acknowledging "
                             f"the {action} notification") from None
        except WireError as e:
            raise CkptError(f"the client's answer to the {action} notification is not a "
                            f"request: {e}") from None
        if ack["type"] != s.NOTIFY or not ack.get("notify_success"):
            what = ("a " + s.REQUEST_NAMES.get(ack["type"], str(ack["type"])) + " request"
                    if ack["type"] != s.NOTIFY else "failure")
            raise CkptError(f"the client answered the {action} notification with {what}")
        return (ack.get("opts") or {}).get("external") or None

    def hand_over_master(self, fd: int) -> None:
        """criu's orphan-pts-master: the new master of the tree's terminal whose master
        was outside it (a container's console), for the client to pass on (runc gives
        it to its console socket)."""
        self.notify("orphan-pts-master", 0, fd)

    # ------------------------------------------------------------ the session

    def serve(self) -> int:
        """Serve requests until the session ends; 0 if the last one succeeded."""
        expect: set[int] | None = None  # after a PRE_DUMP: only these may follow
        while True:
            try:
                req = self.recv()
            except ClientGone:
                return 0
            except WireError as e:
                self._fail(s.EMPTY, RequestError(f"malformed request: {e}", errno.EBADMSG))
                return 1
            kind = req["type"]
            try:
                if kind not in HANDLERS:
                    raise RequestError(f"request type {kind} is not one criu defines")
                if expect is not None and kind not in expect:
                    raise RequestError(f"{s.REQUEST_NAMES[kind]} after PRE_DUMP: only "
                                       "PRE_DUMP or DUMP may follow")
                if req.get("keep_open") and kind not in KEEP_OPEN:
                    raise RequestError(f"keep_open is not allowed with "
                                       f"{s.REQUEST_NAMES[kind]}, as in criu")
                HANDLERS[kind](self, req)
            except ClientGone:
                return 1
            except Exception as e:
                # a NOTIFY-typed answer would read as a notification: criu's EMPTY instead
                self._fail(s.EMPTY if kind == s.NOTIFY else kind, e)
                return 1
            if kind == s.PRE_DUMP:
                expect = {s.PRE_DUMP, s.DUMP}
            elif not req.get("keep_open"):
                return 0

    def _fail(self, kind: int, e: BaseException) -> None:
        """Answer request ``kind`` with the error ``e``."""
        msg = str(e) if isinstance(e, CkptError) else f"internal error: {type(e).__name__}: {e}"
        ckpt_log.failure(str(s.REQUEST_NAMES.get(kind, kind)), e, always=True)
        resp: dict[str, Any] = {"type": kind if kind in s.REQUEST_NAMES else s.EMPTY,
                                "success": False, "cr_errmsg": msg}
        err = _errno_of(e)
        if err:
            resp["cr_errno"] = err
        if kind == s.RESTORE:
            resp["restore"] = {"pid": -1}
        if kind == s.DUMP:
            resp["dump"] = {"restored": False}
        try:
            self.send(resp)
        except ClientGone:
            pass


def _errno_of(e: BaseException) -> int:
    if isinstance(e, RequestError):
        return e.errno
    if isinstance(e, UnsupportedError):
        return errno.EOPNOTSUPP
    cause = e if isinstance(e, OSError) else e.__cause__
    return cause.errno if isinstance(cause, OSError) and cause.errno else 0


# ------------------------------------------------------------ the requests

def _with_dirs(session: Session, req: dict[str, Any]) -> Dirs:
    if req.get("opts") is None:
        raise RequestError(f"{s.REQUEST_NAMES[req['type']]} without opts")
    from .config import with_files
    opts = req["opts"] = with_files(req["opts"])
    dirs = Dirs.from_opts(opts, session.peer)
    try:
        ckpt_log.setup(dirs.verbosity, dirs.log_file)
        log.debug("%s options: %s", s.REQUEST_NAMES[req["type"]], opts)
        screen(opts)
    except BaseException:
        dirs.close()
        raise
    log.info("%s from process %d; images in %s", s.REQUEST_NAMES[req["type"]], session.peer,
             dirs.images)
    return dirs


def _dump(session: Session, req: dict[str, Any]) -> None:
    from .. import dump
    dirs = _with_dirs(session, req)
    try:
        opts = req["opts"]
        if opts.get("pid") is None:
            raise RequestError("option pid missing: ckpt cannot dump its own client "
                               "(criu's self-dump)", errno.EOPNOTSUPP)
        notify = session.notify if opts.get("notify_scripts") else None
        res = dump(opts["pid"], dirs.images, notify=notify, **args_for(s.DUMP, opts, dirs))
        stats.write(dirs.work, stats.DUMP_FILE, stats.dump_entry(res))
        if opts.get("lazy_pages"):  # criu's remote lazy migration, as a copy
            from ..page_server import offer
            ps = opts["ps"]
            offer(dirs.images, ps.get("address") or "0.0.0.0", ps["port"],
                  ready=lambda: _ready(opts.get("status_fd"), notify))
    finally:
        dirs.close()
    session.send({"type": s.DUMP, "success": True, "dump": {"restored": False}})


def _ready(fd: int | None, notify: Any) -> None:
    """ckpt serves the lazy-pages daemon: criu's status_fd gets a zero byte and is
    closed, and the client is told "status-ready" (runc waits for one or the other)."""
    if fd is not None and fd >= 0:
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
    if notify is not None:
        notify("status-ready", 0)


def _pre_dump(session: Session, req: dict[str, Any]) -> None:
    from .. import pre_dump
    dirs = _with_dirs(session, req)
    try:
        opts = req["opts"]
        if opts.get("pid") is None:
            raise RequestError("option pid missing: ckpt cannot pre-dump its own client",
                               errno.EOPNOTSUPP)
        res = pre_dump(opts["pid"], dirs.images, **args_for(req["type"], opts, dirs))
        stats.write(dirs.work, stats.DUMP_FILE, stats.dump_entry(res))
    finally:
        dirs.close()
    session.send({"type": req["type"], "success": True})


def _restore(session: Session, req: dict[str, Any]) -> None:
    from .. import restore
    dirs = _with_dirs(session, req)
    try:
        opts = req["opts"]
        notify = session.notify if opts.get("notify_scripts") else None
        orphan = session.hand_over_master if opts.get("orphan_pts_master") else None
        res = restore(dirs.images, notify=notify, orphan_pts_master=orphan,
                      **args_for(s.RESTORE, opts, dirs))
        stats.write(dirs.work, stats.RESTORE_FILE, stats.restore_entry(res))
    finally:
        dirs.close()
    session.send({"type": s.RESTORE, "success": True, "restore": {"pid": res.pid}})
    if opts.get("exec_cmd"):
        _exec(opts["exec_cmd"], session)


def _exec(argv: list[str], session: Session) -> None:
    """criu's exec_cmd: become ``argv`` once the restore is answered, output to the log."""
    log.info("executing %s", argv)
    for h in logging.getLogger("ckpt").handlers:
        stream = getattr(h, "stream", None)
        if stream is not None and stream is not sys.stderr:
            stream.flush()
            os.dup2(stream.fileno(), 1)
            os.dup2(stream.fileno(), 2)
    session.sock.close()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        log.error("cannot execute %s: %s", argv[0], e.strerror)
        os._exit(1)


def _check(session: Session, req: dict[str, Any]) -> None:
    from ..probes import probe_all
    opts = req.get("opts") or {}
    if opts.get("log_file"):
        _with_dirs(session, req).close()
    failures = probe_all()
    if failures:
        raise CkptError("; ".join(f"{name}: {why}" for name, why in failures))
    session.send({"type": s.CHECK, "success": True})


def _feature_check(session: Session, req: dict[str, Any]) -> None:
    asked = req.get("features") or {}
    session.send({"type": s.FEATURE_CHECK, "success": True, "features": {
        "mem_track": bool(asked.get("mem_track")),  # soft-dirty or page digests: always
        # restore: served by `ckpt lazy-pages`; dump (runc's checkpoint --lazy-pages):
        # the images are written whole and handed to the daemon (page_server.offer)
        "lazy_pages": bool(asked.get("lazy_pages")),
        "pidfd_store": False,
    }})


def _version(session: Session, req: dict[str, Any]) -> None:
    session.send({"type": s.VERSION, "success": True, "version": {
        "major_number": CRIU_VERSION[0], "minor_number": CRIU_VERSION[1],
        "gitid": f"ckpt-{__version__}", "name": "ckpt"}})


def _page_server(session: Session, req: dict[str, Any]) -> None:
    """Start a page server for one dump in a child; answer with its pid and port."""
    from ..page_server import serve
    dirs = _with_dirs(session, req)
    ps = req["opts"].get("ps") or {}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the page server
        code = 1
        try:
            os.close(r)
            session.sock.close()

            def ready(_addr: str, port: int) -> None:
                os.write(w, f"{port}\n".encode())

            serve(dirs.images, ps.get("port") or 0, ps.get("address") or "0.0.0.0",
                  ready=ready)
            code = 0
        except CkptError as e:
            log.error("page server: %s", e)
            os.write(w, f"error {e}\n".encode())
        except BaseException:
            import traceback
            log.error("page server:\n%s", traceback.format_exc())
        finally:
            os._exit(code)
    os.close(w)
    dirs.close()
    session.children.add(pid)
    with os.fdopen(r) as f:
        line = f.readline().strip()
    if not line.isdigit():
        raise CkptError(line.removeprefix("error ") or "the page server exited early")
    session.send({"type": req["type"], "success": True,
                  "ps": {"pid": pid, "port": int(line)}})


def _wait_pid(session: Session, req: dict[str, Any]) -> None:
    pid = req.get("pid", 0)
    if pid not in session.children:
        raise RequestError(f"WAIT_PID {pid}: not a process this session started",
                           errno.ECHILD)
    _, status = os.waitpid(pid, 0)
    session.children.discard(pid)
    session.send({"type": s.WAIT_PID, "success": True, "status": status})


def _cpuinfo(session: Session, req: dict[str, Any]) -> None:
    raise RequestError(f"{s.REQUEST_NAMES[req['type']]} is not supported: ckpt images hold "
                       "no cpuinfo; a restore fails if this CPU cannot load the saved xstate",
                       errno.EOPNOTSUPP)


def _notify_out_of_turn(session: Session, req: dict[str, Any]) -> None:
    raise RequestError("NOTIFY is an answer to a notification, not a request")


def _empty(session: Session, req: dict[str, Any]) -> None:
    raise RequestError("request type EMPTY")


HANDLERS = {
    s.EMPTY: _empty, s.DUMP: _dump, s.RESTORE: _restore, s.CHECK: _check,
    s.PRE_DUMP: _pre_dump, s.SINGLE_PRE_DUMP: _pre_dump, s.PAGE_SERVER: _page_server,
    s.PAGE_SERVER_CHLD: _page_server, s.NOTIFY: _notify_out_of_turn,
    s.CPUINFO_DUMP: _cpuinfo, s.CPUINFO_CHECK: _cpuinfo, s.FEATURE_CHECK: _feature_check,
    s.VERSION: _version, s.WAIT_PID: _wait_pid,
}


def serve_fd(fd: int) -> int:
    """``ckpt swrk FD``: serve the client on inherited socket ``fd``; the exit status."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise CkptError(f"fd {fd} is not open: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise CkptError(f"fd {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    try:
        if sock.type != socket.SOCK_SEQPACKET or sock.family != socket.AF_UNIX:
            raise CkptError(f"fd {fd} is not a unix SOCK_SEQPACKET socket")
        root = logging.getLogger("ckpt")
        if not root.handlers:  # nothing on stderr (a container's) until a request says so
            root.addHandler(logging.NullHandler())
            root.propagate = False
        try:
            session = Session(sock)
        except OSError as e:
            raise CkptError(f"cannot read the peer of fd {fd}: {e.strerror}") from None
        return session.serve()
    finally:
        sock.close()
