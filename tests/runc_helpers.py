"""OCI containers for the tests: a bundle with a busybox rootfs, run by runc with its
stdio on pipes (copied into a file by a ``cat``), checkpointed and restored with
``ckpt-criu`` as runc's criu."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ckpt_helpers import PYTHON, Output, my_children, scaled, wait_until

BUSYBOX = "/usr/bin/busybox"
APPLETS = ("sh", "sleep", "echo", "cat", "ls", "mount", "umount", "hostname", "setsid")

# The counter of issue 11: a shell loop printing n and appending it to /data/count.
COUNTER = ("i=0; while true; do i=$((i+1)); echo $i; echo $i >> /data/count; "
           "sleep 0.1; done")


def counted(data: Path) -> list[int]:
    """The numbers the counter appended to ``data``/count, complete lines only."""
    try:
        text = (data / "count").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text[: text.rfind("\n") + 1].split()]


def runc_or_skip() -> str:
    """The path of runc, or a skip naming what is missing (the bootstrap installs runc
    and busybox-static from Debian as root)."""
    runc = shutil.which("runc") or ("/usr/sbin/runc" if os.path.exists("/usr/sbin/runc")
                                    else None)
    if runc is None:
        pytest.skip("runc is not installed (Debian package runc; scripts/bootstrap.sh "
                    "installs it as root)")
    busybox_or_skip()
    return runc


def ckpt_criu() -> str:
    """The ``ckpt-criu`` console script next to the tests' interpreter."""
    return str(Path(PYTHON).with_name("ckpt-criu"))


