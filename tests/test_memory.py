"""A process holding 1 GiB: every byte comes back, and its SIGUSR1 handler too."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ckpt_helpers import (
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    dump_and_check_dead,
    pages_bytes,
    restore_detached,
)

GIB = 1 << 30


def test_one_gib_verified_after_restore(build: Builder, procs: Procs, images: Path) -> None:
    """Dump 1 GiB of patterned memory, restore it, and let the process check every byte."""
    target = procs.start([build("bigmem")])
    target.out.wait_line(r"^ready$", timeout=30)
    target.out.wait_numbers(2)
    before = dump_and_check_dead(procs, target, images, timeout=120)
    pid = target.pid
    assert pages_bytes(images, pid) >= GIB
    restored = restore_detached(procs, pid, target.out, images, timeout=120)
    target.out.wait_numbers(len(before) + 1)
    n_lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    verdict = target.out.wait_line(r"^verify ", timeout=30, start=n_lines)
    assert verdict == f"verify ok {GIB}"
    target.out.wait_line(r"^\d+$", start=len(target.out.lines()))
    assert_consecutive(target.out.numbers())


# 32 MiB of memory (moved by the process itself at dump into images on tmpfs,
# pages/splice.py) in a process whose fd table is full: it cannot make the pipe, and
# ckpt copies the pages instead.
FULL_FD_TABLE = r"""
import hashlib, os, resource, signal, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
while True:
    try:
        held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        break
data = bytearray(hashlib.sha256(str(i).encode()).digest()[i % 32] for i in range(1 << 16))
data *= 512
digest = hashlib.sha256(data).hexdigest()
signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"same %d\n" % (
    hashlib.sha256(data).hexdigest() == digest)))
n = 0
while True:
    os.write(1, b"%d\n" % n)
    n += 1
    time.sleep(0.05)
"""


def test_pages_copied_when_the_process_cannot_make_a_pipe(procs: Procs, shm_path: Path
                                                          ) -> None:
    images = shm_path / "images"
    target = procs.start([PYTHON, "-c", FULL_FD_TABLE])
    target.out.wait_numbers(2)
    fds = os.listdir(f"/proc/{target.pid}/fd")
    assert len(fds) == 64
    before = dump_and_check_dead(procs, target, images, "-v4", "-o", "dump.log")
    assert "pipe2: Too many open files: its pages are copied by ckpt" in (
        images / "dump.log").read_text()
    restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(before) + 1)
    start = len(target.out.lines())
    os.kill(target.pid, signal.SIGUSR1)
    assert target.out.wait_line(r"^same ", start=start) == "same 1"
    assert sorted(os.listdir(f"/proc/{target.pid}/fd")) == sorted(fds)


def test_pipe_resized_beyond_the_limit_which_stays() -> None:
    """pages/splice.py's pipe: made larger than fs.pipe-max-size lets root without
    CAP_SYS_RESOURCE, the limit raised for that instant only; a limit a killed ckpt left
    raised (its note says the old one) is put back by the next."""
    from ckpt.kernel import pipesize

    def limit() -> int:
        with open(pipesize.LIMIT) as f:
            return int(f.read())

    before = limit()
    r, w = os.pipe()
    try:
        assert pipesize.resize(r, (before * 4,)) == before * 4
    finally:
        os.close(r)
        os.close(w)
    assert limit() == before
    note = pipesize._lock()
    try:
        os.write(note, b"%d\n" % before)  # as a ckpt killed while it had it raised
        with open(pipesize.LIMIT, "w") as f:
            f.write(f"{before * 2}\n")
    finally:
        os.close(note)
    try:
        pipesize.restore_limit()
        assert limit() == before
        assert os.path.getsize(pipesize.NOTE) == 0
    finally:
        with open(pipesize.LIMIT, "w") as f:  # the machine's, whatever happened
            f.write(f"{before}\n")
