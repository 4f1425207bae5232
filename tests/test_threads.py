"""Multi-threaded processes: every thread comes back under its TID, in one thread group.

The targets (tests/progs/threads_*.c, threads_py.py) print one line per thread and
tick; after a dump (which kills them) and a restore, every thread's counter goes on
from the next number, thread-local storage and per-thread kernel state (signal
mask, pending signals, alternate stack, name, CPU affinity, tid address, robust
list) are the thread's own again, and threads blocked in the kernel (futex, read)
stay blocked until they are released.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_state,
    restore_detached,
    scaled,
    wait_until,
)

SYS_READ = 0
SYS_FUTEX = 202
SYS_TGKILL = 234
SYS_KCMP = 312
KCMP_VM, KCMP_FILES, KCMP_FS, KCMP_SIGHAND = 1, 2, 3, 4
USR1_BIT = 1 << (signal.SIGUSR1 - 1)

_libc = ctypes.CDLL(None, use_errno=True)


# ------------------------------------------------------------------ threads, observed

def tgkill(pid: int, tid: int, sig: int) -> None:
    """Send ``sig`` to thread ``tid`` of process ``pid`` (a thread-directed signal)."""
    if _libc.syscall(SYS_TGKILL, pid, tid, sig) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"tgkill({pid}, {tid}, {sig}): {os.strerror(err)}")


def kcmp(tid1: int, tid2: int, kind: int) -> int:
    """0 when the two tasks share the kernel object ``kind`` (KCMP_VM, ...)."""
    res = _libc.syscall(SYS_KCMP, tid1, tid2, kind, ctypes.c_ulong(0), ctypes.c_ulong(0))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"kcmp({tid1}, {tid2}, {kind}): {os.strerror(err)}")
    return int(res)


def tasks(pid: int) -> set[int]:
    """The TIDs of every thread of ``pid``."""
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def task_status(pid: int, tid: int) -> dict[str, str]:
    """/proc/PID/task/TID/status as a dict of raw values."""
    out = {}
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def task_comm(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/comm") as f:
        return f.read().rstrip("\n")


def task_syscall(pid: int, tid: int) -> int | None:
    """The syscall thread ``tid`` is blocked in, or None (running, or in user space)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            head = f.read().split(" ", 1)[0].strip()
    except FileNotFoundError:
        return None
    return int(head) if head.lstrip("-").isdigit() and int(head) >= 0 else None


def wait_in_syscall(pid: int, tid: int, nr: int, what: str) -> None:
    wait_until(lambda: task_syscall(pid, tid) == nr, 10,
               f"{what} (thread {tid}) to block in syscall {nr}")


def sig_bits(pid: int, tid: int, key: str) -> int:
    """A signal set of thread ``tid`` (SigBlk, SigPnd, ShdPnd, ...) as an int."""
    return int(task_status(pid, tid)[key], 16)


def assert_thread_group(pid: int, tids: list[int]) -> None:
    """``pid`` has exactly the threads ``tids``, all in its thread group, sharing its
    memory, fd table, fs context and signal handlers (as pthread_create made them)."""
    assert tasks(pid) == set(tids), f"threads of {pid}: {sorted(tasks(pid))} != {sorted(tids)}"
    for tid in tids:
        st = task_status(pid, tid)
        assert st["Tgid"] == str(pid), f"thread {tid} is in thread group {st['Tgid']}"
        assert st["Threads"] == str(len(tids)), f"thread {tid}: Threads {st['Threads']}"
        for kind, name in ((KCMP_VM, "memory"), (KCMP_FILES, "fd table"),
                           (KCMP_FS, "fs context"), (KCMP_SIGHAND, "signal handlers")):
            assert kcmp(pid, tid, kind) == 0, f"thread {tid} does not share the {name} of {pid}"


def role_numbers(out: Output, role: str) -> list[int]:
    """N of every line "ROLE N ..." in order."""
    rx = re.compile(rf"^{role} (\d+)\b")
    return [int(m[1]) for m in map(rx.match, out.lines()) if m]


def wait_tids(out: Output, count: int, timeout: float = 10.0) -> list[int]:
    tids = [int(x) for x in out.wait_line(r"^tids ", timeout=timeout).split()[1:]]
    assert len(tids) == count and len(set(tids)) == count, tids
    return tids