def make_rootfs(rootfs: Path) -> Path:
    """A root file system of a static busybox and its applets, with the usual mount
    points."""
    for d in ("bin", "data", "proc", "dev", "sys", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    return rootfs


def busybox_or_skip() -> None:
    if not os.path.exists(BUSYBOX) or b"ld-linux" in Path(BUSYBOX).read_bytes()[:4096]:
        pytest.skip("a static busybox is not installed (Debian package busybox-static)")


def make_bundle(where: Path, args: list[str], data: Path) -> Path:
    """An OCI bundle at ``where``: busybox's rootfs, ``args`` as the process, no
    terminal, a writable root and ``data`` bound at /data."""
    make_rootfs(where / "rootfs")
    subprocess.run([runc_or_skip(), "spec"], cwd=where, check=True)
    config = json.loads((where / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["root"]["readonly"] = False
    config["mounts"].append({"destination": "/data", "type": "bind", "source": str(data),
                             "options": ["rbind", "rw"]})
    (where / "config.json").write_text(json.dumps(config, indent=1))
    return where


@dataclass
class Container:
    """One container ID under a runc state folder of the test's own."""

    runc: str
    state: Path
    bundle: Path
    cid: str
    out: Output
    copiers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cmd(self, *args: str, criu: bool = False) -> list[str]:
        extra = ["--criu", ckpt_criu()] if criu else []
        return [self.runc, "--root", str(self.state), *extra, *args]

    def _pipe_to_out(self) -> int:
        """A pipe whose read end a ``cat`` appends to ``out``; return its write end."""
        r, w = os.pipe()
        with open(self.out.path, "ab") as f:
            self.copiers.append(subprocess.Popen(["cat"], stdin=r, stdout=f))
        os.close(r)
        return w

    def _run_piped(self, args: list[str], timeout: float = 60.0
                   ) -> subprocess.CompletedProcess[str]:
        """Run runc with stdout and stderr on a new pipe to ``out`` (the container's
        stdio; runc's own messages go there too, and the lines since are returned as
        its stderr); stdin /dev/null."""
        w = self._pipe_to_out()
        before = len(self.out.lines())
        try:
            res = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                 cwd=self.bundle, timeout=scaled(timeout))
        finally:
            os.close(w)
        said = "\n".join(ln for ln in self.out.lines()[before:] if not ln.isdigit())
        return subprocess.CompletedProcess(args, res.returncode, "", said)

    def run(self) -> None:
        res = self._run_piped(self.cmd("run", "-d", self.cid))
        assert res.returncode == 0, f"runc run failed: {res.stderr}"

    def pid(self) -> int:
        st = json.loads(subprocess.run(self.cmd("state", self.cid), capture_output=True,
                                       text=True, check=True).stdout)
        return int(st["pid"])

    def status(self) -> str:
        res = subprocess.run(self.cmd("state", self.cid), capture_output=True, text=True)
        return json.loads(res.stdout)["status"] if res.returncode == 0 else "absent"

    def checkpoint(self, images: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """runc checkpoint; meanwhile the container's init, our child (runc run -d left
        it to us, a child subreaper), is reaped once killed, as a shim would: runc
        removes the container's cgroups only once it is gone."""
        work = images.with_name(images.name + "-work")
        images.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        init = self.pid()
        with subprocess.Popen(self.cmd("checkpoint", "--image-path", str(images),
                                       "--work-path", str(work), *extra, self.cid,
                                       criu=True),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=self.bundle, stdin=subprocess.DEVNULL) as p:
            deadline = time.monotonic() + scaled(120)
            while p.poll() is None and time.monotonic() < deadline:
                try:
                    os.waitpid(init, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.02)
            out, err = p.communicate(timeout=scaled(10))
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def restore(self, images: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        work = images.with_name(images.name + "-work")
        work.mkdir(exist_ok=True)
        return self._run_piped(self.cmd("restore", "-d", "--image-path", str(images),
                                        "--work-path", str(work), *extra, self.cid,
                                        criu=True), timeout=120)

    @staticmethod
    def reap(images: Path) -> None:
        """The checkpointed container's processes are ours (runc run -d left them to us,
        a child subreaper): reap their zombies, which hold their PIDs."""
        for task in json.loads((images / "inventory.json").read_text())["tasks"]:
            try:
                os.waitpid(task["pid"], 0)
            except ChildProcessError:
                wait_until(lambda p=task["pid"]: not os.path.exists(f"/proc/{p}"), 10,
                           f"process {task['pid']} to be gone")

    @staticmethod
    def log(images: Path, name: str) -> str:
        """ckpt's log ``name`` (dump.log, restore.log) of ``images``, for messages."""
        path = images.with_name(images.name + "-work") / name
        return path.read_text() if path.exists() else f"(no {path})"

    def delete(self) -> None:
        """The container killed, its init reaped (ours: runc would leave its cgroups,
        which a zombie keeps busy), then removed. Our other children in its PID
        namespace (a ``runc exec`` process whose runc was killed) are reaped too: its
        dying init waits for them."""
        init = self.pid() if self.status() != "absent" else 0
        ours = {init} | _in_pid_ns_of(init) if init else set()
        subprocess.run(self.cmd("delete", "-f", self.cid), capture_output=True)
        deadline = time.monotonic() + scaled(10)
        while ours and time.monotonic() < deadline:
            for pid in list(ours):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        ours.discard(pid)
                except ChildProcessError:
                    ours.discard(pid)
            time.sleep(0.05)
        if init:  # its cgroups, left while its zombie held them
            subprocess.run(self.cmd("delete", "-f", self.cid), capture_output=True)
        for c in self.copiers:
            c.kill()
            c.wait()
        self.copiers.clear()
        _remove_cgroups(self.cid)


def _remove_cgroups(cid: str) -> None:
    """The container's cgroups that runc left behind (it leaves them when a process it
    did not start, such as a killed ``runc exec``'s, was still in them), once empty."""
    deadline = time.monotonic() + scaled(10)
    left = glob.glob(f"/sys/fs/cgroup/{cid}") + glob.glob(f"/sys/fs/cgroup/*/{cid}")
    while left and time.monotonic() < deadline:
        for path in list(left):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:  # busy: a process on its way out
                continue
            left.remove(path)
        if left:
            time.sleep(0.05)


def _in_pid_ns_of(init: int) -> set[int]:
    """Our children in the PID namespace of process ``init``."""
    def ns(pid: int) -> int | None:
        try:
            return os.stat(f"/proc/{pid}/ns/pid").st_ino
        except OSError:
            return None

    theirs = ns(init)
    return {p for p in my_children() if p != init and theirs is not None and ns(p) == theirs}
