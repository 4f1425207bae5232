"""Ghost objects: files unlinked while open or mapped, memfds shared between
processes, a deleted executable, and the ghost file size limit."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    fd_pos_flags,
    is_alive,
    printed_fds,
    proc_status,
    restore_detached,
    ticks_go_on,
)

PAGE = 4096


def _fd_stat(pid: int, fd: int) -> os.stat_result:
    return os.stat(f"/proc/{pid}/fd/{fd}")


def _maps(pid: int, suffix: str) -> list[tuple[str, int, str]]:
    """(perms, inode, path) of the mappings of ``pid`` whose path ends with ``suffix``."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n").endswith(suffix):
                out.append((fields[1], int(fields[4]), fields[5].rstrip("\n")))
    return out


def _ticks(out: Output) -> list[tuple[int, str]]:
    """(N, rest) of the "N ok" / "N BAD what" lines of ghost_file."""
    rx = re.compile(r"^(\d+) (.*)$")
    return [(int(m[1]), m[2]) for m in map(rx.match, out.lines()) if m]


def _saved_once(images: Path, objects: list[dict]) -> None:
    """ghost-data.img holds each object's data exactly once."""
    by_id = {o["id"]: o for o in objects}
    data = sum(n for o in by_id.values() for _, n in o["runs"])
    assert (images / "ghost-data.img").stat().st_size == data, by_id


def _ghosts(images: Path) -> list[dict]:
    """Every ghost description of the image: fds, mappings and exe links."""
    out = [d["ghost"] for d in json.loads((images / "files.json").read_text()).values()
           if "ghost" in d]
    for mm in images.glob("mm-*.json"):
        m = json.loads(mm.read_text())
        out += [v["ghost"] for v in m["vmas"] if "ghost" in v]
        out += [m["exe_ghost"]] if "exe_ghost" in m else []
    return out