def wait_ticks(out: Output, roles: str | list[str], count: int, timeout: float = 10.0
               ) -> None:
    """Wait until every role printed at least ``count`` ticks."""
    for role in roles:
        wait_until(lambda r=role: len(role_numbers(out, r)) >= count, timeout,
                   f"{count} ticks of {role} in {out.path}")


def counts_of(out: Output, roles: str | list[str]) -> dict[str, int]:
    return {role: len(role_numbers(out, role)) for role in roles}


def wait_ticks_after(out: Output, counts: dict[str, int], more: int,
                     timeout: float = 10.0) -> None:
    for role, n in counts.items():
        wait_ticks(out, [role], n + more, timeout)


def assert_all_consecutive(out: Output, roles: str | list[str]) -> None:
    for role in roles:
        nums = role_numbers(out, role)
        try:
            assert_consecutive(nums)
        except AssertionError as e:
            raise AssertionError(f"thread {role}: {e}") from None


def bad_lines(out: Output) -> list[str]:
    return [ln for ln in out.lines() if "BAD" in ln or "FAILED" in ln]


# ------------------------------------------------------------------ 1. counting threads

COUNT_ROLES = ["M", "T1", "T2", "T3", "T4"]


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_threads_count_on(build: Builder, procs: Procs, images: Path, static: bool) -> None:
    """Main and 4 pthreads each count on: same TIDs in one thread group, TLS intact,
    every counter consecutive, and main still sees the other threads' stores."""
    target = procs.start([build("threads_count", static=static)])
    out = target.out
    tids = wait_tids(out, 5)
    assert tids[0] == target.pid
    wait_ticks(out, COUNT_ROLES, 5)
    assert_thread_group(target.pid, tids)
    comms = {tid: task_comm(target.pid, tid) for tid in tids}

    dump_and_check_dead(procs, target, images)
    counts = counts_of(out, COUNT_ROLES)
    restored = restore_detached(procs, target.pid, out, images)

    assert_thread_group(restored.pid, tids)
    assert {tid: task_comm(restored.pid, tid) for tid in tids} == comms
    wait_ticks_after(out, counts, 5)
    assert_all_consecutive(out, COUNT_ROLES)
    assert not bad_lines(out), bad_lines(out)

    # Shared memory: main's view of each thread's progress moves past the dump point.
    def main_sees_progress() -> bool:
        last = [ln for ln in out.lines() if ln.startswith("M ")][-1].split()
        return all(int(p) >= counts[f"T{i}"] + 3 for i, p in enumerate(last[2:], 1))

    wait_until(main_sees_progress, 10, "main to see every thread's stores after restore")
    assert is_alive(restored.pid)


def test_dump_leave_running_threads(build: Builder, procs: Procs, images: Path) -> None:
    """``dump -R``: every thread is let go (not traced, not stopped) and counts on."""
    target = procs.start([build("threads_count")])
    out = target.out
    tids = wait_tids(out, 5)
    wait_ticks(out, COUNT_ROLES, 3)
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R", "-v4", "-o", "dump.log")
    assert (images / "inventory.json").is_file()
    # each thread's own values (injected prctl calls...) in one batch, one round trip
    assert f"its {len(tids) - 1} other threads read in {len(tids) - 1} round trips" in \
        (images / "dump.log").read_text()
    assert_thread_group(target.pid, tids)
    for tid in tids:
        st = task_status(target.pid, tid)
        assert st["TracerPid"] == "0", f"thread {tid} still traced by {st['TracerPid']}"
    counts = counts_of(out, COUNT_ROLES)
    wait_ticks_after(out, counts, 4)
    for tid in tids:
        state = task_status(target.pid, tid)["State"].split()[0]
        assert state in ("R", "S"), f"thread {tid} left in state {state}"
    assert_all_consecutive(out, COUNT_ROLES)
    assert not bad_lines(out), bad_lines(out)


# ------------------------------------------------------------------ 2. per-thread state

STATE_ROLES = ["M", "A", "B", "C"]
STATE_COMMS = ["thr-main", "thr-blkusr1", "thr-altstk", "thr-plain"]


