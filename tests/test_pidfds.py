"""pidfds on processes of the tree come back naming the restored processes; a pidfd on
a process outside the tree, or on one reaped already, is refused at dump."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from ckpt_helpers import (
    KCMP_FILE,
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    ckpt_fails,
    dump_and_check_dead,
    is_alive,
    kcmp_same,
    proc_state,
    restore_detached,
    wait_until,
)


def _pidfd_target(pid: int, fd: int) -> int:
    """The PID fdinfo shows for pidfd ``fd`` of ``pid``."""
    text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    m = re.search(r"^Pid:\s*(-?\d+)$", text, re.M)
    assert m, text
    return int(m[1])


def _same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    return kcmp_same(pid1, pid2, KCMP_FILE, fd1, fd2)


def test_pidfds_on_children(build: Builder, procs: Procs, images: Path) -> None:
    """A pidfd on a running child (and its dup, one file) and one on a zombie child:
    after the restore they name the restored children, poll tells which has ended,
    and the parent kills and reaps both through them."""
    target = procs.start([build("pidfds")])
    parent, running, zombie = map(int, target.out.wait_line(r"^pids ").split()[1:])
    target.out.wait_line(r"^2 ")
    assert target.out.lines()[-1].endswith(" running=0 zombie=1")
    assert (_pidfd_target(parent, 5), _pidfd_target(parent, 6)) == (running, zombie)
    nums = dump_and_check_dead(procs, target, images)
    for pid in (running, zombie):
        procs.wait_gone(pid)
    restore_detached(procs, parent, target.out, images)
    assert is_alive(running) and proc_state(zombie) == "Z"
    assert (_pidfd_target(parent, 5), _pidfd_target(parent, 6)) == (running, zombie)
    assert os.readlink(f"/proc/{parent}/fd/5") == "anon_inode:[pidfd]"
    assert _same_file(parent, 5, parent, 7) and not _same_file(parent, 5, parent, 6)
    wait_until(lambda: len(target.out.first_field_numbers()) >= len(nums) + 3, 10,
               "lines after the restore")
    assert target.out.lines()[-1].endswith(" running=0 zombie=1")
    os.kill(parent, signal.SIGUSR1)
    target.out.wait_line(rf"^reaped {running} signal={int(signal.SIGTERM)} {zombie} status=7$")
    wait_until(lambda: proc_state(running) is None and proc_state(zombie) is None, 10,
               "both children reaped")
    assert_consecutive(target.out.first_field_numbers())


HOLDER = """
import os, sys, time
fd = os.pidfd_open(int(sys.argv[1]))
if sys.argv[2] == "reaped":
    os.waitpid(int(sys.argv[1]), 0)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
"""


@pytest.mark.parametrize("which", ["outside", "reaped"])
def test_pidfd_refused(procs: Procs, images: Path, tmp_path: Path, which: str) -> None:
    """A pidfd on a process outside the tree, or on one that exited and was reaped, is
    refused at dump, naming it; the process runs on untouched."""
    other = procs.start(["sleep", "1000"], name="other")
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    if which == "outside":
        target = procs.start([PYTHON, script, str(other.pid), which])
    else:  # a child of its own, reaped once the pidfd is open
        target = procs.start([PYTHON, "-c", "import os, subprocess, sys; p = subprocess.Popen("
                              "['sleep', '0.2']); os.execv(sys.executable, [sys.executable, "
                              f"{str(script)!r}, str(p.pid), 'reaped'])"])
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"process {target.pid}" in err and "pidfd" in err, err
    assert (f"process {other.pid}" in err and "outside the dumped tree" in err
            if which == "outside" else "reaped" in err), err
    assert not (images / "inventory.json").exists()
    assert proc_state(target.pid) in ("S", "R")
    count = len(target.out.numbers())
    target.out.wait_numbers(count + 3)
    assert_consecutive(target.out.numbers())


IN_FLIGHT = """
import array, os, socket, sys, time
child = os.fork()
if child == 0:
    os.execvp("sleep", ["sleep", "1000"])
a, b = socket.socketpair()
pidfd = os.pidfd_open(child)
a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))])
if sys.argv[1] == "passed":
    os.close(pidfd)
n = 0
while True:
    print(n, flush=True)
    n += 1
    time.sleep(0.05)
"""


@pytest.mark.parametrize("which", ["passed", "kept too"])
def test_pidfd_in_a_queued_message_refused(procs: Procs, images: Path, tmp_path: Path,
                                            which: str) -> None:
    """A pidfd passed in a message not received yet (SCM_RIGHTS) is refused at dump,
    naming it (the restore fills queues before the processes exist: it would arrive as
    something else), whether the sender kept its fd or not; the tree runs on."""
    (tmp_path / "in_flight.py").write_text(IN_FLIGHT)
    target = procs.start([PYTHON, tmp_path / "in_flight.py", which])
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert "pidfd of" in err and "passed in a message not received yet" in err, err
    assert not (images / "inventory.json").exists()
    count = len(target.out.numbers())
    target.out.wait_numbers(count + 3)
    assert_consecutive(target.out.numbers())
