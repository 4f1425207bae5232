"""POSIX timers (timer_create): clock, notification, value and interval.

/proc/PID/timers lists each timer's ID, signal, notification and clock; the
time left and the interval are read with an injected timer_gettime. At restore
each timer is created again under its old ID, since the program holds it: with
PR_TIMER_CREATE_RESTORE_IDS where the kernel has it (6.15), else by creating
timers in ID order (IDs are handed out in increasing order) and deleting the
fillers. The time left is set relative, so a timer fires as long after the
restore as it had left at the dump. Overruns not yet read are not kept. A timer that
signals one thread (SIGEV_THREAD_ID) whose thread has exited signals nobody: it comes
back as such a timer, notifying nobody (SIGEV_NONE), still armed as it was (a new
timer cannot name a thread that is gone). A timer counting the CPU time of a thread
that has exited, or of a process outside the tree, is refused at dump: timer_create
cannot make it again.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import libc, pidns, procfs
from ..kernel.inject import Injector
from ..schema import INT, NAT, PID0, S32, Int, List, Obj, Tup
from . import nspids

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

SIGEV_NONE, SIGEV_THREAD_ID = 1, 4
_CPUCLOCK_PERTHREAD = 4  # a CPU clock (clockid < 0) of a thread, not of a process
_NOTIFY = {"signal": 0, "none": 1, "thread": 2}
_MAX_FILLERS = 1 << 16


class SigEvent(ctypes.Structure):
    """struct sigevent (x86_64), 64 bytes."""

    _fields_ = [("value", ctypes.c_uint64), ("signo", ctypes.c_int32),
                ("notify", ctypes.c_int32), ("tid", ctypes.c_int32),
                ("_pad", ctypes.c_int32 * 11)]


class ITimerSpec(ctypes.Structure):
    _fields_ = [("interval_sec", ctypes.c_int64), ("interval_nsec", ctypes.c_int64),
                ("value_sec", ctypes.c_int64), ("value_nsec", ctypes.c_int64)]


_TIMESPEC = Tup(NAT, Int(0, 999_999_999))
# What ``dump`` writes (docs/image-format.md, core-PID.json's timers).
# A timer that sends no signal (SIGEV_NONE) keeps whatever sigev_signo it was made
# with, unchecked by the kernel (often an uninitialised int): any int.
SCHEMA = List(Obj(id=Int(0, (1 << 31) - 1), clock=S32, signo=S32, value=INT,
                  notify=Int(0, 7), tid=PID0, interval=_TIMESPEC, left=_TIMESPEC),
              max=1 << 20)


def dump(pid: int, inj: Injector, scratch: int, tree: tuple[int, ...]
         ) -> list[dict[str, Any]]:
    """Every POSIX timer of process ``pid`` (``inj`` runs in it), in ID order; ``tree``:
    the live processes of the dumped tree (``_check_clocks``)."""
    out = []
    try:
        found = procfs.posix_timers(pid)
    except ValueError as e:
        raise DumpError(f"process {pid}: {e}") from None
    threads = {int(tid) for tid in os.listdir(f"/proc/{pid}/task")} if found else set()
    _check_clocks(pid, found, threads, tree)
    for t in found:
        inj.call("timer_gettime", t.id, scratch)
        its = ITimerSpec.from_buffer_copy(inj.read(scratch, ctypes.sizeof(ITimerSpec)))
        to_thread = t.to_thread and t.target in threads
        orphan = t.to_thread and not to_thread  # its thread exited: it signals nobody
        out.append({
            "id": t.id, "clock": t.clock, "signo": t.signo, "value": t.value,
            "notify": (SIGEV_NONE if orphan else _NOTIFY[t.notify])
                      | (SIGEV_THREAD_ID if to_thread else 0),
            "tid": t.target if to_thread else 0,
            "interval": [its.interval_sec, its.interval_nsec],
            "left": [its.value_sec, its.value_nsec],
        })
    return sorted(out, key=lambda t: t["id"])


def _check_clocks(pid: int, found: list[procfs.PosixTimer], threads: set[int],
                  tree: tuple[int, ...]) -> None:
    """A timer counting the CPU time of a thread that has exited, or of a process that
    is gone or outside the tree, lives on in the kernel (counting nothing), but
    timer_create refuses to make it again (EINVAL): refused here, before the kill."""
    for t in found:
        target = ~(t.clock >> 3)  # as the process knows it (its PID namespace's)
        if t.clock >= 0 or not target:  # not a CPU clock, or its own (PID 0)
            continue
        if t.clock & _CPUCLOCK_PERTHREAD:
            if target not in {pidns.ns_pids(f"{pid}/task/{tid}")[-1] for tid in threads}:
                raise UnsupportedError(
                    f"process {pid}: POSIX timer {t.id} counts the CPU time of thread "
                    f"{target}, which has exited; timer_create cannot make it again")
        elif target not in {pidns.ns_pids(p)[-1] for p in tree}:
            raise UnsupportedError(
                f"process {pid}: POSIX timer {t.id} counts the CPU time of process "
                f"{target}, outside the dumped tree (or exited); ckpt cannot make it count "
                "that process again")


def restore(pid: int, inj: Injector, scratch: int, timers: list[dict[str, Any]]) -> None:
    """Create the timers again in process ``pid``, threads already there."""
    if not timers:
        return
    explicit = inj.raw("prctl", libc.PR_TIMER_CREATE_RESTORE_IDS, 1) == 0
    try:
        for t in timers:
            _create(pid, inj, scratch, t, explicit)
            if any(t["left"]):
                its = ITimerSpec(*t["interval"], *t["left"])
                inj.write(scratch, bytes(its))
                inj.call("timer_settime", t["id"], 0, scratch, 0)
    finally:
        if explicit:
            inj.raw("prctl", libc.PR_TIMER_CREATE_RESTORE_IDS, 0)


def _create(pid: int, inj: Injector, scratch: int, t: dict[str, Any], explicit: bool) -> None:
    # the thread it signals, by the PID the process knows it by (its PID namespace's)
    sev = SigEvent(t["value"], t["signo"], t["notify"], nspids.inner(t["tid"]) if t["tid"] else 0)
    id_at = scratch + ctypes.sizeof(SigEvent)
    inj.write(scratch, bytes(sev))
    for _ in range(_MAX_FILLERS):
        inj.write(id_at, t["id"].to_bytes(4, "little", signed=True))
        res = inj.raw("timer_create", t["clock"], scratch, id_at)
        if res < 0:
            raise RestoreError(f"process {pid}: timer {t['id']}: timer_create failed: "
                               f"{errno.errorcode.get(-res, -res)}")
        got = int.from_bytes(inj.read(id_at, 4), "little", signed=True)
        if got == t["id"]:
            return
        if explicit or got > t["id"]:
            inj.raw("timer_delete", got)
            raise RestoreError(f"process {pid}: timer {t['id']} came back as {got}")
        inj.call("timer_delete", got)  # a filler: IDs go up, the wanted one comes later
    raise RestoreError(f"process {pid}: could not get timer ID {t['id']}")