def usr2_on(out: Output, pid: int, tid: int) -> str:
    """tgkill SIGUSR2 to ``tid``; the line its handler wrote."""
    start = len(out.lines())
    tgkill(pid, tid, signal.SIGUSR2)
    return out.wait_line(r"^usr2 ", start=start)


def per_thread_state(pid: int, tids: list[int]) -> dict[int, tuple[str, str, str]]:
    """(comm, SigBlk, Cpus_allowed_list) of each thread."""
    out = {}
    for tid in tids:
        st = task_status(pid, tid)
        out[tid] = (task_comm(pid, tid), st["SigBlk"], st["Cpus_allowed_list"])
    return out


def test_per_thread_mask_altstack_names_and_directed_signals(
        build: Builder, procs: Procs, images: Path) -> None:
    """Each thread keeps its own signal mask, alternate stack, name and CPU affinity;
    a thread-directed signal sent after restore runs its handler on that thread."""
    target = procs.start([build("threads_state")])
    out = target.out
    tids = wait_tids(out, 4)
    m, a, b, c = tids
    wait_ticks(out, STATE_ROLES, 3)
    before = per_thread_state(target.pid, tids)
    # The set-up is as meant: names, SIGUSR1 blocked in A only, C pinned.
    assert [before[t][0] for t in tids] == STATE_COMMS
    assert [bool(sig_bits(target.pid, t, "SigBlk") & USR1_BIT) for t in tids] == [
        False, True, False, False]
    if os.cpu_count() and len(os.sched_getaffinity(0)) > 1:
        assert before[c][2] != before[m][2], "thread C is not pinned"
    for tid, onstack in ((b, 1), (c, 0), (m, 0)):
        assert usr2_on(out, target.pid, tid) == f"usr2 tid={tid} onstack={onstack}"

    dump_and_check_dead(procs, target, images)
    counts = counts_of(out, STATE_ROLES)
    restored = restore_detached(procs, target.pid, out, images)

    assert_thread_group(restored.pid, tids)
    assert per_thread_state(restored.pid, tids) == before
    with open(f"/proc/{restored.pid}/comm") as f:
        assert f.read().strip() == "thr-main"
    wait_ticks_after(out, counts, 3)
    for tid, onstack in ((b, 1), (c, 0), (m, 0)):
        assert usr2_on(out, restored.pid, tid) == f"usr2 tid={tid} onstack={onstack}"
    wait_ticks_after(out, counts, 6)
    assert_all_consecutive(out, STATE_ROLES)
    assert sig_bits(restored.pid, a, "SigBlk") & USR1_BIT, "A lost its blocked SIGUSR1"
    assert not [ln for ln in out.lines() if ln.startswith(("usr1", "A unblocked"))]
    assert not bad_lines(out), bad_lines(out)


def test_signal_pending_on_one_thread(build: Builder, procs: Procs, images: Path) -> None:
    """A SIGUSR1 pending on thread A only (A blocks it) is still A's after restore,
    and is delivered to A when A unblocks it."""
    target = procs.start([build("threads_state")])
    out = target.out
    tids = wait_tids(out, 4)
    m, a, b, c = tids
    wait_ticks(out, STATE_ROLES, 3)
    tgkill(target.pid, a, signal.SIGUSR1)
    wait_until(lambda: sig_bits(target.pid, a, "SigPnd") & USR1_BIT, 5,
               "SIGUSR1 pending on thread A")

    def pending_only_on_a(pid: int) -> None:
        assert sig_bits(pid, a, "SigPnd") & USR1_BIT, "SIGUSR1 no longer pending on A"
        for tid in (m, b, c):
            assert not sig_bits(pid, tid, "SigPnd") & USR1_BIT, f"SIGUSR1 pending on {tid}"
        assert not sig_bits(pid, m, "ShdPnd") & USR1_BIT, "SIGUSR1 became process-wide"

    pending_only_on_a(target.pid)
    dump_and_check_dead(procs, target, images)
    counts = counts_of(out, STATE_ROLES)
    restored = restore_detached(procs, target.pid, out, images)

    assert_thread_group(restored.pid, tids)
    pending_only_on_a(restored.pid)
    wait_ticks_after(out, counts, 3)
    assert not [ln for ln in out.lines() if ln.startswith("usr1")], "SIGUSR1 ran while blocked"
    assert usr2_on(out, restored.pid, a) == f"usr2 tid={a} onstack=0"
    out.wait_line(r"^A unblocked$")
    usr1 = [ln for ln in out.lines() if ln.startswith(("usr1", "A unblocked"))]
    assert usr1 == [f"usr1 tid={a}", "A unblocked"], usr1
    assert not sig_bits(restored.pid, a, "SigPnd") & USR1_BIT
    assert not sig_bits(restored.pid, a, "SigBlk") & USR1_BIT
    wait_ticks_after(out, counts, 5)
    assert_all_consecutive(out, STATE_ROLES)


