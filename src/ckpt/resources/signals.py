"""Signal state of a task: handlers, blocked mask, alternate stack, queued
signals and interval timers.

Handlers, the alternate stack and itimers can only be read from inside the
task, so they go through injected syscalls into the helper/scratch page.
"""

from __future__ import annotations

import _signal
import binascii
import ctypes
import os

from ..errors import RestoreError
from ..kernel import libc, ptrace
from ..kernel.inject import InjectionError, Injector
from ..log import logger
from ..schema import B64, S32, S64, U64, List, Map, Obj, Str, Tup
from . import nspids

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.signals")

# What ``dump`` writes (docs/image-format.md, core-PID.json's signals).
SIGINFO_SIZE = 128
SIGINFO = B64(SIGINFO_SIZE)
ALTSTACK = Tup(U64, S32, U64)
SCHEMA = Obj(
    actions=Map(Tup(U64, U64, U64, U64), key=Str(2, pattern="[1-9]|[1-5][0-9]|6[0-4]")),
    blocked=U64,
    altstack=ALTSTACK,
    itimers=List(Tup(S64, S64, S64, S64), min=3, max=3),
    pending=Obj(private=List(SIGINFO, max=1 << 16), shared=List(SIGINFO, max=1 << 16)),
)

ALL_BLOCKED = (1 << 64) - 1
_UNCATCHABLE = (libc.SIGKILL, libc.SIGSTOP)


class KSigaction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("restorer", ctypes.c_uint64), ("mask", ctypes.c_uint64)]


class StackT(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_uint64), ("flags", ctypes.c_int32), ("pad", ctypes.c_int32),
                ("size", ctypes.c_uint64)]


class ITimerVal(ctypes.Structure):
    _fields_ = [("interval_sec", ctypes.c_int64), ("interval_usec", ctypes.c_int64),
                ("value_sec", ctypes.c_int64), ("value_usec", ctypes.c_int64)]


SS_DISABLE = 2
_DEFAULT = KSigaction()  # SIG_DFL, no flags, empty mask: the action the images leave out


def not_default() -> list[int]:
    """The signals whose action in this process may not be the default, as Python
    knows them (what it found at start-up and what ckpt set; None, a handler Python
    did not install, counts): some five, where a process asking the kernel would make
    62 calls."""
    out = []
    for sig in range(1, libc.NSIG + 1):
        if sig not in _UNCATCHABLE:
            try:
                default = _signal.getsignal(sig) is _signal.SIG_DFL
            except (ValueError, OSError):
                default = False
            if not default:
                out.append(sig)
    return out


def reset_actions(sigs: list[int]) -> None:
    """The action of each of ``sigs`` the default in this process: a new process of a
    restore, forked by ckpt with CLONE_CLEAR_SIGHAND (its handled signals back to the
    default), does this natively for those ckpt's ``not_default`` names (ignored ones
    among them) before ckpt seizes it, so that ``restore`` injects a call only for the
    actions saved (a process that catches nothing: none, instead of 62)."""
    for sig in sigs:
        libc.syscall("rt_sigaction", sig, ctypes.addressof(_DEFAULT), 0, 8)


# Signals whose default action ignores them: SIGURG, SIGWINCH, SIGCHLD (SIGCONT's sending
# continues a stopped process, whatever its action)
_IGNORED_BY_DEFAULT = (23, 28, 17)
_SENDING_DOES_MORE = (18, 19, 20, 21, 22)  # SIGCONT; stop signals flush a pending SIGCONT
_SIGRTMIN = 32


def ignored_signal(ignored: int, caught: int, blocked: int) -> int | None:
    """A signal whose sending changes nothing in a process (``ignored`` and ``caught``:
    /proc/PID/status's SigIgn and SigCgt) whose task with the mask ``blocked`` does not
    block it: ignored by its default action or by SIG_IGN (inject.SignalBatch); None if
    the process catches or blocks them all. A standard signal: an RT one may find its
    queue full, and the send fail."""
    for sig in _IGNORED_BY_DEFAULT:
        if not (caught | blocked) >> (sig - 1) & 1:
            return sig
    for sig in range(1, _SIGRTMIN):
        if (ignored & ~blocked) >> (sig - 1) & 1 and sig not in _SENDING_DOES_MORE \
                and sig not in _UNCATCHABLE:
            return sig
    return None


