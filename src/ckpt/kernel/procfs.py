"""Small, named parsers for /proc/PID files.

Each function reads one file and raises ``ProcessGone`` when the process has
vanished, so callers can tell "the process exited" from other I/O errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field


class ProcessGone(Exception):
    """The process (or the fd) we were reading about no longer exists."""

    def __init__(self, pid: int, what: str = ""):
        super().__init__(f"process {pid} does not exist{(' (' + what + ')') if what else ''}")
        self.pid = pid


def _read(pid: int, name: str, binary: bool = False) -> str | bytes:
    path = f"/proc/{pid}/{name}"
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(pid, name) from e


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of raw string values."""
    out = {}
    for line in str(_read(pid, "status")).splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


@dataclass
class Stat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    tty_nr: int
    tpgid: int
    num_threads: int
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


def stat(pid: int) -> Stat:
    """/proc/PID/stat; the comm field may hold spaces and parentheses."""
    raw = str(_read(pid, "stat"))
    lpar, rpar = raw.index("("), raw.rindex(")")
    comm = raw[lpar + 1:rpar]
    f = raw[rpar + 2:].split()
    # f[0] is field 3 (state); field N is f[N - 3].
    def g(n: int) -> int:
        return int(f[n - 3])
    return Stat(
        pid=int(raw[:lpar]), comm=comm, state=f[0], ppid=g(4), pgid=g(5), sid=g(6),
        tty_nr=g(7), tpgid=g(8), num_threads=g(20), start_code=g(26), end_code=g(27),
        start_stack=g(28), start_data=g(45), end_data=g(46), start_brk=g(47),
        arg_start=g(48), arg_end=g(49), env_start=g(50), env_end=g(51), exit_code=g(52),
    )


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


_MAPS_RE = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$"
)


def maps(pid: int, with_flags: bool = False) -> list[Vma]:
    """The memory mappings; with ``with_flags`` VmFlags are read from smaps too."""
    text = str(_read(pid, "smaps" if with_flags else "maps"))
    vmas: list[Vma] = []
    for line in text.splitlines():
        m = _MAPS_RE.match(line)
        if m:
            vmas.append(Vma(int(m[1], 16), int(m[2], 16), m[3], int(m[4], 16), m[5],
                            int(m[6]), m[7]))
        elif line.startswith("VmFlags:") and vmas:
            vmas[-1].flags = line.split()[1:]
    return vmas


def fd_numbers(pid: int) -> list[int]:
    try:
        return sorted(int(x) for x in os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(pid, "fd") from e


def fd_link(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(pid, f"fd {fd}") from e


def fdinfo_lines(pid: int, fd: int) -> list[str]:
    """/proc/PID/fdinfo/FD line by line, stripped: kinds with one line per watch or mark
    (epoll, inotify, fanotify) parse these."""
    return [ln.strip() for ln in str(_read(pid, f"fdinfo/{fd}")).splitlines()]


def fdinfo(pid: int, fd: int) -> dict[str, str]:
    """/proc/PID/fdinfo/FD: pos, flags (octal), mnt_id, ino and kind-specific lines."""
    out: dict[str, str] = {}
    for line in str(_read(pid, f"fdinfo/{fd}")).splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def auxv(pid: int) -> bytes:
    return bytes(_read(pid, "auxv", binary=True))


def exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except (FileNotFoundError, ProcessLookupError) as e:
        raise ProcessGone(pid, "exe") from e


def cwd(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/cwd")


def root(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/root")


def personality(pid: int) -> int:
    return int(str(_read(pid, "personality")).strip(), 16)


def children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid``."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError as e:
        raise ProcessGone(pid, "task") from e
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            continue
    return out


def threads(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError as e:
        raise ProcessGone(pid, "task") from e


def thread_comm(pid: int, tid: int) -> str:
    """The name of thread ``tid`` of process ``pid`` (its comm)."""
    return str(_read(pid, f"task/{tid}/comm")).rstrip("\n")


def posix_timers(pid: int) -> list[str]:
    """Raw lines of /proc/PID/timers (one block per POSIX timer)."""
    blocks: list[str] = []
    for line in str(_read(pid, "timers")).splitlines():
        if line.startswith("ID:"):  # each block starts so; "ClockID:" lines do not
            blocks.append("")
        if blocks:
            blocks[-1] += line + "\n"
    return blocks


def pagemap_flags(pid: int, start: int, npages: int, fd: int | None = None) -> bytes:
    """The top byte of each pagemap entry of ``npages`` pages from ``start``.

    Bit 7 is "present", bit 6 "swapped", bit 5 "file page or shared anon".
    Returning only that byte per page keeps later scanning in C (bytes.translate, re).
    """
    own = fd is None
    if own:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        data = os.pread(fd, npages * 8, (start // 4096) * 8)
    finally:
        if own:
            os.close(fd)
    return data[7::8]


LIMIT_NAMES = (
    "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock",
    "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime",
)