# ------------------------------------------------------------------ 3. blocked threads

def test_threads_blocked_in_kernel_and_mutex_counter(build: Builder, procs: Procs,
                                                     images: Path) -> None:
    """Threads in pthread_cond_wait, read() on a pipe and pthread_mutex_lock at dump
    time are blocked there again after restore, and wake when main releases them;
    a counter three threads increment under a mutex stays consistent."""
    target = procs.start([build("threads_blocked")])
    out = target.out
    tids = wait_tids(out, 7)
    m, w, r, lk = tids[:4]
    for what in ("W waiting", "R reading", "L locking"):
        out.wait_line(rf"^{what}$")
    blocked = ((w, SYS_FUTEX, "the condition waiter"), (r, SYS_READ, "the pipe reader"),
               (lk, SYS_FUTEX, "the mutex locker"))
    for tid, nr, what in blocked:
        wait_in_syscall(target.pid, tid, nr, what)
    wait_ticks(out, ["M"], 5)

    dump_and_check_dead(procs, target, images)
    counts = counts_of(out, ["M"])
    last = [ln for ln in out.lines() if ln.startswith("M ")][-1].split()
    shared_at_dump = int(last[2].removeprefix("shared="))
    per_thread_at_dump = [int(x) for x in last[3:6]]
    restored = restore_detached(procs, target.pid, out, images)

    assert_thread_group(restored.pid, tids)
    for tid, nr, what in blocked:
        wait_in_syscall(restored.pid, tid, nr, what)
    wait_ticks_after(out, counts, 4)

    def incrementers_went_on() -> bool:
        last = [ln for ln in out.lines() if ln.startswith("M ")][-1].split()
        return (int(last[2].removeprefix("shared=")) > shared_at_dump
                and all(int(x) > y for x, y in zip(last[3:6], per_thread_at_dump,
                                                    strict=True)))

    wait_until(incrementers_went_on, 10, "every incrementer to go on after restore")
    early = [ln for ln in out.lines() if ln.startswith(("W woken", "R read ", "L locked"))]
    assert not early, f"released before main let them go: {early}"

    os.kill(restored.pid, signal.SIGUSR1)
    out.wait_line(r"^M released$")
    assert out.wait_line(r"^W woken") == "W woken"
    assert out.wait_line(r"^R read ") == "R read hello"
    assert out.wait_line(r"^L locked") == "L locked"
    wait_ticks(out, ["W", "R", "L"], 3)
    assert_all_consecutive(out, ["M", "W", "R", "L"])
    m_lines = [ln for ln in out.lines() if ln.startswith("M ") and ln != "M released"]
    assert all(ln.endswith(" ok") for ln in m_lines), [ln for ln in m_lines if "ok" not in ln]
    shared = [int(ln.split()[2].removeprefix("shared=")) for ln in m_lines]
    assert shared == sorted(shared), "the shared counter went backwards"
    assert not bad_lines(out), bad_lines(out)
    assert is_alive(restored.pid) and m == restored.pid


# ------------------------------------------------------------------ 4. CPython threads

PY_ROLES = ["M", "W1", "W2", "W3"]


