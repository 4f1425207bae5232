"""Large fd tables (issue 14): 10,000 open files come back, each fd at its number on its
own open file description (or all on one), holes and far numbers too; a tree a restore
here could not hold (ckpt's hard RLIMIT_NOFILE) is refused at dump, unharmed."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    dump_and_check_dead,
    restore_detached,
    scaled,
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


def test_fds_beyond_the_restore_limit_are_refused_at_dump(build: Builder, procs: Procs,
                                                           images: Path) -> None:
    """ckpt dumping with a hard limit of 3,000 cannot restore 4,000 fds: it refuses before
    the kill, naming the limit, and the process runs on with its fds."""
    pid, out_path = _held_fds(procs, build, 4_000, "distinct")

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (3_000, 3_000))

    res = subprocess.run([*ckpt_cmd(), "dump", "-t", str(pid), "-D", str(images)],
                         capture_output=True, text=True, preexec_fn=lower_limit,
                         timeout=scaled(120), stdin=subprocess.DEVNULL)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "RLIMIT_NOFILE" in res.stderr and "3000" in res.stderr, res.stderr
    assert not (images / "inventory.json").exists()
    _check_fds(pid, procs, out_path, 4_000)
