"""Run syscalls inside a ptrace-stopped task, with no code of ours in it.

The task's registers are pointed at a ``syscall`` instruction that already
exists in its address space (in the vDSO, or a helper page at restore), and the
task is resumed with PTRACE_SYSCALL: it stops on entering the syscall and again
on leaving it, where the result is read. ``orig_rax`` is set to -1 so the
kernel's syscall-restart logic leaves the injected call alone, and the trap
flag is cleared.

Syscall stops are not signals, which is why this is not done by single-stepping
the instruction: a single-step trap is a forced SIGTRAP, which (while SIGTRAP is
blocked, as during a dump) resets the task's SIGTRAP handler to SIG_DFL, and
which merges with a SIGTRAP the task already had pending, so that one would be
consumed. The tracee must have PTRACE_O_TRACESYSGOOD (``ptrace.INJECT_OPTIONS``).

A task in a group stop (SIGSTOP, Ctrl-Z) runs injected syscalls all the same:
the trap it reports first when resumed (PTRACE_EVENT_STOP) is passed over, and
it stays stopped once detached.
"""

from __future__ import annotations

import os
import re
from types import TracebackType

from . import libc, ptrace
from .procfs import ProcessGone

_TRAP_FLAG = 0x100  # EFLAGS.TF
_SYSCALL_SITE_RE = re.compile(rb"\xb8....\x0f\x05", re.S)


class InjectionError(OSError):
    """An injected syscall failed inside the target."""


def find_syscall_site(code: bytes, base: int) -> int | None:
    """The address of a ``syscall`` instruction that follows ``mov eax, imm32`` in ``code``."""
    m = _SYSCALL_SITE_RE.search(code)
    return base + m.start() + 5 if m else None


def vdso_syscall_offset(vdso_code: bytes) -> int:
    site = find_syscall_site(vdso_code, 0)
    if site is None:
        raise RuntimeError("no syscall instruction found in the vDSO")
    return site


class Injector:
    """Executes syscalls in stopped task ``pid`` through the instruction at ``site``.

    ``options`` are the ptrace options the task was seized with (INJECT_OPTIONS at
    least), for whoever needs to add one for a while. Holds the task's
    /proc/PID/mem open until ``close``; as a context manager it closes it on
    leaving the ``with`` block."""

    def __init__(self, pid: int, site: int, base_regs: ptrace.UserRegs,
                 options: int = ptrace.INJECT_OPTIONS):
        self.pid = pid
        self.options = options
        self.site = site
        self.base = base_regs.copy()
        self.count = 0
        self._mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)

    def close(self) -> None:
        if self._mem >= 0:
            os.close(self._mem)
            self._mem = -1

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def raw(self, name: str, *args: int) -> int:
        """Run syscall ``name``; return its raw result (a negative errno on failure)."""
        regs = self.base.copy()
        regs.rip = self.site
        regs.rax = libc.NR[name]
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF
        # Arguments not given are 0, never left-over registers: prctl and others
        # refuse non-zero unused arguments.
        padded = tuple(args) + (0,) * (6 - len(args))
        for reg, val in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), padded, strict=True):
            setattr(regs, reg, val & 0xFFFFFFFFFFFFFFFF)
        regs.eflags &= ~_TRAP_FLAG
        ptrace.set_regs(self.pid, regs)
        self._run(name)
        self.count += 1
        res = ptrace.get_regs(self.pid).rax
        return res - (1 << 64) if res >= 1 << 63 else res

    def _run(self, name: str) -> None:
        """Resume the task from stop to stop until it leaves the injected syscall."""
        entered = False
        sig = 0
        while True:
            ptrace.syscall(self.pid, sig)
            stop = ptrace.wait_stop(self.pid)
            sig = 0
            if stop.exited:
                raise ProcessGone(self.pid, f"died during injected {name}: {stop.describe()}")
            if stop.stopsig == ptrace.SYSCALL_STOP:
                if entered:
                    return
                entered = True
            elif stop.event in (ptrace.PTRACE_EVENT_STOP, ptrace.PTRACE_EVENT_CLONE):
                continue  # a group-stop or interrupt trap; a traced clone's event
            elif stop.event == 0 and stop.stopsig in ptrace.STOP_SIGNALS:
                sig = stop.stopsig  # someone stopped the task meanwhile: let it stop
            else:
                raise InjectionError(0, f"unexpected stop during injected {name} in process "
                                        f"{self.pid}: {stop.describe()}")

    def call(self, name: str, *args: int) -> int:
        """Run syscall ``name``; raise InjectionError when it fails."""
        res = self.raw(name, *args)
        if -4096 < res < 0:
            raise InjectionError(-res, f"{name} in process {self.pid}: {os.strerror(-res)}")
        return res

    def read(self, addr: int, size: int) -> bytes:
        return os.pread(self._mem, size, addr)

    def write(self, addr: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            done += os.pwrite(self._mem, data[done:], addr + done)

    def write_string(self, addr: int, s: str) -> int:
        data = os.fsencode(s) + b"\0"
        self.write(addr, data)
        return len(data)
