"""seccomp that would break ckpt's injected syscalls: strict mode (any of them kills the
process), a filter that kills on mmap, prctl, munmap..., installed for two threads at
once (TSYNC). ckpt suspends seccomp while it works in the process; the process is never
lost, and comes back under the same seccomp, its threads still sharing their filter."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    assert_tags_carry_on,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
)


def seccomp_of_threads(pid: int) -> list[tuple[str, str]]:
    out = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        status = proc_status(f"{pid}/task/{tid}")  # type: ignore[arg-type]
        out.append((status["Seccomp"], status["Seccomp_filters"]))
    return out



def test_strict_mode(build: Builder, procs: Procs, images: Path) -> None:
    """A dump that lets it run (-R) leaves it running; a dump and restore bring it back in
    strict mode, counting on."""
    target = procs.start([build("seccomp_modes"), "strict"])
    target.out.wait_numbers(2)
    assert seccomp_of_threads(target.pid) == [("1", "0")]
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    n = len(target.out.numbers())
    target.out.wait_numbers(n + 2)
    assert is_alive(target.pid) and proc_status(target.pid)["TracerPid"] == "0"
    n = len(dump_and_check_dead(procs, target, images, "--overwrite"))
    restore_detached(procs, target.pid, target.out, images)
    assert seccomp_of_threads(target.pid) == [("1", "0")]
    assert_consecutive(target.out.wait_numbers(n + 2))


def test_filter_killing_injected_syscalls_with_tsync(build: Builder, procs: Procs,
                                                     images: Path) -> None:
    target = procs.start([build("seccomp_modes"), "tsync"])
    target.out.wait_line(r"^3 main$")
    assert seccomp_of_threads(target.pid) == [("2", "1"), ("2", "1")]
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    assert_tags_carry_on(target.out, ("main", "thread"))
    dump_and_check_dead(procs, target, images, "--overwrite")
    count = len(target.out.lines())
    restore_detached(procs, target.pid, target.out, images)
    assert seccomp_of_threads(target.pid) == [("2", "1"), ("2", "1")]
    target.out.wait_line(r" main$", start=count)
    # The threads share their filter: one more installed with TSYNC reaches both.
    os.kill(target.pid, signal.SIGUSR1)
    assert target.out.wait_line(r"^TSYNC ", start=count) == "TSYNC 0"
    assert seccomp_of_threads(target.pid) == [("2", "2"), ("2", "2")]
    assert_tags_carry_on(target.out, ("main", "thread"), 2)
