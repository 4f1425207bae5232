"""inotify: watches come back under their watch descriptors (a gap in the numbers
included) with their masks (IN_EXCL_UNLINK, IN_ONESHOT), and the process reads
the events of after the restore with the wds it holds; unread events at dump are
reported lost; a watch on a deleted file held only outside the tree is refused at
dump (test_real_rounds: one the tree holds comes back), a watched path gone
at restore is refused before anything is created. fanotify: inode, mount,
filesystem marks and ignore masks come back, with the same events; a mark on a
deleted file the process holds open comes back on the file made again, one held
only outside the tree is refused at dump."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Output,
    Procs,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    left_behind,
    my_children,
    proc_status,
    restore_detached,
    wait_until,
)

_WATCH = re.compile(r"^inotify wd:(\w+) ino:(\w+) sdev:(\w+) mask:(\w+)")


def _watches(pid: int, fd: int) -> dict[int, tuple[str, str, str]]:
    """wd -> (ino, sdev, mask) as /proc/PID/fdinfo/FD shows them (hex strings)."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return {int(m[1], 16): (m[2], m[3], m[4]) for m in map(_WATCH.match, f) if m}


def _flags(pid: int, fd: int) -> str:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return next(ln.split()[1] for ln in f if ln.startswith("flags:"))


def _events(out: Output, start: int) -> list[str]:
    return [ln for ln in out.lines()[start:] if ln.startswith("event ")]


def _start(procs: Procs, build: Builder, *watches: str) -> tuple[int, Output, int]:
    target = procs.start([build("inotify_watch"), *watches])
    out = target.out
    out.wait_line(r"^ready$")
    fd = int(out.wait_line(r"^fd ").split()[1])
    return target.pid, out, fd


def test_inotify_wds_and_events(build: Builder, procs: Procs, images: Path,
                                tmp_path: Path) -> None:
    """Three watches with the middle one removed (wds 1 and 3, 2 unused), a one-shot
    watch (4) and a watch on /proc (a procfs mount root, 5): after the restore the
    fdinfo is the same, and creating, deleting and modifying files prints events
    with wds 1, 3 and 4; the one-shot fires once; no event of the restore's own
    filler watch reaches the process."""
    d = tmp_path / "watched"
    d.mkdir()
    f = tmp_path / "file.txt"
    f.write_text("one\n")
    one = tmp_path / "once.txt"
    one.write_text("x\n")
    (tmp_path / "middle").write_text("")
    pid, out, fd = _start(procs, build, f"4000300:{d}", f"~4:{tmp_path / 'middle'}",
                          f"2:{f}", f"80000002:{one}", "400:/proc")
    assert out.lines()[1:6] == [f"wd 1 {d}", f"wd 2 {tmp_path / 'middle'}", f"wd 3 {f}",
                                f"wd 4 {one}", "wd 5 /proc"]
    out.wait_line(r"^event wd=2 mask=8000 name=$")  # IN_IGNORED of the removed watch
    (d / "before").write_text("")
    out.wait_line(r"^event wd=1 mask=100 name=before$")
    before = _watches(pid, fd)
    assert sorted(before) == [1, 3, 4, 5]
    assert before[1][2] == "4000300" and before[4][2] == "80000002"
    flags = _flags(pid, fd)

    res = ckpt_ok("dump", "-t", pid, "-D", images)
    assert "lost" not in res.stderr, res.stderr
    assert procs.wait_gone(procs.tracked[0]) == -9
    shown = {e["fd"]: e for e in json.loads(ckpt_ok("show", "--fds", images).stdout)}
    assert shown[fd]["kind"] == "inotify" and shown[fd]["key"] is None
    desc = json.loads((images / "files.json").read_text())[str(shown[fd]["file"])]
    assert [(w["wd"], w["path"], w["mask"]) for w in desc["watches"]] == [
        (1, str(d), 0x4000300), (3, str(f), 2), (4, str(one), 0x80000002), (5, "/proc", 0x400)]

    n = len(out.lines())
    restore_detached(procs, pid, out, images)
    assert _watches(pid, fd) == before
    assert _flags(pid, fd) == flags
    (d / "after").write_text("")
    (d / "before").unlink()
    with open(f, "a") as w:
        w.write("two\n")
    for _ in range(2):
        with open(one, "a") as w:
            w.write("y\n")
    out.wait_line(r"^event wd=4 mask=8000 name=$", start=n)
    out.wait_quiet()
    assert _events(out, n) == ["event wd=1 mask=100 name=after",
                               "event wd=1 mask=200 name=before",
                               "event wd=3 mask=2 name=",
                               "event wd=4 mask=2 name=",
                               "event wd=4 mask=8000 name="]
    assert sorted(_watches(pid, fd)) == [1, 3, 5]  # the one-shot watch is gone, as it should
    assert is_alive(pid)