def test_deleted_file_read_appended_and_mapped(build: Builder, procs: Procs, images: Path,
                                              tmp_path: Path) -> None:
    """A file unlinked while open through two descriptions (its read offset kept, appends
    going on) and mapped shared and private comes back as one unlinked file with the same
    content, under the same name, and nothing is left in its directory."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "ghost.dat"
    target = procs.start([build("ghost_file"), path])
    target.out.wait_line(r"^5 ")
    assert not path.exists()
    link = f"{path} (deleted)"
    assert [os.readlink(f"/proc/{target.pid}/fd/{fd}") for fd in (3, 4)] == [link, link]
    before = _ticks(target.out)
    dump_and_check_dead(procs, target, images)
    # What it appended: up to its last line, or one more if frozen before printing it.
    printed = [n for n, _ in _ticks(target.out)]
    sizes = [3 * PAGE + sum(len(f"tick {n}\n") for n in range(k)) for k in (len(printed),
                                                                           len(printed) + 1)]

    ghosts = _ghosts(images)
    assert {g["id"] for g in ghosts} == {1}, ghosts
    assert ghosts[0]["path"] == str(path) and ghosts[0]["size"] in sizes
    assert ghosts[0]["mode"] == 0o640
    _saved_once(images, ghosts)
    descs = [d for d in json.loads((images / "files.json").read_text()).values()
             if "ghost" in d]
    assert sorted(d["kind"] for d in descs) == ["reg", "reg"]

    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{len(_ticks(target.out)) + 10} ")
    ticks = _ticks(target.out)
    assert_consecutive([n for n, _ in ticks])
    assert [t for t in ticks if t[1] != "ok"] == [], "the program found its file changed"
    assert len(ticks) > len(before) + 10
    # One unlinked file again, shown under its old name; the mappings map it.
    assert [os.readlink(f"/proc/{restored.pid}/fd/{fd}") for fd in (3, 4)] == [link, link]
    st3, st4 = _fd_stat(restored.pid, 3), _fd_stat(restored.pid, 4)
    assert (st3.st_dev, st3.st_ino) == (st4.st_dev, st4.st_ino) and st3.st_nlink == 0
    assert {ino for _, ino, _ in _maps(restored.pid, link)} == {st3.st_ino}
    assert sorted(p for p, _, _ in _maps(restored.pid, link)) == ["rw-p", "rw-s"]
    assert os.listdir(data_dir) == [], "the recreated file left a name behind"
    flags = int(proc_status_fdinfo(restored.pid, 4)["flags"], 8)
    assert flags & os.O_APPEND and flags & os.O_ACCMODE == os.O_WRONLY


def proc_status_fdinfo(pid: int, fd: int) -> dict[str, str]:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _role(out: Output, role: str) -> list[tuple[int, str]]:
    rx = re.compile(rf"^{role} (\d+) (.*)$")
    return [(int(m[1]), m[2]) for m in map(rx.match, out.lines()) if m]


def test_memfd_shared_between_processes(build: Builder, procs: Procs, images: Path) -> None:
    """A sealed memfd mapped MAP_SHARED by a parent and its child, held through one
    shared description and a second read-only one, comes back as one object: the
    parent still reads what the child stores, the file sees the mapping, seals and
    content are kept. A memfd only mapped (its fd closed) is shared too."""
    target = procs.start([build("ghost_memfd")])
    out = target.out
    p, c, fd, ro = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^P 5 ")
    out.wait_line(r"^C 5 ")
    ckpt_ok("dump", "-t", p, "-D", images)
    for pid in (p, c):
        procs.wait_gone(pid)
    c_before = _role(out, "C")

    descs = [d for d in json.loads((images / "files.json").read_text()).values()
             if d["kind"] == "memfd"]
    assert sorted(d["ghost"]["memfd"] for d in descs) == ["ckpt-shm", "ckpt-shm", "plain"]
    shm = next(d["ghost"] for d in descs if d["ghost"]["memfd"] == "ckpt-shm")
    assert shm["seals"] == fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW and shm["size"] == 3 * PAGE
    assert next(d["ghost"] for d in descs if d["ghost"]["memfd"] == "plain")["seals"] == \
        fcntl.F_SEAL_SEAL
    ghosts = _ghosts(images)
    assert sorted({g["memfd"] for g in ghosts}) == ["ckpt-shm", "only", "plain"]
    assert len({g["id"] for g in ghosts}) == 3
    _saved_once(images, ghosts)

    restore_detached(procs, p, out, images)
    out.wait_line(rf"^P {len(_role(out, 'P')) + 10} ")
    out.wait_line(rf"^C {len(c_before) + 10} ")
    p_after, c_after = _role(out, "P"), _role(out, "C")
    assert_consecutive([n for n, _ in p_after])
    assert_consecutive([n for n, _ in c_after])
    assert [ln for _, ln in p_after + c_after if ln.split()[-1] != "ok"] == []
    # Still shared: P reads ticks C stored after the restore, in both memfds.
    x, y = map(int, re.match(r"c=(-?\d+) o=(-?\d+)", p_after[-1][1]).groups())  # type: ignore[union-attr]
    assert x > c_before[-1][0] + 5 and y > c_before[-1][0] + 5, p_after[-1]

    link = "/memfd:ckpt-shm (deleted)"
    assert os.readlink(f"/proc/{p}/fd/{fd}") == link
    objs = {(s.st_dev, s.st_ino) for s in
            (_fd_stat(p, fd), _fd_stat(c, fd), _fd_stat(c, ro))}
    assert len(objs) == 1, "the descriptions of the memfd are not one object"
    ino = objs.pop()[1]
    assert {i for _, i, _ in _maps(p, link) + _maps(c, link)} == {ino}
    only = _maps(p, "/memfd:only (deleted)") + _maps(c, "/memfd:only (deleted)")
    assert len(only) == 2 and len({i for _, i, _ in only}) == 1
    assert int(proc_status_fdinfo(p, fd)["flags"], 8) & 0o2000000, "MFD_CLOEXEC lost"
    assert int(proc_status_fdinfo(c, ro)["flags"], 8) & os.O_ACCMODE == os.O_RDONLY
    check = os.open(f"/proc/{p}/fd/{fd}", os.O_RDONLY)
    try:
        assert fcntl.fcntl(check, fcntl.F_GET_SEALS) == fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        assert os.pread(check, 11, 2 * PAGE) == b"hello memfd"
    finally:
        os.close(check)


@pytest.mark.parametrize("replaced", [False, True], ids=["deleted", "upgraded"])
def test_deleted_executable(build: Builder, procs: Procs, images: Path, tmp_path: Path,
                            replaced: bool) -> None:
    """A process whose binary was deleted (or replaced by another file, as an upgrade
    does) runs on after the restore, with the same binary as its exe, and the file now
    at that path is left alone."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "prog"
    shutil.copy(build("counter"), prog)
    original = prog.read_bytes()
    target = procs.start([prog])
    target.out.wait_numbers(3)
    prog.unlink()
    assert os.readlink(f"/proc/{target.pid}/exe") == f"{prog} (deleted)"
    before = dump_and_check_dead(procs, target, images)
    mm = json.loads((images / f"mm-{target.pid}.json").read_text())
    assert mm["exe_ghost"]["path"] == str(prog) and mm["exe_ghost"]["size"] == len(original)
    _saved_once(images, _ghosts(images))
    if replaced:
        prog.write_bytes(b"#!/bin/sh\necho the new version\n")

    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(before) + 5)
    assert_consecutive(target.out.numbers())
    assert not [ln for ln in target.out.lines() if ln.startswith("CORRUPT")]
    exe = os.readlink(f"/proc/{restored.pid}/exe")
    assert exe.endswith(" (deleted)") and exe.startswith(f"{bindir}/"), exe
    if not replaced:
        assert exe == f"{prog} (deleted)"
    with open(f"/proc/{restored.pid}/exe", "rb") as f:
        assert f.read() == original, "the restored exe is not the dumped binary"
    assert {ino for _, ino, _ in _maps(restored.pid, exe)} == \
        {os.stat(f"/proc/{restored.pid}/exe").st_ino}
    if replaced:
        assert os.listdir(bindir) == ["prog"]
        assert prog.read_bytes() == b"#!/bin/sh\necho the new version\n"
    else:
        assert os.listdir(bindir) == []


