"""Batches of injected syscalls (kernel/inject.py ``later``): queued calls run in the
traced process, in order, in one round trip, before the next call; a failed checked call
raises and stops the batch there; the process's mask and its own registers come back."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time

import pytest

from ckpt.kernel import libc, ptrace
from ckpt.kernel.inject import BATCH_CODE, BatchArea, InjectionError, Injector

SIZE = 64 << 10
FREE = 0x7E0000000000  # where the batch maps a page in the child: free in a fresh Python


def _maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


@pytest.fixture
def traced() -> tuple[int, Injector]:
    """A forked child, every signal blocked (as a restore's new processes), seized and
    stopped, with the
    batch loop and a syscall site mapped at the same place in it."""
    area = libc.syscall("mmap", 0, SIZE, libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC,
                        libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0)
    ctypes.memmove(area + SIZE - 256, BATCH_CODE, len(BATCH_CODE))
    ctypes.memmove(area + SIZE - 16, b"\x0f\x05\xcc", 3)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
            os.write(ready_w, b".")
            while True:
                time.sleep(1)
        finally:
            os._exit(0)
    libc.syscall("munmap", area, SIZE)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    ptrace.seize(pid, ptrace.INJECT_OPTIONS | ptrace.PTRACE_O_EXITKILL)
    ptrace.interrupt(pid)
    ptrace.wait_stop(pid)
    inj = Injector(pid, area + SIZE - 16, ptrace.get_regs(pid),
                   batch=BatchArea(area + SIZE - 256, area + SIZE // 2, 100))
    try:
        yield pid, inj
    finally:
        inj.discard()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_queued_calls_run_in_order_before_the_next_call(traced: tuple[int, Injector]) -> None:
    pid, inj = traced
    mask = ptrace.get_sigmask(pid)
    regs = ptrace.get_regs(pid)
    inj.later("mmap", FREE, 4096, libc.PROT_READ, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS
              | libc.MAP_FIXED, -1, 0)
    inj.later("mprotect", FREE, 4096, libc.PROT_READ | libc.PROT_WRITE)
    inj.later("close", 1 << 20, check=False)  # fails (EBADF), which nobody checks
    assert f"{FREE:x}-" not in _maps(pid)  # queued, not run yet
    assert inj.raw("getpid") == pid  # one round trip: the queue, then getpid
    assert (inj.count, inj.trips) == (4, 1)
    line = next(x for x in _maps(pid).splitlines() if x.startswith(f"{FREE:x}-"))
    assert line.split()[1] == "rw-p"
    assert mask & (1 << (signal.SIGTRAP - 1))
    assert ptrace.get_sigmask(pid) == mask  # the forced trap of the loop unblocked it
    inj.settle()
    assert ptrace.get_regs(pid).rip == regs.rip


def test_a_failed_checked_call_stops_the_batch(traced: tuple[int, Injector]) -> None:
    pid, inj = traced
    inj.later("close", 1 << 20)
    inj.later("mmap", FREE, 4096, libc.PROT_READ, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS
              | libc.MAP_FIXED, -1, 0)
    with pytest.raises(InjectionError) as e:
        inj.flush()
    assert e.value.errno == errno.EBADF and "close in process" in str(e.value)
    assert f"{FREE:x}-" not in _maps(pid)  # after the failure: not run
    assert inj.call("getpid") == pid  # the process goes on taking calls
    assert os.path.exists(f"/proc/{pid}") and inj.trips == 2


def test_errnos_that_are_no_failure_let_the_batch_go_on(traced: tuple[int, Injector]) -> None:
    """``ok``: a call failing with one of those errnos is no failure, the calls after it
    run; failing with another it raises, once the batch ran (Restore unregisters rseq
    so: EINVAL when none is registered)."""
    pid, inj = traced
    inj.later("close", 1 << 20, ok=(errno.EBADF,))
    inj.later("mmap", FREE, 4096, libc.PROT_READ, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS
              | libc.MAP_FIXED, -1, 0)
    inj.flush()
    assert f"{FREE:x}-" in _maps(pid) and inj.trips == 1
    inj.later("close", 1 << 20, ok=(errno.EINVAL,))
    inj.later("munmap", FREE, 4096)
    with pytest.raises(InjectionError) as e:
        inj.flush()
    assert e.value.errno == errno.EBADF and "close in process" in str(e.value)
    assert f"{FREE:x}-" not in _maps(pid)  # the call after it ran


def test_queued_calls_carry_the_data_they_point_to(traced: tuple[int, Injector],
                                                   tmp_path) -> None:
    """A queued call's path or struct goes with the batch (``data``; a maker of it is
    given its address, where the call's results are read too); a failure raises the
    caller's error (``failed``) and stops the batch there."""
    pid, inj = traced
    (tmp_path / "sub").mkdir()
    inj.later("chdir", 0, data=os.fsencode(str(tmp_path)) + b"\0")
    inj.later("prctl", libc.PR_SET_NAME, 0, data=lambda at: b"queued-name\0", data_at=1)
    seen = []
    inj.later("pipe2", 0, os.O_CLOEXEC, data=lambda at: seen.append(at) or bytes(8))
    assert inj.raw("getpid") == pid and inj.trips == 1
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)
    with open(f"/proc/{pid}/comm") as f:
        assert f.read() == "queued-name\n"
    ends = [int.from_bytes(inj.read(seen[-1] + i, 4), "little") for i in (0, 4)]
    assert all(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:") for fd in ends)

    class Refused(Exception):
        pass

    inj.later("chdir", 0, data=b"sub\0")
    inj.later("chdir", 0, data=b"/nonexistent-ckpt-test\0",
              failed=lambda err: Refused(os.strerror(err)))
    inj.later("chdir", 0, data=b"/\0")
    with pytest.raises(Refused, match="No such file"):
        inj.flush()
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path / "sub")  # stopped there


