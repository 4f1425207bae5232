"""Failures: a dump or restore that cannot be done says why, and changes nothing.

A refused dump leaves its target exactly as it was: running (not stopped), not
traced, same signal mask, same mappings, same fds, counting on without a gap.
A refused restore names the culprit (file, PID) and leaves no process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Output,
    Proc,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    free_pid,
    is_alive,
    left_behind,
    my_children,
    proc_ppid,
    proc_state,
    proc_status,
    scaled,
    start_with_pid,
    wait_until,
)

# ------------------------------------------------------------------ a target, observed


@dataclass
class Snapshot:
    """What a failed dump must not change in its target."""

    tracer: str
    sigblk: str
    threads: str
    maps: str
    fds: dict[int, str]


def snapshot(pid: int) -> Snapshot:
    st = proc_status(pid)
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    fds = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue
    return Snapshot(st["TracerPid"], st["SigBlk"], st["Threads"], maps, fds)


def start_ready(procs: Procs, argv: list[str | os.PathLike[str]], count: int = 3) -> Proc:
    """Start a holdfd/counter target and wait until it printed ``count`` numbers."""
    target = procs.start(argv)
    target.out.wait_numbers(count)
    return target


def assert_untouched(target: Proc, before: Snapshot) -> None:
    """The target runs on as if no dump had been tried."""
    assert is_alive(target.pid), f"target {target.pid} is gone (state {proc_state(target.pid)})"
    n = len(target.out.numbers())
    nums = target.out.wait_numbers(n + 4, timeout=5)
    assert_consecutive(nums)
    state = proc_state(target.pid)
    assert state in ("R", "S"), f"target left in state {state}"
    after = snapshot(target.pid)
    assert after.tracer == "0", f"target still traced by {after.tracer}"
    assert after.sigblk == before.sigblk, (
        f"signal mask changed: SigBlk {before.sigblk} -> {after.sigblk}")
    assert after.threads == before.threads
    assert after.fds == before.fds, f"fds changed: {before.fds} -> {after.fds}"
    assert after.maps == before.maps, (
        f"mappings changed:\nbefore:\n{before.maps}\nafter:\n{after.maps}")


def names(pid: int, text: str) -> bool:
    return re.search(rf"\b{pid}\b", text) is not None


# ------------------------------------------------------------------ dump refusals


def test_dump_nonexistent_pid(images: Path) -> None:
    pid = free_pid()
    err = ckpt_fails("dump", "-t", pid, "-D", images)
    assert names(pid, err), err
    assert re.search(r"does not exist|no such process", err, re.I), err
    assert not (images / "inventory.json").exists()


UNSUPPORTED = [
    ("pidfd", r"fd 3\b.*pidfd"),
    ("thread-pidfd", r"fd 3\b.*pidfd"),
]


@pytest.mark.parametrize(("kind", "message"), UNSUPPORTED, ids=[k for k, _ in UNSUPPORTED])
def test_dump_refuses_unsupported(build: Builder, procs: Procs, images: Path, kind: str,
                                  message: str) -> None:
    """An fd (or timer, or thread) ckpt cannot dump: a clear refusal, the target unharmed."""
    target = start_ready(procs, [build("holdfd"), kind])
    before = snapshot(target.pid)
    assert before.sigblk != "0000000000000000", "holdfd did not block its signals"
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert not (images / "inventory.json").exists(), "a refused dump left an inventory"
    assert_untouched(target, before)
    assert names(target.pid, err), err
    assert re.search(message, err, re.I), f"expected /{message}/ in: {err}"


def test_dump_refuses_unsupported_in_child(build: Builder, procs: Procs, images: Path,
                                           tmp_path: Path) -> None:
    """The child of the root holds a pidfd on a process outside the tree: refused, and
    both run on unharmed."""
    child_out = Output(tmp_path / "child.out")
    target = procs.start(["sh", "-c", '"$0" pidfd > "$1" & exec "$2"',
                          build("holdfd"), child_out.path, build("counter")])
    target.out.wait_numbers(3)
    child_out.wait_numbers(3)
    with open(f"/proc/{target.pid}/task/{target.pid}/children") as f:
        (child,) = (int(x) for x in f.read().split())
    child_proc = procs.adopt(child, child_out)
    before = snapshot(target.pid), snapshot(child)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert not (images / "inventory.json").exists()
    assert_untouched(target, before[0])
    assert_untouched(child_proc, before[1])
    assert proc_ppid(child) == target.pid
    assert names(child, err) and re.search(r"fd 3\b.*pidfd", err), err


@pytest.mark.parametrize("extra", [[], ["-o", "dump.log"]], ids=["plain", "with-log"])
def test_dump_images_dir_cannot_be_created(build: Builder, procs: Procs, tmp_path: Path,
                                           extra: list[str]) -> None:
    """-D under a regular file: an error naming the folder; the target runs on."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n")
    target = start_ready(procs, [build("holdfd"), "none"])
    before = snapshot(target.pid)
    bad = blocker / "images"
    err = ckpt_fails("dump", "-t", target.pid, "-D", bad, *extra)
    assert str(blocker) in err, err
    assert blocker.read_text() == "not a directory\n"
    assert_untouched(target, before)


