"""runc's own checkpoint tests (tests/integration/checkpoint.bats in opencontainers/runc)
as the spec of ckpt as runc's criu: pre-dump and a parent, an external network
namespace, a container's criu configuration file (annotation org.criu.config), the
cgroup modes, file locks, TCP connections (--tcp-established), auto-dedup, a page
server, a restore under another ID (so into another cgroup); each checkpointed and
restored by ``runc --criu ckpt-criu``, the counter going on at n+1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_helpers import Builder, Output, wait_until
from runc_helpers import COUNTER, Container, counted, make_bundle, runc_or_skip


def _grows(data: Path, out: Output, more: int = 5) -> None:
    n, m = len(counted(data)), len(out.numbers())
    wait_until(lambda: len(counted(data)) >= n + more and len(out.numbers()) >= m + more,
               30, f"{more} more numbers from the counter")


def _unbroken(data: Path, last: int) -> None:
    nums = counted(data)
    assert nums == list(range(1, len(nums) + 1)), f"the count broke: ...{nums[-20:]}"
    assert last + 1 in nums


class Counter:
    """The counter container of test_runc.py, its bundle editable before ``run``."""

    def __init__(self, tmp_path: Path, cid: str = "ctr"):
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.data.mkdir()
        self.bundle = make_bundle(tmp_path / "bundle", ["sh", "-c", COUNTER], self.data)
        self.runc = runc_or_skip()
        self.made: list[Container] = []
        self.ctr = self.container(cid)

    def container(self, cid: str) -> Container:
        ctr = Container(self.runc, self.tmp / "state", self.bundle,
                        f"ckpt-{os.getpid()}-{cid}"[:60], Output(self.tmp / "stdout"))
        self.made.append(ctr)
        return ctr

    def applets(self, *names: str) -> None:
        """More busybox applets in the root file system."""
        for name in names:
            (self.bundle / "rootfs" / "bin" / name).symlink_to("busybox")

    def config(self) -> dict:
        return json.loads((self.bundle / "config.json").read_text())

    def set_config(self, config: dict) -> None:
        (self.bundle / "config.json").write_text(json.dumps(config, indent=1))

    def run(self) -> Container:
        self.ctr.run()
        _grows(self.data, self.ctr.out)
        return self.ctr

    def checkpoint(self, images: Path, *extra: str) -> int:
        """runc checkpoint, succeeding, the container gone; the last number counted."""
        res = self.ctr.checkpoint(images, *extra)
        assert res.returncode == 0, f"{res.stderr}\n{Container.log(images, 'dump.log')}"
        assert self.ctr.status() == "absent"
        Container.reap(images)
        return counted(self.data)[-1]

    def restore(self, images: Path, *extra: str, cid: str | None = None) -> Container:
        """runc restore -d (under ``cid`` when given), succeeding; counting again."""
        if cid is not None:
            self.ctr = self.container(cid)
        res = self.ctr.restore(images, *extra)
        assert res.returncode == 0, f"{res.stderr}\n{Container.log(images, 'restore.log')}"
        assert self.ctr.status() == "running"
        _grows(self.data, self.ctr.out)
        return self.ctr

    def round_trip(self, images: Path, dump: tuple[str, ...] = (),
                   restore: tuple[str, ...] = ()) -> None:
        last = self.checkpoint(images, *dump)
        self.restore(images, *restore)
        _unbroken(self.data, last)

    def delete(self) -> None:
        for ctr in self.made:
            ctr.delete()


@pytest.fixture
def counter(tmp_path: Path) -> Iterator[Counter]:
    c = Counter(tmp_path)
    try:
        yield c
    finally:
        c.delete()


def test_pre_dump_then_dump_on_its_parent(counter: Counter, tmp_path: Path) -> None:
    """checkpoint --pre-dump into a folder, then checkpoint --parent-path to it (given
    relative to the images, as criu takes it), restore; runc exec still works in the
    restored container."""
    ctr = counter.run()
    parent, images = tmp_path / "parent", tmp_path / "images"
    res = ctr.checkpoint(parent, "--pre-dump")
    assert res.returncode == 0, f"{res.stderr}\n{Container.log(parent, 'dump.log')}"
    assert ctr.status() == "running"
    _grows(counter.data, ctr.out)
    last = counter.checkpoint(images, "--parent-path", "../parent")
    inventory = json.loads((images / "inventory.json").read_text())
    assert inventory["parent"]["dir"] == "../parent"
    assert " in the parent images, " in Container.log(images, "dump.log")
    counter.restore(images)
    _unbroken(counter.data, last)
    res = subprocess.run(ctr.cmd("exec", "--cwd", "/bin", ctr.cid, "echo", "ok"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "ok\n", res


def test_cgroup_namespace(counter: Counter, tmp_path: Path) -> None:
    """checkpoint.bats' "(cgroupns)": a container with a cgroup namespace of its own
    (runc's, rooted at its cgroups) comes back in a new one rooted at its cgroups
    again, twice: it sees itself at / in every hierarchy, the host its cgroups."""
    config = counter.config()
    config["linux"]["namespaces"].append({"type": "cgroup"})
    counter.set_config(config)
    counter.run()
    for round_ in (1, 2):
        counter.round_trip(tmp_path / f"images{round_}")
        pid = counter.ctr.pid()
        ns = os.stat(f"/proc/{pid}/ns/cgroup").st_ino
        assert ns != os.stat("/proc/self/ns/cgroup").st_ino
        assert counter.ctr.cid in Path(f"/proc/{pid}/cgroup").read_text()
        inside = subprocess.run(counter.ctr.cmd("exec", counter.ctr.cid, "cat",
                                                "/proc/self/cgroup"),
                                capture_output=True, text=True, timeout=60)
        assert inside.returncode == 0, inside
        assert all(line.endswith(":/") for line in inside.stdout.splitlines()), inside.stdout
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert all(os.stat(f"/proc/{k}/ns/cgroup").st_ino == ns for k in kids)


def test_auto_dedup(counter: Counter, tmp_path: Path) -> None:
    ctr = counter.run()
    parent, images = tmp_path / "parent", tmp_path / "images"
    res = ctr.checkpoint(parent, "--pre-dump", "--auto-dedup")
    assert res.returncode == 0, f"{res.stderr}\n{Container.log(parent, 'dump.log')}"
    counter.round_trip(images, dump=("--parent-path", "../parent", "--auto-dedup"),
                       restore=("--auto-dedup",))


def test_external_network_namespace(counter: Counter, tmp_path: Path) -> None:
    """The container joins a named network namespace (its path in config.json): runc
    marks it external; the restored container is in that same namespace, twice."""
    name = f"ckpt-{os.getpid()}-{tmp_path.name}"[:40]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/var/run/netns/{name}"
        inode = os.stat(path).st_ino
        config = counter.config()
        for ns in config["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = path
        counter.set_config(config)
        counter.run()
        for round_ in (1, 2):
            counter.round_trip(tmp_path / f"images{round_}")
            assert os.stat(f"/proc/{counter.ctr.pid()}/ns/net").st_ino == inode
    finally:
        counter.delete()
        subprocess.run(["ip", "netns", "del", name])


def test_container_criu_config_file(counter: Counter, tmp_path: Path) -> None:
    """The annotation org.criu.config names a criu configuration file that runc gives
    ckpt (the RPC's config_file): its options win over runc's (here the log file)."""
    conf = tmp_path / "criu.conf"
    conf.write_text("# the container's own\nlog-file=from-config.log\nverbosity 4\n")
    config = counter.config()
    config["annotations"] = {"org.criu.config": str(conf)}
    counter.set_config(config)
    counter.run()
    images = tmp_path / "images"
    work = tmp_path / "images-work"
    counter.checkpoint(images)
    assert (work / "from-config.log").exists() and not (work / "dump.log").exists()
    (work / "from-config.log").unlink()
    counter.restore(images)
    assert (work / "from-config.log").exists() and not (work / "restore.log").exists()


@pytest.mark.parametrize("mode", ["soft", "full", "strict"])
def test_cgroup_modes(counter: Counter, tmp_path: Path, mode: str) -> None:
    counter.run()
    counter.round_trip(tmp_path / "images", dump=("--manage-cgroups-mode", mode),
                       restore=("--manage-cgroups-mode", mode))
    cg = Path(f"/proc/{counter.ctr.pid()}/cgroup").read_text()
    assert counter.ctr.cid in cg, cg


def test_restore_under_another_id(counter: Counter, tmp_path: Path) -> None:
    """Restored under a new container ID, the container lives in that ID's cgroup."""
    counter.run()
    images = tmp_path / "images"
    last = counter.checkpoint(images)
    ctr = counter.restore(images, cid="other")
    _unbroken(counter.data, last)
    cg = Path(f"/proc/{ctr.pid()}/cgroup").read_text()
    assert ctr.cid in cg, cg


def test_file_locks(build: Builder, tmp_path: Path) -> None:
    """A container whose two processes hold every kind of file lock on a file of its
    bind mount (tests/progs/locks.c): refused without --file-locks, the container left
    running; with it, the locks are held again after the restore, by the same PIDs."""
    runc = runc_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    bundle = make_bundle(tmp_path / "bundle", ["/bin/locks", "/data"], data)
    shutil.copy(build("locks", static=True), bundle / "rootfs" / "bin" / "locks")
    ctr = Container(runc, tmp_path / "state", bundle, f"ckpt-{os.getpid()}-locks",
                    Output(tmp_path / "stdout"))
    try:
        ctr.run()
        ctr.out.wait_line("^child locked$", 30)
        init = ctr.pid()
        pids = {init, *map(int, Path(f"/proc/{init}/task/{init}/children").read_text().split())}
        held = _locks_of(pids)
        assert len(held) >= 5, held
        images = tmp_path / "images"
        res = ctr.checkpoint(images)
        assert res.returncode != 0
        assert "--file-locks" in Container.log(images, "dump.log")
        assert ctr.status() == "running"
        images = tmp_path / "images2"
        res = ctr.checkpoint(images, "--file-locks")
        assert res.returncode == 0, f"{res.stderr}\n{Container.log(images, 'dump.log')}"
        Container.reap(images)
        cut = len(ctr.out.numbers())
        res = ctr.restore(images, "--file-locks")
        assert res.returncode == 0, f"{res.stderr}\n{Container.log(images, 'restore.log')}"
        wait_until(lambda: len(ctr.out.numbers()) > cut + 3, 30, "counting after the restore")
        assert _locks_of(pids) == held
    finally:
        ctr.delete()


def _locks_of(pids: set[int]) -> list[str]:
    """The lines of /proc/locks held by ``pids`` (kind, mode, range), sorted."""
    out = []
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if f[1] == "->":
            continue  # a waiter
        if int(f[4]) in pids:
            out.append(" ".join((f[1], f[2], f[3], f[4], f[6], f[7])))
    return sorted(out)


def test_tcp_established(counter: Counter, tmp_path: Path) -> None:
    """The counter's numbers go through a TCP connection between two processes of the
    container (busybox nc) before they are written: checkpointed and restored with
    --tcp-established, the connection carries on, no number lost, twice."""
    counter.applets("nc")
    config = counter.config()
    config["process"]["args"] = ["sh", "-c", (
        # busybox's nc ends at the end of its input: the server's is a pipe kept open
        "sleep 100000 | nc -l -p 7000 | while read n; do echo $n >> /data/count; echo $n; "
        "done & "
        "sleep 0.5; i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done | "
        "nc 127.0.0.1 7000")]
    counter.set_config(config)
    counter.run()
    for round_ in (1, 2):
        counter.round_trip(tmp_path / f"images{round_}", dump=("--tcp-established",),
                           restore=("--tcp-established",))


def test_page_server(counter: Counter, tmp_path: Path) -> None:
    """runc checkpoint --page-server: the pages go to a page server (ckpt page-server),
    the rest to the images folder; restored from both put together."""
    from runc_helpers import ckpt_criu
    counter.run()
    images, served = tmp_path / "images", tmp_path / "served"
    served.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([ckpt_criu(), "page-server", "-D", str(served), "--port",
                               str(port), "--address", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: subprocess.run(["ss", "-ltnH", f"sport = :{port}"],
                                          capture_output=True, text=True).stdout.strip(),
                   30, "the page server to listen")
        last = counter.checkpoint(images, "--page-server", f"127.0.0.1:{port}")
        assert server.wait(timeout=60) == 0, server.stdout.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    for f in served.iterdir():
        if not (images / f.name).exists():
            os.link(f, images / f.name)
    counter.restore(images)
    _unbroken(counter.data, last)


def test_lazy_pages_migration(counter: Counter, tmp_path: Path) -> None:
    """checkpoint.bats' "checkpoint --lazy-pages and restore": runc checkpoint
    --lazy-pages --page-server --status-fd in the background, ready once the status pipe
    says so; `lazy-pages --page-server` on the images; runc restore --lazy-pages under a
    new ID: the counter goes on, runc exec works in it, the checkpoint and the daemon
    end. (The dump hands its images over whole: a copy, not criu's post-copy.)"""
    from runc_helpers import ckpt_criu
    ctr = counter.run()
    images = tmp_path / "images"
    images.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status_r, status_w = os.pipe()
    checkpoint = subprocess.Popen(
        ctr.cmd("checkpoint", "--lazy-pages", "--page-server", f"127.0.0.1:{port}",
                "--status-fd", str(status_w), "--work-path", str(images), "--image-path",
                str(images), ctr.cid, criu=True),
        pass_fds=(status_w,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    os.close(status_w)
    daemon = None
    try:
        assert os.read(status_r, 1) == b"\0", Container.log(images, "dump.log")
        Container.reap(images)
        last = counted(counter.data)[-1]
        daemon = subprocess.Popen([ckpt_criu(), "lazy-pages", "--page-server", "--address",
                                   "127.0.0.1", "--port", str(port), "-D", str(images)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert checkpoint.wait(timeout=60) == 0, checkpoint.stdout.read()  # type: ignore[union-attr]
        restored = counter.container("restored")
        wait_until(lambda: (images / "lazy-pages.socket").exists() or daemon.poll() is not None,
                   30, "the lazy-pages daemon to listen")
        res = restored._run_piped(restored.cmd(
            "restore", "-d", "--image-path", str(images), "--work-path", str(images),
            "--lazy-pages", restored.cid, criu=True), timeout=120)
        assert res.returncode == 0, f"{res.stderr}\n{Container.log(images, 'restore.log')}"
        counter.ctr = restored
        _grows(counter.data, restored.out)
        _unbroken(counter.data, last)
        ok = subprocess.run(restored.cmd("exec", "--cwd", "/bin", restored.cid, "echo", "ok"),
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and ok.stdout == "ok\n", ok
        assert daemon.wait(timeout=60) == 0, daemon.stdout.read()  # type: ignore[union-attr]
    finally:
        os.close(status_r)
        for p in (checkpoint, daemon):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
