"""Notes of what a running dump changed in its processes, so that the next ckpt undoes
what a killed one left behind.

While a dump holds a process, the only traces of ckpt in it are a scratch area,
parking code in its vDSO's padding (kernel/inject.py), for the microseconds
of an injected syscall, borrowed registers and, while it moves its own pages
(pages/splice.py), the fds of a pipe. A dump writes, in
``/run/ckpt/dumps/PID.jsonl`` and before it touches a process, each thread's own
registers and signal mask, where the parking code goes and where the scratch area
goes; it keeps the file locked (flock) while it runs and removes it at the end.
The kernel drops the lock of a killed ckpt: ``recover``, which every dump,
pre-dump and restore runs first, then finds the note unlocked (or waits while a ckpt
recovering it holds it: the killed dump's guard, guard.py, or a ckpt started
meanwhile), wakes any thread parked with its own registers and mask, closes the
pipe's fds the splice loop had open where it stopped (read from the loop's block, at
the start of the scratch area), unmaps the area and erases the code.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from . import jsontext
from .log import logger

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:  # imported by the functions that recover a process: ``check`` and a
    from typing import Any

    from .kernel import ptrace  # command that finds no note need none of them

log = logger("ckpt.recovery")

NOTES_DIR = "/run/ckpt/dumps"
NETLOCK_DIR = "/run/ckpt/netlock"  # the notes of network locks (netlock.py)
# How long a ckpt waits for another to recover a killed dump's note (its guard, or a
# ckpt started meanwhile): a process takes milliseconds; one stopped longer is left to it.
RECOVERY_WAIT = 30.0


def notes_dir() -> str:
    return os.environ.get("CKPT_NOTES_DIR", NOTES_DIR)


def netlock_dir() -> str:
    """Where the notes of network locks are (``CKPT_NETLOCK_DIR`` overrides, for tests)."""
    return os.environ.get("CKPT_NETLOCK_DIR", NETLOCK_DIR)


class Note:
    """The note of one dump: created on first use, removed by ``close``."""

    def __init__(self) -> None:
        self.fd = -1
        self.path = ""
        self._failed = False

    def _open(self) -> bool:
        if self.fd >= 0 or self._failed:
            return self.fd >= 0
        folder = notes_dir()
        path = os.path.join(folder, f"{os.getpid()}.jsonl")
        tmp = path + ".new"
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            try:
                os.unlink(tmp)  # left by an earlier ckpt under the same PID
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # before the name is visible to ``recover``
            os.rename(tmp, path)
        except OSError as e:
            self._failed = True
            log.warning("cannot keep a note of the dump in %s (%s): if ckpt is killed, "
                        "nothing will clean up after it", folder, e)
            return False
        self.fd, self.path = fd, path
        return True

    def _add(self, entry: dict[str, Any]) -> None:
        if self._open():
            os.write(self.fd, jsontext.dumps(entry).encode() + b"\n")

    def process(self, pid: int, started: int, threads: list[tuple[int, ptrace.UserRegs, int]],
                park: int | None, scratch: tuple[int, int], park_size: int = 0,
                dispatch: dict[int, ptrace.DispatchConfig] | None = None) -> None:
        """Process ``pid``'s threads, each with the registers and mask it resumes with;
        where its parking code (of ``park_size`` bytes) and its scratch area (address,
        size) go; ``dispatch``: the syscall user dispatch of threads that have one (ckpt
        turns it off while it works in them)."""
        dispatch = dispatch or {}
        self._add({"pid": pid, "start": started, "park": park, "scratch": list(scratch),
                   "park_size": park_size,
                   "threads": [{"tid": tid, "regs": regs.to_dict(), "mask": mask,
                                **_dispatch_entry(dispatch.get(tid))}
                               for tid, regs, mask in threads]})

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


def _dispatch_entry(conf: ptrace.DispatchConfig | None) -> dict[str, list[int]]:
    return {} if conf is None else {"dispatch": [conf.selector, conf.offset, conf.len]}


def recover() -> None:
    """Undo what killed dumps left in their processes (see the module doc), and the
    network locks they left (netlock.recover; netlock, with its types and sockets, is
    imported only when a lock has a note: most commands never lock the network)."""
    _recover_dumps()
    from .kernel import pipesize
    pipesize.restore_limit()  # fs.pipe-max-size, raised for an instant by pages/splice.py
    if netlock_notes_exist():
        from . import netlock
        netlock.recover()


def netlock_notes_exist() -> bool:
    """Whether any network lock has a note (without importing netlock)."""
    try:
        return any(n.endswith(".json") for n in os.listdir(netlock_dir()))
    except OSError:
        return False


def _recover_dumps() -> None:
    folder = notes_dir()
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl"))
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not _lock(fd) and not wait_for_recoverer(fd, name.partition(".")[0], path):
                continue  # a running dump's
            if os.fstat(fd).st_nlink == 0:
                continue  # recovered and removed meanwhile
            with os.fdopen(os.dup(fd), "rb") as f:
                entries = [jsontext.loads(line) for line in f if line.endswith(b"\n")]
            _recover(name, entries, fd)
            os.unlink(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("note %s of a killed ckpt: %s", path, e)
        finally:
            os.close(fd)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def wait_for_recoverer(fd: int, owner: str, path: str) -> bool:
    """A note (this one's, or a network lock's) found locked, open as ``fd``: True once
    its flock is ours, after the ckpt that held it to recover it (the killed dump's
    guard, or another ckpt started meanwhile) let it go; False when ``owner``, the PID of
    the dump that wrote it ("": unknown), holds it (it runs), or a recoverer held it for
    ``RECOVERY_WAIT``. Skipped, a note under recovery left the process as the killed dump
    left it (a thread parked in ckpt's code, the scratch area mapped, sockets in repair
    mode) to a dump started then, which saved it so."""
    import time

    from .kernel import procfs
    st = os.fstat(fd)
    holder = next((str(lk.pid) for lk in procfs.locks()
                   if lk.kind == "FLOCK" and not lk.waiting and lk.ino == st.st_ino
                   and os.makedev(lk.major, lk.minor) == st.st_dev), None)
    if holder == owner or not owner:  # its dump's (or a note being written: its dump's)
        return False
    log.info("note %s of a killed ckpt: waiting for the ckpt recovering it", path)
    deadline = time.monotonic() + RECOVERY_WAIT
    while not _lock(fd):
        if time.monotonic() > deadline:
            log.warning("note %s of a killed ckpt: another ckpt has been recovering it for "
                        "%.0f s; left to it", path, RECOVERY_WAIT)
            return False
        time.sleep(0.01)
    return True


def _recover(name: str, entries: list[dict[str, Any]], note: int) -> None:
    from .kernel import procfs
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for entry in entries:  # a later entry of a process (a recovery's own) supersedes
        latest[(entry["pid"], entry["start"])] = entry
    for entry in latest.values():
        pid = entry["pid"]
        try:
            if procfs.stat(pid).start_time != entry["start"]:
                continue  # gone, its PID reused
        except procfs.ProcessGone:
            continue
        try:
            _recover_process(entry, note)
            _dispatch_back(entry)
        except (OSError, procfs.ProcessGone) as e:
            log.warning("process %d, left by a killed ckpt (%s): %s", pid, name, e)


def _recover_process(entry: dict[str, Any], note: int) -> None:
    from .kernel import interrupts, ptrace
    from .kernel.inject import PARK_CODE, Injector, splice_fds_open
    pid, park = entry["pid"], entry["park"]
    base, size = entry["scratch"]
    park_size = max(entry.get("park_size", 0), len(PARK_CODE))
    if park is not None and _read(pid, park, len(PARK_CODE)) != PARK_CODE:
        park = None
    if park is None and not _holds_scratch(pid, base, size):
        return
    seized: list[int] = []
    left_open: list[int] = []  # fds of the splice loop's pipe (pages/splice.py)
    try:
        for th in entry["threads"]:
            tid = th["tid"]
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue
            ptrace.seize(tid, ptrace.PTRACE_O_TRACESYSGOOD)
            seized.append(tid)
            _stop(tid)
            rip = ptrace.get_regs(tid).rip
            if park is not None and park <= rip <= park + park_size:
                left_open += splice_fds_open(rip - park, _splice_block(pid, base))
                # Its mask before its registers: should this ckpt die in between, the
                # thread still waits in the parking code for the next one (the other
                # order would let it run on with every signal blocked for good).
                with interrupts.held():
                    ptrace.set_sigmask(tid, th["mask"])
                    ptrace.set_regs(tid, ptrace.UserRegs.from_dict(th["regs"]))
                log.warning("thread %d of process %d woken: a killed ckpt left it waiting "
                            "in the middle of an injected syscall", tid, pid)
        # Looked at only now that every thread is stopped: a thread the killed ckpt
        # left about to run its mmap may have run it since the first look (under load,
        # long after ckpt died), and no thread maps it any more from here on.
        mapped = _holds_scratch(pid, base, size)
        if mapped and seized and park is not None:
            _note_again(note, entry, seized)
            tid = seized[0]
            with Injector(tid, park, ptrace.get_regs(tid), mask=ptrace.get_sigmask(tid)) as inj:
                for fd in left_open:
                    inj.call("close", fd)
                if left_open:
                    log.warning("process %d: closed the fds %s of the pipe a killed ckpt "
                                "left in it", pid, left_open)
                inj.scratch = (base, size)
                inj.unmap_scratch()
                inj.settle()
            log.warning("process %d: unmapped the scratch area a killed ckpt left in it", pid)
        elif mapped:
            log.warning("process %d: a killed ckpt left a scratch area of %d KiB at %#x in "
                        "it", pid, size >> 10, base)
        if park is not None:
            _write(pid, park, bytes(park_size))  # the vDSO's padding, as it was
    finally:
        for tid in seized:
            try:
                ptrace.detach(tid)
            except OSError as e:
                log.warning("thread %d: detach: %s", tid, e)


def _dispatch_back(entry: dict[str, Any]) -> None:
    """Put back the syscall user dispatch of each thread that had one, which the killed
    ckpt may have left off (its injected calls would have been dispatched)."""
    from .kernel import ptrace
    for th in entry["threads"]:
        if "dispatch" not in th or not os.path.exists(f"/proc/{entry['pid']}/task/{th['tid']}"):
            continue
        tid = th["tid"]
        ptrace.seize(tid, ptrace.PTRACE_O_TRACESYSGOOD)
        try:
            _stop(tid)
            if ptrace.get_dispatch(tid) is None:
                ptrace.set_dispatch(tid, ptrace.DispatchConfig(1, *th["dispatch"]))
                log.warning("thread %d of process %d: its syscall user dispatch, which a "
                            "killed ckpt left off, is on again", tid, entry["pid"])
        finally:
            ptrace.detach(tid)


def _note_again(note: int, entry: dict[str, Any], tids: list[int]) -> None:
    """Add to the note ``entry`` with its stopped threads' own state as it is now: should
    this ckpt die in the middle of the munmap it injects from the parking code, the next
    one gives them this state back, not the older one of the killed dump (which took a
    thread back in time: a counter printed its last numbers twice)."""
    from .kernel import ptrace
    from .kernel.inject import resumable
    dispatch = {th["tid"]: th["dispatch"] for th in entry["threads"] if "dispatch" in th}
    threads = [{"tid": tid, "regs": resumable(ptrace.get_regs(tid)).to_dict(),
                "mask": ptrace.get_sigmask(tid),
                **({"dispatch": dispatch[tid]} if tid in dispatch else {})} for tid in tids]
    os.write(note, jsontext.dumps({**entry, "threads": threads}).encode()
             + b"\n")


def _splice_block(pid: int, base: int) -> tuple[int, int]:
    """The pipe's fds the splice loop keeps at the start of the scratch area; none when
    the area is gone (ckpt killed once its munmap, injected from the parking code, was
    done: the thread still waits there, and must be woken all the same)."""
    try:
        return struct.unpack("<ii", _read(pid, base, 8))
    except OSError as e:
        if e.errno != errno.EIO:  # what /proc/PID/mem gives for memory not mapped
            raise
        return (-1, -1)


def _stop(tid: int) -> None:
    from .kernel import procfs, ptrace
    ptrace.interrupt(tid)
    while True:
        stop = ptrace.wait_stop(tid)
        if stop.exited:
            raise procfs.ProcessGone(tid, "exited")
        if stop.event == ptrace.PTRACE_EVENT_STOP:
            return
        ptrace.cont(tid, stop.stopsig)


def _holds_scratch(pid: int, base: int, size: int) -> bool:
    """True if ``pid`` still has anonymous read-write memory at ckpt's scratch area."""
    from .kernel import procfs
    return any(v.start <= base and base + size <= v.end and v.perms[:3] == "rw-"
               and not v.inode and not v.path for v in procfs.maps(pid))


def _read(pid: int, addr: int, size: int) -> bytes:
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, size, addr)
    finally:
        os.close(fd)


def _write(pid: int, addr: int, data: bytes) -> None:
    fd = os.open(f"/proc/{pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, data, addr)
    finally:
        os.close(fd)