def test_dump_zombie_refused(build: Builder, procs: Procs, images: Path) -> None:
    """A zombie cannot be dumped: the error says so and names it."""
    target = procs.start([build("counter"), "-n", "0"])
    wait_until(lambda: proc_state(target.pid) == "Z", 5, "the target to become a zombie")
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert names(target.pid, err) and "zombie" in err, err
    assert proc_state(target.pid) == "Z"


# ------------------------------------------------------------------ restore refusals


@dataclass
class Dumped:
    images: Path
    pid: int
    out: Output


@pytest.fixture(scope="module")
def dumped(build: Builder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dumped]:
    """One counter dumped (and killed) for the restore tests of this module to copy."""
    base = tmp_path_factory.mktemp("dumped")
    out = base / "target.out"
    with open(out, "wb") as f, open(os.devnull, "rb") as null:
        popen = subprocess.Popen([build("counter")], stdin=null, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        Output(out).wait_numbers(3)
        images = base / "images"
        res = subprocess.run(ckpt_cmd() + ["dump", "-t", str(popen.pid), "-D", str(images)],
                             capture_output=True, text=True, timeout=scaled(60))
        assert res.returncode == 0, res.stderr
        assert popen.wait(scaled(10)) == -signal.SIGKILL
        yield Dumped(images, popen.pid, Output(out))
    finally:
        popen.kill()
        popen.wait()


@pytest.fixture
def copy(dumped: Dumped, tmp_path: Path) -> Path:
    """A private copy of the module's image folder."""
    dst = tmp_path / "images"
    shutil.copytree(dumped.images, dst)
    return dst


def assert_nothing_restored(procs: Procs, pid: int, allowed: set[int] | None = None) -> None:
    assert not left_behind(pid), f"PID {pid} is alive after a failed restore"
    stray = my_children() - procs.children_before - (allowed or set())
    assert not stray, f"a failed restore left processes: {sorted(stray)}"


def test_restore_missing_dir(procs: Procs, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-images"
    err = ckpt_fails("restore", "-D", missing, "-d")
    assert str(missing) in err, err
    assert not missing.exists(), "restore created the missing folder"


def test_restore_dir_without_inventory(dumped: Dumped, procs: Procs, copy: Path) -> None:
    """Image files without inventory.json are not a complete dump."""
    (copy / "inventory.json").unlink()
    err = ckpt_fails("restore", "-D", copy, "-d")
    assert "inventory.json" in err, err
    assert_nothing_restored(procs, dumped.pid)


def _flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * where)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["core-{pid}.json", "mm-{pid}.json", "pages-{pid}.img",
                                    "inventory.json"])
def test_restore_corrupted_image(dumped: Dumped, procs: Procs, copy: Path,
                                 victim: str) -> None:
    """One flipped bit: an error naming the file, nothing restored."""
    name = victim.format(pid=dumped.pid)
    _flip(copy / name)
    err = ckpt_fails("restore", "-D", copy, "-d")
    assert name in err, err
    assert re.search(r"corrupt|checksum", err, re.I), err
    assert_nothing_restored(procs, dumped.pid)


def test_restore_truncated_pages(dumped: Dumped, procs: Procs, copy: Path) -> None:
    name = f"pages-{dumped.pid}.img"
    path = copy / name
    os.truncate(path, path.stat().st_size // 2)
    err = ckpt_fails("restore", "-D", copy, "-d")
    assert name in err, err
    assert re.search(r"truncated|size|bytes", err, re.I), err
    assert_nothing_restored(procs, dumped.pid)


def test_restore_missing_pages(dumped: Dumped, procs: Procs, copy: Path) -> None:
    name = f"pages-{dumped.pid}.img"
    (copy / name).unlink()
    err = ckpt_fails("restore", "-D", copy, "-d")
    assert name in err and "missing" in err, err
    assert_nothing_restored(procs, dumped.pid)


def test_restore_pid_taken(build: Builder, dumped: Dumped, procs: Procs, copy: Path) -> None:
    """The saved PID is held by another process: an error naming both, the holder unharmed."""
    holder = start_with_pid(procs, [build("counter")], dumped.pid)
    holder.out.wait_numbers(3)
    with open(f"/proc/{holder.pid}/comm") as f:
        comm = f.read().strip()
    blk = proc_status(holder.pid)["SigBlk"]
    t0 = time.monotonic()
    err = ckpt_fails("restore", "-D", copy, "-d", timeout=30)
    assert time.monotonic() - t0 < scaled(15), "the restore waited for the PID"
    assert names(dumped.pid, err), err
    assert comm in err, f"the holder ({comm}) is not named: {err}"
    # The holder is untouched: alive, still ours, not traced or stopped, counting on.
    assert is_alive(holder.pid)
    assert proc_ppid(holder.pid) == os.getpid()
    st = proc_status(holder.pid)
    assert st["TracerPid"] == "0" and st["SigBlk"] == blk
    n = len(holder.out.numbers())
    assert_consecutive(holder.out.wait_numbers(n + 3, timeout=5))
    assert proc_state(holder.pid) in ("R", "S")
    assert os.waitid(os.P_PIDFD, holder.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None, \
        "the holder exited"
    stray = my_children() - procs.children_before - {holder.pid}
    assert not stray, f"a failed restore left processes: {sorted(stray)}"
