"""CPU state of one task: general registers, fs/gs base and the full xstate.

A task frozen inside a syscall is saved as if it were about to run that
syscall again (or to see EINTR), because the kernel's own restart logic does
not run when a tracer sets the final registers.
"""

from __future__ import annotations

import binascii
import ctypes
import errno
import struct

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc, ptrace
from ..log import logger
from ..schema import B64, U32, U64, Enum, List, Null, Obj, Opt, Str, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.cpu")

# A task's CPU state (docs/image-format.md, core-PID.json).
SCHEMA = Obj(regs=Obj({n: U64 for n in ptrace.REG_NAMES}), xstate=B64(1 << 16),
             syscall_note=Null(Str(200)),
             in_call=Opt(Enum(libc.ERESTARTSYS, libc.ERESTARTNOINTR, libc.ERESTARTNOHAND)),
             dispatch=Opt(Obj(selector=U64, offset=U64, len=U64)),
             tls=Opt(List(Tup(Enum(*ptrace.GDT_TLS_ENTRIES), U32, U32, U32), max=3)))
# The image feature of ``in_call``.
FEATURE = "in-call"
# The image feature of ``dispatch``: the task's syscall user dispatch (Wine's).
DISPATCH_FEATURE = "syscall-dispatch"
# The image feature of ``tls``: GDT TLS entries (set_thread_area).
TLS_FEATURE = "gdt-tls"
COMPAT_CS = 0x23  # the code segment of 32-bit code (__USER32_CS); 64-bit code's is 0x33

_RESTART_AS_IS = (libc.ERESTARTSYS, libc.ERESTARTNOINTR, libc.ERESTARTNOHAND)
# Calls the kernel never restarts, which return EINTR when the task is merely stopped
# (man 7 signal): semop, semtimedop, epoll_wait, epoll_pwait, epoll_pwait2,
# sigtimedwait (sigwaitinfo), io_getevents, io_pgetevents, and the socket calls of a
# socket with a timeout (SO_RCVTIMEO, SO_SNDTIMEO): connect, accept, accept4, sendto,
# recvfrom, sendmsg, recvmsg, sendmmsg, recvmmsg, and read, write, readv, writev of
# it. An EINTR says the call did nothing. Frozen in one, a task comes back in it (a
# signal handler running first makes it return EINTR, as it would have).
_EINTR_WHEN_STOPPED = (65, 220, 232, 281, 441, 128, 208, 333, 42, 43, 288, 44, 45, 46, 47,
                       307, 299, 0, 1, 19, 20)
_EINTR = 4
# Calls whose restart block the kernel keeps (ERESTART_RESTARTBLOCK), run again with
# their own arguments at restore: nanosleep and clock_nanosleep (a relative one; an
# absolute one returns ERESTARTNOHAND), poll, futex (FUTEX_WAIT with a timeout).
_RERUN_WHEN_RESTARTED = (35, 230, 7, 202)
_U64 = 1 << 64


def _signed(v: int) -> int:
    return v - _U64 if v >= 1 << 63 else v


def fix_interrupted_syscall(regs: ptrace.UserRegs) -> str | None:
    """Rewrite ``regs`` of a task stopped in an interrupted syscall; say what was done.

    ERESTART{SYS,NOINTR,NOHAND}, and EINTR of semop and semtimedop (which the
    stop itself caused): run the syscall again. ERESTART_RESTARTBLOCK: the
    kernel would go on through restart_syscall with what it kept (the time
    left), which a new process does not have; so nanosleep, poll (always
    restarted this way, a timeout or not) and futex waits are run again with
    their arguments, still in the registers: a wait for ever, or until an
    absolute time, is then exactly what it was, a relative one lasts its whole
    time again (a wait may always last longer). ``tail -f`` dies of an EINTR
    from poll; CRIU returns EINTR for them all. Anything else (restart_syscall
    itself, a call already restarted once: what it was is no longer known)
    returns EINTR.
    """
    nr = _signed(regs.orig_rax)
    err = -_signed(regs.rax)
    if nr < 0:
        return None
    name = libc.SYSCALL_NAMES.get(nr, str(nr))
    if err in _RESTART_AS_IS or (err == _EINTR and nr in _EINTR_WHEN_STOPPED):
        regs.rax = regs.orig_rax
        regs.rip -= 2
        return f"{name} will be restarted"
    if err == libc.ERESTART_RESTARTBLOCK:
        if nr in _RERUN_WHEN_RESTARTED:
            regs.rax = regs.orig_rax
            regs.rip -= 2
            return f"{name} will wait again"
        regs.rax = (-4) % _U64  # -EINTR
        return f"{name} will return EINTR"
    return None


