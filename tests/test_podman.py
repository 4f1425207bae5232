"""podman with ckpt as its criu (issue 11): a busybox container counting into a
bind-mounted file and on its stdout (conmon's log), checkpointed by ``podman container
checkpoint`` and brought back by ``podman container restore``, podman running runc
with ``--criu ckpt-criu`` and finding ``ckpt-criu`` as the ``criu`` on PATH when it
asks for criu's version. Every podman file (storage, state, the image) lives under
the test's folder (``--root``, ``--runroot``, ``--tmpdir``) and is removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckpt_helpers import scaled, wait_until
from runc_helpers import COUNTER, busybox_or_skip, ckpt_criu, make_rootfs, runc_or_skip
from runc_helpers import counted as _count

IMAGE = "localhost/ckpt-busybox:test"
# Root without CAP_SYS_RESOURCE: podman's own limits (1048576 files, 4194304
# processes) cannot be set, so the containers get small ones.
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


def _conmon() -> str | None:
    for path in (shutil.which("conmon"), "/usr/bin/conmon", "/usr/libexec/podman/conmon"):
        if path and os.path.exists(path):
            return path
    return None


@dataclass
class Podman:
    """podman with its storage and state under ``root``, runc as its runtime and
    ckpt-criu as runc's criu (and as the ``criu`` on PATH)."""

    exe: str
    root: Path  # storage
    run_root: Path  # state: short, podman takes a runroot of 50 characters at most
    env: dict[str, str]

    def cmd(self, *args: str) -> list[str]:
        return [self.exe, "--root", str(self.root / "storage"),
                "--runroot", str(self.run_root / "run"), "--tmpdir", str(self.run_root / "tmp"),
                "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--runtime", runc_or_skip(),
                "--runtime-flag", f"criu={ckpt_criu()}", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args), env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=scaled(timeout))

    def ok(self, *args: str, timeout: float = 120) -> str:
        res = self.run(*args, timeout=timeout)
        assert res.returncode == 0, f"podman {' '.join(args)}: {res.stderr}"
        return res.stdout

    def state(self, name: str) -> dict[str, object]:
        res = self.run("inspect", "--format", "{{json .State}}", name)
        return json.loads(res.stdout) if res.returncode == 0 else {"Status": "absent"}

    def running(self, name: str) -> bool:
        """``podman ps`` lists ``name`` as up."""
        out = self.ok("ps", "--filter", f"name=^{name}$", "--format", "{{.Names}} {{.Status}}")
        return out.split()[:2] == [name, "Up"]

    def logs(self, name: str) -> list[int]:
        out = self.ok("logs", name)
        return [int(x) for x in out.split() if x.isdigit()]

    def diagnose(self, name: str, log: str) -> str:
        """ckpt's log of the last checkpoint or restore of ``name`` (podman keeps it in
        the container's folder when one fails)."""
        res = self.run("inspect", "--format", "{{.StaticDir}}", name)
        path = Path(res.stdout.strip()) / log
        return path.read_text()[-4000:] if res.returncode == 0 and path.exists() \
            else f"(no {path})"


