"""A tree with its own pseudo-terminal pair comes back with a new pair: the same
settings, the same controlling terminal for its session, the same foreground group."""

from __future__ import annotations

import os
import re
import signal
import stat
from pathlib import Path

from ckpt_helpers import (
    KCMP_FILE,
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    kcmp_same,
    proc_ids,
    proc_stat_fields,
    restore_detached,
)


def _state(lines: list[str], role: str) -> list[tuple[int, str]]:
    rx = re.compile(rf"^{role} (\d+) (.*)$")
    return [(int(m[1]), m[2]) for m in map(rx.match, lines) if m]


def _same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    return kcmp_same(pid1, pid2, KCMP_FILE, fd1, fd2)


def _ctty(pid: int) -> tuple[int, int]:
    """(device number of the controlling terminal, its foreground group) of ``pid``."""
    fields = proc_stat_fields(pid)
    return int(fields[4]), int(fields[5])


def test_own_pty_pair(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("ptypair")])
    out = target.out
    parent, child, grandchild = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^C 5 ")
    out.wait_line(r"^G 5 ")
    ids = {pid: proc_ids(pid) for pid in (child, grandchild)}
    before = _state(out.lines(), "C")[-1][1]
    old_tty = re.search(r"tty=(\S+)", before)[1]  # type: ignore[index]
    assert f"fg={grandchild}" in before and "rows=33 cols=101" in before and "ok" in before
    for pid in (child, grandchild):
        assert _ctty(pid) == (os.stat(old_tty).st_rdev, grandchild)
    assert os.readlink(f"/proc/{grandchild}/fd/1") == "/dev/tty"
    assert _same_file(child, 7, grandchild, 1)

    ckpt_ok("dump", "-t", parent, "-D", images)
    for pid in (parent, child, grandchild):
        procs.wait_gone(pid)
    counts = {r: len(_state(out.lines(), r)) for r in "CG"}
    restore_detached(procs, parent, out, images)
    for pid, want in ids.items():
        assert is_alive(pid) and proc_ids(pid) == want
    out.wait_line(rf"^C {counts['C'] + 3} ")
    out.wait_line(rf"^G {counts['G'] + 3} ")
    for role in "CG":
        states = _state(out.lines(), role)
        assert_consecutive([n for n, _ in states])
        after = states[-1][1]
        # Same settings and foreground group, on the new pair's slave.
        assert re.sub(r"tty=\S+", "", after) == re.sub(r"tty=\S+", "", states[0][1])
        new_tty = re.search(r"tty=(\S+)", after)[1]  # type: ignore[index]
        assert os.readlink(f"/proc/{child}/fd/0") == new_tty
        assert after.endswith(" ok")
    # The new slave is the session's controlling terminal, the grandchild in its
    # foreground. (The new pair may or may not reuse the old one's number.)
    for pid in (child, grandchild):
        assert _ctty(pid) == (os.stat(new_tty).st_rdev, grandchild)
    # /dev/tty (the grandchild prints through it) is still one file, shared.
    assert os.readlink(f"/proc/{grandchild}/fd/1") == "/dev/tty"
    assert _same_file(child, 7, grandchild, 1) and _same_file(grandchild, 7, grandchild, 1)


