"""Scheduling of a thread: policy (SCHED_OTHER, BATCH, IDLE, FIFO, RR, DEADLINE),
its flags (reset-on-fork), priority, nice value, deadline parameters, utilization
clamps and I/O priority (ionice). The kernel keeps all of them per thread; ckpt reads
and sets them from outside (sched_getattr, setpriority, sched_setattr, ioprio_get and
ioprio_set on the TID).
"""

from __future__ import annotations

import ctypes
import os

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc, procfs
from ..schema import U64, Int, Obj, Opt, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE = 0, 1, 2, 3, 5, 6
POLICY_NAMES = {0: "SCHED_OTHER", 1: "SCHED_FIFO", 2: "SCHED_RR", 3: "SCHED_BATCH",
                5: "SCHED_IDLE", 6: "SCHED_DEADLINE"}
SCHED_FLAG_RESET_ON_FORK = 0x01
SCHED_FLAG_UTIL_CLAMP = 0x20 | 0x40  # min and max
UCLAMP_UNSET = ((0, 1024), (0, 0))  # the default clamps; (0, 0) without CONFIG_UCLAMP_TASK
CAP_SYS_NICE = 23
PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_RT = 1
IOPRIO_CLASS_NAMES = {0: "none", 1: "realtime", 2: "best-effort", 3: "idle"}


class SchedAttr(ctypes.Structure):
    """struct sched_attr (SCHED_ATTR_SIZE_VER1)."""

    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32),
                ("flags", ctypes.c_uint64), ("nice", ctypes.c_int32),
                ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64),
                ("util_min", ctypes.c_uint32), ("util_max", ctypes.c_uint32)]


def _getattr(tid: int) -> SchedAttr:
    attr = SchedAttr()
    libc.syscall("sched_getattr", tid, ctypes.addressof(attr), ctypes.sizeof(attr), 0)
    return attr


# What ``dump`` writes (docs/image-format.md, task.sched).
SCHEMA = Obj(policy=Int(0, 7), flags=U64, nice=Int(-20, 19), priority=Int(0, 99),
             deadline=Tup(U64, U64, U64), uclamp=Tup(Int(0, 1024), Int(0, 1024)),
             ioprio=Opt(Int(1, 0xffff)))  # absent: the default (class none)


def _ioprio(tid: int) -> int:
    return libc.syscall("ioprio_get", IOPRIO_WHO_PROCESS, tid)


def dump(tid: int) -> dict[str, Any]:
    """``deadline`` is [runtime, deadline, period]: a SCHED_DEADLINE thread's parameters;
    for the others, runtime is their time slice (custom since Linux 6.12). The nice
    value is read apart: sched_getattr reports 0 for a real-time thread, which keeps
    one all the same."""
    attr = _getattr(tid)
    ioprio = _ioprio(tid)
    return {"policy": attr.policy, "flags": attr.flags & SCHED_FLAG_RESET_ON_FORK,
            "nice": os.getpriority(os.PRIO_PROCESS, tid), "priority": attr.priority,
            "deadline": [attr.runtime, attr.deadline, attr.period],
            "uclamp": [attr.util_min, attr.util_max],
            **({"ioprio": ioprio} if ioprio else {})}


def check(pid: int, tid: int, s: dict[str, Any], mine: procfs.Status | None = None) -> None:
    """Refuse at dump what ckpt could not set at restore. Without CAP_SYS_NICE, ckpt
    sets what the kernel lets the process's own limits allow (its rlimits are back by
    then): a real-time priority up to RLIMIT_RTPRIO, a nice value down to 20 -
    RLIMIT_NICE (or ckpt's own); never SCHED_DEADLINE. ``mine``: ckpt's own status, if
    read already."""
    name = POLICY_NAMES.get(s["policy"])
    if name is None:
        raise UnsupportedError(f"thread {tid} of process {pid} has scheduling policy "
                               f"{s['policy']}, which ckpt does not know")
    if (mine or procfs.status(os.getpid())).cap_effective >> CAP_SYS_NICE & 1:
        return
    limits = dict(zip(procfs.LIMIT_NAMES, procfs.limits(pid), strict=True))
    rtprio, nice_limit = limits["rtprio"][0], limits["nice"][0]
    why = ""
    if s["policy"] == SCHED_DEADLINE:
        why = "SCHED_DEADLINE"
    elif s["policy"] in (SCHED_FIFO, SCHED_RR) and s["priority"] > rtprio:
        why = f"{name} priority {s['priority']}, above its RLIMIT_RTPRIO ({rtprio})"
    elif s["nice"] < os.getpriority(os.PRIO_PROCESS, 0) and s["nice"] < 20 - nice_limit:
        why = f"nice {s['nice']}, below what its RLIMIT_NICE ({nice_limit}) allows"
    elif s.get("ioprio", 0) >> 13 == IOPRIO_CLASS_RT:
        why = "the realtime I/O priority class"
    if why:
        raise UnsupportedError(f"thread {tid} of process {pid} runs with {why}, which "
                               "ckpt cannot set without CAP_SYS_NICE; run ckpt with it")


def restore(tid: int, s: dict[str, Any]) -> None:
    """The nice value first (a real-time thread keeps one for when it leaves its policy),
    then the policy with its parameters, and the I/O priority (unless the thread has
    it already, inherited from the thread that made it)."""
    ioprio = s.get("ioprio", 0)
    try:
        if _ioprio(tid) != ioprio:
            libc.syscall("ioprio_set", IOPRIO_WHO_PROCESS, tid, ioprio)
    except OSError as e:
        cls = IOPRIO_CLASS_NAMES.get(ioprio >> 13, str(ioprio >> 13))
        raise RestoreError(f"thread {tid}: cannot set its I/O priority (class {cls}, "
                           f"level {ioprio & 7}): {e.strerror}") from None
    try:
        os.setpriority(os.PRIO_PROCESS, tid, s["nice"])
        runtime, deadline, period = s["deadline"]
        if s["policy"] != SCHED_DEADLINE and runtime == _getattr(0).runtime:
            runtime = 0  # the default slice, as ckpt's: setting it would make it custom
        flags = s["flags"]
        if tuple(s["uclamp"]) not in UCLAMP_UNSET:
            flags |= SCHED_FLAG_UTIL_CLAMP
        attr = SchedAttr(ctypes.sizeof(SchedAttr), s["policy"], flags, s["nice"],
                         s["priority"], runtime, deadline, period, *s["uclamp"])
        libc.syscall("sched_setattr", tid, ctypes.addressof(attr), 0)
    except OSError as e:
        raise RestoreError(f"thread {tid}: cannot set its scheduling "
                           f"({POLICY_NAMES.get(s['policy'], s['policy'])}, priority "
                           f"{s['priority']}, nice {s['nice']}): {e.strerror}") from None
