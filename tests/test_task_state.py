"""Per-process state survives: signal mask, ignored and pending signals, sigaltstack,
umask, cwd, comm and rlimits."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    assert_silent,
    ckpt_ok,
    dump_and_check_dead,
    proc_state,
    proc_status,
    restore_detached,
    wait_until,
)


def _sigbit(*sigs: int) -> int:
    return sum(1 << (s - 1) for s in sigs)


def _state(line: str) -> dict[str, str]:
    """"STATE a=1 b=x y" -> {"a": "1", "b": "x y"} (values may hold spaces)."""
    return dict(re.findall(r"(\w+)=(.*?)(?= \w+=|$)", line))


def test_signal_and_task_state(build: Builder, procs: Procs, images: Path,
                               tmp_path: Path) -> None:
    """The program reports its state on SIGUSR1 before the dump and after the restore."""
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    target = procs.start([build("sigstate"), workdir])
    target.out.wait_numbers(2)
    os.kill(target.pid, signal.SIGUSR2)  # blocked: stays pending across the dump
    os.kill(target.pid, signal.SIGUSR1)
    before = _state(target.out.wait_line(r"^STATE "))
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_core = resource.getrlimit(resource.RLIMIT_CORE)[1] % (1 << 64)  # RLIM_INFINITY is -1
    assert int(before["blk"], 16) == _sigbit(signal.SIGUSR2, signal.SIGRTMIN + 3)
    assert int(before["ign"], 16) & _sigbit(signal.SIGHUP)
    assert int(before["shdpnd"], 16) == _sigbit(signal.SIGUSR2)
    assert int(before["pnd"], 16) == 0
    assert before["umask"] == "0027"
    assert before["cwd"] == str(workdir)
    assert before["comm"] == "sigstate-x"
    assert before["altstack"] == "1,65536,0"
    assert before["onstack"] == "1"
    assert before["nofile"] == f"123,{hard_nofile}"
    assert before["core"] == f"4096,{hard_core}"

    n_before = dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(n_before) + 1)
    n_lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    line = target.out.wait_line(r"^STATE ", start=n_lines)
    assert _state(line) == before
    status = {k: v.strip() for k, _, v in (ln.partition(":") for ln in
                                            open(f"/proc/{restored.pid}/status"))}
    assert status["Name"] == "sigstate-x"
    assert os.readlink(f"/proc/{restored.pid}/cwd") == str(workdir)
    target.out.wait_numbers(len(target.out.numbers()) + 1)
    assert_consecutive(target.out.numbers())


# (call, SA_RESTART): what a handler that runs while the process sleeps in the call does to
# it, as the kernel decides: select, pselect, poll, pause and nanosleep return EINTR
# whatever the flag (ERESTARTNOHAND, or a restart block); read returns EINTR without
# SA_RESTART and goes on waiting with it (ERESTARTSYS).
INTERRUPTED_CALLS = [("select", 0), ("select", 1), ("pselect", 1), ("poll", 1), ("pause", 1),
                     ("nanosleep", 1), ("read", 0), ("read", 1), ("thread-select", 1)]


@pytest.mark.parametrize("call,sa_restart", INTERRUPTED_CALLS,
                         ids=[f"{c}-{'restart' if r else 'plain'}" for c, r in INTERRUPTED_CALLS])
def test_signal_at_resume_interrupts_the_call(call: str, sa_restart: int, build: Builder,
                                              procs: Procs, images: Path) -> None:
    """A signal that comes as the restored process is let go (sent here by a pre-resume
    action script, before the process is back in its call) is handled as if the process
    had slept in the call all along: select with an SA_RESTART handler returns EINTR, as
    mc's main loop needs to redraw after SIGWINCH. Run again from user space, the call
    would wait for ever with the handler's work undone. thread-select: in a second
    thread, the first waiting in pthread_join with the signal blocked."""
    target = procs.start([build("waitsig", extra=["-pthread"]), call, str(sa_restart)])
    target.out.wait_line("^waiting$")
    wait_until(lambda: proc_state(target.pid) == "S", 5, "the call to block")
    dump_and_check_dead(procs, target, images)
    script = f"[ $CRTOOLS_SCRIPT_ACTION != pre-resume ] || kill -USR1 {target.pid}"
    restore_detached(procs, target.pid, target.out, images, "--action-script", script)
    target.out.wait_line("^handler$")
    if call == "read" and sa_restart:
        assert_silent(target.pid, target.out)
        assert "woke" not in " ".join(target.out.lines())
        return
    line = target.out.wait_line("^woke ")
    assert line == "woke EINTR", target.out.lines()


def _signal_state(pid: int) -> tuple[str, ...]:
    status = proc_status(pid)
    return tuple(status[k] for k in ("SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd"))


# (the program's arguments, whether the leader's signal actions are read in one round trip:
# there is a signal it neither catches nor blocks whose sending changes nothing)
SIGNAL_BATCHES = [
    (["catch=USR1,URG", "ignore=INT,TERM", "block=WINCH", "pend=WINCH"], True),  # SIGCHLD
    (["catch=USR1,URG,WINCH", "block=CHLD", "ignore=HUP,TSTP,CONT"], True),  # SIGHUP
    (["catch=USR1,URG,WINCH,CHLD", "ignore=CONT,TSTP", "dfl=PIPE,XFSZ"], False),
]


@pytest.mark.parametrize("argv,batched", SIGNAL_BATCHES, ids=["chld", "ignored", "none"])
def test_signal_actions_in_one_round_trip(argv: list[str], batched: bool, procs: Procs,
                                          images: Path) -> None:
    """The dump reads the 62 signal actions (and the interval timers) in one round trip
    when the process has a signal whose sending changes nothing (ignored, unblocked),
    which ends the injected batch; else one call each. Either way the actions, mask and
    pending signals come back as they were, through a dump -R and a restore."""
    target = procs.start([PYTHON, PROGS / "sigactions.py", *argv])
    target.out.wait_numbers(2)
    before = _signal_state(target.pid)
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R", "-v4", "-o", "dump.log")
    log = (images / "dump.log").read_text()
    trips = int(re.findall(r"injected syscalls, (\d+) round trips", log)[-1])
    assert (trips < 40) == batched, log
    target.out.wait_numbers(len(target.out.numbers()) + 3)
    assert _signal_state(target.pid) == before
    shutil.rmtree(images)
    n_before = dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(n_before) + 2)
    assert _signal_state(restored.pid) == before
    lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^GOT ", start=lines) == f"GOT [{int(signal.SIGUSR1)}]"
    assert_consecutive(target.out.numbers())