def dump(pid: int, inj: Injector, scratch: int, mask: int) -> dict[str, Any]:
    """``mask`` is the blocked mask read when the task was frozen."""
    # one run of calls (Injector.raw_all), each writing at its own place in the scratch
    # area: every action, the three interval timers, the alternate signal stack, read
    # back at once
    sigs = [sig for sig in range(1, libc.NSIG + 1) if sig not in _UNCATCHABLE]
    size, tsize = ctypes.sizeof(KSigaction), ctypes.sizeof(ITimerVal)
    timers_at = len(sigs) * size
    altstack_at = timers_at + 3 * tsize
    results = inj.call_all([("rt_sigaction", (sig, 0, scratch + i * size, 8))
                            for i, sig in enumerate(sigs)]
                           + [("getitimer", (which, scratch + timers_at + which * tsize))
                              for which in range(3)]
                           + [altstack_query(scratch + altstack_at)])
    raw = inj.read(scratch, altstack_at + ALTSTACK_SIZE)
    actions = {}
    for i, sig in enumerate(sigs):
        act = KSigaction.from_buffer_copy(raw, i * size)
        if act.handler or act.flags or act.mask:
            actions[str(sig)] = [act.handler, act.flags, act.restorer, act.mask]
    itimers = []
    for which in range(3):
        t = ITimerVal.from_buffer_copy(raw, timers_at + which * tsize)
        itimers.append([t.interval_sec, t.interval_usec, t.value_sec, t.value_usec])
    pending = {
        "private": pending_private(pid),
        "shared": _base64(ptrace.peek_siginfo(pid, True)),
    }
    altstack = altstack_value(pid, results[-1], raw[altstack_at:])
    return {"actions": actions, "blocked": mask, "altstack": altstack,
            "itimers": itimers, "pending": pending}


def pending_private(tid: int) -> list[str]:
    """Signals queued for thread ``tid`` alone, as base64 siginfo."""
    return _base64(ptrace.peek_siginfo(tid, False))


def _base64(infos: list[bytes]) -> list[str]:
    return [binascii.b2a_base64(info, newline=False).decode() for info in infos]


ALTSTACK_SIZE = ctypes.sizeof(StackT)  # bytes ``altstack_query`` writes


def altstack_query(addr: int) -> tuple[str, tuple[int, ...]]:
    """The injected call that writes its thread's alternate signal stack at ``addr``."""
    return "sigaltstack", (0, addr)


def altstack_value(tid: int, res: int, raw: bytes) -> list[int]:
    """[sp, flags, size] of thread ``tid`` as ``altstack_query`` told: its result ``res``
    and the bytes ``raw`` it wrote."""
    if -4096 < res < 0:
        raise InjectionError(-res, f"sigaltstack in thread {tid}: {os.strerror(-res)}")
    ss = StackT.from_buffer_copy(raw)
    return [ss.sp, ss.flags & ~1, ss.size]  # SS_ONSTACK is not settable


def restore_altstack(inj: Injector, scratch: int, altstack: list[int]) -> None:
    sp, flags, ss_size = altstack
    inj.write(scratch, bytes(StackT(sp, flags, 0, ss_size)))
    if not flags & SS_DISABLE or sp:
        inj.call("sigaltstack", scratch, 0)


def queue_private(inj: Injector, scratch: int, tgid: int, tid: int, infos: list[str]) -> None:
    """Queue the saved signals of thread ``tid`` again (``inj`` may run in any thread;
    the kernel takes them as the process's own only under the PIDs it knows itself by)."""
    tgid, tid = nspids.inner(tgid), nspids.inner(tid)
    for info in infos:
        raw = binascii.a2b_base64(info)
        inj.write(scratch, raw)
        signo = int.from_bytes(raw[:4], "little", signed=True)
        inj.call("rt_tgsigqueueinfo", tgid, tid, signo, scratch)


# si_code of a signal a process sent with kill/pidfd_send_signal, sigqueue, tgkill
SI_USER, SI_QUEUE, SI_TKILL = 0, -1, -6
_SENT = (SI_USER, SI_QUEUE, SI_TKILL)
_WAITS = 32  # rt_sigtimedwait calls per round trip of ``take_arrived``
_MAX_ARRIVED = 1 << 16  # as many as the images hold pending


def sent_from_outside(info: bytes, own_pid: int) -> bool:
    """Whether the siginfo ``info``, pending in a new process of a restore whose PID (as it
    knows itself) is ``own_pid``, was sent by some process (kill, sigqueue, tgkill) to its
    PID while it was being restored: not by the kernel for what the restore did (SIGCHLD
    of a stand-in or zombie, a terminal's SIGHUP/SIGTTOU, SIGIO/SIGURG of a file, all
    with a positive code), nor by itself (SIGPIPE of a write, sent as SI_USER from
    its own PID)."""
    code = int.from_bytes(info[8:12], "little", signed=True)
    sender = int.from_bytes(info[16:20], "little", signed=True)
    return code in _SENT and sender != own_pid