def test_ghost_file_over_limit_is_refused(build: Builder, procs: Procs, images: Path,
                                          tmp_path: Path) -> None:
    """A deleted file of 2 MiB and more is refused with --ghost-limit 1M, naming it and
    the option; the process runs on untouched. With --ghost-limit 4M it is saved."""
    path = tmp_path / "big.dat"
    target = procs.start([build("ghost_file"), path, "2048"])
    target.out.wait_line(r"^3 ")
    blocked = proc_status(target.pid)["SigBlk"]
    err = ckpt_fails("dump", "-t", target.pid, "-D", images, "--ghost-limit", "1M")
    assert str(path) in err and "ghost file limit of 1048576 bytes" in err, err
    assert "--ghost-limit" in err, err
    assert not (images / "inventory.json").exists()
    n = len(_ticks(target.out))
    target.out.wait_line(rf"^{n + 3} ")
    ticks = _ticks(target.out)
    assert_consecutive([t for t, _ in ticks])
    assert all(r == "ok" for _, r in ticks)
    status = proc_status(target.pid)
    assert status["TracerPid"] == "0" and status["SigBlk"] == blocked
    assert is_alive(target.pid)

    dump_and_check_dead(procs, target, images, "--ghost-limit", "4M")
    assert (images / "ghost-data.img").stat().st_size > 2 << 20
    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{len(_ticks(target.out)) + 3} ")
    ticks = _ticks(target.out)
    assert_consecutive([t for t, _ in ticks])
    assert all(r == "ok" for _, r in ticks)
    assert os.readlink(f"/proc/{restored.pid}/fd/3") == f"{path} (deleted)"


