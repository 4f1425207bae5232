"""--inherit-fd: the HOWTO's pipe example, sockets, replaced log files, debug markers,
external pipes, ``show --fds``, and the errors criu gets wrong."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    left_behind,
    my_children,
    proc_ppid,
    scaled,
    wait_until,
)


def _ckpt_with_fd(fd: int, *args: str | int | os.PathLike[str]
                  ) -> subprocess.CompletedProcess[str]:
    """Run ckpt with this process's ``fd`` open under the same number in ckpt."""
    return subprocess.run(ckpt_cmd() + [os.fspath(a) if isinstance(a, os.PathLike) else str(a)
                                        for a in args],
                          capture_output=True, text=True, timeout=scaled(60), pass_fds=(fd,),
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_howto_example_2(build: Builder, procs: Procs, tmp_path: Path, kind: str) -> None:
    """A subreaper parent dumps its child, restores it with a new pipe (socket) as fd 3
    for ``--inherit-fd fd[3]:pipe:[OLD]``, reads messages 3 and 4, reaps status 0."""
    images = tmp_path / "images"
    argv = [build("howto_pipe"), *(["-s"] if kind == "socket" else []), ckpt_cmd()[0], images]
    parent = procs.start(argv)
    assert procs.wait_gone(parent, timeout=60) == 0, "\n".join(parent.out.lines())
    lines = parent.out.lines()
    text = "\n".join(lines)
    child = int(re.search(r"^\[child (\d+)\]", text, re.M)[1])  # type: ignore[index]
    reads = re.findall(rf"^\[parent \d+\] read hello (\d) from ({kind}:\[\d+\])$", text, re.M)
    assert [n for n, _ in reads] == ["1", "2", "3", "4"], text
    assert reads[0][1] == reads[1][1] != reads[2][1] == reads[3][1], "hello 3 came by the old"
    assert f"[child {child}] exited with status 9" in text  # killed by the dump
    assert text.count(f"[child {child}] exited with status 0") == 1, text
    assert "LEFTOVER" not in text
    assert int((images / "restore.pid").read_text()) == child
    assert "restore" in (images / "restore.log").read_text()


@pytest.mark.parametrize("key", ["orig-fd[1]", "absolute", "relative"])
def test_replace_log_file(build: Builder, procs: Procs, images: Path, tmp_path: Path,
                          key: str) -> None:
    """A counter's stdout file replaced by the restorer's fd; named by the original fd
    number (criu issue 2837), by absolute path, or relative to the root as in the HOWTO."""
    target = procs.start([build("counter")], name="old")
    target.out.wait_numbers(3)
    before = dump_and_check_dead(procs, target, images)
    new = tmp_path / "new.out"
    spelled = {"orig-fd[1]": "orig-fd[1]", "absolute": str(target.out.path),
               "relative": str(target.out.path).lstrip("/")}[key]
    fd = os.open(new, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        res = _ckpt_with_fd(fd, "restore", "-d", "-D", images, "--inherit-fd",
                            f"fd[{fd}]:{spelled}")
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    procs.adopt(target.pid, Output(new))
    out = Output(new)
    out.wait_numbers(5)
    assert target.out.numbers() == before, "the restored process still wrote to the old file"
    assert_consecutive(before + out.numbers())
    assert os.readlink(f"/proc/{target.pid}/fd/1") == str(new)


def test_debug_marker(build: Builder, procs: Procs, images: Path, tmp_path: Path) -> None:
    """``debug[N]:TEXT`` writes TEXT to fd N; the restore goes on as without it."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    before = dump_and_check_dead(procs, target, images)
    marker = tmp_path / "marker"
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        res = _ckpt_with_fd(fd, "restore", "-d", "-D", images, "--inherit-fd",
                            f"debug[{fd}]:--- restored here ---")
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "--- restored here ---"
    procs.adopt(target.pid, target.out)
    assert_consecutive(target.out.wait_numbers(len(before) + 3))


def test_show_fds_lists_the_keys(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("counter")])
    target.out.wait_numbers(2)
    dump_and_check_dead(procs, target, images)
    res = ckpt_ok("show", "--fds", images)
    fds = {e["fd"]: e for e in json.loads(res.stdout) if e["pid"] == target.pid}
    assert fds[1]["key"] == str(target.out.path).lstrip("/")
    assert "orig-fd[1]" in fds[1]["keys"]
    assert fds[0]["key"] == "dev/null"


@pytest.mark.parametrize("case", ["no-match", "fd-not-open", "malformed", "orig-fd-missing"])
def test_inherit_fd_errors(build: Builder, procs: Procs, images: Path, tmp_path: Path,
                           case: str) -> None:
    """Each error names the problem, exits 1, and restores nothing."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(2)
    dump_and_check_dead(procs, target, images)
    kids = my_children()
    fd = os.open(tmp_path / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    arg = {"no-match": f"fd[{fd}]:tmp/no/such/file", "fd-not-open": "fd[987]:tmp/old",
           "malformed": f"fd{fd}:tmp/old", "orig-fd-missing": f"fd[{fd}]:orig-fd[9]"}[case]
    try:
        res = _ckpt_with_fd(fd, "restore", "-d", "-D", images, "--inherit-fd", arg)
    finally:
        os.close(fd)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    err = res.stderr
    if case == "no-match":
        assert "'tmp/no/such/file' matches no file in the image" in err
        assert str(target.out.path).lstrip("/") in err and "dev/null" in err  # the keys
    elif case == "fd-not-open":
        assert "fd 987 is not open" in err
    elif case == "malformed":
        assert repr(arg) in err and "fd[N]:KEY" in err
    else:
        assert "had no fd 9" in err and "0, 1, 2" in err
    assert not left_behind(target.pid), "something was restored"
    assert my_children() == kids


@pytest.mark.parametrize("writer", ["open", "closed"])
def test_external_pipe_without_inherit_is_a_new_pipe(procs: Procs, images: Path,
                                                     tmp_path: Path, writer: str) -> None:
    """A reader whose stdin pipe comes from outside keeps the unread bytes: restored as a
    new pipe holding them, it reads them all, then sees end-of-file and exits 0. With
    its writer still open outside, the restore warns and says how to give one; with
    the writer closed before the dump (a pipeline's first command ended), no process
    holds the other end: nothing to warn about."""
    out = tmp_path / "reader.out"
    with open(out, "wb") as f:
        reader = subprocess.Popen(
            ["sh", "-c", 'while read l; do echo "got $l"; sleep 0.2; done; echo eof'],
            stdin=subprocess.PIPE, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True)
    assert reader.stdin is not None
    procs.adopt(reader.pid, Output(out))
    reader.stdin.write(b"".join(b"line %d\n" % i for i in range(6)))
    reader.stdin.flush()
    if writer == "closed":
        reader.stdin.close()
    Output(out).wait_line(r"^got line 1$")
    ckpt_ok("dump", "-t", reader.pid, "-D", images)
    reader.wait(scaled(10))
    for pid in my_children():
        if pid != reader.pid and not is_alive(pid):
            procs.wait_gone(pid)  # the loop's sleep, re-parented to us
    reader.stdin.close()
    got = Output(out).lines()
    res = ckpt_ok("restore", "-d", "-D", images)
    if writer == "open":
        assert "pipe:[" in res.stderr and "--inherit-fd" in res.stderr  # it says how
    else:
        assert "pipe:[" not in res.stderr, res.stderr
    assert proc_ppid(reader.pid) == os.getpid()
    wait_until(lambda: "eof" in Output(out).lines(), 15, "the reader to reach end-of-file")
    assert Output(out).lines() == [f"got line {i}" for i in range(6)] + ["eof"], got
    assert procs.wait_gone(reader.pid) == 0


def test_external_unix_socket(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A socket connected outside the tree: refused at dump without --external; with it,
    the restore needs --inherit-fd fd[N]:socket:[INODE], and the new socket carries on."""
    ours, theirs = socket.socketpair()
    out = tmp_path / "reader.out"
    with open(out, "wb") as f:
        reader = subprocess.Popen(["sh", "-c", 'while read l; do echo "got $l"; done'],
                                  stdin=theirs, stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    procs.adopt(reader.pid, Output(out))
    inode = os.fstat(theirs.fileno()).st_ino
    theirs.close()
    ours.sendall(b"one\n")
    Output(out).wait_line("^got one$")

    err = ckpt_fails("dump", "-t", reader.pid, "-D", images)
    assert f"--external 'unix[{inode}]'" in err, err
    ours.sendall(b"two\n")
    Output(out).wait_line("^got two$")  # untouched by the refused dump

    ckpt_ok("dump", "-t", reader.pid, "-D", images, "--external", f"unix[{inode}]")
    reader.wait(scaled(10))
    err = ckpt_fails("restore", "-d", "-D", images)
    assert f"--inherit-fd 'fd[N]:socket:[{inode}]'" in err, err
    assert not left_behind(reader.pid)

    new_ours, new_theirs = socket.socketpair()
    fd = new_theirs.fileno()
    res = _ckpt_with_fd(fd, "restore", "-d", "-D", images, "--inherit-fd",
                        f"fd[{fd}]:socket:[{inode}]")
    assert res.returncode == 0, res.stderr
    new_theirs.close()
    new_ours.sendall(b"three\n")
    Output(out).wait_line("^got three$")
    assert Output(out).lines() == ["got one", "got two", "got three"]
    new_ours.close()  # end-of-file: the loop ends and the shell exits 0
    assert procs.wait_gone(reader.pid) == 0
    ours.close()
