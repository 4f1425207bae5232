"""Dump then restore single processes: same PID, memory intact, output continues exactly.

Each target prints a counter; after a dump (which kills it) and a restore, the
numbers go on from the next one: none skipped, none repeated.
"""

from __future__ import annotations

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
    Procs,
    assert_consecutive,
    ckpt_cmd,
    dump_and_check_dead,
    is_alive,
    proc_state,
    proc_status,
    restore_detached,
    scaled,
    wait_until,
)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_counter(build: Builder, procs: Procs, images: Path, static: bool) -> None:
    """A C counter sleeping in nanosleep comes back under its PID and counts on."""
    exe = build("counter", static=static)
    target = procs.start([exe])
    target.out.wait_numbers(5)
    before = dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert os.readlink(f"/proc/{restored.pid}/exe") == str(exe)
    with open(f"/proc/{restored.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == os.fsencode(exe)
    nums = target.out.wait_numbers(len(before) + 5)
    assert_consecutive(nums)
    assert not [ln for ln in target.out.lines() if "CORRUPT" in ln]
    assert is_alive(restored.pid)


def test_busy_loop(build: Builder, procs: Procs, images: Path) -> None:
    """A process spinning in user space (integer and SSE registers in use) resumes exactly."""
    target = procs.start([build("busy")])
    target.out.wait_numbers(4)
    before = dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    nums = target.out.wait_numbers(len(before) + 4)
    assert_consecutive(nums)
    assert not [ln for ln in target.out.lines() if "BAD" in ln]
    assert is_alive(restored.pid)


def _sum_squares(n: int) -> int:
    return sum(i * i for i in range(n + 1))


def test_python_dict_and_generator(procs: Procs, images: Path) -> None:
    """A CPython process keeps its 200k-entry dict and a generator paused mid-way."""
    target = procs.start([PYTHON, PROGS / "dictgen.py"])
    target.out.wait_line(r"^ready 200000$", timeout=20)
    target.out.wait_line(r"^4 ", timeout=10)
    dump_and_check_dead(procs, target, images)
    ticks_before = target.out.first_field_numbers()
    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{ticks_before[-1] + 4} ", timeout=10)
    os.kill(restored.pid, signal.SIGUSR1)  # the Python-level handler must run
    usr1 = target.out.wait_line(r"^usr1 \d+$", timeout=10)
    tick_lines = [ln for ln in target.out.lines() if re.match(r"^\d+ ", ln)]
    assert_consecutive([int(ln.split()[0]) for ln in tick_lines])
    for ln in tick_lines:
        tick, value, ok = ln.split()
        assert int(value) == _sum_squares(int(tick)), ln
        assert ok == "dict=ok", ln
    assert int(usr1.split()[1]) > ticks_before[-1]
    assert is_alive(restored.pid)


def test_restore_waits_for_exit_status(build: Builder, procs: Procs, images: Path) -> None:
    """Without -d, ckpt restore waits for the process and exits with its exit status."""
    target = procs.start([build("counter"), "-n", "30", "-x", "7"])
    target.out.wait_numbers(3)
    # Stopped, it cannot reach 30 and exit before the dump, however slow the machine.
    os.kill(target.pid, signal.SIGSTOP)
    wait_until(lambda: proc_state(target.pid) == "T", 10, "the counter to stop")
    before = dump_and_check_dead(procs, target, images)
    with subprocess.Popen(ckpt_cmd() + ["restore", "-D", str(images)],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as rest:
        wait_until(lambda: proc_state(target.pid) == "T"
                   and proc_status(target.pid)["TracerPid"] == "0", 30,
                   "the restored counter, stopped as it was and let go")
        assert target.out.numbers() == before, "the stopped counter counted on"
        os.kill(target.pid, signal.SIGCONT)
        assert rest.wait(scaled(30)) == 7, rest.stderr.read() if rest.stderr else ""
    assert_consecutive(target.out.numbers())
    assert target.out.numbers()[-1] == 30
    assert not os.path.exists(f"/proc/{target.pid}"), "ckpt did not reap the process"


def test_restore_without_detach_reports_signal(build: Builder, procs: Procs,
                                               images: Path) -> None:
    """A restored process killed by a signal makes ckpt restore exit with 128+signal."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    before = dump_and_check_dead(procs, target, images)
    with subprocess.Popen(ckpt_cmd() + ["restore", "-D", str(images)],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as rest:
        target.out.wait_numbers(len(before) + 2)
        os.kill(target.pid, signal.SIGKILL)
        assert rest.wait(scaled(10)) == 128 + signal.SIGKILL, \
            rest.stderr.read() if rest.stderr else ""
    assert not os.path.exists(f"/proc/{target.pid}"), "ckpt did not reap the process"


def test_restore_twice_from_one_dump(build: Builder, procs: Procs, images: Path) -> None:
    """Images stay valid after a restore: kill the restored process and restore again."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    before = dump_and_check_dead(procs, target, images)
    first = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(before) + 3)
    os.kill(first.pid, signal.SIGKILL)
    procs.wait_gone(first)
    # The output file grew while the first restored process ran; the second one writes
    # the same bytes again from the dump-time offset, so the sequence stays whole.
    restore_detached(procs, target.pid, target.out, images)
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))


def test_ckpts_own_signal_actions_stay_out(build: Builder, procs: Procs, images: Path) -> None:
    """The root is a fork of ckpt: the signals ckpt handles or ignores (its own SIGINT
    and SIGPIPE..., and SIGHUP and SIGUSR2 ignored by whoever started it) come back to
    the default in it, as the counter had them: none ignored, none caught."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)

    def ignoring() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    res = subprocess.run(ckpt_cmd() + ["restore", "-D", str(images), "-d"], preexec_fn=ignoring,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=scaled(60))
    assert res.returncode == 0, res.stderr
    restored = procs.adopt(target.pid, target.out)
    status = proc_status(restored.pid)
    assert (int(status["SigIgn"], 16), int(status["SigCgt"], 16)) == (0, 0), status
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))
