"""A restore into a PID namespace of its own (``restore --new-pidns``): every process
keeps its saved PID there, whatever holds that PID on the host, so one set of images
may run any number of times side by side.

ckpt forks the namespace's first process, its init (PID 1; kernel/pidns.py), which
takes a mount namespace of its own whose /proc shows the new PID namespace (every
other mount shared as before) and runs the whole restore there, where the saved PIDs
are the real ones: the root is the init's child. Then the init becomes the
namespace's minimal init: it reaps orphans and, when the root exits, exits with the
root's status (the kernel then ends whatever is left in the namespace).

ckpt, outside, follows over a socket: at ``pre-resume`` the init sends a pidfd of the
root, ckpt gives a shell job its terminal (as a shell would, with the root's group as
the host numbers it) and says go; the init lets the tree run, says so, and becomes
the reaper. Until go, the init dies with ckpt (its parent-death signal), taking the
unfinished tree along; from then on the tree runs on whatever happens to ckpt. ckpt
writes the pidfile with the root's PID as the host sees it and, without -d, waits for
the init, following a shell job's stops that the reaper reports on the socket.

The other way in (``run_inside``): a dump of a process in a PID namespace below
ckpt's runs in a fork of ckpt that enters its PID and mount namespaces, where the
tree's PIDs and /proc are the namespace's, as a restore there will want them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time

from . import errors, recovery
from .errors import RestoreError
from .job_control import Foreground
from .kernel import interrupts, libc, pidns, procfs, safefs
from .kernel.record import dataclass, field
from .log import logger

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:  # imported where used: a dump of a process in no namespace needs none
    import socket
    from collections.abc import Callable, Iterator

    from .kernel.mountinfo import Mount

log = logger("ckpt.restore")

_MSG = 65536
INIT_GRACE_SECONDS = 10.0  # an interrupted init's own rollback


@dataclass
class Outcome:
    """A restore in a new PID namespace, as the host sees it."""

    pid: int  # the root's PID on the host
    init_pid: int  # the namespace's init, on the host
    exit_status: int | None = None  # without detach: the root's, as waitstatus_to_exitcode
    pids: list[int] = field(default_factory=list)  # every process's, in the namespace


class Handshake:
    """The init's end of the socket: the restore calls ``ready`` at pre-resume."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.follow_stops = False

    def ready(self, root_pid: int, shell_job: bool, pids: list[int], foreground: int = 0
              ) -> None:
        """Send a pidfd of the root, wait for ckpt's go, then outlive ckpt; ``foreground``:
        a shell job's group that gets the terminal (its number in the namespace)."""
        fd = os.pidfd_open(root_pid)
        try:
            import socket
            socket.send_fds(self.sock, [json.dumps({
                "restored": root_pid, "pids": pids, "shell_job": shell_job,
                "foreground": foreground}).encode()], [fd])
        finally:
            os.close(fd)
        reply = json.loads(self.sock.recv(_MSG) or b"{}")
        if "go" not in reply:
            raise RestoreError("ckpt, outside the new PID namespace, is gone")
        self.follow_stops = bool(reply["go"])
        libc.prctl(libc.PR_SET_PDEATHSIG, 0)

    def host_pid(self, pid: int) -> int:
        """``pid`` (a process of the namespace) as the host numbers it: ckpt, outside,
        reads it from a pidfd (a notification names the PID the client sees)."""
        import socket
        fd = os.pidfd_open(pid)
        try:
            socket.send_fds(self.sock, [json.dumps({"host_pid_of": pid}).encode()], [fd])
        finally:
            os.close(fd)
        reply = json.loads(self.sock.recv(_MSG) or b"{}")
        if "pid" not in reply:
            raise RestoreError("ckpt, outside the new PID namespace, is gone")
        return int(reply["pid"])

    def send(self, **msg: object) -> None:
        self.sock.send(json.dumps(msg).encode())