def test_inotify_unread_events_lost(build: Builder, procs: Procs, images: Path) -> None:
    """holdfd watches /tmp and never reads: an event queued at dump is reported lost;
    the restored watch is the same and the process counts on."""
    target = procs.start([build("holdfd"), "inotify"])
    fd = int(target.out.wait_line(r"^ready ").split()[1])
    target.out.wait_numbers(2)
    probe = Path(f"/tmp/ckpt-inotify-test-{os.getpid()}")
    probe.write_text("")
    probe.unlink()
    before = _watches(target.pid, fd)
    assert list(before) == [1]
    res = ckpt_ok("dump", "-t", target.pid, "-D", images)
    assert re.search(rf"process {target.pid} fd {fd} \(inotify\): \d+ bytes .*lost",
                     res.stderr), res.stderr
    procs.wait_gone(target)
    count = len(target.out.numbers())
    restore_detached(procs, target.pid, target.out, images)
    assert _watches(target.pid, fd) == before
    target.out.wait_numbers(count + 3)


def test_inotify_deleted_file_refused(build: Builder, procs: Procs, images: Path,
                                      tmp_path: Path) -> None:
    """A watched file deleted while still open elsewhere (here by the test): the dump
    names the process, the fd, the watch and the file, and the process runs on."""
    d = tmp_path / "watched"
    d.mkdir()
    doomed = tmp_path / "doomed.txt"
    doomed.write_text("x\n")
    held = os.open(doomed, os.O_RDONLY)
    try:
        pid, out, fd = _start(procs, build, f"300:{d}", f"2:{doomed}")
        doomed.unlink()
        assert sorted(_watches(pid, fd)) == [1, 2], "the kernel dropped the watch"
        err = ckpt_fails("dump", "-t", pid, "-D", images)
        assert re.search(rf"process {pid} fd {fd} \(inotify\): watch 2 is on "
                         rf"{re.escape(str(doomed))}, which was deleted", err), err
        assert not (images / "inventory.json").exists()
        assert is_alive(pid) and proc_status(pid)["TracerPid"] == "0"
        n = len(out.lines())
        (d / "still").write_text("")
        out.wait_line(r"^event wd=1 mask=100 name=still$", start=n)
    finally:
        os.close(held)


def test_inotify_path_gone_at_restore(build: Builder, procs: Procs, images: Path,
                                      tmp_path: Path) -> None:
    """A watched file removed between dump and restore: refused before any process
    is created, naming the file."""
    f = tmp_path / "file.txt"
    f.write_text("x\n")
    pid, out, fd = _start(procs, build, f"2:{tmp_path}", f"2:{f}")
    ckpt_ok("dump", "-t", pid, "-D", images)
    procs.wait_gone(procs.tracked[0])
    f.unlink()
    children = my_children()
    err = ckpt_fails("restore", "-D", images, "-d")
    assert str(f) in err and "wd 2" in err, err
    assert not left_behind(pid)
    assert my_children() - children == set()


def test_refusal_before_anything_is_created(build: Builder, procs: Procs, images: Path,
                                            tmp_path: Path) -> None:
    """A watched file gone at restore is refused before any file is opened: the unix
    socket of fd 3, bound to a path, is not bound again (its socket file is not made),
    though its fd comes before the inotify's."""
    sock, watched = tmp_path / "listener.sock", tmp_path / "watched.txt"
    watched.write_text("x\n")
    target = procs.start([build("sockwatch"), sock, watched])
    target.out.wait_line(r"^ready$")
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    sock.unlink()
    watched.unlink()
    children = my_children()
    err = ckpt_fails("restore", "-D", images, "-d")
    assert str(watched) in err and "wd 1" in err, err
    assert not sock.exists(), "the restore bound the socket before refusing"
    assert not left_behind(target.pid)
    assert my_children() - children == set()


def _fan_marks(pid: int, fd: int) -> list[str]:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return [ln.strip() for ln in f if ln.startswith("fanotify")]