def _unmount_below(root: Path) -> None:
    """Whatever podman left mounted under ``root`` (a container's /dev/shm)."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted(points, key=len, reverse=True):
        if point.startswith(str(root) + "/"):
            subprocess.run(["umount", "-l", point], capture_output=True)


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman is not installed (Debian package podman; scripts/bootstrap.sh "
                    "installs it as root)")
    if _conmon() is None:
        pytest.skip("conmon is not installed (Debian package conmon, which podman needs)")
    runc_or_skip()
    busybox_or_skip()
    root = tmp_path / "podman"
    run_root = Path(tempfile.mkdtemp(prefix="ckpt-podman-", dir="/tmp"))
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    (bindir / "criu").symlink_to(ckpt_criu())  # podman asks the criu on PATH its version
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    pm = Podman(exe, root, run_root, env)
    rootfs = make_rootfs(tmp_path / "rootfs")
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    try:
        pm.ok("import", str(tarball), IMAGE)
        yield pm
    finally:
        for name in pm.run("ps", "--all", "--format", "{{.Names}}").stdout.split():
            for log in ("dump.log", "restore.log"):  # shown if the test failed
                print(f"--- {name} {log}:\n{pm.diagnose(name, log)}")
        pm.run("rm", "--all", "--force", "--time", "0")
        pm.run("rmi", "--all", "--force")
        for folder in (root, run_root):
            _unmount_below(folder)
            shutil.rmtree(folder, ignore_errors=True)


def _grows(data: Path, more: int = 5) -> None:
    n = len(_count(data))
    wait_until(lambda: len(_count(data)) >= n + more, 30, f"{more} more numbers in the count")


def _start_counter(pm: Podman, name: str, data: Path, *extra: str,
                   counter: str = COUNTER) -> int:
    pm.ok("run", "--detach", "--name", name, "--network", "none", *LIMITS, *extra,
          "--volume", f"{data}:/data", IMAGE, "sh", "-c", counter)
    _grows(data)
    return int(pm.state(name)["Pid"])  # type: ignore[call-overload]


def _gone(pid: int) -> None:
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, f"process {pid} to be gone")


def _goes_on(pm: Podman, name: str, data: Path, last: int) -> None:
    """The counter carries on from ``last``, none lost, on the file and the log."""
    _grows(data)
    nums = _count(data)
    assert nums == list(range(1, len(nums) + 1)), f"the count broke: ...{nums[-20:]}"
    assert last + 1 in nums
    wait_until(lambda: pm.logs(name)[-1:] > [last], 30,
               "the restored counter to print on its new stdout")


def test_checkpoint_and_restore_twice(podman: Podman, tmp_path: Path) -> None:
    """Checkpointed, the container stops; restored, ``podman ps`` shows it up, under
    the same PID, counting on from n+1; twice. ``--print-stats`` reads ckpt's
    stats-dump."""
    data = tmp_path / "data"
    data.mkdir()
    name = f"ckpt-counter-{os.getpid()}"
    pid = _start_counter(podman, name, data)
    for round_ in (1, 2):
        res = podman.run("container", "checkpoint", *(["--print-stats"] if round_ == 1
                                                      else []), name)
        assert res.returncode == 0, (f"round {round_}: podman checkpoint failed: "
                                     f"{res.stderr}\n{podman.diagnose(name, 'dump.log')}")
        if round_ == 1:
            stats = json.loads(res.stdout)["container_statistics"][0]["criu_statistics"]
            assert stats["pages_written"] > 0 and stats["frozen_time"] > 0, stats
        assert podman.state(name)["Status"] == "exited"
        assert not podman.running(name)
        _gone(pid)
        last = _count(data)[-1]
        res = podman.run("container", "restore", name)
        assert res.returncode == 0, (f"round {round_}: podman restore failed: {res.stderr}\n"
                                     f"{podman.diagnose(name, 'restore.log')}")
        assert podman.running(name), podman.ok("ps", "--all")
        assert podman.state(name)["Pid"] == pid
        _goes_on(podman, name, data, last)


def test_export_and_import(podman: Podman, tmp_path: Path) -> None:
    """``checkpoint --export`` writes a tarball of the images (and ckpt's stats-dump);
    the container removed, ``restore --import`` brings it back from the tarball alone,
    counting on from n+1."""
    data = tmp_path / "data"
    data.mkdir()
    name = f"ckpt-export-{os.getpid()}"
    pid = _start_counter(podman, name, data)
    tarball = tmp_path / "checkpoint.tar.gz"
    res = podman.run("container", "checkpoint", "--export", str(tarball), name)
    assert res.returncode == 0, f"{res.stderr}\n{podman.diagnose(name, 'dump.log')}"
    assert "level=error" not in res.stderr, res.stderr  # a file podman wanted was missing
    _gone(pid)
    last = _count(data)[-1]
    podman.ok("rm", "--force", name)
    assert podman.state(name)["Status"] == "absent"
    res = podman.run("container", "restore", "--import", str(tarball))
    assert res.returncode == 0, res.stderr
    assert podman.running(name), podman.ok("ps", "--all")
    assert podman.state(name)["Pid"] == pid
    _goes_on(podman, name, data, last)


def test_terminal_container(podman: Podman, tmp_path: Path) -> None:
    """``podman run --tty``: the counter prints on a terminal whose master conmon holds
    (runc's console socket); after checkpoint and restore the restored shell prints on
    the new terminal conmon got (orphan-pts-master), still its /dev/pts/0, and podman's
    log carries on."""
    data = tmp_path / "data"
    data.mkdir()
    name = f"ckpt-tty-{os.getpid()}"
    counter = COUNTER.replace("echo $i;", "echo $i $(tty);")
    pid = _start_counter(podman, name, data, "--tty", counter=counter)
    res = podman.run("container", "checkpoint", name)
    assert res.returncode == 0, f"{res.stderr}\n{podman.diagnose(name, 'dump.log')}"
    _gone(pid)
    last = _count(data)[-1]
    res = podman.run("container", "restore", name)
    assert res.returncode == 0, f"{res.stderr}\n{podman.diagnose(name, 'restore.log')}"
    assert podman.running(name) and podman.state(name)["Pid"] == pid
    _goes_on(podman, name, data, last)
    lines = podman.ok("logs", name).splitlines()
    after = [ln.strip() for ln in lines if ln.split()[:1] and ln.split()[0].isdigit()
             and int(ln.split()[0]) > last]
    assert after and all(ln.endswith(" /dev/pts/0") for ln in after), lines[-5:]


def test_pre_checkpoint(podman: Podman, tmp_path: Path) -> None:
    """``checkpoint --pre-checkpoint`` (runc --pre-dump) while the counter runs, twice,
    then ``checkpoint --with-previous`` and ``restore``: the counter goes on at n+1.
    The counter's ``sleep`` children come and go while a pre-dump copies their pages
    (the processes run then): one that exited meanwhile is left out of it."""
    data = tmp_path / "data"
    data.mkdir()
    name = f"ckpt-pre-{os.getpid()}"
    pid = _start_counter(podman, name, data)
    for _ in range(2):
        res = podman.run("container", "checkpoint", "--pre-checkpoint", name)
        assert res.returncode == 0, f"{res.stderr}\n{podman.diagnose(name, 'dump.log')}"
        assert podman.running(name)
        _grows(data, 2)
    res = podman.run("container", "checkpoint", "--with-previous", name)
    assert res.returncode == 0, f"{res.stderr}\n{podman.diagnose(name, 'dump.log')}"
    _gone(pid)
    last = _count(data)[-1]
    res = podman.run("container", "restore", name)
    assert res.returncode == 0, f"{res.stderr}\n{podman.diagnose(name, 'restore.log')}"
    assert podman.running(name) and podman.state(name)["Pid"] == pid
    _goes_on(podman, name, data, last)


def test_refused_checkpoint_leaves_the_container_running(podman: Podman,
                                                         tmp_path: Path) -> None:
    """A container ckpt cannot dump (a process of its PID namespace outside its init's
    tree: ``podman exec``): podman reports the failure, the container counts on,
    still up under the same PID."""
    data = tmp_path / "data"
    data.mkdir()
    name = f"ckpt-refused-{os.getpid()}"
    pid = _start_counter(podman, name, data)
    podman.ok("exec", "--detach", name, "sleep", "1000")
    res = podman.run("container", "checkpoint", name)
    assert res.returncode != 0
    log = podman.diagnose(name, "dump.log")
    assert "not in its tree" in log, log
    assert podman.running(name) and podman.state(name)["Pid"] == pid
    _grows(data)
    nums = _count(data)
    assert nums == list(range(1, len(nums) + 1))