def _check_python_output(out: Output) -> None:
    assert_all_consecutive(out, PY_ROLES)
    assert not bad_lines(out), bad_lines(out)
    m_lines = [ln for ln in out.lines() if ln.startswith("M ")]
    assert all(ln.endswith(" ok") for ln in m_lines), [ln for ln in m_lines if "ok" not in ln]
    joined = out.wait_line(r"^joined ")
    assert joined.endswith(" ok"), joined
    w_lines = sum(len(role_numbers(out, r)) for r in ("W1", "W2", "W3"))
    assert joined == f"joined len={w_lines} ok", "appends and printed ticks disagree"


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "attached"])
def test_python_threads(procs: Procs, images: Path, detach: bool) -> None:
    """CPython with 3 threading.Thread workers (one always holding or wanting the GIL)
    counts on after restore; the workers are then stopped and joined, and the
    interpreter exits with status 0."""
    target = procs.start([PYTHON, PROGS / "threads_py.py"])
    out = target.out
    tids = wait_tids(out, 4, timeout=20)
    assert tids[0] == target.pid
    wait_ticks(out, PY_ROLES, 5)
    assert_thread_group(target.pid, tids)

    dump_and_check_dead(procs, target, images)
    counts = counts_of(out, PY_ROLES)
    if detach:
        restored = restore_detached(procs, target.pid, out, images)
        assert_thread_group(restored.pid, tids)
        wait_ticks_after(out, counts, 5)
        os.kill(restored.pid, signal.SIGUSR1)
        assert procs.wait_gone(restored) == 0
        _check_python_output(out)
        return
    with subprocess.Popen(ckpt_cmd() + ["restore", "-D", str(images)],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as rest:
        try:
            wait_until(lambda: is_alive(target.pid) or rest.poll() is not None, 60,
                       "the restored process")
            assert rest.poll() is None, f"ckpt restore exited {rest.returncode}"
            procs.adopt(target.pid, out)
            wait_ticks_after(out, counts, 5, timeout=30)
            assert_thread_group(target.pid, tids)
            os.kill(target.pid, signal.SIGUSR1)
            code = rest.wait(scaled(20))
        finally:
            if rest.poll() is None:
                rest.kill()
        assert code == 0, rest.stderr.read() if rest.stderr else ""
    assert proc_state(target.pid) is None, "ckpt did not reap the process"
    _check_python_output(out)


# ------------------------------------------------------------------ 5. threads that end

def test_thread_exit_and_join_after_restore(build: Builder, procs: Procs,
                                            images: Path) -> None:
    """Main, blocked in pthread_join(E) at dump time, returns when E exits after the
    restore (the kernel clears E's tid word: CLONE_CHILD_CLEARTID); the robust mutex E
    held is marked owner-dead (E's robust list); F, which ended while main waited for
    E, is joined at once."""
    target = procs.start([build("threads_exit")])
    out = target.out
    tids = wait_tids(out, 3)
    m, e, f = tids
    wait_ticks(out, ["E", "F"], 3)
    wait_in_syscall(target.pid, m, SYS_FUTEX, "main in pthread_join")

    dump_and_check_dead(procs, target, images)
    counts = counts_of(out, ["E", "F"])
    restored = restore_detached(procs, target.pid, out, images)

    assert_thread_group(restored.pid, tids)
    wait_ticks_after(out, counts, 3)
    wait_in_syscall(restored.pid, m, SYS_FUTEX, "main in pthread_join")
    assert not [ln for ln in out.lines() if ln.startswith("joined")]

    tgkill(restored.pid, f, signal.SIGUSR1)
    wait_until(lambda: tasks(restored.pid) == {m, e}, 10, "thread F to end")
    f_ticks = len(role_numbers(out, "F"))
    assert not [ln for ln in out.lines() if ln.startswith("joined")], "main joined too early"

    tgkill(restored.pid, e, signal.SIGUSR1)
    assert out.wait_line(r"^joined E") == "joined E 42 err=0"
    assert out.wait_line(r"^robust ") == "robust EOWNERDEAD"
    assert out.wait_line(r"^joined F") == "joined F 7 err=0"
    wait_ticks(out, ["M"], 3)
    assert tasks(restored.pid) == {m}
    assert task_status(restored.pid, m)["Threads"] == "1"
    assert len(role_numbers(out, "F")) == f_ticks, "F printed after it ended"
    assert_all_consecutive(out, ["E", "F", "M"])
    assert not bad_lines(out), bad_lines(out)
    assert is_alive(restored.pid)