def _fan_round(out: Output, base: Path, start: int) -> dict[str, int]:
    """Write the three files; return the OR of the event masks per file name."""
    for name in ("d/quiet", "other.txt", "d/x"):
        with open(base / name, "a") as w:
            w.write("more\n")
    rx = re.compile(rf"^event mask=(\w+) path={re.escape(str(base))}/(.*)$")

    def masks() -> dict[str, int] | None:
        got: dict[str, int] = {}
        for m in map(rx.match, out.lines()[start:]):
            if m:
                got[m[2]] = got.get(m[2], 0) | int(m[1], 16)
        return got if got.get("d/x") == 0xA and "other.txt" in got else None

    wait_until(masks, 5.0, "fanotify events on d/x and other.txt")
    out.wait_quiet()
    return masks() or {}


def test_fanotify_marks(build: Builder, procs: Procs, images: Path, tmp_path: Path) -> None:
    """A fanotify group with an inode mark (FAN_MODIFY on a folder's children), a mount
    mark (FAN_CLOSE_WRITE), an inode ignore mask and a filesystem mark: the same marks
    after the restore (fdinfo), and the same events: modify and close-write for a file
    in the folder, close-write alone for a file elsewhere on the mount, none for the
    ignored file."""
    base = tmp_path / "w"
    (base / "d").mkdir(parents=True)
    for name in ("d/quiet", "other.txt", "d/x"):
        (base / name).write_text("")
    target = procs.start([build("inotify_fanotify"), f"{base}/", f"inode:8000002:{base / 'd'}",
                          f"mount:8:{base}", f"ignore:a:{base / 'd/quiet'}", "fs:20:/dev/shm"])
    out = target.out
    out.wait_line(r"^ready$")
    fd = int(out.wait_line(r"^fd ").split()[1])
    expected = {"d/x": 0xA, "other.txt": 0x8}
    assert _fan_round(out, base, 0) == expected
    before = _fan_marks(target.pid, fd)
    assert len(before) == 5, before

    ckpt_ok("dump", "-t", target.pid, "-D", images)
    assert procs.wait_gone(target) == -9
    desc = next(d for d in json.loads((images / "files.json").read_text()).values()
                if d["kind"] == "fanotify")
    assert [m["type"] for m in desc["marks"]] == ["inode", "mount", "inode", "filesystem"]
    assert [desc["marks"][i]["path"] for i in (0, 2, 3)] == [
        str(base / "d"), str(base / "d/quiet"), "/dev/shm"]
    assert os.stat(desc["marks"][1]["path"]).st_dev == os.stat(base).st_dev  # base's mount
    n = len(out.lines())
    restore_detached(procs, target.pid, out, images)
    assert _fan_marks(target.pid, fd) == before
    assert _fan_round(out, base, n) == expected


def test_fanotify_mark_on_a_deleted_file(build: Builder, procs: Procs, images: Path,
                                         tmp_path: Path) -> None:
    """An inode mark (FAN_MODIFY) on a log the process holds open, then removed: the
    dump keeps it (the fd's description), and the restored process reads the events of
    writes to the file made again, still deleted; a mark on a deleted file no process
    of the tree holds is refused at dump, the process left running."""
    base = tmp_path / "w"
    base.mkdir()
    log = base / "log"
    log.write_text("first\n")
    target = procs.start([build("inotify_fanotify"), f"{base}/", f"held:2:{log}"])
    out = target.out
    out.wait_line(r"^ready$")
    held = int(out.wait_line(r"^held ").split()[1])
    log.unlink()
    proc_file = Path(f"/proc/{target.pid}/fd/{held}")

    def modified(start: int) -> None:
        with open(proc_file, "a") as w:
            w.write("more\n")
        out.wait_line(rf"^event mask=2 path={re.escape(str(log))} \(deleted\)$", start=start)

    modified(0)
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    assert procs.wait_gone(target) == -9
    inv = json.loads((images / "inventory.json").read_text())
    assert "fanotify-deleted" in inv["needs"]
    n = len(out.lines())
    restore_detached(procs, target.pid, out, images)
    assert os.readlink(proc_file) == f"{log} (deleted)"
    modified(n)
    assert proc_file.read_text() == "first\nmore\nmore\n"

    # marked only: the fd closed by a process outside the tree holding the file
    other = base / "other"
    other.write_text("x\n")
    keeper = os.open(other, os.O_RDONLY)
    try:
        marker = procs.start([build("inotify_fanotify"), f"{base}/", f"inode:2:{other}"],
                             name="marker")
        marker.out.wait_line(r"^ready$")
        other.unlink()
        err = ckpt_fails("dump", "-t", marker.pid, "-D", tmp_path / "refused")
        assert re.search(rf"a mark is on {re.escape(str(other))}, which was deleted, and "
                         "no process of the dumped tree holds it", err), err
        assert is_alive(marker.pid)
    finally:
        os.close(keeper)
