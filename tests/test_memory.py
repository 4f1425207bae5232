"""A process holding 1 GiB: every byte comes back, and its SIGUSR1 handler too."""

from __future__ import annotations

import signal
from pathlib import Path

from ckpt_helpers import Builder, Procs, assert_consecutive, dump_and_check_dead, restore_detached

GIB = 1 << 30


def test_one_gib_verified_after_restore(build: Builder, procs: Procs, images: Path) -> None:
    """Dump 1 GiB of patterned memory, restore it, and let the process check every byte."""
    target = procs.start([build("bigmem")])
    target.out.wait_line(r"^ready$", timeout=30)
    target.out.wait_numbers(2)
    before = dump_and_check_dead(procs, target, images, timeout=120)
    pid = target.pid
    assert (images / f"pages-{pid}.img").stat().st_size >= GIB
    restored = restore_detached(procs, pid, target.out, images, timeout=120)
    target.out.wait_numbers(len(before) + 1)
    n_lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    verdict = target.out.wait_line(r"^verify ", timeout=30, start=n_lines)
    assert verdict == f"verify ok {GIB}"
    target.out.wait_line(r"^\d+$", start=len(target.out.lines()))
    assert_consecutive(target.out.numbers())
