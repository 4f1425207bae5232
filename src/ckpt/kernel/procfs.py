"""Small, named parsers for /proc/PID files, with typed results.

/proc is read as bytes: a process name (comm) may hold any byte, a path any
byte but NUL. Names and paths are decoded with ``os.fsdecode`` (UTF-8 with
surrogateescape), so a name that is not valid UTF-8 comes back byte for byte
through ``os.fsencode`` and every ``os`` function.

Every reader raises ``ProcessGone`` when the process, its thread or its fd has
vanished (``_VANISHED`` names the errors that say so), so callers can tell "the
process exited" from other I/O errors. The ``parse_*`` functions take the
file's bytes and touch nothing: they are what the unit tests exercise.
"""

from __future__ import annotations

import _thread
import os
import time

from .lazyre import LazyPattern
from .record import dataclass, field
from .scoped import contextmanager

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


class ProcessGone(Exception):
    """The process (or the fd) we were reading about no longer exists."""

    def __init__(self, pid: int, what: str = ""):
        super().__init__(f"process {pid} does not exist{(' (' + what + ')') if what else ''}")
        self.pid = pid


# "No such file" (ENOENT) and "no such process" (ESRCH): what /proc gives when the
# process, thread or fd vanished (turned into ``ProcessGone``).
_VANISHED = (FileNotFoundError, ProcessLookupError)


@contextmanager
def _gone(pid: int, what: str) -> Iterator[None]:
    """Turn the errors of a process, thread or fd that vanished into ``ProcessGone``."""
    try:
        yield
    except _VANISHED as e:
        raise ProcessGone(pid, what) from e


_CHUNK = 1 << 16


def _read(pid: int, name: str) -> bytes:
    """The whole file, by open, reads until the end and close: a file object costs four
    more system calls (fstat twice, an ioctl, lseek) and its Python layers, ~5 us of
    every read, of which a dump of a process of 25 threads makes ~220."""
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, _CHUNK)
            more = os.read(fd, _CHUNK) if data else b""
            if not more:
                return data
            parts = [data, more]
            while more:
                more = os.read(fd, _CHUNK)
                parts.append(more)
            return b"".join(parts)
        finally:
            os.close(fd)
    except _VANISHED as e:  # not ``_gone``: a generator's frame costs a few us more
        raise ProcessGone(pid, name) from e


def _readlink(pid: int, name: str) -> str:
    with _gone(pid, name):
        return os.readlink(f"/proc/{pid}/{name}")


def _listdir(pid: int, name: str) -> list[str]:
    with _gone(pid, name):
        return os.listdir(f"/proc/{pid}/{name}")


def _lines(raw: bytes) -> list[str]:
    return os.fsdecode(raw).splitlines()


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


# ---------------------------------------------------------------- status

@dataclass
class Status:
    """The fields of /proc/PID/status ckpt uses (signal sets: bit N-1 = signal N)."""

    state: str           # the letter: R, S, D, T, t, Z, X, ...
    tracer_pid: int
    uids: list[int]      # real, effective, saved, filesystem
    gids: list[int]
    groups: list[int]
    umask: int | None   # None for a zombie (it has no files left)
    no_new_privs: int
    seccomp: int         # 0 off, 1 strict, 2 filter
    sig_pending: int     # SigPnd: queued for the thread
    shared_pending: int  # ShdPnd: queued for the process
    sig_blocked: int
    sig_ignored: int
    sig_caught: int
    cap_effective: int
    threads: int
    cap_inheritable: int = 0
    cap_permitted: int = 0
    cap_bounding: int = 0
    cap_ambient: int = 0
    seccomp_filters: int = 0
    locked_kb: int = 0   # VmLck: the size of the mappings locked in memory (mm->locked_vm)
    rss_kb: int = 0  # VmRSS: its memory in use (the pages smaps and pagemap walk)
    nspids: list[int] = field(default_factory=list)  # NSpid: its PID in each namespace


