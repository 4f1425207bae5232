"""CPU state of one task: general registers, fs/gs base and the full xstate.

A task frozen inside a syscall is saved as if it were about to run that
syscall again (or to see EINTR), because the kernel's own restart logic does
not run when a tracer sets the final registers.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from ..kernel import libc, ptrace

log = logging.getLogger("ckpt.cpu")

TIMER_ABSTIME = 1
_RESTART_AS_IS = (libc.ERESTARTSYS, libc.ERESTARTNOINTR, libc.ERESTARTNOHAND)
# Calls the kernel never restarts, which return EINTR when the task is merely stopped
# (man 7 signal): semop and semtimedop. Frozen in one, a task comes back in it.
_EINTR_WHEN_STOPPED = (65, 220)
_EINTR = 4
_U64 = 1 << 64


def _signed(v: int) -> int:
    return v - _U64 if v >= 1 << 63 else v


def fix_interrupted_syscall(regs: ptrace.UserRegs) -> str | None:
    """Rewrite ``regs`` of a task stopped in an interrupted syscall; say what was done.

    ERESTART{SYS,NOINTR,NOHAND}, and EINTR of semop and semtimedop (which the
    stop itself caused): run the syscall again. ERESTART_RESTARTBLOCK
    (relative sleeps, poll with timeout): a relative nanosleep is run again in
    full (a sleep may always last longer); anything else returns EINTR, as CRIU
    does.
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
        relative_sleep = nr == libc.NR["nanosleep"] or (
            nr == libc.NR["clock_nanosleep"] and not regs.rsi & TIMER_ABSTIME)
        if relative_sleep:
            regs.rax = regs.orig_rax
            regs.rip -= 2
            return f"{name} will sleep again"
        regs.rax = (-4) % _U64  # -EINTR
        return f"{name} will return EINTR"
    return None


def on_release(regs: ptrace.UserRegs) -> ptrace.UserRegs:
    """The registers a task frozen and released unchanged (a refused dump, -R) gets
    back: one frozen in semop or semtimedop runs it again rather than see the EINTR
    the stop caused; the kernel restarts the other calls itself."""
    if _signed(regs.orig_rax) in _EINTR_WHEN_STOPPED and -_signed(regs.rax) == _EINTR:
        regs = regs.copy()
        regs.rax = regs.orig_rax
        regs.rip -= 2
    return regs


def dump(pid: int, regs: ptrace.UserRegs) -> dict[str, Any]:
    """The task's CPU state; ``regs`` are those read when it was frozen."""
    fixed = regs.copy()
    note = fix_interrupted_syscall(fixed)
    if note:
        log.info("task %d was in a syscall: %s", pid, note)
    fixed.orig_rax = _U64 - 1
    xstate = ptrace.get_xstate(pid)
    return {"regs": fixed.to_dict(), "xstate": base64.b64encode(xstate).decode(),
            "syscall_note": note}


def restore(pid: int, cpu: dict[str, Any]) -> None:
    """Load the saved registers and xstate into stopped task ``pid``."""
    ptrace.set_xstate(pid, base64.b64decode(cpu["xstate"]))
    ptrace.set_regs(pid, ptrace.UserRegs.from_dict(cpu["regs"]))
