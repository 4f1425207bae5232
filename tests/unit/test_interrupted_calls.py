"""How a task frozen inside a syscall is saved and let go: which calls run again."""

from __future__ import annotations

from ckpt.kernel import ptrace
from ckpt.resources import cpu

EINTR, ERESTARTSYS = 4, 512
U64 = 1 << 64


def regs(nr: int, ret: int) -> ptrace.UserRegs:
    r = ptrace.UserRegs()
    r.orig_rax, r.rax, r.rip = nr, ret % U64, 0x1000
    return r


def test_semop_interrupted_by_the_stop_runs_again() -> None:
    """semop and semtimedop return EINTR after a mere stop (the kernel never restarts
    them): saved, and let go after a refused dump, they run again."""
    for nr in (65, 220):
        saved = regs(nr, -EINTR)
        assert cpu.fix_interrupted_syscall(saved) is not None
        assert (saved.rax, saved.rip) == (nr, 0x1000 - 2)
        released = cpu.on_release(regs(nr, -EINTR))
        assert (released.rax, released.rip) == (nr, 0x1000 - 2)


def test_other_calls_are_left_to_the_kernel_on_release() -> None:
    """Restart codes are the kernel's business when the task runs on; EINTR of another
    call (read) is what the program sees."""
    for nr, ret in ((0, -EINTR), (0, -ERESTARTSYS), (70, -ERESTARTSYS), (65, 0)):
        r = regs(nr, ret)
        out = cpu.on_release(r)
        assert (out.rax, out.rip) == (ret % U64, 0x1000)
