"""Shell jobs on a terminal (-j): the HOWTO's loop, job control after a restore."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Output,
    Procs,
    assert_consecutive,
    assert_silent,
    ckpt_cmd,
    is_alive,
    proc_ids,
    proc_ppid,
    proc_state,
    wait_until,
)
from terminal import Terminal

LOOP = """#!/bin/sh
i=0
while :; do
    sleep 0.1
    echo "$i $(date +%T.%N)"
    i=$((i+1))
done
"""


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Terminal]:
    t = Terminal(tmp_path, [str(Path(ckpt_cmd()[0]).parent)])
    try:
        yield t
    finally:
        t.close()



def _last_job_pid(term: Terminal) -> int:
    said = term.run("echo PID=$!")[1]
    m = re.search(r"^PID=(\d+)$", said, re.M)
    assert m, said
    return int(m[1])


def _dumped_pids(images: Path) -> list[int]:
    return [t["pid"] for t in json.loads((images / "inventory.json").read_text())["tasks"]]


def _numbers(path: Path) -> list[int]:
    text = path.read_text() if path.exists() else ""
    return [int(ln.split()[0]) for ln in text[:text.rfind("\n") + 1].splitlines()]


def test_howto_example_1_shell_loop(term: Terminal, procs: Procs, tmp_path: Path) -> None:
    """``./test.sh > old &`` dumped with -j, restored with -d -j --inherit-fd 'fd[7]:...old'
    7>new: lines go on in new, none in old; PGID as before, SID of the terminal."""
    (tmp_path / "test.sh").write_text(LOOP)
    (tmp_path / "test.sh").chmod(0o755)
    old, new, images = tmp_path / "old", tmp_path / "new", tmp_path / "images"
    rc, _ = term.run(f"./test.sh > {old} &")
    assert rc == 0
    pid = _last_job_pid(term)
    wait_until(lambda: len(_numbers(old)) >= 5, 10, "the loop's lines in old")
    assert proc_ids(pid)[1:] == (pid, term.shell.pid)

    rc, said = term.run(f"ckpt dump -t {pid} -D {tmp_path / 'refused'}")
    assert rc == 1 and "-j" in said and "shell job" in said, said
    assert is_alive(pid) and proc_state(pid) != "t"

    rc, said = term.run(f"ckpt dump -t {pid} -D {images} -j -o dump.log -v4")
    assert rc == 0, said
    for p in _dumped_pids(images):  # the loop's children were re-parented to us: reap them
        procs.wait_gone(p)
    assert (images / "dump.log").stat().st_size > 0
    in_old = _numbers(old)
    key = str(old).lstrip("/")
    rc, said = term.run(f"ckpt restore -d -j -D {images} --pidfile restore.pid "
                        f"--inherit-fd 'fd[7]:{key}' 7>{new}")
    assert rc == 0, said
    assert int((images / "restore.pid").read_text()) == pid
    assert is_alive(pid) and proc_ppid(pid) == os.getpid()  # re-parented to the subreaper
    procs.adopt(pid, Output(new))
    wait_until(lambda: len(_numbers(new)) >= 5, 10, "the loop's lines in new")
    assert _numbers(old) == in_old, "the restored loop still wrote to old"
    assert_consecutive(in_old + _numbers(new))
    assert proc_ids(pid)[1:] == (pid, term.shell.pid), "not in its group, in the terminal session"
    assert os.readlink(f"/proc/{pid}/fd/0") == term.slave_path
    assert os.readlink(f"/proc/{pid}/fd/1") == str(new)


def test_job_control_after_foreground_restore(build: Builder, term: Terminal, procs: Procs,
                                              tmp_path: Path) -> None:
    """``ckpt restore -j`` in the foreground: Ctrl-Z stops the job (and ckpt, so the shell
    shows it stopped), ``fg`` continues it, Ctrl-C ends it and ckpt exits 130."""
    out, images = tmp_path / "out", tmp_path / "images"
    term.run(f"{build('counter')} > {out} &")
    pid = _last_job_pid(term)
    wait_until(lambda: len(_numbers(out)) >= 3, 10, "the counter's lines")
    rc, said = term.run(f"ckpt dump -j -t {pid} -D {images}")
    assert rc == 0, said
    procs.wait_gone(pid)
    start = len(term.text())
    term.send(f"ckpt restore -j -D {images}\n")
    count = len(_numbers(out))
    wait_until(lambda: len(_numbers(out)) >= count + 5, 10, "the restored counter's lines")
    assert proc_ids(pid)[1:] == (pid, term.shell.pid)
    assert os.tcgetpgrp(term.master) == pid, "the restored job is not in the foreground"

    term.send("\x1a")  # Ctrl-Z
    term.wait_for(r"Stopped", start=start)
    assert proc_state(pid) == "T"
    assert os.tcgetpgrp(term.master) == term.shell.pid, "the shell did not get its terminal"
    assert_silent(pid, Output(out))
    assert proc_state(pid) == "T"
    stopped_at = len(_numbers(out))

    start = len(term.text())
    term.send("fg\n")
    wait_until(lambda: len(_numbers(out)) >= stopped_at + 5, 10, "lines after fg")
    assert os.tcgetpgrp(term.master) == pid
    term.send("\x03")  # Ctrl-C
    wait_until(lambda: proc_state(pid) is None, 10, "the job to end on Ctrl-C")
    assert term.run("(exit $?)")[0] == 128 + signal.SIGINT, "ckpt restore's exit status"
    assert_consecutive(_numbers(out))


def test_terminal_replaced_by_tty_key(build: Builder, term: Terminal, procs: Procs,
                                      tmp_path: Path) -> None:
    """A job's terminal fds named by ``tty[RDEV:DEV]`` (as ``show --fds`` lists it) are
    replaced by a file: the restore then needs no terminal at all."""
    out, images, log = tmp_path / "out", tmp_path / "images", tmp_path / "tty.log"
    term.run(f"{build('counter')} > {out} &")
    pid = _last_job_pid(term)
    wait_until(lambda: len(_numbers(out)) >= 3, 10, "the counter's lines")
    rc, said = term.run(f"ckpt dump -j -t {pid} -D {images}")
    assert rc == 0, said
    procs.wait_gone(pid)
    fds = json.loads(subprocess.run(ckpt_cmd() + ["show", "--fds", str(images)],
                                    capture_output=True, text=True, check=True).stdout)
    key = next(e["key"] for e in fds if e["fd"] == 0)
    assert key.startswith("tty[")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        res = subprocess.run(ckpt_cmd() + ["restore", "-d", "-j", "-D", str(images),
                                           "--inherit-fd", f"fd[{fd}]:{key}"],
                             capture_output=True, text=True, pass_fds=(fd,),
                             stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    procs.adopt(pid, Output(out))
    assert os.readlink(f"/proc/{pid}/fd/0") == os.readlink(f"/proc/{pid}/fd/2") == str(log)
    count = len(_numbers(out))
    wait_until(lambda: len(_numbers(out)) >= count + 3, 10, "lines after the restore")
    assert_consecutive(_numbers(out))
