"""Resources a container's process holds by path (issue 11), through runc with ckpt as
its criu: deleted open files, unix sockets bound to a path, inotify watches and fanotify
marks, each on the container's root file system, on its tmpfs and on a bind mount from
the host (an ``ext_mnt``). A static program (tests/progs/ctr_kinds.c) holds them in a
busybox container; after ``runc checkpoint`` and ``restore`` it carries on: it reads the
deleted files' content, its sockets answer, its watches report events, a signal it
blocks is still pending."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ckpt_helpers import Output, wait_until
from runc_helpers import Container, make_bundle, runc_or_skip

Start = Callable[..., Container]


@pytest.fixture
def start(tmp_path: Path, build: Callable[..., Path]) -> Iterator[Start]:
    """``start(mode, *paths, folders=())``: ctr_kinds MODE PATHS as the init of a new
    container, its /data bound from ``tmp_path/data``, ``folders`` made in its root file
    system; returned once it said "ready" and ticked."""
    runc = runc_or_skip()
    prog = build("ctr_kinds", static=True)
    made: list[Container] = []

    def go(mode: str, *paths: str, folders: tuple[str, ...] = ()) -> Container:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        bundle = make_bundle(tmp_path / "bundle", ["/bin/ctr_kinds", mode, *paths], data)
        shutil.copy(prog, bundle / "rootfs" / "bin" / "ctr_kinds")
        for folder in folders:  # of the root file system
            (bundle / "rootfs" / folder).mkdir()
        ctr = Container(runc, tmp_path / "state", bundle,
                        f"ckpt-{os.getpid()}-{mode}"[:60], Output(tmp_path / "stdout"))
        made.append(ctr)
        ctr.run()
        ctr.out.wait_line("^ready$", 30)
        _ticks(ctr, 3)
        return ctr

    try:
        yield go
    finally:
        for ctr in made:
            ctr.delete()


def _ticks(ctr: Container, more: int) -> list[int]:
    """Wait for ``more`` new tick numbers; the numbers since."""
    n = len(ctr.out.numbers())
    return wait_until(lambda: ctr.out.numbers()[n:] if len(ctr.out.numbers()) >= n + more
                      else None, 30, f"{more} more ticks")


def _round_trip(ctr: Container, tmp_path: Path, between: Callable[[], None] = lambda: None
                ) -> int:
    """runc checkpoint, ``between()``, then restore; the restored init's PID (the same as
    before)."""
    pid = ctr.pid()
    images = tmp_path / "images"
    res = ctr.checkpoint(images)
    assert res.returncode == 0, (f"runc checkpoint failed: {res.stderr}\n"
                                 f"{ctr.log(images, 'dump.log')}")
    assert ctr.status() == "absent"
    ctr.reap(images)
    between()
    res = ctr.restore(images)
    assert res.returncode == 0, (f"runc restore failed: {res.stderr}\n"
                                 f"{ctr.log(images, 'restore.log')}")
    assert ctr.status() == "running" and ctr.pid() == pid
    return pid


def _fd_links(pid: int) -> set[str]:
    return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


# ------------------------------------------------------------------ deleted files


GHOSTS = ("/ghost-on-root", "/dev/shm/ghost-on-tmpfs", "/data/ghost-on-bind")


def test_deleted_files(start: Start, tmp_path: Path) -> None:
    """Files deleted while open (one mapped too), on the root, a tmpfs and a bind mount:
    after the round trip each reads back its content, /proc shows each as "PATH
    (deleted)" in the container's paths, and no name of them is left on the host."""
    ctr = start("ghost", *GHOSTS)
    pid = _round_trip(ctr, tmp_path)
    before = len(ctr.out.lines())
    _ticks(ctr, 5)
    assert not [ln for ln in ctr.out.lines()[before:] if not ln.isdigit()], \
        ctr.out.lines()[before:]
    assert {f"{p} (deleted)" for p in GHOSTS} <= _fd_links(pid), _fd_links(pid)
    assert not list((tmp_path / "data").iterdir())
    assert sorted(p.name for p in (ctr.bundle / "rootfs").iterdir()) == \
        ["bin", "data", "dev", "proc", "sys", "tmp"]


def test_deleted_file_folder_now_a_link_out(start: Start, tmp_path: Path) -> None:
    """The folder of a deleted file, replaced after the dump by a symbolic link to a
    host folder (absolute: in the container it would name its own path): the restore
    never follows it out of the container; the file is made under a hidden name in the
    root's folder and the program reads it on."""
    ctr = start("ghost", "/folder/ghost", folders=("folder",))
    outside = tmp_path / "outside"
    outside.mkdir()
    kept = os.stat(outside)

    def swap() -> None:
        (ctr.bundle / "rootfs" / "folder").rmdir()
        (ctr.bundle / "rootfs" / "folder").symlink_to(outside)

    pid = _round_trip(ctr, tmp_path, swap)
    before = len(ctr.out.lines())
    _ticks(ctr, 5)
    assert not [ln for ln in ctr.out.lines()[before:] if not ln.isdigit()]
    assert not list(outside.iterdir())
    assert os.stat(outside).st_mtime_ns == kept.st_mtime_ns
    assert "/.ghost.ckpt-ghost.0 (deleted)" in _fd_links(pid), _fd_links(pid)