def parse_status(raw: bytes) -> Status:
    """/proc/PID/status; every line is ``Key:<tab>value``."""
    v: dict[str, str] = {}
    for line in _lines(raw):
        key, _, value = line.partition(":")
        v.setdefault(key, value.strip())

    def ids(key: str) -> list[int]:
        return [int(x) for x in v.get(key, "").split()]

    def hex_(key: str) -> int:
        return int(v.get(key, "0"), 16)

    return Status(
        state=v.get("State", "?")[:1], tracer_pid=int(v.get("TracerPid", "0")),
        uids=ids("Uid"), gids=ids("Gid"), groups=ids("Groups"),
        umask=int(v["Umask"], 8) if "Umask" in v else None,
        no_new_privs=int(v.get("NoNewPrivs", "0")), seccomp=int(v.get("Seccomp", "0")),
        sig_pending=hex_("SigPnd"), shared_pending=hex_("ShdPnd"), sig_blocked=hex_("SigBlk"),
        sig_ignored=hex_("SigIgn"), sig_caught=hex_("SigCgt"), cap_effective=hex_("CapEff"),
        threads=int(v.get("Threads", "1")), cap_inheritable=hex_("CapInh"),
        cap_permitted=hex_("CapPrm"), cap_bounding=hex_("CapBnd"), cap_ambient=hex_("CapAmb"),
        seccomp_filters=int(v.get("Seccomp_filters", "0")),
        locked_kb=int(v.get("VmLck", "0 kB").split()[0]), nspids=ids("NSpid"),
        rss_kb=int(v.get("VmRSS", "0 kB").split()[0]),
    )


def status(pid: int) -> Status:
    return parse_status(_read(pid, "status"))


def thread_status(pid: int, tid: int) -> Status:
    """/proc/PID/task/TID/status: what is the thread's own (credentials, capabilities,
    seccomp, its blocked mask) is its own there."""
    return parse_status(_read(pid, f"task/{tid}/status"))


# ---------------------------------------------------------------- stat

@dataclass
class Stat:
    """/proc/PID/stat (field numbers as in proc(5))."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    tty_nr: int
    tpgid: int
    num_threads: int
    start_time: int  # clock ticks after boot: tells a reused PID from the process dumped
    start_code: int
    end_code: int
    start_stack: int
    start_data: int
    end_data: int
    start_brk: int
    arg_start: int
    arg_end: int
    env_start: int
    env_end: int
    exit_code: int
    exit_signal: int = 17  # the signal its parent gets when it ends (SIGCHLD unless cloned so)


def parse_stat(raw: bytes) -> Stat:
    """/proc/PID/stat. The comm field (between the first "(" and the last ")") may hold
    any byte, spaces, parentheses and ") (" included: the fields after it are found
    from the last ")"."""
    lpar, rpar = raw.index(b"("), raw.rindex(b")")
    comm = os.fsdecode(raw[lpar + 1:rpar])
    f = raw[rpar + 2:].split()

    def g(n: int) -> int:  # field N is f[N - 3] (f[0] is field 3, the state)
        return int(f[n - 3])

    return Stat(
        pid=int(raw[:lpar]), comm=comm, state=f[0].decode("ascii", "replace"),
        ppid=g(4), pgid=g(5), sid=g(6), tty_nr=g(7), tpgid=g(8), num_threads=g(20),
        start_time=g(22), start_code=g(26), end_code=g(27), start_stack=g(28),
        start_data=g(45), end_data=g(46), start_brk=g(47), arg_start=g(48), arg_end=g(49),
        env_start=g(50), env_end=g(51), exit_code=g(52), exit_signal=g(38),
    )


def stat(pid: int) -> Stat:
    return parse_stat(_read(pid, "stat"))


_SIGKILL = 9


def killed_by_signal(pids: Iterable[int]) -> tuple[int, int] | None:
    """The first of ``pids`` that is a zombie a signal killed (one ckpt traces stays a
    zombie until ckpt waits for it), or that SIGKILL took out of a stop and is still
    exiting (its memory gone already: what failed may have read its empty maps), with
    its wait status; None when none is: how a dump or restore tells a process killed
    from outside (kill -9, the OOM killer) from the bare ESRCH or short read that death
    caused."""
    for pid in pids:
        try:
            st = stat(pid)
        except (ProcessGone, OSError):
            continue
        if st.state in ("Z", "X") and st.exit_code & 0x7F:
            return pid, st.exit_code
        if st.state not in ("t", "T") and st.exit_code == _SIGKILL:  # set as it exits
            return pid, st.exit_code
    return None


# ---------------------------------------------------------------- maps

@dataclass
class Vma:
    """One line of /proc/PID/maps (plus VmFlags from smaps)."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str
    flags: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"