def in_call(regs: ptrace.UserRegs) -> int | None:
    """For a task frozen in a syscall that it will run again (``fix_interrupted_syscall``):
    the restart code with which the kernel would have it wait there, so that a signal
    handler running before it is back in the call makes it return EINTR, or restarts it,
    as the kernel decides (ERESTARTNOHAND: EINTR; ERESTARTSYS: EINTR unless SA_RESTART;
    ERESTARTNOINTR: restarted). The calls restarted through a restart block, and semop,
    take ERESTARTNOHAND: a handler makes them return EINTR. None otherwise."""
    nr = _signed(regs.orig_rax)
    err = -_signed(regs.rax)
    if nr < 0:
        return None
    if err in _RESTART_AS_IS:
        return err
    if (err == _EINTR and nr in _EINTR_WHEN_STOPPED) or (
            err == libc.ERESTART_RESTARTBLOCK and nr in _RERUN_WHEN_RESTARTED):
        return libc.ERESTARTNOHAND
    return None


def on_release(regs: ptrace.UserRegs) -> ptrace.UserRegs:
    """The registers a task frozen and released unchanged (a refused dump, a pre-dump,
    -R) gets back: one frozen in semop or semtimedop waits in it again (ERESTARTNOHAND)
    rather than see the EINTR the stop caused, and so does one in a wait that the kernel
    would go on with through restart_syscall when running the call again is exactly the
    same wait (``_reruns_exactly``): a later dump would find it in restart_syscall,
    whose call is no longer known, and its restore would make it return EINTR (a
    pre-dump then a dump: poll(-1) failed with EINTR). The kernel restarts the other
    calls itself (a relative sleep keeps its end so)."""
    nr, err = _signed(regs.orig_rax), -_signed(regs.rax)
    if (nr in _EINTR_WHEN_STOPPED and err == _EINTR) or (
            err == libc.ERESTART_RESTARTBLOCK and _reruns_exactly(nr, regs)):
        regs = regs.copy()
        regs.rax = (-libc.ERESTARTNOHAND) % _U64
    return regs


_POLL, _FUTEX = 7, 202
_FUTEX_CMD = 0x7F  # the op without FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME
_FUTEX_WAIT_BITSET = 9


def _reruns_exactly(nr: int, regs: ptrace.UserRegs) -> bool:
    """Whether call ``nr``, interrupted with a restart block, is the same wait when run
    again with its arguments: poll without a timeout (a negative one), a futex
    FUTEX_WAIT_BITSET (its timeout is an absolute time: pthread_cond_timedwait,
    sem_timedwait). A relative timeout would start over."""
    if nr == _POLL:
        return regs.rdx & 0x8000_0000 != 0  # (int) timeout < 0
    return nr == _FUTEX and regs.rsi & _FUTEX_CMD == _FUTEX_WAIT_BITSET


def rseq_aborted(tid: int, regs: ptrace.UserRegs) -> ptrace.UserRegs:
    """``regs`` of a task stopped inside a critical section of its rseq area, moved to the
    section's abort handler, as the kernel moves it on its way back to user space after
    any preemption or signal (rseq_ip_fixup, whose checks these are); ``regs`` unchanged
    otherwise. ckpt's injected calls return to user space elsewhere, after which the
    kernel forgets the section: let go or restored in the middle of it, a task would
    commit what it read before the stop (three threads adding to per-CPU counters lost
    thousands of additions: zdtm-style case rseq-churn)."""
    try:
        conf = ptrace.get_rseq(tid)
    except OSError:  # Linux before 5.13 shows no rseq area
        return regs
    if not conf.rseq_abi_pointer:
        return regs
    try:
        (cs,) = struct.unpack("<Q", _peek(tid, conf.rseq_abi_pointer + 8, 8))
        if not cs:
            return regs
        version, _flags, start, length, abort = struct.unpack("<IIQQQ", _peek(tid, cs, 32))
        if (version or (regs.rip - start) % _U64 >= length
                or (abort - start) % _U64 < length or start + length > _U64):
            return regs
        (sig,) = struct.unpack("<I", _peek(tid, abort - 4, 4))
    except OSError:  # (an address the task does not map: the kernel would kill it)
        return regs
    if sig != conf.signature:
        return regs
    log.info("task %d was in an rseq critical section (%#x): it goes on at its abort "
             "handler %#x", tid, regs.rip, abort)
    fixed = regs.copy()
    fixed.rip = abort
    return fixed