def _init_main(sock: socket.socket, restore: Callable[[Handshake], int]) -> None:
    """The init: its namespace's /proc, the restore, then the reaper; never returns."""
    code = 1
    hs = Handshake(sock)
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        pidns.mount_own_proc()
        root = restore(hs)
        hs.send(running=root)
        code = 0
        pidns.become_reaper(root, sock.fileno() if hs.follow_stops else -1)
    except BaseException as e:  # noqa: BLE001 - everything goes to ckpt, outside
        with contextlib.suppress(OSError):
            hs.send(error=str(e) or type(e).__name__, kind=type(e).__name__)
    finally:
        os._exit(code)


class _Host:
    """ckpt's side: the init it forked and what it reported."""

    def __init__(self, init_pid: int, sock: socket.socket, sibling: bool = False):
        self.init_pid = init_pid
        self.sock = sock
        # a sibling's end is seen through a pidfd: ckpt's parent reaps it
        self.init_fd = os.pidfd_open(init_pid) if sibling else -1
        self.root_fd = -1
        self.root_pid = 0
        self.foreground: Foreground | None = None

    def receive(self) -> dict[str, object]:
        import socket
        data, fds, _, _ = socket.recv_fds(self.sock, _MSG, 1)
        for fd in fds:
            self.root_fd = fd
        if not data:
            status = self._reap(INIT_GRACE_SECONDS)
            raise RestoreError(f"the new PID namespace's init (process {self.init_pid}) "
                               f"died during the restore ({_describe(status)})")
        msg = json.loads(data)
        if "error" in msg:
            self._reap(INIT_GRACE_SECONDS)
            kind = getattr(errors, str(msg.get("kind")), None)
            if not (isinstance(kind, type) and issubclass(kind, errors.CkptError)):
                kind = RestoreError
            raise kind(str(msg["error"]))
        return msg

    def _reap(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            if self.init_fd >= 0:
                if select.select([self.init_fd], [], [], 0)[0]:  # ended: its parent reaps it
                    self.init_pid = 0
                    return pidns.pidfd_exit_status(self.init_fd)
            else:
                pid, status = os.waitpid(self.init_pid, os.WNOHANG)
                if pid:
                    self.init_pid = 0
                    return status
            if time.monotonic() > deadline:
                os.kill(self.init_pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)

    def abandon(self) -> None:
        """ckpt failed or was interrupted before the tree ran: the init rolls back (it
        gets SIGTERM, as ckpt would) and is reaped."""
        if self.init_pid:
            with contextlib.suppress(OSError):
                os.kill(self.init_pid, signal.SIGTERM)
            self._reap(INIT_GRACE_SECONDS)

    def close(self) -> None:
        if self.foreground is not None:
            self.foreground.close()
        if self.init_fd >= 0:
            os.close(self.init_fd)
            self.init_fd = -1
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        self.sock.close()


def _describe(status: int | None) -> str:
    if status is None:
        return "status unknown"
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def restore(run: Callable[[Handshake], int], *, detach: bool, pidfile: str | None,
            sibling: bool = False) -> Outcome:
    """Fork the init of a new PID namespace, let ``run`` restore the tree in it (``run``
    calls the handshake's ``ready`` at pre-resume and returns the root's PID in the
    namespace), then write the host's PID of the root to ``pidfile`` and, without
    ``detach``, wait for the root's end. The init itself is left to run. ``sibling``
    (with ``detach``): the init is a child of ckpt's parent, which reaps it, and gets
    the root's exit status from it (criu's rst_sibling: the root itself must be a
    child of the namespace's init)."""
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        init_pid = pidns.fork_init(sibling)
    except OSError as e:
        ours.close()
        theirs.close()
        raise RestoreError(f"cannot create a PID namespace: {e.strerror}") from None
    if init_pid == 0:
        ours.close()
        _init_main(theirs, run)
    theirs.close()
    host = _Host(init_pid, ours, sibling)
    try:
        try:
            msg = host.receive()
            while "host_pid_of" in msg:  # a notification's PID, before the root's
                host.sock.send(json.dumps({"pid": pidns.pidfd_pid(host.root_fd)}).encode())
                os.close(host.root_fd)
                host.root_fd = -1
                msg = host.receive()
            host.root_pid = pidns.pidfd_pid(host.root_fd)
            if msg.get("shell_job") and not detach:
                host.foreground = Foreground(_host_group(host.root_pid, msg.get("foreground")))
            host.sock.send(json.dumps({"go": host.foreground is not None}).encode())
            host.receive()
        except BaseException:
            host.abandon()
            raise
        log.info("the tree runs in a PID namespace of its own: root %d (%d in it), init %d",
                 host.root_pid, msg["restored"], init_pid)
        if pidfile:
            safefs.write_new(pidfile, f"{host.root_pid}\n".encode())  # never through a symlink
        pids = [int(p) for p in msg["pids"]]  # type: ignore[attr-defined]
        if detach:
            return Outcome(host.root_pid, init_pid, None, pids)
        return Outcome(host.root_pid, init_pid, _wait(host), pids)
    finally:
        host.close()


def _host_group(root: int, inner: object) -> int:
    """The host's number of the group a shell job's terminal goes to: the group whose
    leader is ``inner`` in the namespace, found among ``root``'s tree (else the
    root's group: a group whose leader is gone, or none named)."""
    todo = [root]
    while todo and isinstance(inner, int) and inner > 0:
        pid = todo.pop(0)
        try:
            if pidns.ns_pids(pid)[-1] == inner:
                return procfs.stat(pid).pgid
            todo += procfs.children(pid)
        except (OSError, procfs.ProcessGone):
            continue
    return procfs.stat(root).pgid


def _wait(host: _Host) -> int:
    """Wait for the init, which ends with the root: the root's exit status (the exact
    one from its pidfd where the kernel keeps it, else the init's exit code)."""
    if host.foreground is not None:
        fd = os.pidfd_open(host.init_pid)
        try:
            host.foreground.follow(fd, host.sock.fileno())
        finally:
            os.close(fd)
    while True:
        try:
            _, status = os.waitpid(host.init_pid, 0)
            break
        except InterruptedError:
            continue
    exact = pidns.pidfd_exit_status(host.root_fd)
    if exact is None:
        exact = pidns.exit_code_status(os.waitstatus_to_exitcode(status))
    return os.waitstatus_to_exitcode(exact)



# ---------------------------------------------------------------- work inside a namespace

@dataclass
class Inside:
    """A process of a PID namespace below ckpt's, as ckpt's work there sees it."""

    host_pid: int
    pid: int  # in its namespace
    ns_ino: int  # its PID namespace
    init: int = 0  # the namespace's init, on the host (0: not found)

    @property
    def notes_dir(self) -> str:
        """The namespace's own folder under a notes folder: notes name PIDs as the
        namespace numbers them."""
        return f"pidns-{self.ns_ino}"


def inside(pid: int) -> Inside | None:
    """Where ``pid`` lives, if in a PID namespace below ckpt's (None: in ckpt's). ckpt's
    init of a namespace stands for the tree it holds: its one child."""
    if os.stat(f"/proc/{pid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino:
        return None
    numbers = pidns.ns_pids(pid)
    if len(numbers) < 2:
        raise errors.UnsupportedError(f"process {pid} is in a PID namespace ckpt's is not "
                                      "an ancestor of; run ckpt in that namespace")
    if numbers[-1] == 1:
        if procfs.stat(pid).comm != pidns.REAPER_NAME:
            return None  # another init: its whole tree is dumped from here (nspids.py)
        pid = _tree_of_init(pid)
        numbers = pidns.ns_pids(pid)
    _check_mounts(pid)
    ino = os.stat(f"/proc/{pid}/ns/pid").st_ino
    return Inside(pid, numbers[-1], ino, _init_of(pid, ino))


def _init_of(pid: int, ino: int) -> int:
    """The host PID of the init of ``pid``'s namespace (``ino``): up its ancestors."""
    while pid > 1:
        try:
            if pidns.ns_pids(pid)[-1] == 1 and os.stat(f"/proc/{pid}/ns/pid").st_ino == ino:
                return pid
            pid = procfs.stat(pid).ppid
        except (OSError, procfs.ProcessGone):
            return 0
    return 0


@contextlib.contextmanager
def _init_held(init: int) -> Iterator[None]:
    """The namespace's init stopped meanwhile (SIGSTOP from outside reaches an init):
    a dump that kills the tree would have it reap the root and exit, and the kernel
    would then kill every process of the namespace, ckpt's worker too."""
    if not init:
        yield
        return
    os.kill(init, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + INIT_GRACE_SECONDS
        while procfs.stat(init).state not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.005)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.kill(init, signal.SIGCONT)


def _check_mounts(pid: int) -> None:
    """A mount namespace other than ckpt's is taken as the one ``restore --new-pidns``
    made (a copy of ckpt's mounts then, a /proc of its own): refuse one the tree changed
    since, which a restore would not bring back (mount namespaces are issue 11's). What
    the host mounted or unmounted since (its mounts are private: the copy does not
    follow) is the host's, as at any restore: a mount only the tree has must be older
    than the restore's /proc (copied with the rest), one only ckpt has newer."""
    if os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
        return
    from .kernel import mountinfo  # only for a tree in a mount namespace of its own
    theirs, mine = mountinfo.read(pid), mountinfo.read("self")
    root = f"/proc/{pid}/root"
    restored = _restored_proc(root, theirs)

    def older(m: mountinfo.Mount) -> bool:
        uid = _unique_id(root, m)
        return restored is not None and uid is not None and uid < restored

    def newer(m: mountinfo.Mount) -> bool:
        uid = _unique_id("", m)
        return restored is not None and uid is not None and uid > restored

    changed = [m.point for m in _only_in(theirs, mine) if not older(m)]
    changed += [m.point for m in _only_in(mine, theirs) if not newer(m)]
    if changed:
        raise errors.UnsupportedError(
            f"process {pid} is in a mount namespace whose mounts differ from ckpt's at "
            f"{sorted(changed)[0]}: ckpt restores a tree with ckpt's mounts and a /proc "
            "of its own")


def _only_in(mounts: list[Mount], others: list[Mount]) -> list[Mount]:
    """The mounts of ``mounts`` outside /proc that ``others`` has nothing like (the same
    folder of the same filesystem at the same place)."""
    def what(m: Mount) -> tuple[str, ...]:
        return m.point, m.root, m.fstype, m.source
    seen = {what(m) for m in others}
    return [m for m in mounts if m.point != "/proc" and not m.point.startswith("/proc/")
            and what(m) not in seen]


def _unique_id(root: str, mount: Mount) -> int | None:
    """The unique id of ``mount`` (seen under ``root``); None when it cannot be told
    (hidden under another mount, gone, or a kernel before 6.8)."""
    from .kernel import mountinfo
    try:
        ids = mountinfo.mount_ids(root + mount.point)
    except OSError:
        return None
    return ids[1] if ids is not None and ids[0] == mount.mount_id else None


def _restored_proc(root: str, mounts: list[Mount]) -> int | None:
    """The unique id of the /proc the restore mounted over the copied one, None when
    the tree's /proc is not that one on top."""
    at_proc = {m.mount_id for m in mounts if m.point == "/proc"}
    ours = [m for m in mounts if m.point == "/proc" and m.fstype == "proc"
            and m.parent_id in at_proc]
    return _unique_id(root, ours[0]) if len(ours) == 1 else None


def _tree_of_init(pid: int) -> int:
    """The namespace whose init, ``pid``, is ckpt's: its tree is the init's one child
    (``restore --new-pidns`` makes the init again)."""
    kids = sorted(int(k) for t in os.listdir(f"/proc/{pid}/task")
                  for k in open(f"/proc/{pid}/task/{t}/children").read().split())
    if len(kids) != 1:
        raise errors.UnsupportedError(
            f"process {pid}, ckpt's init of a PID namespace, has {len(kids)} children "
            f"({', '.join(map(str, kids)) or 'none'}): its tree is the tree of its one "
            "child (restore --new-pidns gives it a new init)")
    log.info("process %d is ckpt's init of its PID namespace: dumping its child %d",
             pid, kids[0])
    return kids[0]


def run_inside(where: Inside, work: Callable[[int], object]) -> object:
    """Run ``work(pid in the namespace)`` in a fork of ckpt living in ``where``'s PID and
    mount namespaces, where its PIDs and /proc are the namespace's; its result (or
    error) comes back. ckpt's notes (recovery, network locks) go to the namespace's own
    folders. The fork dies with ckpt; the namespace's init is held meanwhile."""
    with _init_held(where.init):
        data = _fork_inside(where, work)
    if not data:
        raise errors.CkptError(f"ckpt's worker in the PID namespace of process "
                               f"{where.host_pid} died")
    import pickle  # our own fork's answer
    kind, value = pickle.loads(data)
    if kind == "ok":
        return value
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.CkptError)):
        cls = errors.CkptError
    raise cls(value)


