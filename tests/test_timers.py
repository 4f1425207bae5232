"""POSIX timers come back under their IDs, armed as they were."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ckpt_helpers import Builder, Procs, assert_consecutive, dump_and_check_dead, restore_detached
from test_task_refusals import refused_dump

LINE = re.compile(r"^(\d+) fired=(\d+) idle=(\w+) late=(\w+) value=(\w+)$")


def test_posix_timers(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("ptimers")])
    out = target.out
    ids = out.wait_line(r"^ids ").split()[1:]
    assert ids == ["0", "2", "3"], ids  # a gap where the deleted timer was
    out.wait_line(r"^10 ")
    dump_and_check_dead(procs, target, images)
    fired_before = int(LINE.match(out.lines()[-1])[2])  # type: ignore[index]
    count = len(out.lines())
    restore_detached(procs, target.pid, out, images)
    out.wait_line(rf"^{count + 10} ")
    rows = [LINE.match(ln) for ln in out.lines()[1:]]
    assert all(rows), out.lines()
    assert_consecutive([int(r[1]) for r in rows])  # type: ignore[index]
    assert all(r[3] == r[4] == r[5] == "ok" for r in rows), out.lines()[-3:]  # type: ignore[index]
    fired_after = int(rows[-1][2])  # type: ignore[index]
    # 10 lines of 50 ms at one tick per 20 ms: the timer fires again, about as often.
    assert fired_after - fired_before >= 10, (fired_before, fired_after)


@pytest.mark.parametrize("mode", ["dead-clock", "process"])
def test_timer_of_a_thread_or_process_gone_is_refused(build: Builder, procs: Procs,
                                                     images: Path, mode: str) -> None:
    """A timer counting the CPU time of a thread that has exited or of a process outside
    the tree lives on in the kernel, but timer_create would refuse to make it again: the
    dump refuses it before the kill, naming the process and the timer, and the program
    runs on."""
    other = procs.start(["sleep", "1000"]) if mode == "process" else None
    args = [build("timer_targets"), "process", str(other.pid)] if other else \
        [build("timer_targets"), mode]
    target = procs.start(args)
    target.out.wait_numbers(2)
    err = refused_dump(target, images)
    assert f"process {target.pid}: POSIX timer" in err, err
    what = {"dead-clock": "CPU time of thread",
            "process": f"CPU time of process {other.pid if other else 0}"}[mode]
    assert what in err, err
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 2))


def test_timers_of_a_live_thread_come_back(build: Builder, procs: Procs,
                                          images: Path) -> None:
    """A timer signalling a thread and one counting that thread's CPU time: both made
    again (the refusals above spare them)."""
    target = procs.start([build("timer_targets"), "live"])
    out = target.out
    out.wait_line(r"^2 ok$")
    dump_and_check_dead(procs, target, images)
    count = len(out.lines())
    restore_detached(procs, target.pid, out, images)
    out.wait_line(rf"^{count + 3} ")
    assert all(ln.endswith(" ok") for ln in out.lines()), out.lines()[-3:]
    assert_consecutive(out.first_field_numbers())


@pytest.mark.parametrize("signo", [12345, -5])
def test_timer_without_signal_keeps_its_number(build: Builder, procs: Procs, images: Path,
                                               signo: int) -> None:
    """A timer that sends no signal (SIGEV_NONE) keeps any sigev_signo it was made with
    (the kernel checks none): it comes back with it, armed (-5 failed the dump's reading
    of /proc/PID/timers, 12345 the restore's schema, after the kill)."""
    target = procs.start([build("timer_targets"), "no-signal", str(signo)])
    target.out.wait_numbers(2)
    dump_and_check_dead(procs, target, images)
    count = len(target.out.lines())
    restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(count + 2)
    shown = Path(f"/proc/{target.pid}/timers").read_text()
    assert f"signal: {signo}/" in shown and "notify: none/" in shown, shown
    assert_consecutive(target.out.numbers())
