"""runc with ckpt as its criu (issue 11): a busybox container counting on a pipe and in a
bind-mounted file, checkpointed by ``runc --criu ckpt-criu checkpoint`` and brought back
by ``restore -d``; the counter must go on at n+1, nothing lost, twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckpt_helpers import PYTHON, Builder, Output, wait_until
from runc_helpers import COUNTER, Container, make_bundle, runc_or_skip
from runc_helpers import counted as _count


def _grows(data: Path, out: Output, more: int = 5) -> None:
    """Both the file and the pipe get ``more`` new numbers."""
    n, m = len(_count(data)), len(out.numbers())
    wait_until(lambda: len(_count(data)) >= n + more and len(out.numbers()) >= m + more, 30,
               f"{more} more numbers from the counter")


def _log_prestart(bundle: Path, log: Path) -> None:
    """An OCI prestart hook in the bundle appending the pid of the state runc gives it
    to ``log``: runc runs it at ``run`` and, at a restore, on criu's setup-namespaces."""
    config = json.loads((bundle / "config.json").read_text())
    script = f"{PYTHON} -c 'import json, sys; print(json.load(sys.stdin)[\"pid\"])' >> {log}"
    config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
    (bundle / "config.json").write_text(json.dumps(config, indent=1))


def _prestarts(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.fixture
def counter(tmp_path: Path) -> Iterator[tuple[Container, Path]]:
    runc = runc_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", COUNTER], data)
    _log_prestart(bundle, tmp_path / "prestart")
    ctr = Container(runc, tmp_path / "state", bundle, f"ckpt-{os.getpid()}-{tmp_path.name}"[:60],
                    Output(tmp_path / "stdout"))
    try:
        ctr.run()
        _grows(data, ctr.out)
        yield ctr, data
    finally:
        ctr.delete()


_reap, _log = Container.reap, Container.log


def test_checkpoint_and_restore_twice(counter: tuple[Container, Path], tmp_path: Path) -> None:
    ctr, data = counter
    for round_ in (1, 2):
        images = tmp_path / f"images{round_}"
        res = ctr.checkpoint(images)
        assert res.returncode == 0, (f"runc checkpoint failed: {res.stderr}\n"
                                     f"{_log(images, 'dump.log')}")
        assert ctr.status() == "absent"
        _reap(images)
        last = _count(data)[-1]
        res = ctr.restore(images)
        assert res.returncode == 0, (f"runc restore failed: {res.stderr}\n"
                                     f"{_log(images, 'restore.log')}")
        assert ctr.status() == "running"
        # the prestart hook ran again, on setup-namespaces, given the restored init
        assert _prestarts(tmp_path / "prestart") == [ctr.pid()] * (round_ + 1)
        _grows(data, ctr.out)
        nums = _count(data)
        assert nums == list(range(1, len(nums) + 1)), f"the count broke: ...{nums[-20:]}"
        assert last + 1 in nums
        printed = ctr.out.numbers()
        assert printed[-1] > last, "the restored counter prints nothing on its new stdout"


def test_refused_checkpoint_leaves_the_container_running(
        counter: tuple[Container, Path], tmp_path: Path) -> None:
    """What ckpt cannot dump is refused through runc before anything is touched (here a
    process of the container's PID namespace outside its tree: runc exec): runc
    reports criu's errno and the log path, the log names the reason, the counter goes
    on."""
    ctr, data = counter
    pid = ctr.pid()
    images = tmp_path / "images"
    outsider = subprocess.Popen(ctr.cmd("exec", ctr.cid, "sleep", "1000"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: "sleep 1000" in subprocess.run(
            ctr.cmd("ps", ctr.cid), capture_output=True, text=True).stdout, 20,
            "runc exec to start sleep")
        res = ctr.checkpoint(images)
    finally:
        outsider.kill()
        outsider.wait()
    assert res.returncode != 0
    assert "criu failed: type" in res.stderr, res.stderr
    log = _log(images, "dump.log")
    assert "in the PID namespace of process" in log and "not in its tree" in log, log
    assert "Traceback" not in log.split("the exception behind it")[0]
    assert ctr.status() == "running" and ctr.pid() == pid
    _grows(data, ctr.out)
    nums = _count(data)
    assert nums == list(range(1, len(nums) + 1))


# Two processes of the container joined by a pipe, and a file on its /dev/shm tmpfs.
PIPELINE = ("mkdir -p /dev/shm/kept && echo kept > /dev/shm/kept/file; i=0; "
            "while true; do i=$((i+1)); echo $i; sleep 0.1; done | "
            "while read n; do echo $n >> /data/count; echo $n; done")


def _round_trip(ctr: Container, data: Path, images: Path) -> tuple[list[dict[str, Any]], int]:
    """runc checkpoint then restore -d, both succeeding, the container gone between (its
    processes reaped) and counting again after; the tasks dumped and the last number
    counted before the restore."""
    res = ctr.checkpoint(images)
    assert res.returncode == 0, f"{res.stderr}\n{_log(images, 'dump.log')}"
    assert ctr.status() == "absent", f"runc kept the container: {res.stderr}"
    _reap(images)
    last = _count(data)[-1]
    res = ctr.restore(images)
    assert res.returncode == 0, f"{res.stderr}\n{_log(images, 'restore.log')}"
    _grows(data, ctr.out)
    return json.loads((images / "inventory.json").read_text())["tasks"], last


def test_pipeline_and_tmpfs_file(tmp_path: Path) -> None:
    """A container whose init has children joined by a pipe, and a file on its /dev/shm:
    after runc checkpoint and restore the numbers go on through the pipe, none lost,
    and the file is there. (The checkpoint may catch a ``sleep`` exited but not yet
    reaped, its SIGCHLD pending: test_init_state_in_its_pid_namespace makes that
    certain.)"""
    runc = runc_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    ctr = Container(runc, tmp_path / "state", make_bundle(tmp_path / "bundle",
                    ["sh", "-c", PIPELINE], data), f"ckpt-{os.getpid()}-pipe",
                    Output(tmp_path / "stdout"))
    try:
        ctr.run()
        _grows(data, ctr.out)
        tasks, last = _round_trip(ctr, data, tmp_path / "images")
        assert len(tasks) >= 3
        nums = _count(data)
        assert nums == list(range(1, len(nums) + 1)) and last + 1 in nums
        assert Path(f"/proc/{ctr.pid()}/root/dev/shm/kept/file").read_text() == "kept\n"
    finally:
        ctr.delete()


def test_init_state_in_its_pid_namespace(build: Builder, tmp_path: Path) -> None:
    """State that names processes by their PIDs inside the container's PID namespace
    (tests/progs/nsstate.c as the container's init): a zombie child in the init's
    group, blocked signals pending for the process and for its thread, a POSIX timer
    signalling its thread, a pidfd on itself; all back after runc checkpoint and
    restore, the zombie reaped with its status."""
    runc = runc_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    bundle = make_bundle(tmp_path / "bundle", ["/bin/nsstate"], data)
    shutil.copy(build("nsstate", static=True), bundle / "rootfs" / "bin" / "nsstate")
    ctr = Container(runc, tmp_path / "state", bundle, f"ckpt-{os.getpid()}-nsstate",
                    Output(tmp_path / "stdout"))
    try:
        ctr.run()
        _grows(data, ctr.out)
        tasks, _ = _round_trip(ctr, data, tmp_path / "images")
        assert any(t.get("zombie") for t in tasks)
        (data / "check").touch()
        wait_until(lambda: (data / "report").exists(), 30, "the init's report")
        zombie = int((data / "zombie").read_text())
        assert (data / "report").read_text() == \
            f"pid=1 zombie={zombie} status=7 pending=CHLD,USR1,USR2 timer=ok pidfd=1\n"
        nums = _count(data)
        assert nums == list(range(1, len(nums) + 1))
    finally:
        ctr.delete()


def test_leave_running(counter: tuple[Container, Path], tmp_path: Path) -> None:
    """runc checkpoint --leave-running: the container counts on; removed (runc delete:
    its ID free, its state gone), it comes back under the same ID from the images and
    counts from where it was checkpointed."""
    ctr, data = counter
    images = tmp_path / "images"
    res = ctr.checkpoint(images, "--leave-running")
    assert res.returncode == 0, f"{res.stderr}\n{_log(images, 'dump.log')}"
    assert ctr.status() == "running"
    _grows(data, ctr.out)
    subprocess.run(ctr.cmd("delete", "-f", ctr.cid), check=True)
    _reap(images)
    assert ctr.status() == "absent"
    cut = len(ctr.out.numbers())
    res = ctr.restore(images)
    assert res.returncode == 0, f"{res.stderr}\n{_log(images, 'restore.log')}"
    assert ctr.status() == "running"
    wait_until(lambda: len(ctr.out.numbers()) > cut + 3, 30, "numbers after the restore")
    again = ctr.out.numbers()[cut:]
    assert again == list(range(again[0], again[0] + len(again))), again[:10]
    assert again[0] <= _count(data)[cut - 1] + 1