def test_open_file_behind_an_absolute_link(start: Start, tmp_path: Path) -> None:
    """An open file whose folder became, after the dump, an absolute symbolic link to
    another folder of the container (``/dir`` -> ``/moved``): it is reopened as the
    container resolves the path, in its own root (``/moved`` of the host has nothing to
    do with it)."""
    ctr = start("open", "/dir/file", folders=("dir",))
    rootfs = ctr.bundle / "rootfs"

    def move() -> None:
        (rootfs / "dir").rename(rootfs / "moved")
        (rootfs / "dir").symlink_to("/moved")

    pid = _round_trip(ctr, tmp_path, move)
    before = len(ctr.out.lines())
    _ticks(ctr, 5)
    assert not [ln for ln in ctr.out.lines()[before:] if not ln.isdigit()]
    assert "/moved/file" in _fd_links(pid), _fd_links(pid)


# ------------------------------------------------------------------ unix sockets


SOCKETS = ("/listener-on-root.sock", "/data/listener-on-bind.sock",
           "/dev/shm/listener-on-tmpfs.sock")


def _ask(path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            got += chunk
    return got.decode()


def test_unix_sockets_bound_to_paths(start: Start, tmp_path: Path) -> None:
    """Listeners bound to paths on the root, a bind mount and a tmpfs answer clients
    from the host after the round trip, through their socket files made again where
    they were, with their modes."""
    ctr = start("unix", *SOCKETS)
    pid = ctr.pid()
    host = {SOCKETS[0]: lambda: ctr.bundle / "rootfs" / SOCKETS[0][1:],
            SOCKETS[1]: lambda: tmp_path / "data" / SOCKETS[1].removeprefix("/data/"),
            SOCKETS[2]: lambda: Path(f"/proc/{pid}/root{SOCKETS[2]}")}
    for inside, path in host.items():
        assert _ask(path(), "before") == f"echo {inside} before\n"
    modes = {inside: os.stat(path()).st_mode for inside, path in host.items()}
    _round_trip(ctr, tmp_path)
    _ticks(ctr, 3)
    for inside, path in host.items():
        assert _ask(path(), "after") == f"echo {inside} after\n"
    assert {inside: os.stat(path()).st_mode for inside, path in host.items()} == modes


def test_socket_file_on_tmpfs_of_no_socket_refused(start: Start, tmp_path: Path) -> None:
    """A socket file on the container's tmpfs that no socket of the tree is bound to
    (its listener closed) would be lost: refused at dump, naming it; the container
    runs on."""
    ctr = start("unix", "/listener-on-root.sock")
    pid = ctr.pid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(f"/proc/{pid}/root/dev/shm/orphan.sock")
    images = tmp_path / "images"
    res = ctr.checkpoint(images)
    assert res.returncode != 0
    log = ctr.log(images, "dump.log")
    assert "/dev/shm/orphan.sock is a socket file no unix socket of the tree is bound to" \
        in log, log
    assert ctr.status() == "running" and ctr.pid() == pid
    _ticks(ctr, 3)


# ------------------------------------------------------------------ inotify, fanotify


WATCHED = ("/", "/dev/shm", "/data")


@pytest.mark.parametrize("api", ["inotify", "fanotify"])
def test_watches(start: Start, tmp_path: Path, api: str) -> None:
    """inotify watches, or the inode marks of an (unprivileged) fanotify group, on the
    root, a tmpfs and a bind mount report files created in each after the round trip,
    each event on the watch or mark of its folder."""
    ctr = start(api, *WATCHED)
    pid = ctr.pid()

    def create(name: str) -> None:
        for d in WATCHED:
            (Path(f"/proc/{pid}/root{d}") / name).write_text("x")
        for d in WATCHED:
            ctr.out.wait_line(f"^event {d} {name}$", 30)

    create("before")
    _round_trip(ctr, tmp_path)
    _ticks(ctr, 3)
    create("after")


# ------------------------------------------------------------------ signals


def test_blocked_signal_queued(start: Start, tmp_path: Path) -> None:
    """A signal queued for the container's init and blocked there is queued again by the
    restore, addressed by the PID the process has in its own PID namespace."""
    ctr = start("pending", "-")
    os.kill(ctr.pid(), signal.SIGUSR1)
    ctr.out.wait_line("^pending$", 30)
    _round_trip(ctr, tmp_path)
    ctr.out.wait_line("^pending$", 30, start=len(ctr.out.lines()))