def take_arrived(inj: Injector, scratch: int, own_pid: int) -> list[bytes]:
    """Take every signal pending for the fresh process (its first thread's and the
    process's queues), blocked since its clone: return those sent from outside while it
    was being restored, in order (``queue_arrived`` puts them back once its saved ones
    are queued), drop what the restore itself caused. ``own_pid``: its PID as it knows
    itself. Rounds of ``_WAITS`` injected ``rt_sigtimedwait`` that return at once, each
    writing its siginfo apart: one round trip when none or few are pending."""
    infos = scratch + 32
    inj.write(scratch, ALL_BLOCKED.to_bytes(8, "little") + bytes(24))  # set, timespec 0
    at_once = _WAITS if inj.batch is not None else 1
    kept: list[bytes] = []
    for _ in range(-(-_MAX_ARRIVED // at_once)):
        results = inj.raw_all([("rt_sigtimedwait", (scratch, infos + i * SIGINFO_SIZE,
                                                    scratch + 8, 8))
                               for i in range(at_once)])
        got = [i for i, res in enumerate(results) if res > 0]
        if got:
            raw = inj.read(infos, at_once * SIGINFO_SIZE)
            for i in got:
                info = raw[i * SIGINFO_SIZE:(i + 1) * SIGINFO_SIZE]
                if sent_from_outside(info, own_pid):
                    kept.append(info)
        if results[-1] <= 0:
            break
    if kept:
        log.info("process %d: %d signals sent while it was being restored, queued again",
                 inj.pid, len(kept))
    return kept


def queue_arrived(inj: Injector, scratch: int, pid: int, infos: list[bytes]) -> None:
    """Queue again, after its saved ones, the signals ``take_arrived`` took from process
    ``pid``: one sent to its first thread (tgkill) to that thread, the others to the
    process; with the sender's PID and values, as they came."""
    tgid = nspids.inner(pid)
    for info in infos:
        inj.write(scratch, info)
        signo = int.from_bytes(info[:4], "little", signed=True)
        if int.from_bytes(info[8:12], "little", signed=True) == SI_TKILL:
            inj.call("rt_tgsigqueueinfo", tgid, tgid, signo, scratch)
        else:
            inj.call("rt_sigqueueinfo", tgid, signo, scratch)


def enter_stop(pid: int, sig: int, saved: dict[str, Any]) -> None:
    """Put the new, seized process ``pid`` in the group stop it was saved in (signal
    ``sig``: SIGSTOP, SIGTSTP, ...; 0 for none), before its queued signals are back:
    once let go it stays stopped until SIGCONT, and only then handles the signals
    queued for it, as it would have. Threads created later stop with it when ckpt
    detaches them. Done before any process of the tree gets its signals back, so the
    SIGCHLD its parent gets is dropped with the rest (``take_arrived``).

    SIGSTOP is sent, and delivered as ``sig`` instead (the tracer may change it), so
    that the parent's wait reports the same signal; a stop signal the process catches
    or ignores is delivered as SIGSTOP, since its handler must not run, and so is one
    the kernel discards (SIGTSTP in an orphaned process group)."""
    if not sig:
        return
    if sig not in ptrace.STOP_SIGNALS or saved["actions"].get(str(sig), [0])[0] != 0:
        sig = libc.SIGSTOP
    os.kill(pid, libc.SIGSTOP)
    ptrace.cont(pid)
    stop = ptrace.wait_stop(pid)
    if stop.event or stop.stopsig != libc.SIGSTOP:
        raise RestoreError(f"process {pid}: SIGSTOP did not reach it to stop it again "
                           f"({stop.describe()})")
    ptrace.set_sigmask(pid, ALL_BLOCKED & ~(1 << (sig - 1)))  # blocked, it would be queued
    ptrace.cont(pid, sig)
    ptrace.interrupt(pid)  # a trap either way: the group stop's, or a plain one
    stop = ptrace.wait_stop(pid)
    ptrace.set_sigmask(pid, ALL_BLOCKED)
    if stop.event == ptrace.PTRACE_EVENT_STOP and stop.stopsig == sig:
        return
    if stop.event == ptrace.PTRACE_EVENT_STOP and stop.stopsig == libc.SIGTRAP \
            and sig != libc.SIGSTOP:
        enter_stop(pid, libc.SIGSTOP, saved)  # discarded: SIGSTOP always stops
        return
    raise RestoreError(f"process {pid}: did not stop again with signal {sig} "
                       f"({stop.describe()})")


def restore(pid: int, inj: Injector, scratch: int, sig: dict[str, Any]) -> None:
    """Everything but the blocked mask, which is set last by the driver. The process's
    actions are the defaults (``reset_actions``, in the root it was cloned from)."""
    for s in range(1, libc.NSIG + 1):
        a = sig["actions"].get(str(s))
        if a is None or s in _UNCATCHABLE:
            continue
        inj.write(scratch, bytes(KSigaction(*a)))
        inj.call("rt_sigaction", s, scratch, 0, 8)
    restore_altstack(inj, scratch, sig["altstack"])
    for which, t in enumerate(sig["itimers"]):
        if any(t):
            if not any(t[2:]):  # expired, its signal pending: the kernel re-arms it for
                t = [*t[:2], *t[:2]]  # the next interval once that is taken; so do we
            inj.write(scratch, bytes(ITimerVal(*t)))
            inj.call("setitimer", which, scratch, 0)
    tgid = nspids.inner(pid)  # its PID as it knows it (else EPERM)
    for info in sig["pending"]["shared"]:
        raw = binascii.a2b_base64(info)
        inj.write(scratch, raw)
        signo = int.from_bytes(raw[:4], "little", signed=True)
        inj.call("rt_sigqueueinfo", tgid, signo, scratch)
    queue_private(inj, scratch, pid, pid, sig["pending"]["private"])
