"""Helpers shared by ckpt's tests: target processes, their output, and the ckpt CLI.

Everything here works on real processes and the real kernel. Waits poll with a
timeout; nothing sleeps for a fixed long time. Every timeout and every quiet window
(a wait that proves nothing more happens) is stretched by one factor,
``CKPT_TEST_SLOWNESS`` (default 1), for slow or loaded machines.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
PROGS = TESTS / "progs"
BUILD = TESTS / ".build"
PYTHON = sys.executable
POLL = 0.01
QUIET = 0.3  # seconds without a change that prove a process does nothing more (scaled)

T = TypeVar("T")


def target_env() -> dict[str, str]:
    """The environment of a target: ours without PYTHONUNBUFFERED. Unbuffered, CPython
    writes each piece of a print apart, and the lines of processes sharing their output
    interleave ("P 10W2 10"); buffered, a print with flush=True is one write."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}

Builder = Callable[..., Path]
"""The ``build`` fixture: ``build(name, static=False)`` -> a compiled tests/progs/NAME.c."""


def _slowness() -> float:
    raw = os.environ.get("CKPT_TEST_SLOWNESS", "1")
    try:
        factor = float(raw)
    except ValueError:
        factor = 0.0
    if not 1 <= factor < float("inf"):
        raise ValueError(f"CKPT_TEST_SLOWNESS={raw!r}: expected a number of at least 1 "
                         f"(how many times slower than usual this machine is)")
    return factor


SLOWNESS = _slowness()


def scaled(seconds: float) -> float:
    """``seconds`` stretched by CKPT_TEST_SLOWNESS: for timeouts and quiet windows."""
    return seconds * SLOWNESS