def test_queued_data_beyond_the_area_runs_in_more_batches(
        traced: tuple[int, Injector], tmp_path) -> None:
    pid, inj = traced
    path = os.fsencode(str(tmp_path)) + b"\0"
    for _ in range(30):  # 30 times 4 KiB of data: more than the area holds at once
        inj.later("chdir", 0, data=path.ljust(4096, b"\0"))
    inj.flush()
    assert inj.trips > 1 and inj.count == 30
    assert os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)


def test_a_queued_call_reads_what_it_wrote_after_the_batch(traced: tuple[int, Injector]) -> None:
    """``then`` gets the result and the place of the call's data once the batch ran, the
    calls queued after it run too: the same round trip."""
    pid, inj = traced
    got: list[tuple[int, bytes]] = []
    inj.later("pipe2", 0, os.O_CLOEXEC, data=bytes(8),
              then=lambda res, at: got.append((res, inj.read(at, 8))))
    assert got == []  # queued, not run yet
    inj.later("getpid")
    assert inj.raw("gettid") == pid and inj.trips == 1
    assert got[0][0] == 0
    ends = [int.from_bytes(got[0][1][i:i + 4], "little") for i in (0, 4)]
    assert all(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:") for fd in ends)


def test_call_then_trap_stops_the_task_just_after_the_call(
        traced: tuple[int, Injector]) -> None:
    """The call's result, and the task at a trap stop on the instruction after the
    syscall (the site's next byte is an int3 it never ran): no more stops than the
    call's entry and the trap."""
    pid, inj = traced
    inj.later("getpid")  # the queue first, in a round trip of its own
    assert inj.call_then_trap("gettid") == pid
    assert inj.trips == 2
    regs = ptrace.get_regs(pid)
    assert regs.rip == inj.site + 2 and regs.orig_rax == libc.NR["gettid"]
    assert ptrace.poll_stop(pid) is None  # at the trap stop, nothing else reported
    with pytest.raises(InjectionError, match="Bad file descriptor"):
        inj.call_then_trap("close", 1 << 20)