def _fork_inside(where: Inside, work: Callable[[int], object]) -> bytes:
    """Fork the worker into ``where``'s namespaces; what it wrote back."""
    pid_fd = os.open(f"/proc/{where.host_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    mnt_fd = os.open(f"/proc/{where.host_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    r, w = os.pipe2(os.O_CLOEXEC)
    child = -1
    try:
        pidns.setns(pid_fd, pidns.CLONE_NEWPID)
        try:
            child = interrupts.fork()
        finally:
            if child != 0:
                pidns.setns(own, pidns.CLONE_NEWPID)
        if child == 0:
            os.close(r)
            _worker(w, mnt_fd, where, work)
        # each marked closed before it is (a signal's exception right after a close
        # would have the finally close it again, or another file opened since)
        mine, w = w, -1
        os.close(mine)
        mine, r = r, -1
        with os.fdopen(mine, "rb") as f:
            data = f.read()
        os.waitpid(child, 0)
        return data
    finally:
        for fd in (pid_fd, mnt_fd, own, r, w):
            if fd >= 0:
                os.close(fd)
        for folder in (recovery.notes_dir(), recovery.netlock_dir()):
            with contextlib.suppress(OSError):  # left empty by the worker: gone
                os.rmdir(os.path.join(folder, where.notes_dir))

def _worker(w: int, mnt_fd: int, where: Inside, work: Callable[[int], object]) -> None:
    import pickle
    out: tuple[str, object]
    try:
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        pidns.setns(mnt_fd, pidns.CLONE_NEWNS)
        os.fchdir(cwd)  # the same directory: the namespace's mounts are ckpt's
        os.close(cwd)
        if os.readlink("/proc/self") != str(os.getpid()):
            raise errors.UnsupportedError(
                f"process {where.host_pid}: its /proc is not its PID namespace's (mount a "
                "proc file system in its mount namespace, or run ckpt there)")
        for var, folder in (("CKPT_NOTES_DIR", recovery.notes_dir()),
                            ("CKPT_NETLOCK_DIR", recovery.netlock_dir())):
            os.environ[var] = os.path.join(folder, where.notes_dir)
        out = ("ok", work(where.pid))
    except BaseException as e:  # noqa: BLE001 - everything goes back to ckpt
        out = (type(e).__name__, str(e) or type(e).__name__)
    try:
        os.write(w, pickle.dumps(out))
    finally:
        os._exit(0)