def wait_until(pred: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds
    (scaled)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        res = pred()
        if res:
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(POLL)


# ------------------------------------------------------------------ processes

def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` (R, S, T, t, Z, ...), or None when it does not exist."""
    try:
        return proc_stat_fields(pid)[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of raw values."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def proc_stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the name: state, ppid, pgrp, session, tty_nr,
    tpgid, ..."""
    with open(f"/proc/{pid}/stat", "rb") as f:  # the name may hold any byte
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].decode().split()


KCMP_FILE, KCMP_FILES, KCMP_FS = 0, 2, 3


def kcmp_same(pid1: int, pid2: int, kind: int, idx1: int = 0, idx2: int = 0) -> bool:
    """Whether two processes share one kernel object (kcmp(2)): an open file
    description (KCMP_FILE, with both fd numbers), an fd table (KCMP_FILES), an fs
    struct (KCMP_FS)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(312, pid1, pid2, kind, idx1, idx2) == 0


def proc_ids(pid: int) -> tuple[int, int, int]:
    """(ppid, pgid, sid) of ``pid``."""
    fields = proc_stat_fields(pid)
    return int(fields[1]), int(fields[2]), int(fields[3])


def proc_ppid(pid: int) -> int:
    return proc_ids(pid)[0]


def only_child(pid: int, timeout: float = 5.0) -> int:
    """The one child of ``pid``, waiting until it has exactly one."""
    def one() -> int | None:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        return kids[0] if len(kids) == 1 else None

    return wait_until(one, timeout, f"the child of {pid}")


def is_alive(pid: int) -> bool:
    """True when ``pid`` exists and is neither a zombie nor dead."""
    return proc_state(pid) not in (None, "Z", "X")


def left_behind(pid: int) -> bool:
    """True when a process runs under ``pid`` as our child: what a failed restore would
    leave (re-parented to us, the subreaper). A process of the machine that took the
    PID, freed by the dump, meanwhile (other tests, other helpers) is not."""
    try:
        fields = proc_stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X") and int(fields[1]) == os.getpid()


def my_children() -> set[int]:
    """Direct children of every thread of this (pytest) process."""
    kids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
        except FileNotFoundError:
            continue
    return kids



def reap_guards(before: set[int], comm: str = "ckpt") -> None:
    """Reap the guard (src/ckpt/guard.py) a killed ckpt left: a fork of ckpt (named
    ``comm``), re-parented to this process (a subreaper) and exiting once done, among
    the children that came after ``before``."""
    for pid in my_children() - before:
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except FileNotFoundError:
            continue
        if name == comm:
            os.waitpid(pid, 0)

def free_pid() -> int:
    """A PID that no process holds right now (highest first, far from new PIDs)."""
    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read()) - 1
    for pid in range(top, 300, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free PID found")


class Output:
    """The stdout file of a target; only complete lines count."""

    def __init__(self, path: Path):
        self.path = path

    def lines(self) -> list[str]:
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return text[: text.rfind("\n") + 1].splitlines()

    def numbers(self) -> list[int]:
        """The lines that are plain numbers (the tick counters of the test programs)."""
        return [int(x) for x in self.lines() if x.isdigit()]

    def first_field_numbers(self) -> list[int]:
        """The leading number of each line that starts with one ("12 ..." -> 12)."""
        out = []
        for line in self.lines():
            head = line.split(" ", 1)[0]
            if head.isdigit():
                out.append(int(head))
        return out

    def wait_numbers(self, count: int, timeout: float = 10.0) -> list[int]:
        """Wait until at least ``count`` number lines were printed."""
        def enough() -> list[int] | None:
            nums = self.numbers()
            return nums if len(nums) >= count else None

        return wait_until(enough, timeout, f"{count} number lines in {self.path}")

    def wait_line(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """Wait for a line matching regex ``pattern`` at or after line index ``start``."""
        rx = re.compile(pattern)

        def find() -> str | None:
            return next((ln for ln in self.lines()[start:] if rx.search(ln)), None)

        return wait_until(find, timeout, f"a line matching {pattern!r} in {self.path}")

    def wait_quiet(self, quiet: float = QUIET, timeout: float = 5.0) -> list[str]:
        """Wait until the output did not change for ``quiet`` seconds; return its lines.
        Both times are scaled."""
        quiet, deadline = scaled(quiet), time.monotonic() + scaled(timeout)
        last = self.lines()
        since = time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} keeps growing")
            time.sleep(POLL)
            now = self.lines()
            if now != last:
                last, since = now, time.monotonic()
        return last


def assert_consecutive(nums: Sequence[int], start: int = 0) -> None:
    """``nums`` must be start, start+1, ...: no number skipped or repeated."""
    assert nums, "no numbers printed"
    expected = list(range(start, start + len(nums)))
    if list(nums) != expected:
        bad = next(i for i, (a, b) in enumerate(zip(nums, expected, strict=True)) if a != b)
        raise AssertionError(f"sequence broken at index {bad}: "
                             f"...{list(nums[max(0, bad - 3):bad + 3])}..., "
                             f"expected {expected[bad]}")


def tagged_numbers(out: Output, tag: str) -> list[int]:
    """N of every line "N TAG" (a thread's or process's ticks on shared output), in order."""
    return [int(ln.split()[0]) for ln in out.lines() if ln.endswith(f" {tag}")]


def assert_tags_carry_on(out: Output, tags: Sequence[str], more: int = 2) -> None:
    """Each tag prints ``more`` new ticks, and its ticks are consecutive from 0."""
    for tag in tags:
        n = len(tagged_numbers(out, tag))
        wait_until(lambda t=tag, n=n: len(tagged_numbers(out, t)) >= n + more, 10,
                   f"{more} more ticks of {tag} in {out.path}")
        assert_consecutive(tagged_numbers(out, tag))


def assert_silent(pid: int, out: Output, quiet: float = QUIET) -> list[str]:
    """``pid`` stays alive and prints no new line for ``quiet`` seconds (scaled): it is
    held (stopped, blocked), not dead. Returns its lines."""
    before = out.lines()
    deadline = time.monotonic() + scaled(quiet)
    while True:
        assert is_alive(pid), f"process {pid} ended (state {proc_state(pid)}) while silent"
        new = out.lines()[len(before):]
        assert not new, f"process {pid} printed {new[:5]} while it should print nothing"
        if time.monotonic() > deadline:
            return before
        time.sleep(POLL)


@dataclass
class Proc:
    """A process a test started or restored, and the file its stdout goes to."""

    pid: int
    out: Output
    popen: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    argv: list[str] = field(default_factory=list)


class Procs:
    """Starts targets and tracks them (and restored processes) to kill and reap them all."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.tracked: list[Proc] = []
        self.children_before = my_children()

    def start(self, argv: Sequence[str | os.PathLike[str]], name: str = "target",
              cwd: Path | None = None, append: bool = False) -> Proc:
        """Start ``argv`` in a new session, stdout+stderr to ``tmp_path/NAME.out``
        (opened with O_APPEND with ``append``: what each restore of one image writes
        then follows what the one before wrote, instead of overwriting it)."""
        out = self.tmp_path / f"{name}.out"
        args = [os.fspath(a) for a in argv]
        with open(out, "ab" if append else "wb") as f, open(os.devnull, "rb") as null:
            popen = subprocess.Popen(args, stdin=null, stdout=f, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=cwd, env=target_env())
        proc = Proc(popen.pid, Output(out), popen, os.pidfd_open(popen.pid), args)
        self.tracked.append(proc)
        return proc

    def adopt(self, pid: int, out: Output) -> Proc:
        """Track a restored process (it is our child: we are a child subreaper)."""
        proc = Proc(pid, out, None, os.pidfd_open(pid))
        self.tracked.append(proc)
        return proc

    def wait_gone(self, proc: Proc | int, timeout: float = 10.0) -> int | None:
        """Wait until the process is fully gone, reaping it if it is ours.

        Returns its exit code as ``Popen.returncode`` spells it (-9 for SIGKILL) when
        this process reaped it, else None.
        """
        p = proc if isinstance(proc, Proc) else next(
            (t for t in reversed(self.tracked) if t.pid == proc), None)
        pid = proc.pid if isinstance(proc, Proc) else proc
        if p is not None and p.popen is not None and p.popen.returncode is None:
            try:
                return p.popen.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"process {pid} still there after {scaled(timeout)} s "
                                     f"(state {proc_state(pid)})") from None
        code: list[int | None] = [None]

        def gone() -> bool:
            try:
                wpid, status = os.waitpid(pid, os.WNOHANG)
                if wpid == pid:
                    code[0] = os.waitstatus_to_exitcode(status)
                    return True
            except ChildProcessError:
                pass
            return not os.path.exists(f"/proc/{pid}")

        wait_until(gone, timeout, f"process {pid} to be gone")
        return code[0]

    def cleanup(self) -> None:
        """Kill and reap every tracked process and every new child (restored ones too)."""
        self.kill_tracked()
        self.kill_new_children()

    def kill_tracked(self) -> None:
        """Kill and reap the processes this test started or adopted."""
        for p in self.tracked:
            try:
                if p.pidfd >= 0:
                    signal.pidfd_send_signal(p.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except OSError:
                pass
            if p.popen is not None:
                p.popen.kill()
        for p in self.tracked:
            try:
                self.wait_gone(p, timeout=5.0)
            except AssertionError:
                pass
            if p.pidfd >= 0:
                os.close(p.pidfd)
                p.pidfd = -1

    def kill_new_children(self) -> None:
        """Anything else that became our child during the test (a restored process whose
        PID the test never learnt, a child of a killed ckpt): kill and reap it too."""
        for pid in my_children() - self.children_before:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def signal_report(proc: Proc, end: str = r"^END") -> list[str]:
    """Send SIGUSR1 to ``proc`` (a test program that reports on it) and return the lines
    it prints, up to the one matching ``end`` (left out)."""
    start = len(proc.out.lines())
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
    last = proc.out.wait_line(end, start=start)
    lines = proc.out.lines()[start:]
    return lines[:lines.index(last)]


def start_with_pid(procs: Procs, argv: list[str | os.PathLike[str]], pid: int,
                   timeout: float = 30.0) -> Proc:
    """Start ``argv`` under PID ``pid`` (clone3 with set_tid, progs/with_pid.py: no other
    process can take it in between); while another process holds it, wait for it to go."""
    out = procs.tmp_path / f"holder-{pid}.out"

    def started() -> bool:
        with open(out, "wb") as f:
            rc = subprocess.run([PYTHON, PROGS / "with_pid.py", str(pid), *map(os.fspath, argv)],
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.PIPE,
                                env=target_env(), timeout=scaled(30)).returncode
        if rc not in (0, errno.EEXIST):
            raise AssertionError(f"with_pid.py {pid}: exit status {rc}")
        return rc == 0

    wait_until(started, timeout, f"PID {pid}, held by another process, to be free")
    proc = procs.adopt(pid, Output(out))
    proc.argv = [os.fspath(a) for a in argv]
    return proc


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port of ``kind`` nobody uses now, below the range the kernel picks ports
    from (bind to port 0, connect): another test, here or another helper's, is never given
    it by the kernel between this pick and a server's bind, nor between a dump and the
    restore that binds it again."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(10000, low) if low > 11000 else 0
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise AssertionError("no free loopback port found")


# ------------------------------------------------------------------ the ckpt CLI

def ckpt_cmd() -> list[str]:
    """How to run the ckpt CLI: the venv's console script next to our interpreter."""
    script = Path(PYTHON).with_name("ckpt")
    return [str(script)] if script.exists() else [PYTHON, "-m", "ckpt"]


@contextlib.contextmanager
def ckpt_stopped_at(point: str, *args: str | int | os.PathLike[str]
                    ) -> Iterator[subprocess.Popen[str]]:
    """``ckpt ARGS`` started with ``CKPT_FAULT=POINT:stop`` and stopped there (its stderr
    a pipe); the caller sends it signals, lets it go on (SIGCONT) and waits for it. Killed
    on the way out if it still runs."""
    env = dict(os.environ, CKPT_FAULT=f"{point}:stop")
    p = subprocess.Popen(ckpt_cmd() + [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
                                       for a in args],
                         env=env, text=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: proc_state(p.pid) in ("T", "Z", None), 60, f"ckpt to stop at {point}")
        assert proc_state(p.pid) == "T", f"ckpt never reached {point}"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

def run_ckpt(*args: str | int | os.PathLike[str], timeout: float = 60.0
             ) -> subprocess.CompletedProcess[str]:
    """Run ``ckpt ARGS``; return the finished process (stdout/stderr as text).
    ``timeout`` is scaled."""
    argv = ckpt_cmd() + [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=scaled(timeout),
                          stdin=subprocess.DEVNULL)


def ckpt_ok(*args: str | int | os.PathLike[str], timeout: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
    """Run ``ckpt ARGS`` and insist that it succeeds."""
    res = run_ckpt(*args, timeout=timeout)
    assert res.returncode == 0, (f"ckpt {' '.join(map(str, args))} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def ckpt_fails(*args: str | int | os.PathLike[str], code: int = 1, timeout: float = 60.0
               ) -> str:
    """Run ``ckpt ARGS``, insist it fails cleanly with ``code``; return its stderr."""
    res = run_ckpt(*args, timeout=timeout)
    assert res.returncode == code, (f"ckpt {' '.join(map(str, args))} exited "
                                    f"{res.returncode}, expected {code}\nstderr: {res.stderr}")
    assert "Traceback" not in res.stderr, res.stderr
    return res.stderr


def edit_image(images: Path, name: str, change: Callable[[Any], object]) -> None:
    """Change JSON image ``name`` with ``change(doc)`` and recompute the checksums, as
    the image format documents them (what anyone who can write the folder can do)."""
    from ckpt.images import INVENTORY, _canonical
    doc = json.loads((images / name).read_text())
    change(doc)
    data = json.dumps(doc).encode()
    (images / name).write_bytes(data)
    inv = json.loads((images / INVENTORY).read_text())
    inv["files"][name] = {"size": len(data), "crc32": zlib.crc32(data)}
    del inv["crc32"]
    inv["crc32"] = zlib.crc32(_canonical(inv))
    (images / INVENTORY).write_text(json.dumps(inv))


class OwnMemory:
    """A buffer of this process's memory, which pages.fill writes into as into a
    restored process's (unit tests)."""

    def __init__(self, size: int):
        self.buf = ctypes.create_string_buffer(size)
        self.addr = ctypes.addressof(self.buf)

    def runs(self, pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(self.addr + at, n) for at, n in pieces]

    def bytes(self, at: int, n: int) -> bytes:
        return self.buf.raw[at:at + n]


def pages_bytes(images: Path, pid: int) -> int:
    """The size of process ``pid``'s page data in ``images``: its pages file and, when
    striped (pages.stripes), the other files of its stripes."""
    names = [f"pages-{pid}.img"] + [p.name for p in images.glob(f"pages-{pid}-*.img")]
    return sum((images / name).stat().st_size for name in names)


# ------------------------------------------------------------------ a whole cycle

def dump_and_check_dead(procs: Procs, target: Proc, images: Path, *extra: str,
                        timeout: float = 60.0) -> list[int]:
    """Dump ``target`` (killing it), check it died of SIGKILL; return its numbers so far."""
    ckpt_ok("dump", "-t", target.pid, "-D", images, *extra, timeout=timeout)
    code = procs.wait_gone(target)
    assert code == -signal.SIGKILL, f"dumped process ended with {code}, expected SIGKILL"
    assert not os.path.exists(f"/proc/{target.pid}")
    assert (images / "inventory.json").is_file()
    return target.out.numbers()


def restore_detached(procs: Procs, pid: int, out: Output, images: Path, *extra: str,
                     timeout: float = 60.0) -> Proc:
    """``ckpt restore -d``; check the process runs under ``pid``, re-parented to us."""
    ckpt_ok("restore", "-D", images, "-d", *extra, timeout=timeout)
    assert is_alive(pid), f"restored process {pid} is not running (state {proc_state(pid)})"
    proc = procs.adopt(pid, out)
    assert proc_ppid(pid) == os.getpid(), "restored process was not re-parented to pytest"
    return proc


# ------------------------------------------------------------------ "N ok" tick programs

def ticks(out: Output, prefix: str = "") -> list[tuple[int, str]]:
    """(N, rest) of the "PREFIX N ok" / "PREFIX N BAD what" lines of a checking program."""
    rx = re.compile(rf"^{prefix}(\d+) (.*)$")
    return [(int(m[1]), m[2]) for m in map(rx.match, out.lines()) if m]


def ticks_go_on(out: Output, prefix: str = "", more: int = 10) -> list[tuple[int, str]]:
    """Wait for ``more`` new ticks; all of them consecutive from 0, every one "ok"."""
    n = len(ticks(out, prefix))
    out.wait_line(rf"^{prefix}{n + more} ")
    got = ticks(out, prefix)
    assert [t for t, _ in got] == list(range(len(got))), got[-20:]
    bad = [t for t in got if t[1] != "ok"]
    assert bad == [], bad[:5]
    return got


def printed_fds(out: Output) -> dict[str, int]:
    """NAME -> fd of the "fds NAME=FD ..." line a checking program prints."""
    line = out.wait_line(r"^fds ")
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


def fd_pos_flags(pid: int, fd: int) -> tuple[int, int]:
    """(offset, flags) of ``pid``'s fd ``fd``, from its fdinfo."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        kv = dict(line.split(":", 1) for line in f if ":" in line)
    return int(kv["pos"]), int(kv["flags"], 8)