def _peek(tid: int, addr: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    if libc.process_vm_readv(tid, ctypes.addressof(buf), addr, size) != size:
        raise OSError(errno.EFAULT, "short read")
    return buf.raw


def dispatches(tid: int, conf: ptrace.DispatchConfig) -> bool:
    """Whether stopped thread ``tid``, under syscall user dispatch ``conf``, would take
    a syscall it runs now for one to dispatch (SIGSYS): unless its selector byte says
    ALLOW (0), as a Wine thread's does in Unix code, any syscall is, wherever it is."""
    if not conf.selector:
        return True
    try:
        return _peek(tid, conf.selector, 1) != b"\0"
    except OSError:
        return True


def dispatch_state(conf: ptrace.DispatchConfig) -> dict[str, int]:
    """What ``restore`` sets again of a thread's syscall user dispatch."""
    return {"selector": conf.selector, "offset": conf.offset, "len": conf.len}


def dump(pid: int, regs: ptrace.UserRegs) -> dict[str, Any]:
    """The task's CPU state; ``regs`` are those read when it was frozen."""
    fixed = regs.copy()
    code = in_call(regs)
    note = fix_interrupted_syscall(fixed)
    if note:
        log.info("task %d was in a syscall: %s", pid, note)
    fixed.orig_rax = _U64 - 1
    if ptrace.has_io_bitmap(pid):  # (iopl(3) shows nowhere: docs/state.md)
        raise UnsupportedError(f"thread {pid} has I/O port permissions of its own (ioperm), "
                               "which a restore does not give back; not supported")
    xstate = ptrace.get_xstate(pid)
    out = {"regs": fixed.to_dict(), "xstate": binascii.b2a_base64(xstate, newline=False).decode(),
           "syscall_note": note}
    if code is not None:
        out["in_call"] = code
    tls = ptrace.get_tls(pid)
    if tls:
        out["tls"] = tls
    return out


def restore(pid: int, cpu: dict[str, Any]) -> None:
    """Load the saved registers and xstate into stopped task ``pid``. With ``in_call``
    the task is put back inside its syscall, as the kernel left it stopped there (the
    restart code in rax), so it must be at a trap stop (``ptrace.trap_stop_all``): once
    detached, the kernel runs the call again, or has it return EINTR should a signal
    handler run first (mc waits in select for its SIGWINCH handler to interrupt it)."""
    ptrace.set_xstate(pid, binascii.a2b_base64(cpu["xstate"]))
    for entry, base, limit, flags in cpu.get("tls", ()):  # before a selector naming one
        try:
            ptrace.set_tls(pid, entry, base, limit, flags)
        except OSError as e:
            raise RestoreError(f"thread {pid}: its TLS entry {entry} of the GDT (base "
                               f"{base:#x}, limit {limit:#x}, flags {flags:#x}) cannot be set "
                               f"again: {e.strerror}") from None
    regs = ptrace.UserRegs.from_dict(cpu["regs"])
    if "in_call" in cpu:
        regs.orig_rax, regs.rax = regs.rax, (-cpu["in_call"]) % _U64
        regs.rip += 2
    ptrace.set_regs(pid, regs)
    if "dispatch" in cpu:  # last: no call of ckpt's runs in the task after it
        d = cpu["dispatch"]
        try:
            ptrace.set_dispatch(pid, ptrace.DispatchConfig(1, d["selector"], d["offset"],
                                                           d["len"]))
        except OSError as e:
            raise RestoreError(f"thread {pid}: its syscall user dispatch (selector "
                               f"{d['selector']:#x}, calls allowed from {d['offset']:#x}, "
                               f"{d['len']} bytes) cannot be set again: {e.strerror}") from None


def needs_trap_stop(cpu: dict[str, Any]) -> bool:
    """Whether ``restore`` needs the task at a trap stop."""
    return "in_call" in cpu