def test_sparse_deleted_file(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A deleted file of 2 GiB holding three pages of data is saved under --ghost-limit 1M
    (its data counts, not its size), holes kept: the image holds its three pages, and
    the restored file is 2 GiB with its data where it was and holes elsewhere.
    criu's --ghost-fiemap is accepted."""
    path = tmp_path / "sparse"
    size = 2 << 30
    marks = {0: b"a", 1 << 30: b"b", size - PAGE: b"c"}
    with open(path, "wb") as f:
        for off, mark in marks.items():
            f.seek(off)
            f.write(mark * PAGE)
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"s=rw:{path}@{1 << 30}",
                          f"unlink:{path}"])
    fd = printed_fds(target.out)["s"]
    target.out.wait_line(r"^3 ")
    dump_and_check_dead(procs, target, images, "--ghost-limit", "1M", "--ghost-fiemap")
    assert (images / "ghost-data.img").stat().st_size == 3 * PAGE
    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    assert os.readlink(f"/proc/{restored.pid}/fd/{fd}") == f"{path} (deleted)"
    assert fd_pos_flags(restored.pid, fd)[0] == 1 << 30
    check = os.open(f"/proc/{restored.pid}/fd/{fd}", os.O_RDONLY)
    try:
        st = os.fstat(check)
        assert st.st_size == size and st.st_nlink == 0
        assert st.st_blocks * 512 < 1 << 20, "the holes were filled"
        for off, mark in marks.items():
            assert os.pread(check, PAGE, off) == mark * PAGE
        assert os.pread(check, PAGE, PAGE) == bytes(PAGE)
        assert os.lseek(check, PAGE, os.SEEK_DATA) == 1 << 30
    finally:
        os.close(check)


def test_deleted_name_of_a_file_with_other_links(procs: Procs, images: Path,
                                                 tmp_path: Path) -> None:
    """A file opened through a name that was removed (with its directory) while another
    hard link to it stays is saved as a link, not a copy, and the file system is left as
    it was; after the restore the fds are on that very file again (what was written to
    it since shows), under the removed name, with the links it had."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    name, other = top / "sub" / "f", top / "g"
    name.write_bytes(b"0123456789")
    os.link(name, other)
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"w=rw:{name}@5", f"r=r:{name}@2",
                          f"unlink:{name}", f"rmdir:{top / 'sub'}"])
    fds = printed_fds(target.out)
    target.out.wait_line(r"^3 ")
    before = (sorted(os.listdir(top)), top.stat().st_mtime_ns)
    dump_and_check_dead(procs, target, images, "--link-remap")
    assert (sorted(os.listdir(top)), top.stat().st_mtime_ns) == before
    assert not (images / "ghost-data.img").exists(), "the file was copied"
    descs = [d for d in json.loads((images / "files.json").read_text()).values()
             if d.get("deleted")]
    assert {(d["path"], d["deleted"]) for d in descs} == {(str(other), str(name))}
    with open(other, "ab") as f:
        f.write(b"written meanwhile")

    restored = restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out)
    for fd in fds.values():
        assert os.readlink(f"/proc/{restored.pid}/fd/{fd}") == f"{name} (deleted)"
        st = _fd_stat(restored.pid, fd)
        assert (st.st_ino, st.st_nlink) == (other.stat().st_ino, 1)
    with open(f"/proc/{restored.pid}/fd/{fds['r']}", "rb") as f:
        assert f.read() == b"0123456789written meanwhile"
    assert (sorted(os.listdir(top)), top.stat().st_mtime_ns) == before


def test_other_link_not_found_is_refused(procs: Procs, images: Path, tmp_path: Path
                                         ) -> None:
    """A removed name whose file's other link ckpt cannot see (mounted over): the dump
    refuses, naming it, and the process runs on untouched."""
    top = tmp_path / "top"
    (top / "hidden").mkdir(parents=True)
    name = top / "f"
    name.write_bytes(b"data")
    os.link(name, top / "hidden" / "g")
    target = procs.start([PYTHON, PROGS / "holdfiles.py", f"f=r:{name}@1", f"unlink:{name}"])
    fd = printed_fds(target.out)["f"]
    target.out.wait_line(r"^3 ")
    subprocess.run(["mount", "-t", "tmpfs", "none", top / "hidden"], check=True)
    try:
        err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    finally:
        subprocess.run(["umount", top / "hidden"], check=True)
    assert f"process {target.pid} fd {fd}: {name} (deleted) was unlinked" in err, err
    assert "1 other link(s), which ckpt did not find" in err, err
    assert not (images / "inventory.json").exists()
    assert is_alive(target.pid) and proc_status(target.pid)["TracerPid"] == "0"
    ticks_go_on(target.out)
