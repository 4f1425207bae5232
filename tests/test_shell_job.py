"""Shell jobs on a terminal (-j): the HOWTO's loop, job control after a restore."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_ok,
    is_alive,
    only_child,
    proc_ids,
    proc_ppid,
    proc_state,
    proc_status,
    wait_until,
)
from terminal import Terminal, job_control_round

LOOP = """#!/bin/sh
i=0
while :; do
    sleep 0.1
    echo "$i $(date +%T.%N)"
    i=$((i+1))
done
"""



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

    job_control_round(term, pid, Output(out), start)


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


def _children(pid: int) -> int | None:
    """The first child of ``pid``, if any."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(kids[0]) if kids else None


RAW = termios.ECHO | termios.ICANON | termios.ISIG


def _mode(term: Terminal) -> tuple[int, tuple[int, ...]]:
    """(the ECHO, ICANON and ISIG bits of the terminal's settings, its window size)."""
    lflag = termios.tcgetattr(term.master)[3] & RAW
    size = struct.unpack("4H", fcntl.ioctl(term.master, termios.TIOCGWINSZ, b"\0" * 8))
    return lflag, size


def _set_size(term: Terminal, rows: int, cols: int) -> None:
    fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("4H", rows, cols, 0, 0))


def test_full_screen_program_keeps_raw_mode(term: Terminal, procs: Procs,
                                            tmp_path: Path) -> None:
    """A program in raw mode on the shell's terminal (-echo -icanon -isig, reading keys
    from /dev/tty), dumped with -j and restored with -j in the foreground: the terminal
    has its mode and window size again, and keys reach it one by one, without Enter
    (Ctrl-C is a key for it, not a signal)."""
    out, images = tmp_path / "keys", tmp_path / "images"
    _set_size(term, 40, 120)
    term.send(f"{PYTHON} {PROGS / 'rawkeys.py'} {out}\n")
    wait_until(lambda: out.exists() and "ready" in out.read_text(), 20, "the program")
    pid = only_child(term.shell.pid)
    wait_until(lambda: _mode(term)[0] == 0, 10, "raw mode")
    term.send("a")
    wait_until(lambda: "key 97" in out.read_text(), 10, "the key a")

    ckpt_ok("dump", "-j", "-t", pid, "-D", images)
    procs.wait_gone(pid)
    _set_size(term, 24, 80)  # the terminal changed meanwhile; bash took it back
    wait_until(lambda: _mode(term)[0] & termios.ISIG, 10, "the shell's own mode")
    term.send(f"ckpt restore -j -D {images}\n")
    wait_until(lambda: is_alive(pid), 20, "the restored program")
    procs.adopt(pid, Output(out))
    wait_until(lambda: _mode(term) == (0, (40, 120, 0, 0)), 10,
               "the program's raw mode and window size")
    assert os.readlink(f"/proc/{pid}/fd/3") == "/dev/tty"
    term.send("b")
    wait_until(lambda: "key 98" in out.read_text(), 10, "the key b, without Enter")
    term.send("\x03")
    wait_until(lambda: "key 3" in out.read_text(), 10, "Ctrl-C read as a key")
    assert is_alive(pid)
    assert out.read_text().splitlines() == ["ready", "key 97", "key 98", "key 3"]


def test_vim_after_restore(term: Terminal, procs: Procs, tmp_path: Path) -> None:
    """vim, dumped with -j and restored with -j: its keys work again at once (insert
    text, Escape, :wq), and the file it writes has the text typed before and after."""
    vim = shutil.which("vim.basic") or shutil.which("vim")
    if vim is None:
        pytest.skip("vim is not installed")
    text, images = tmp_path / "text", tmp_path / "images"
    term.send(f"{vim} -u NONE -i NONE -N -n {text}\n")
    pid = wait_until(lambda: _children(term.shell.pid), 20, "vim")
    wait_until(lambda: _mode(term)[0] & (termios.ECHO | termios.ICANON) == 0, 20,
               "vim's raw mode")
    term.send("ibefore ")
    ckpt_ok("dump", "-j", "-t", pid, "-D", images)
    procs.wait_gone(pid)
    wait_until(lambda: _mode(term)[0] & termios.ISIG, 10, "the shell's own mode")
    term.send(f"ckpt restore -j -D {images}\n")
    wait_until(lambda: is_alive(pid), 20, "the restored vim")
    procs.adopt(pid, Output(text))
    wait_until(lambda: _mode(term)[0] & (termios.ECHO | termios.ICANON) == 0, 10,
               "vim's raw mode again")
    term.send("after\x1b:wq\r")
    wait_until(lambda: text.exists() and not is_alive(pid), 20, "vim to write and quit")
    assert text.read_text() == "before after\n"


QUEUED_TTY = r"""
import os, signal, socket, sys
tty = os.open("/dev/tty", os.O_RDWR)
mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
socket.send_fds(mine, [b"tty"], [tty])
os.close(tty)
out = sys.argv[1]
def receive(*_):
    _msg, fds, _f, _a = socket.recv_fds(theirs, 16, 4)
    with open(out, "a") as f:
        f.write("got " + os.readlink(f"/proc/self/fd/{fds[0]}") + "\n")
    os.write(fds[0], b"through-the-tty\r\n")
signal.signal(signal.SIGUSR1, receive)
with open(out, "a") as f:
    f.write("ready\n")
while True:
    signal.pause()
"""


def test_dev_tty_in_a_queued_message(term: Terminal, procs: Procs, tmp_path: Path) -> None:
    """A job sends itself its /dev/tty over a socketpair and closes it; dumped with -j,
    restored with -j: the message carries /dev/tty again (ckpt's own, standing for the
    job's terminal), and what is written through it shows on the terminal."""
    out, images, prog = tmp_path / "out", tmp_path / "images", tmp_path / "queued.py"
    prog.write_text(QUEUED_TTY)
    term.send(f"{PYTHON} {prog} {out}\n")
    wait_until(lambda: out.exists() and "ready" in out.read_text(), 20, "the program")
    pid = only_child(term.shell.pid)
    ckpt_ok("dump", "-j", "-t", pid, "-D", images)
    procs.wait_gone(pid)
    term.send(f"ckpt restore -j -D {images}\n")
    wait_until(lambda: is_alive(pid), 20, "the restored program")
    procs.adopt(pid, Output(out))
    # the job in the foreground, then let go: the restore is done (a signal sent while
    # the restore held it would be the restore's)
    wait_until(lambda: os.tcgetpgrp(term.master) == pid, 20, "the job in the foreground")
    wait_until(lambda: proc_status(pid)["TracerPid"] == "0", 20, "the restore to let it go")
    start = len(term.text())
    os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: "got " in out.read_text(), 10, "the message received")
    assert out.read_text().splitlines()[-1] == "got /dev/tty"
    term.wait_for(r"through-the-tty", start=start)
