"""Deleted files that are not plain open files: a removed directory held by an fd and
as the working directory of two processes, files of removed directories, a file
whose directory is a file now, deleted FIFOs (read or write end alone, with bytes in
them), a deleted device node outside /dev, and O_PATH fds on symlinks (one deleted),
a device node and a FIFO. Each comes back as a deleted file of its type, under its
old name, and every directory ckpt touched keeps its modification time."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Procs,
    dump_and_check_dead,
    printed_fds,
    proc_ppid,
    restore_detached,
    ticks_go_on,
    wait_until,
)


def _link(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def _fstat(pid: int, fd: int) -> os.stat_result:
    return os.stat(f"/proc/{pid}/fd/{fd}")


def _mtimes(*paths: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def _child(pid: int) -> int:
    def one() -> int | None:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        return kids[0] if len(kids) == 1 else None

    return wait_until(one, 10, f"the child of {pid}")


def test_removed_directories_and_their_files(procs: Procs, images: Path, tmp_path: Path
                                            ) -> None:
    """A removed directory held by an fd and as the cwd of a process and its child comes
    back as one removed directory (cwd and fd the same inode, link count 0); a file of a
    removed directory tree shows its old path again with its content; a file whose
    directory became a file gets a hidden name; nothing is left behind and the
    directories keep their times."""
    top = tmp_path / "top"
    (top / "gone" / "sub").mkdir(parents=True)
    (top / "cwd").mkdir()
    (top / "blocked").mkdir()
    inner = top / "gone" / "sub" / "f"
    inner.write_bytes(b"0123456789" * 10)
    blocked = top / "blocked" / "g"
    blocked.write_bytes(b"g" * 50)
    inner_mtime = inner.stat().st_mtime_ns - 10**9  # a time ckpt cannot have made
    os.utime(inner, ns=(inner_mtime, inner_mtime))
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"d=dir:{top / 'cwd'}",
                          f"cwd:{top / 'cwd'}", f"f=rw:{inner}@7", f"g=r:{blocked}@3",
                          f"rmdir:{top / 'cwd'}", f"unlink:{inner}",
                          f"rmdir:{top / 'gone' / 'sub'}", f"rmdir:{top / 'gone'}",
                          f"unlink:{blocked}", "fork"])
    fds = printed_fds(target.out)
    child = _child(target.pid)
    target.out.wait_line(r"^c 3 ")
    assert os.readlink(f"/proc/{child}/cwd") == f"{top / 'cwd'} (deleted)"
    dump_and_check_dead(procs, target, images)
    procs.wait_gone(child)
    (top / "blocked").rmdir()
    (top / "blocked").write_bytes(b"a file where a folder was")
    before = _mtimes(top, tmp_path)

    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    ticks_go_on(target.out, "c ")
    pid = restored.pid
    assert proc_ppid(child) == pid
    assert _link(pid, fds["d"]) == f"{top / 'cwd'} (deleted)"
    cwd, d, ccwd = (os.stat(f"/proc/{pid}/cwd"), _fstat(pid, fds["d"]),
                    os.stat(f"/proc/{child}/cwd"))
    assert stat.S_ISDIR(cwd.st_mode) and cwd.st_nlink == 0
    assert (cwd.st_dev, cwd.st_ino) == (d.st_dev, d.st_ino) == (ccwd.st_dev, ccwd.st_ino)
    assert _link(pid, fds["f"]) == f"{inner} (deleted)"
    with open(f"/proc/{pid}/fd/{fds['f']}", "rb") as f:
        assert f.read() == b"0123456789" * 10
    assert _fstat(pid, fds["f"]).st_mtime_ns == inner_mtime
    assert _link(pid, fds["g"]) == f"{top}/.g.ckpt-ghost.0 (deleted)"
    assert sorted(os.listdir(top)) == ["blocked"], "a ghost left a name behind"
    assert _mtimes(top, tmp_path) == before, "the restore changed a folder's times"


def test_deleted_fifos_devices_and_symlinks(procs: Procs, images: Path, tmp_path: Path
                                           ) -> None:
    """Deleted FIFOs (a read end alone, a write end alone) keep their bytes; a deleted
    device node outside /dev is that device again; O_PATH fds on a symlink, a deleted
    symlink, a deleted device node and a FIFO are O_PATH fds on such files again; a
    FIFO refilled keeps its modification time."""
    d = tmp_path / "nodes"
    d.mkdir()
    for name in ("fr", "fw", "named", "pfifo"):
        os.mkfifo(d / name)
    os.mknod(d / "null", 0o640 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(d / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    os.symlink("/etc/hostname", d / "sl")
    os.symlink("target-of-a-deleted-link", d / "gone-sl")
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"fr=fifo-r:{d / 'fr'}",
                          f"fw=fifo-w:{d / 'fw'}", f"named=fifo-w:{d / 'named'}",
                          f"null=rw:{d / 'null'}", f"sl=link:{d / 'sl'}",
                          f"gsl=link:{d / 'gone-sl'}", f"zero=path:{d / 'zero'}",
                          f"pfifo=path:{d / 'pfifo'}", f"unlink:{d / 'fr'}",
                          f"unlink:{d / 'fw'}", f"unlink:{d / 'null'}",
                          f"unlink:{d / 'gone-sl'}", f"unlink:{d / 'zero'}"])
    fds = printed_fds(target.out)
    target.out.wait_line(r"^3 ")
    links = {k: _link(target.pid, fd) for k, fd in fds.items()}
    dump_and_check_dead(procs, target, images)
    before = _mtimes(d, d / "named")
    assert "ghost-nodes" in json.loads((images / "inventory.json").read_text())["needs"]

    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    pid = restored.pid
    assert {k: _link(pid, fd) for k, fd in fds.items()} == links
    for name in ("fr", "fw", "named"):  # the bytes in each FIFO, read from a new read end
        r = os.open(f"/proc/{pid}/fd/{fds[name]}", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(r, 100) == f"data:{name}\n".encode(), name
        finally:
            os.close(r)
    null = _fstat(pid, fds["null"])
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert null.st_nlink == 0 and stat.S_IMODE(null.st_mode) == 0o640
    for name, target_of in (("sl", "/etc/hostname"), ("gsl", "target-of-a-deleted-link")):
        fd = os.open(f"/proc/{pid}/fd/{fds[name]}", os.O_PATH)  # the link itself
        try:
            assert stat.S_ISLNK(os.fstat(fd).st_mode), name
            assert os.readlink("", dir_fd=fd) == target_of
        finally:
            os.close(fd)
    for name in fds:
        with open(f"/proc/{pid}/fdinfo/{fds[name]}") as f:
            flags = int(next(ln.split()[1] for ln in f if ln.startswith("flags:")), 8)
        assert bool(flags & os.O_PATH) == (name in ("sl", "gsl", "zero", "pfifo")), name
    assert sorted(os.listdir(d)) == ["named", "pfifo", "sl"]
    assert _mtimes(d, d / "named") == before, "the restore changed a file's times"
