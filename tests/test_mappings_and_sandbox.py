"""File mappings of every sort, a seccomp sandbox, and a dump that runs out of disk."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
)

PG = 4096


def test_file_mappings(build: Builder, procs: Procs, images: Path, tmp_path: Path) -> None:
    """MAP_SHARED writes reach the file after restore; a private copy-on-write page and a
    read-only mapping at a file offset keep their contents; a PROT_NONE page stays."""
    data = tmp_path / "mapped"
    data.write_bytes(b"".join(bytes([ord("a") + i]) * PG for i in range(4)))
    target = procs.start([build("mappings"), data])
    target.out.wait_line(r"^5 ")
    maps_before = [ln.split(None, 5)[1:] for ln in open(f"/proc/{target.pid}/maps")]
    dump_and_check_dead(procs, target, images)
    count = len(target.out.lines())
    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{count + 3} ")
    lines = target.out.lines()
    assert_consecutive([int(ln.split()[0]) for ln in lines])
    for ln in lines[1:]:
        n, shared = re.match(r"^(\d+) shared=(-?\d+) private=ok ro=ok$", ln).groups()  # type: ignore[union-attr]
        assert int(shared) == int(n) - 1, ln
    tick = int.from_bytes(data.read_bytes()[:8], "little")
    assert tick >= count, "the shared mapping no longer writes to the file"
    assert data.read_bytes()[PG:] == b"".join(bytes([ord("a") + i]) * PG for i in range(1, 4))
    # The mappings themselves: same addresses, permissions, offsets and files (the inode
    # column aside, identical).
    maps_after = [ln.split(None, 5)[1:] for ln in open(f"/proc/{restored.pid}/maps")]
    mapped = [m for m in maps_before if m[-1].strip() == str(data)]
    assert len(mapped) == 3
    assert all(m in maps_after for m in mapped)
    # The PROT_NONE page too. (Other mappings may merge where the kernel could not merge
    # them before, e.g. two read-only parts of libc that differed only in anon_vma.)
    guard = [m for m in maps_before if m[0] == "---p" and len(m) == 4]
    assert guard and all(m in maps_after for m in guard)


_SHARED_WRITER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
private = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE) if sys.argv[2] == "private" else None
n = 0
while True:
    m[:8] = n.to_bytes(8, "little")
    os.write(1, f"{n}\\n".encode())
    n += 1
    time.sleep(0.05)
"""


@pytest.mark.parametrize("how", ["shared", "private"])
def test_file_written_through_its_mapping_after_dump(procs: Procs, images: Path,
                                                     tmp_path: Path, how: str) -> None:
    """A file the process maps shared only is its own store, as an open file is: what
    it wrote to it after a ``dump -R`` (a JVM's hsperfdata) is what the restored
    process finds, and the restore takes it. A file also mapped private (pages not
    saved come from it) must be as it was: that restore is refused, naming it."""
    data = tmp_path / "store"
    data.write_bytes(bytes(4096))
    target = procs.start([PYTHON, "-c", _SHARED_WRITER, data, how])
    target.out.wait_numbers(3)
    ckpt_ok("dump", "-R", "-t", target.pid, "-D", images)
    count = len(target.out.numbers())
    target.out.wait_numbers(count + 3)  # it writes on
    # and the file's mtime moves (the kernel moves it when a written page is cleaned,
    # which may come late: here, at once)
    then = data.stat().st_mtime_ns
    os.utime(data, ns=(then, then + 10**9))
    os.kill(target.pid, signal.SIGKILL)
    procs.wait_gone(target)
    if how == "private":
        err = ckpt_fails("restore", "-D", images, "-d")
        assert f"mapped file {data} changed since the dump" in err, err
        return
    restore_detached(procs, target.pid, target.out, images)
    after = target.out.wait_numbers(len(target.out.numbers()) + 3)
    ticks = int.from_bytes(data.read_bytes()[:8], "little")
    assert ticks >= after[-1] - 1, "the restored process no longer writes to the file"


def test_seccomp_and_no_new_privs(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("sandbox")])
    target.out.wait_line(r"^3 ")
    assert proc_status(target.pid)["Seccomp"] == "2"
    dump_and_check_dead(procs, target, images)
    count = len(target.out.lines())
    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{count + 3} ")
    status = proc_status(restored.pid)
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
    assert status["Seccomp_filters"] == "1"
    lines = target.out.lines()
    assert_consecutive([int(ln.split()[0]) for ln in lines])
    assert all(ln.endswith(" getppid=-1 errno=1") for ln in lines), lines[-3:]


def test_dump_disk_full_leaves_process_running(build: Builder, procs: Procs,
                                               tmp_path: Path) -> None:
    """A dump into a full file system fails with a clear error; the process runs on."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        target = procs.start([build("counter")])  # holds a 4 MiB heap: it cannot fit
        target.out.wait_numbers(3)
        blocked = proc_status(target.pid)["SigBlk"]
        err = ckpt_fails("dump", "-t", target.pid, "-D", small / "images")
        assert "No space left on device" in err, err
        before = len(target.out.numbers())
        target.out.wait_numbers(before + 3)
        assert_consecutive(target.out.numbers())
        status = proc_status(target.pid)
        assert status["TracerPid"] == "0" and status["SigBlk"] == blocked
        assert is_alive(target.pid)
        os.kill(target.pid, signal.SIGKILL)
        procs.wait_gone(target)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
