"""Large fd tables (issue 14): 10,000 open files come back, each fd at its number on its
own open file description (or all on one), holes and far numbers too; a tree whose fds a
restore here could not hold at once (ckpt's hard RLIMIT_NOFILE) is refused at dump,
unharmed."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    dump_and_check_dead,
    restore_detached,
    scaled,
    wait_until,
)

HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _held_fds(procs: Procs, build: Builder, count: int, mode: str) -> tuple[int, Path]:
    if HARD < count + 200:
        pytest.skip(f"the hard RLIMIT_NOFILE here ({HARD}) is below {count + 200}")
    target = procs.start([build("manyfds"), str(count), mode])
    assert target.out.wait_line(r"^ready ", timeout=30) == f"ready {count}"
    target.out.wait_numbers(3)
    return target.pid, target.out.path


def _check_fds(pid: int, procs: Procs, out_path: Path, count: int) -> None:
    out = procs.tracked[-1].out
    before = len(out.numbers())
    out.wait_numbers(before + 3)
    os.kill(pid, signal.SIGUSR1)
    assert out.wait_line(r"^fds ", timeout=30) == f"fds ok {count}"
    assert_consecutive(out.numbers())
    assert len(os.listdir(f"/proc/{pid}/fd")) == count + 3  # and stdin, stdout, stderr


@pytest.mark.parametrize(("count", "mode"), [(10_000, "distinct"), (10_000, "shared"),
                                              (2_000, "sparse")])
def test_many_fds_come_back_at_their_numbers(build: Builder, procs: Procs, images: Path,
                                             count: int, mode: str) -> None:
    """10,000 opens of one file (hard limit 20,000 here: ckpt never needs twice as many
    fds as the process has), 10,000 fds on one description, fds with holes between."""
    pid, out_path = _held_fds(procs, build, count, mode)
    dump_and_check_dead(procs, procs.tracked[-1], images, timeout=120)
    restore_detached(procs, pid, procs.tracked[-1].out, images, timeout=120)
    _check_fds(pid, procs, out_path, count)


TWO_HOLDERS = """
import os, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (2000, 2000))
child = os.fork()
held = [os.open(sys.executable, os.O_RDONLY) for _ in range(1600)]
print("ready", os.getpid(), flush=True)
n = 0
while True:
    print(("P" if child else "C"), n, flush=True)
    n += 1
    time.sleep(0.05)
"""


def test_a_tree_a_restore_could_not_hold_is_refused_at_dump(procs: Procs,
                                                            images: Path) -> None:
    """Two processes with 1,600 files each, dumped by a ckpt whose hard limit is 3,000:
    each is below the limit, but a restore would hold 3,200 fds at once; the dump
    refuses before the kill, naming the limit, and both run on with their fds."""
    target = procs.start([PYTHON, "-c", TWO_HOLDERS])
    out = target.out
    wait_until(lambda: len([ln for ln in out.lines() if ln.startswith("ready ")]) == 2, 30,
               "both processes holding their files")
    pids = [int(ln.split()[1]) for ln in out.lines() if ln.startswith("ready ")]

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (3_000, 3_000))

    res = subprocess.run([*ckpt_cmd(), "dump", "-t", str(target.pid), "-D", str(images)],
                         capture_output=True, text=True, preexec_fn=lower_limit,
                         timeout=scaled(120), stdin=subprocess.DEVNULL)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "RLIMIT_NOFILE" in res.stderr and "fds at once" in res.stderr, res.stderr
    assert not (images / "inventory.json").exists()
    for role in "PC":
        count = len([ln for ln in out.lines() if ln.startswith(f"{role} ")])
        out.wait_line(rf"^{role} {count + 3}$")
    for pid in pids:
        assert len(os.listdir(f"/proc/{pid}/fd")) >= 1600