_HEX = b"0123456789abcdef"
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def _hex(field: bytes) -> bool:
    return bool(field) and not field.strip(_HEX)


def _vma(line: bytes) -> Vma | None:
    """A line of maps (``START-END PERMS OFFSET MAJOR:MINOR INODE [PATH]``: the path may
    hold spaces); None for any other line."""
    parts = line.split(None, 5)
    if len(parts) < 5:
        return None
    span, perms, offset, dev, inode = parts[:5]
    lo, dash, hi = span.partition(b"-")
    if not (dash and _hex(lo) and _hex(hi) and len(perms) == 4 and _hex(offset)
            and inode.isdigit()):
        return None
    return Vma(int(lo, 16), int(hi, 16), perms.decode(), int(offset, 16), dev.decode(),
               int(inode), os.fsdecode(parts[5]) if len(parts) > 5 else "")


def parse_maps(raw: bytes) -> list[Vma]:
    """/proc/PID/maps or smaps (whose VmFlags lines go to the mapping above them). Only
    a line starting with a hex digit can be a mapping's: smaps's some 25 lines of
    counters per mapping (``Rss:``...) are passed over at once."""
    vmas: list[Vma] = []
    for line in raw.split(b"\n"):
        if line and line[0] in _HEX_DIGITS:
            vma = _vma(line)
            if vma is not None:
                vmas.append(vma)
        elif line.startswith(b"VmFlags:") and vmas:
            vmas[-1].flags = line.decode("ascii", "replace").split()[1:]
    return vmas


_HEX_DIGITS = frozenset(_HEX)


