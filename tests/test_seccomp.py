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
    Output,
    Procs,
    assert_consecutive,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
    wait_until,
)


def seccomp_of_threads(pid: int) -> list[tuple[str, str]]:
    out = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        status = proc_status(f"{pid}/task/{tid}")  # type: ignore[arg-type]
        out.append((status["Seccomp"], status["Seccomp_filters"]))
    return out


def role_numbers(out: Output, role: str) -> list[int]:
    return [int(ln.split()[0]) for ln in out.lines() if ln.endswith(f" {role}")]


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
    n = len(dump_and_check_dead(procs, target, images))
    restore_detached(procs, target.pid, target.out, images)
    assert seccomp_of_threads(target.pid) == [("1", "0")]
    assert_consecutive(target.out.wait_numbers(n + 2))


def test_filter_killing_injected_syscalls_with_tsync(build: Builder, procs: Procs,
                                                     images: Path) -> None:
    target = procs.start([build("seccomp_modes"), "tsync"])
    target.out.wait_line(r"^3 main$")
    assert seccomp_of_threads(target.pid) == [("2", "1"), ("2", "1")]
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    counts = {r: len(role_numbers(target.out, r)) for r in ("main", "thread")}
    for role, n in counts.items():
        wait_until(lambda r=role, n=n: len(role_numbers(target.out, r)) >= n + 2, 10,
                   f"{role} going on after dump -R")
    dump_and_check_dead(procs, target, images)
    count = len(target.out.lines())
    restore_detached(procs, target.pid, target.out, images)
    assert seccomp_of_threads(target.pid) == [("2", "1"), ("2", "1")]
    target.out.wait_line(r" main$", start=count)
    # The threads share their filter: one more installed with TSYNC reaches both.
    os.kill(target.pid, signal.SIGUSR1)
    assert target.out.wait_line(r"^TSYNC ", start=count) == "TSYNC 0"
    assert seccomp_of_threads(target.pid) == [("2", "2"), ("2", "2")]
    for role in ("main", "thread"):
        n = len(role_numbers(target.out, role))
        wait_until(lambda r=role, n=n: len(role_numbers(target.out, r)) >= n + 2, 10,
                   f"{role} going on after restore")
        assert_consecutive(role_numbers(target.out, role))