def _slave_owner(pid: int) -> tuple[str, int, int, int]:
    """(path, uid, gid, mode) of the pty slave that is ``pid``'s stdin."""
    path = os.readlink(f"/proc/{pid}/fd/0")
    st = os.stat(path)
    return path, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_bytes_waiting_in_pty_pair(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """Output nobody read from the master and input the slave's reader has not read
    (whole lines and a partial one) survive a dump that leaves the tree running and a
    dump and restore, in order; the slave keeps its owner and mode."""
    target = procs.start([build("ptybuf")])
    parent, child = map(int, target.out.wait_line(r"^pids ").split()[1:])
    assert _slave_owner(child)[1:] == (4321, 5, 0o620)
    ckpt_ok("dump", "-t", parent, "-D", tmp_path / "running", "-R")
    images = tmp_path / "images"
    ckpt_ok("dump", "-t", parent, "-D", images)
    for pid in (parent, child):
        procs.wait_gone(pid)
    restore_detached(procs, parent, target.out, images)
    assert is_alive(child)
    assert _slave_owner(child)[1:] == (4321, 5, 0o620)
    os.kill(parent, signal.SIGUSR1)
    target.out.wait_line(r"^got partial tail")
    text = target.out.path.read_text().replace("\r", "")
    assert text == (f"pids {parent} {child}\n" + "".join(f"out {i}\n" for i in range(5))
                    + "out partial got line one\ngot line two\ngot partial tail\n")


def test_slave_of_a_closed_master(build: Builder, procs: Procs, images: Path) -> None:
    """A slave whose master was closed comes back hung up and nameless, as it was."""
    target = procs.start([build("ptydeleted")])
    target.out.wait_line(r"^2 ")
    link = os.readlink(f"/proc/{target.pid}/fd/5")
    assert re.fullmatch(r"/dev/pts/\d+ \(deleted\)", link), link
    lines = target.out.lines()
    assert all(ln.endswith(" read=0 write=5") for ln in lines), lines  # EOF, EIO
    dump_and_check_dead(procs, target, images)
    count = len(target.out.lines())
    restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{count + 2} ")
    assert re.fullmatch(r"/dev/pts/\d+ \(deleted\)", os.readlink(f"/proc/{target.pid}/fd/5"))
    lines = target.out.lines()
    assert_consecutive(target.out.first_field_numbers())
    assert all(ln.endswith(" read=0 write=5") for ln in lines), lines


TTY_IN_FLIGHT = r"""
import fcntl, os, signal, socket, termios
master, slave = os.openpty()
if os.fork() == 0:
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    tty = os.open("/dev/tty", os.O_RDWR)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    socket.send_fds(mine, [b"tty"], [tty])
    os.close(tty)
    def receive(*_):
        msg, fds, _f, _a = socket.recv_fds(theirs, 16, 4)
        link = os.readlink(f"/proc/self/fd/{fds[0]}")
        os.write(1, b"child got %s %s\n" % (msg, link.encode()))
        os.write(fds[0], b"through-tty\n")
    signal.signal(signal.SIGUSR1, receive)
    os.write(1, b"child %d ready\n" % os.getpid())
    while True:
        signal.pause()
os.close(slave)
while True:
    for line in os.read(master, 1024).splitlines():
        os.write(1, b"master read %s\n" % line.strip())
"""


def test_dev_tty_in_a_message_not_received(procs: Procs, images: Path,
                                           tmp_path: Path) -> None:
    """A session leader on an inner pty opens /dev/tty and sends it to itself over a
    socketpair, then closes it: the message, not received at dump, carries /dev/tty
    after the restore (not the new slave it stands for), and what is written through
    it reaches the new pair's master."""
    (tmp_path / "tty.py").write_text(TTY_IN_FLIGHT)
    target = procs.start([PYTHON, tmp_path / "tty.py"])
    out = target.out
    child = int(out.wait_line(r"^child \d+ ready$").split()[1])
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    for pid in (target.pid, child):
        procs.wait_gone(pid)
    restore_detached(procs, target.pid, out, images)
    n = len(out.lines())
    new_tty = os.readlink(f"/proc/{child}/fd/{_slave_fd(child)}")
    assert _ctty(child) == (os.stat(new_tty).st_rdev, child)
    os.kill(child, signal.SIGUSR1)
    out.wait_line(r"^child got tty /dev/tty$", start=n)
    out.wait_line(r"^master read through-tty$", start=n)


def _slave_fd(pid: int) -> int:
    """The fd of ``pid`` on a pty slave (its controlling terminal)."""
    return next(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/dev/pts/"))
