"""How a task frozen inside a syscall is saved and let go: which calls run again."""

from __future__ import annotations

from ckpt.kernel import ptrace
from ckpt.resources import cpu

EINTR, ERESTARTSYS, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 4, 512, 514, 516
U64 = 1 << 64


def regs(nr: int, ret: int) -> ptrace.UserRegs:
    r = ptrace.UserRegs()
    r.orig_rax, r.rax, r.rip = nr, ret % U64, 0x1000
    return r


def test_calls_interrupted_by_the_stop_run_again() -> None:
    """semop, semtimedop, epoll_wait, epoll_pwait(2), sigtimedwait, io_getevents and
    the socket calls of a socket with a timeout return EINTR after a mere stop (the
    kernel never restarts them): saved, and let go after a refused dump, they run
    again."""
    for nr in cpu._EINTR_WHEN_STOPPED:
        saved = regs(nr, -EINTR)
        assert cpu.fix_interrupted_syscall(saved) is not None
        assert (saved.rax, saved.rip) == (nr, 0x1000 - 2)
        released = cpu.on_release(regs(nr, -EINTR))
        assert (released.rax, released.rip) == (-ERESTARTNOHAND % U64, 0x1000)


def test_other_calls_are_left_to_the_kernel_on_release() -> None:
    """Restart codes are the kernel's business when the task runs on; EINTR of another
    call (close, which closed the fd all the same) is what the program sees."""
    for nr, ret in ((3, -EINTR), (0, -ERESTARTSYS), (70, -ERESTARTSYS), (65, 0)):
        r = regs(nr, ret)
        out = cpu.on_release(r)
        assert (out.rax, out.rip) == (ret % U64, 0x1000)


def test_waits_the_kernel_would_restart_with_its_restart_block_run_again() -> None:
    """ERESTART_RESTARTBLOCK (the kernel would go on with what only it kept): nanosleep,
    clock_nanosleep, poll and futex run again with their own arguments (a restored
    ``tail -f`` is back in its poll, not dying of EINTR); restart_syscall itself, whose
    call is no longer known, returns EINTR."""
    for nr in (35, 230, 7, 202):
        saved = regs(nr, -ERESTART_RESTARTBLOCK)
        assert cpu.fix_interrupted_syscall(saved) is not None
        assert (saved.rax, saved.rip) == (nr, 0x1000 - 2)
    saved = regs(219, -ERESTART_RESTARTBLOCK)
    assert cpu.fix_interrupted_syscall(saved) == "restart_syscall will return EINTR"
    assert (saved.rax, saved.rip) == (-EINTR % U64, 0x1000)


def test_in_call_is_the_code_the_kernel_would_wait_with() -> None:
    """A call run again at restore goes back in with the restart code that decides what a
    signal handler running first does to it: its own (select's ERESTARTNOHAND, read's
    ERESTARTSYS), ERESTARTNOHAND for a restart block or semop's EINTR; none for a call
    that returns EINTR or was not interrupted."""
    assert cpu.in_call(regs(23, -ERESTARTNOHAND)) == ERESTARTNOHAND
    assert cpu.in_call(regs(0, -ERESTARTSYS)) == ERESTARTSYS
    assert cpu.in_call(regs(35, -ERESTART_RESTARTBLOCK)) == ERESTARTNOHAND
    assert cpu.in_call(regs(65, -EINTR)) == ERESTARTNOHAND
    assert cpu.in_call(regs(219, -ERESTART_RESTARTBLOCK)) is None
    assert cpu.in_call(regs(3, -EINTR)) is None
    assert cpu.in_call(regs(-1 % U64, 0)) is None
