"""Processes sharing their parent's fd table (CLONE_FILES) or fs struct (CLONE_FS:
cwd, root, umask) share them again after a restore; sharing the restore could not
make again is refused at dump, leaving the processes alone. A process in a chroot
comes back in its chroot."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from ckpt_helpers import (
    KCMP_FILES,
    KCMP_FS,
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

_shared = kcmp_same


def test_shared_fd_table_and_fs(build: Builder, procs: Procs, tmp_path: Path,
                                images: Path) -> None:
    """After the restore, a file the CLONE_FILES child opens is the parent's fd too, and
    the CLONE_FS child's chdir and umask are the parent's; the CLONE_FILES child's own
    children share the table again, or have their own copy, as before."""
    there = tmp_path / "there"
    there.mkdir()
    target = procs.start([build("sharing"), there], cwd=tmp_path)
    parent, files, fs, sharer, copy = map(int, target.out.wait_line(r"^pids ").split()[1:])
    target.out.wait_line(r"^2 ")
    assert _shared(parent, sharer, KCMP_FILES) and not _shared(parent, copy, KCMP_FILES)
    assert target.out.lines()[-1].endswith(f" fd9=0 cwd={tmp_path} umask=022")
    assert _shared(parent, files, KCMP_FILES) and not _shared(parent, fs, KCMP_FILES)
    assert _shared(parent, fs, KCMP_FS) and not _shared(parent, files, KCMP_FS)
    dump_and_check_dead(procs, target, images)
    for pid in (files, fs, sharer, copy):
        procs.wait_gone(pid)
    restore_detached(procs, parent, target.out, images)
    for pid in (files, fs, sharer, copy):  # killed at the end, grandchildren too
        procs.adopt(pid, target.out)
    assert all(is_alive(pid) for pid in (files, fs, sharer, copy))
    assert _shared(parent, sharer, KCMP_FILES) and not _shared(parent, copy, KCMP_FILES)
    assert os.readlink(f"/proc/{copy}/fd/1") == str(target.out.path)
    assert _shared(parent, files, KCMP_FILES) and not _shared(parent, fs, KCMP_FILES)
    assert _shared(parent, fs, KCMP_FS) and not _shared(parent, files, KCMP_FS)
    start = len(target.out.lines())
    os.kill(files, signal.SIGUSR1)
    os.kill(fs, signal.SIGUSR1)
    target.out.wait_line(rf" fd9=1 cwd={there} umask=027$", start=start)
    assert_consecutive(target.out.first_field_numbers())


SHARER = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
CLONE_FILES, SIGCHLD = 0x400, 17
pid = libc.syscall(56, CLONE_FILES | SIGCHLD, 0, 0, 0, 0)  # clone: shares our fd table
if pid == 0:
    os.setsid()
me = "child" if pid == 0 else "parent"
n = 0
while True:
    os.write(1, f"{me} {n}\\n".encode())  # one write a line: the output is shared
    n += 1
    time.sleep(0.05)
"""


def test_sharing_with_a_process_outside_refused(procs: Procs, tmp_path: Path,
                                               images: Path) -> None:
    """A process sharing its fd table with its parent, dumped without the parent: the
    restore could not share it again, so the dump refuses, naming both; both run on."""
    script = tmp_path / "sharer.py"
    script.write_text(SHARER)
    target = procs.start([PYTHON, script])
    target.out.wait_line(r"^child 2$")
    child = int(Path(f"/proc/{target.pid}/task/{target.pid}/children").read_text())
    assert _shared(target.pid, child, KCMP_FILES)
    err = ckpt_fails("dump", "-t", child, "-D", images)
    assert f"process {child}" in err and f"parent {target.pid}" in err, err
    assert "CLONE_FILES" in err, err
    assert not (images / "inventory.json").exists()
    for pid in (child, target.pid):
        assert proc_state(pid) in ("S", "R")
    start = len(target.out.lines())
    target.out.wait_line(r"^child \d+$", start=start)
    target.out.wait_line(r"^parent \d+$", start=start)


def test_process_in_a_chroot(build: Builder, procs: Procs, tmp_path: Path,
                             images: Path) -> None:
    """A static program run by chroot(8) in a small root comes back in that root: same
    root directory, same working directory, counting on."""
    chroot = shutil.which("chroot")
    if chroot is None:
        pytest.skip("chroot(8) is not installed")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(build("counter", static=True), root / "bin" / "counter")
    target = procs.start([chroot, root, "/bin/counter"])
    target.out.wait_numbers(3)
    assert os.readlink(f"/proc/{target.pid}/root") == str(root)
    cwd = os.readlink(f"/proc/{target.pid}/cwd")
    nums = dump_and_check_dead(procs, target, images)
    restore_detached(procs, target.pid, target.out, images)
    assert os.readlink(f"/proc/{target.pid}/root") == str(root)
    assert os.readlink(f"/proc/{target.pid}/cwd") == cwd
    assert os.path.samefile(f"/proc/{target.pid}/root", root)
    target.out.wait_numbers(len(nums) + 3)
    assert_consecutive(target.out.numbers())


SIBLINGS = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
CLONE_FILES, CLONE_PARENT, SIGCHLD = 0x400, 0x8000, 17
if os.fork() == 0:  # then a sibling sharing this child's fd table
    libc.syscall(56, CLONE_FILES | CLONE_PARENT | SIGCHLD, 0, 0, 0, 0)
n = 0
while True:
    print(os.getpid(), n, flush=True)
    n += 1
    time.sleep(0.05)
"""


def test_siblings_sharing_refused(procs: Procs, tmp_path: Path, images: Path) -> None:
    """Two siblings sharing one fd table (CLONE_PARENT|CLONE_FILES): neither is the
    other's parent, so the dump refuses, naming both; every process runs on."""
    script = tmp_path / "siblings.py"
    script.write_text(SIBLINGS)
    target = procs.start([PYTHON, script])
    kids_file = Path(f"/proc/{target.pid}/task/{target.pid}/children")
    wait_until(lambda: len(kids_file.read_text().split()) == 2, 10, "two children")
    a, b = sorted(map(int, kids_file.read_text().split()))
    assert _shared(a, b, KCMP_FILES)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert {f"{a}", f"{b}"} <= set(err.replace(",", " ").split()), err
    assert "CLONE_FILES" in err and "neither" in err, err
    for pid in (target.pid, a, b):
        assert proc_state(pid) in ("S", "R")
    start = len(target.out.lines())
    for pid in (target.pid, a, b):
        target.out.wait_line(rf"^{pid} \d+$", start=start)