def settle_stopped(pids: list[int], timeout: float = 1.0) -> None:
    """Wait until each of ``pids`` shows as stopped (T). A process detached in a group
    stop runs an instant inside the kernel before it stops again (it never reaches its
    own code): whoever looks right after ckpt returns should see it stopped."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                if stat(pid).state in ("T", "Z", "X"):
                    break
            except ProcessGone:
                break
            time.sleep(0.0005)


def maps(pid: int, with_flags: bool = False) -> list[Vma]:
    """The memory mappings; with ``with_flags`` VmFlags are read from smaps too."""
    return parse_maps(_read(pid, "smaps" if with_flags else "maps"))


def maps_named(pid: int, paths: tuple[str, ...]) -> list[Vma]:
    """The mappings whose path is one of ``paths`` (the vDSO's: ``[vdso]``...), the
    other lines left unparsed (a Python process maps a few hundred)."""
    ends = tuple(b" " + os.fsencode(p) for p in paths)
    return parse_maps(b"\n".join(line for line in _read(pid, "maps").split(b"\n")
                                  if line.endswith(ends)))


# ---------------------------------------------------------------- fds and fdinfo

def fd_numbers(pid: int) -> list[int]:
    return sorted(int(x) for x in _listdir(pid, "fd"))


def fd_link(pid: int, fd: int) -> str:
    return _readlink(pid, f"fd/{fd}")


def _kdev(sdev: int) -> tuple[int, int]:
    """(major, minor) of a dev_t as the kernel keeps it inside (major << 20 | minor)."""
    return sdev >> 20, sdev & 0xFFFFF


@dataclass
class EpollWatch:
    """One ``tfd:`` line of an epoll fd: the watched fd number, events and data."""

    tfd: int
    events: int
    data: int
    ino: int
    major: int
    minor: int


@dataclass
class Inode:
    """An inode as inotify and fanotify fdinfo show it: number, device, and a file
    handle when there is one (kernel/inode_path.py finds its path from them)."""

    ino: int
    major: int
    minor: int
    handle_type: int | None = None
    handle: bytes | None = None

    @property
    def dev(self) -> int:
        return os.makedev(self.major, self.minor)

    def same(self, st: os.stat_result) -> bool:
        return st.st_ino == self.ino and st.st_dev == self.dev


@dataclass
class InotifyWatch:
    """One ``inotify wd:`` line: the watch descriptor, its masks, the watched inode."""

    wd: int
    mask: int
    ignored_mask: int
    inode: Inode


@dataclass
class FanotifyMark:
    """One mark of a fanotify group: ``type`` inode (``inode``), mount (``mnt_id``) or
    filesystem (``major``, ``minor``)."""

    type: str
    mflags: int
    mask: int
    ignored_mask: int
    inode: Inode | None = None
    mnt_id: int = 0
    major: int = 0
    minor: int = 0


@dataclass
class FanotifyGroup:
    """The ``fanotify_init`` flags of a group and its marks, newest first (as listed)."""

    flags: int
    event_flags: int
    marks: list[FanotifyMark] = field(default_factory=list)


@dataclass
class TimerFdState:
    """A timerfd's fdinfo: clock, unread expirations, settime flags, times in ns."""

    clockid: int
    ticks: int
    settime_flags: int
    value_ns: int
    interval_ns: int


@dataclass
class FileLock:
    """One lock as /proc/locks and fdinfo's "lock:" lines show it."""

    kind: str    # POSIX, OFDLCK, FLOCK, LEASE, DELEG, ACCESS
    state: str   # ADVISORY for locks; ACTIVE, BREAKING or BREAKER for leases
    type: str    # READ, WRITE or UNLCK (a lease being broken shows its target)
    pid: int     # who took it (-1 for OFD locks, which belong to no process)
    major: int
    minor: int
    ino: int
    start: int
    end: int | None  # the last byte locked; None: to the end of the file, however long
    waiting: bool = False  # a request blocked behind the lock above it ("->")


def parse_lock(line: str) -> FileLock | None:
    """A line of /proc/locks (or what follows "lock:" in fdinfo): ``N: [-> ]KIND STATE
    TYPE PID MAJOR:MINOR:INODE START END``; None if it has no inode or a form ckpt does
    not know."""
    parts = line.split()
    if len(parts) < 2 or not parts[0].endswith(":") or not parts[0][:-1].isdigit():
        return None
    waiting = parts[1] == "->"
    fields = parts[2:] if waiting else parts[1:]
    if len(fields) != 7:
        return None
    kind, state, typ, pid, where, start, end = fields
    dev = where.split(":")
    if (len(dev) != 3 or not all(c in _HEX_CHARS for c in dev[0] + dev[1])
            or not dev[0] or not dev[1] or not dev[2].isdigit()
            or not pid.removeprefix("-").isdigit() or not start.isdigit()
            or not (end.isdigit() or end == "EOF")):
        return None
    return FileLock(kind, state, typ, int(pid), int(dev[0], 16), int(dev[1], 16), int(dev[2]),
                    int(start), None if end == "EOF" else int(end), waiting)


def parse_locks(raw: bytes) -> list[FileLock]:
    """/proc/locks: every lock of the system, and the requests waiting on them."""
    return [lk for lk in map(parse_lock, _lines(raw)) if lk is not None]


def locks() -> list[FileLock]:
    with open("/proc/locks", "rb") as f:
        return parse_locks(f.read())


class LocksSoon:
    """/proc/locks, read by a thread of its own from now on: the kernel makes its reader
    wait for an RCU grace period (it takes the lock lists' rwsem for writing), 4 to 15
    ms of idle wall time that the caller spends on other work; ``result`` waits for it.
    The read starts at once: what it shows is the system's locks from now."""

    def __init__(self) -> None:
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._raw = b""
        self._error: BaseException | None = None
        _thread.start_new_thread(self._read, ())

    def _read(self) -> None:
        try:
            with open("/proc/locks", "rb") as f:
                self._raw = f.read()
        except BaseException as e:  # raised by ``result``, in the thread that asks
            self._error = e
        finally:
            self._done.release()

    def result(self) -> list[FileLock]:
        with self._done:
            pass
        if self._error is not None:
            raise self._error
        return parse_locks(self._raw)


def warm_locks() -> None:
    """Start a read of /proc/locks whose result nobody asks for, so that the read that
    counts (a dump's LocksSoon, once its tree is frozen) finds the RCU grace period its
    reader waits for passed, or under way: the kernel skips that wait for a reader who
    comes within about one grace period of the last one, and ``ckpt dump`` calls this
    before it imports the dumper (13 ms or more before that read). A thread reading it
    again and again until the freeze kept the wait away more often under load, but its
    switches of the GIL cost the dump of sleep 4 ms of CPU at load 9."""
    LocksSoon()


@dataclass
class FdInfo:
    """/proc/PID/fdinfo/FD: what every fd has, then what its kind adds (None or empty
    for other kinds). ``flags`` are the file status flags and access mode, O_CLOEXEC
    (0o2000000) included; ``unparsed`` holds watch and mark lines of a form ckpt does
    not know, for the kind to refuse; ``other`` every other ``key: value`` line."""

    pos: int = 0
    flags: int = 0
    mnt_id: int = 0
    ino: int = 0
    eventfd_count: int | None = None
    eventfd_semaphore: bool | None = None  # not shown before Linux 6.6
    sigmask: int | None = None
    timerfd: TimerFdState | None = None
    epoll: list[EpollWatch] = field(default_factory=list)
    inotify: list[InotifyWatch] = field(default_factory=list)
    fanotify: FanotifyGroup | None = None
    locks: list[FileLock] = field(default_factory=list)  # held on this open file
    unparsed: list[str] = field(default_factory=list)
    other: dict[str, str] = field(default_factory=dict)


_H = r"([0-9a-fA-F]+)"
_HANDLE = rf"(?:\s+fhandle-bytes:{_H}\s+fhandle-type:{_H}\s+f_handle:{_H})?"
_EPOLL_RE = LazyPattern(rf"^tfd:\s*(\d+)\s+events:\s*{_H}\s+data:\s*{_H}\s+pos:\s*-?\d+"
                       rf"\s+ino:\s*{_H}\s+sdev:\s*{_H}")
_INOTIFY_RE = LazyPattern(rf"^inotify\s+wd:{_H}\s+ino:{_H}\s+sdev:{_H}\s+mask:{_H}"
                         rf"\s+ignored_mask:{_H}{_HANDLE}")
_FAN_GROUP_RE = LazyPattern(rf"^fanotify flags:{_H} event-flags:{_H}$")
_FAN_TAIL = rf"mflags:{_H} mask:{_H} ignored_mask:{_H}"
_FAN_INODE_RE = LazyPattern(rf"^fanotify ino:{_H} sdev:{_H} {_FAN_TAIL}{_HANDLE}")
_FAN_MOUNT_RE = LazyPattern(rf"^fanotify mnt_id:{_H} {_FAN_TAIL}$")
_FAN_SB_RE = LazyPattern(rf"^fanotify sdev:{_H} {_FAN_TAIL}$")
_TIMES_RE = LazyPattern(r"^\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)$")


def _inode(ino: str, sdev: str, nbytes: str | None, htype: str | None,
           hexbytes: str | None) -> Inode:
    """An inode from fdinfo's hex fields ``ino``, ``sdev`` and, if given, its file handle
    (``fhandle-bytes``, ``fhandle-type``, ``f_handle``: left out unless the handle has
    that many bytes)."""
    major, minor = _kdev(int(sdev, 16))
    out = Inode(int(ino, 16), major, minor)
    if nbytes is not None and htype is not None and hexbytes is not None:
        raw = bytes.fromhex(hexbytes)
        if len(raw) == int(nbytes, 16):
            out.handle_type, out.handle = int(htype, 16), raw
    return out


def _ns(pair: str) -> int:
    """fdinfo's "(SEC, NSEC)" in nanoseconds."""
    m = _TIMES_RE.match(pair)
    if m is None:
        raise ValueError(f"not a (sec, nsec) pair: {pair!r}")
    return int(m[1]) * 1_000_000_000 + int(m[2])


def _fanotify_mark(line: str) -> FanotifyMark | None:
    if m := _FAN_INODE_RE.match(line):
        return FanotifyMark("inode", int(m[3], 16), int(m[4], 16), int(m[5], 16),
                            inode=_inode(m[1], m[2], m[6], m[7], m[8]))
    if m := _FAN_MOUNT_RE.match(line):
        return FanotifyMark("mount", int(m[2], 16), int(m[3], 16), int(m[4], 16),
                            mnt_id=int(m[1], 16))
    if m := _FAN_SB_RE.match(line):
        major, minor = _kdev(int(m[1], 16))
        return FanotifyMark("filesystem", int(m[2], 16), int(m[3], 16), int(m[4], 16),
                            major=major, minor=minor)
    return None


def parse_fdinfo(raw: bytes) -> FdInfo:
    """/proc/PID/fdinfo/FD of any kind of file (numbers as the kernel prints them:
    ``flags`` octal, watch and mark fields hex, ``tfd`` decimal)."""
    info = FdInfo()
    kv: dict[str, str] = {}
    for line in (ln.strip() for ln in _lines(raw)):
        if line.startswith("tfd:"):
            if m := _EPOLL_RE.match(line):
                major, minor = _kdev(int(m[5], 16))
                info.epoll.append(EpollWatch(int(m[1]), int(m[2], 16), int(m[3], 16),
                                             int(m[4], 16), major, minor))
            else:
                info.unparsed.append(line)
        elif line.startswith("inotify"):
            if m := _INOTIFY_RE.match(line):
                info.inotify.append(InotifyWatch(int(m[1], 16), int(m[4], 16), int(m[5], 16),
                                                 _inode(m[2], m[3], m[6], m[7], m[8])))
            else:
                info.unparsed.append(line)
        elif line.startswith("fanotify"):
            if m := _FAN_GROUP_RE.match(line):
                info.fanotify = FanotifyGroup(int(m[1], 16), int(m[2], 16))
            elif (mark := _fanotify_mark(line)) is not None and info.fanotify is not None:
                info.fanotify.marks.append(mark)
            else:
                info.unparsed.append(line)
        elif line.startswith("lock:"):
            if (lock := parse_lock(line[5:])) is not None:
                info.locks.append(lock)
            else:
                info.unparsed.append(line)
        else:
            key, sep, value = line.partition(":")
            if sep:
                kv.setdefault(key.strip(), value.strip())
    info.pos = int(kv.pop("pos", "0"))
    info.flags = int(kv.pop("flags", "0"), 8)
    info.mnt_id = int(kv.pop("mnt_id", "0"))
    info.ino = int(kv.pop("ino", "0"))
    if "eventfd-count" in kv:
        info.eventfd_count = int(kv.pop("eventfd-count"), 16)
        if "eventfd-semaphore" in kv:
            info.eventfd_semaphore = kv.pop("eventfd-semaphore") == "1"
    if "sigmask" in kv:
        info.sigmask = int(kv.pop("sigmask"), 16)
    if "clockid" in kv and "it_value" in kv:
        info.timerfd = TimerFdState(
            clockid=int(kv.pop("clockid")), ticks=int(kv.pop("ticks", "0")),
            settime_flags=int(kv.pop("settime flags", "0"), 8),
            value_ns=_ns(kv.pop("it_value")), interval_ns=_ns(kv.pop("it_interval", "(0, 0)")))
    info.other = kv
    return info


def fdinfo(pid: int, fd: int) -> FdInfo:
    """/proc/PID/fdinfo/FD, typed (see ``FdInfo``)."""
    return parse_fdinfo(_read(pid, f"fdinfo/{fd}"))


# ---------------------------------------------------------------- the rest

def auxv(pid: int) -> bytes:
    return _read(pid, "auxv")


def exe(pid: int) -> str:
    return _readlink(pid, "exe")


def cwd(pid: int) -> str:
    return _readlink(pid, "cwd")


def root(pid: int) -> str:
    return _readlink(pid, "root")


def personality(pid: int) -> int:
    return int(_read(pid, "personality").strip(), 16)


def children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid`` (a thread that exits meanwhile has none)."""
    out: list[int] = []
    for tid in _listdir(pid, "task"):
        try:
            out.extend(int(x) for x in _read(pid, f"task/{tid}/children").split())
        except ProcessGone:
            continue
    return out


def threads(pid: int) -> list[int]:
    return sorted(int(t) for t in _listdir(pid, "task"))


def parse_comm(raw: bytes) -> str:
    """/proc/PID/comm: the name and one newline (the name itself may end with one)."""
    return os.fsdecode(raw[:-1] if raw.endswith(b"\n") else raw)


def thread_comm(pid: int, tid: int) -> str:
    """The name of thread ``tid`` of process ``pid`` (its comm), any bytes but NUL."""
    return parse_comm(_read(pid, f"task/{tid}/comm"))


@dataclass
class PosixTimer:
    """One block of /proc/PID/timers: a POSIX timer and how it notifies."""

    id: int
    signo: int
    value: int     # sigev_value
    notify: str    # "signal", "none" or "thread"
    to_thread: bool  # SIGEV_THREAD_ID: ``target`` is a TID, else the PID
    target: int
    clock: int


_TIMER_RE = LazyPattern(r"ID: (-?\d+)\nsignal: (-?\d+)/([0-9a-f]+)\n"
                       r"notify: (\w+)/(pid|tid)\.(\d+)\nClockID: (-?\d+)")


def parse_timers(raw: bytes) -> list[PosixTimer]:
    """/proc/PID/timers: one block per timer, each starting with ``ID:``."""
    blocks: list[str] = []
    for line in _lines(raw):
        if line.startswith("ID:"):  # "ClockID:" lines do not
            blocks.append("")
        if blocks:
            blocks[-1] += line + "\n"
    out = []
    for block in blocks:
        m = _TIMER_RE.search(block)
        if m is None:
            raise ValueError(f"cannot parse a block of /proc/PID/timers: {block!r}")
        out.append(PosixTimer(int(m[1]), int(m[2]), int(m[3], 16), m[4], m[5] == "tid",
                              int(m[6]), int(m[7])))
    return out


def posix_timers(pid: int) -> list[PosixTimer]:
    """The POSIX timers of ``pid`` (ValueError for a block of an unknown form)."""
    return parse_timers(_read(pid, "timers"))


def pagemap_flags(pid: int, start: int, npages: int, fd: int | None = None) -> bytes:
    """The top byte of each pagemap entry of ``npages`` pages from ``start``.

    Bit 7 is "present", bit 6 "swapped", bit 5 "file page or shared anon".
    Returning only that byte per page keeps later scanning in C (bytes.translate, re).
    """
    own = fd is None
    if fd is None:
        with _gone(pid, "pagemap"):
            fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        data = os.pread(fd, npages * 8, (start // 4096) * 8)
    finally:
        if own:
            os.close(fd)
    return data[7::8]


def thread_file(pid: int, tid: int, name: str) -> bytes:
    """/proc/PID/task/TID/NAME, as bytes (loginuid, ...)."""
    return _read(pid, f"task/{tid}/{name}")


def oom_score_adj(pid: int) -> int:
    return int(_read(pid, "oom_score_adj"))


def autogroup_nice(pid: int) -> int:
    """The nice value of the autogroup (the scheduling group of its session) ``pid`` is
    in, from /proc/PID/autogroup ("/autogroup-N nice K"); 0 without autogroups."""
    try:
        text = _read(pid, "autogroup")
    except FileNotFoundError:  # a kernel without CONFIG_SCHED_AUTOGROUP
        return 0
    _, _, nice = text.partition(b" nice ")
    try:
        return int(nice)
    except ValueError:  # autogroups off: nothing shown
        return 0


def numa_maps(pid: int) -> list[tuple[int, str]]:
    """/proc/PID/numa_maps: each mapping's start and the rest of its line (its NUMA
    policy, then page counts)."""
    out = []
    for line in _lines(_read(pid, "numa_maps")):
        addr, _, rest = line.partition(" ")
        out.append((int(addr, 16), rest))
    return out


def coredump_filter(pid: int) -> int:
    """Which mappings a core dump of the process holds (a hex bit mask)."""
    return int(_read(pid, "coredump_filter"), 16)


RLIM_INFINITY = (1 << 64) - 1


def parse_limits(raw: bytes) -> list[tuple[int, int]]:
    """/proc/PID/limits: (soft, hard) of each resource in ``LIMIT_NAMES`` order, the
    kernel's order; "unlimited" is RLIM_INFINITY. The kernel prints fixed-width columns
    (``%-25s %-20s %-20s %-10s``): the names hold spaces and the units may be empty."""
    out: list[tuple[int, int]] = []
    for line in _lines(raw)[1:]:
        if line.strip():
            out.append((_limit(line[26:47].strip()), _limit(line[47:68].strip())))
    if len(out) != len(LIMIT_NAMES):
        raise ValueError(f"/proc/PID/limits has {len(out)} limits, expected "
                         f"{len(LIMIT_NAMES)}")
    return out


def _limit(text: str) -> int:
    return RLIM_INFINITY if text == "unlimited" else int(text)


def limits(pid: int) -> list[tuple[int, int]]:
    """The rlimits of ``pid`` (readable for any process, unlike prlimit64 on another
    user's process without CAP_SYS_RESOURCE)."""
    return parse_limits(_read(pid, "limits"))


LIMIT_NAMES = (
    "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock",
    "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime",
)
