"""epoll: the watches of an epoll instance come back, with their events, flags and data.

An epoll instance is restored empty and its watches are added again inside the
restored process, under its own fd numbers. Level-triggered readiness is
re-evaluated by the kernel; an edge pending at dump time is reported once.
"""

from __future__ import annotations

import json
import os
import re
import signal
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
    is_alive,
    proc_state,
    proc_status,
    restore_detached,
)

EPOLLIN, EPOLLERR, EPOLLHUP = 0x1, 0x8, 0x10
EPOLLET, EPOLLONESHOT = 1 << 31, 1 << 30
DATA = {"P": 0x1111111100000001, "S": 0x2222222200000002,
        "E": 0x3333333300000003, "O": 0x4444444400000004}


def _write_fd(pid: int, fd: int, data: bytes) -> None:
    """Write into the pipe behind ``pid``'s ``fd`` through /proc."""
    with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as f:
        f.write(data)


def _ev(name: str, text: str) -> str:
    return f"ev {name} {DATA[name]:x} {EPOLLIN:x} {text}"


def _fd_flags(pid: int) -> dict[int, str]:
    """fd -> the flags line of its fdinfo (octal), for every fd of ``pid``."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        with open(f"/proc/{pid}/fdinfo/{name}") as f:
            out[int(name)] = next(ln.split()[1] for ln in f if ln.startswith("flags:"))
    return out


def _epolls(images: Path) -> list[dict]:
    files = json.loads((images / "files.json").read_text())
    return [d for d in files.values() if d["kind"] == "epoll"]


def test_epoll_pipes_and_socketpair(build: Builder, procs: Procs, images: Path) -> None:
    """Level, edge-triggered and one-shot watches over pipes and a socketpair, in an
    epoll shared by parent and child: pending events are seen after the restore with
    their data fields, new data wakes epoll_wait, EPOLLET and EPOLLONESHOT still hold."""
    target = procs.start([build("epoll_loop")])
    pid = target.pid
    out = target.out
    _, p1, q1, o1, child = (int(x) if x.isdigit() else x
                            for x in out.wait_line(r"^ready ").split())
    out.wait_numbers(3)

    _write_fd(pid, p1, b"ab")
    assert out.wait_line(r"^ev P ") == _ev("P", "ab")
    _write_fd(pid, q1, b"12345678")  # edge-triggered: 4 bytes read, 4 left with no new edge
    assert out.wait_line(r"^ev E ") == _ev("E", "1234")
    _write_fd(pid, o1, b"x")  # one-shot: fires once, then stays disarmed
    assert out.wait_line(r"^ev O ") == _ev("O", "x")
    _write_fd(pid, o1, b"y")

    os.kill(pid, signal.SIGUSR2)  # stop calling epoll_wait: events stay pending
    out.wait_line(r"^paused$")
    _write_fd(pid, p1, b"late")
    os.kill(child, signal.SIGUSR1)  # the child writes "w0\n" into p, s and q
    out.wait_line(r"^wrote 0$")
    out.wait_numbers(len(out.numbers()) + 2)
    cut = len(out.lines())

    before = dump_and_check_dead(procs, target, images)
    procs.wait_gone(child)
    (ep,) = _epolls(images)
    assert ep["owner"] == pid
    by_data = {w["data"]: w for w in ep["watches"]}
    assert set(by_data) == set(DATA.values()), ep
    assert by_data[DATA["P"]]["events"] == EPOLLIN | EPOLLERR | EPOLLHUP
    assert by_data[DATA["S"]]["events"] == EPOLLIN | EPOLLERR | EPOLLHUP
    assert by_data[DATA["E"]]["events"] == EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLET
    assert by_data[DATA["O"]]["events"] == EPOLLONESHOT  # fired: only its flag is left

    restored = restore_detached(procs, pid, out, images)
    assert is_alive(child), "the writer child was not restored"
    out.wait_numbers(len(before) + 3)
    assert not [ln for ln in out.lines()[cut:] if ln.startswith("ev ")], \
        "events reported while paused"

    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR2)
    out.wait_line(r"^resumed$", start=cut)
    # pending at dump time, reported after the restore with their data fields
    assert out.wait_line(r"^ev P ", start=cut) == _ev("P", "latew0|")
    assert out.wait_line(r"^ev S ", start=cut) == _ev("S", "w0|")
    assert out.wait_line(r"^ev E ", start=cut) == _ev("E", "5678")
    out.wait_numbers(len(out.numbers()) + 3)

    # new data after the restore, from the restored child and through the parent's fd
    after = len(out.lines())
    os.kill(child, signal.SIGUSR1)
    out.wait_line(r"^wrote 1$", start=after)
    assert out.wait_line(r"^ev P ", start=after) == _ev("P", "w1|")
    assert out.wait_line(r"^ev S ", start=after) == _ev("S", "w1|")
    assert out.wait_line(r"^ev E ", start=after) == _ev("E", "w0|w")
    mark = len(out.lines())
    _write_fd(pid, p1, b"after")
    assert out.wait_line(r"^ev P ", start=mark) == _ev("P", "after")
    _write_fd(pid, o1, b"z")
    out.wait_numbers(len(out.numbers()) + 6)

    lines = out.lines()
    edge = [ln for ln in lines[cut:] if ln.startswith("ev E ")]
    assert edge == [_ev("E", "5678"), _ev("E", "w0|w")], \
        f"the edge-triggered watch fired as level-triggered: {edge}"
    assert not [ln for ln in lines[cut:] if ln.startswith("ev O ")], \
        "the fired one-shot watch was re-armed"
    assert not [ln for ln in lines if "BAD" in ln or ln.startswith("ev ?")], lines
    assert_consecutive(out.numbers())


def test_asyncio_loop(procs: Procs, images: Path) -> None:
    """An asyncio program (epoll, a socketpair self-pipe that is also the signal wakeup
    fd, stream transports) goes on: its timer task, its echo over a socketpair, and
    a SIGUSR1 handled by loop.add_signal_handler."""
    target = procs.start([PYTHON, PROGS / "epoll_asyncio.py"])
    out = target.out
    out.wait_line(r"^ready$")
    out.wait_line(r"^echo 3 ok$")
    flags = _fd_flags(target.pid)
    before = dump_and_check_dead(procs, target, images)
    (ep,) = _epolls(images)
    assert ep["watches"], "the event loop's epoll had no watches"

    echoes = [int(m[1]) for ln in out.lines() if (m := re.match(r"^echo (\d+) ok$", ln))]
    restored = restore_detached(procs, target.pid, out, images)
    cut = len(out.lines())
    # asyncio's sockets are non-blocking: its self-pipe is drained until EAGAIN
    now = _fd_flags(target.pid)
    assert now == flags, "file status flags changed (fd: before -> after): " + ", ".join(
        f"{fd}: {flags.get(fd)} -> {now.get(fd)}" for fd in sorted(set(flags) | set(now))
        if flags.get(fd) != now.get(fd))
    out.wait_numbers(len(before) + 10)
    out.wait_line(rf"^echo {echoes[-1] + 5} ok$", start=cut)
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    out.wait_line(r"^usr1 \d+$", start=cut)
    out.wait_numbers(len(out.numbers()) + 3)

    lines = out.lines()
    assert not [ln for ln in lines if "BAD" in ln or "Traceback" in ln], lines
    assert_consecutive(out.numbers())
    all_echoes = [int(m[1]) for ln in lines if (m := re.match(r"^echo (\d+) ok$", ln))]
    assert_consecutive(all_echoes)


def _watches(pid: int, epfd: int) -> list[tuple[int, int, int]]:
    """(tfd, data, inode) of each watch of ``pid``'s epoll ``epfd``, sorted."""
    with open(f"/proc/{pid}/fdinfo/{epfd}") as f:
        return sorted((int(m[1]), int(m[2], 16), int(m[3], 16)) for m in re.finditer(
            r"tfd:\s+(\d+) events:\s+\S+ data:\s+([0-9a-f]+)\s+pos:\d+ ino:([0-9a-f]+)",
            f.read()))


def _inode(pid: int, fd: int) -> int:
    return os.stat(f"/proc/{pid}/fd/{fd}").st_ino


def _poke(out: Output, pid: int, sig: int, data: int) -> None:
    """Signal ``pid`` to write into a watched file; the owner reports the event."""
    start = len(out.lines())
    os.kill(pid, sig)
    out.wait_line(rf"^ev {data:x}$", start=start)


@pytest.mark.parametrize("mode", ["closed", "reused", "child"])
def test_watch_of_a_moved_fd(build: Builder, procs: Procs, images: Path, mode: str) -> None:
    """A watch added under fd R whose file is now held elsewhere: through a dup (R
    closed), through a dup while R names another watched file, or by a child only.
    Dumped and restored: the epoll watches the same files under R (fdinfo), R is as it
    was, and a write into each watched file wakes epoll_wait with the watch's data."""
    target = procs.start([build("epoll_moved"), mode])
    epfd, r, dup, kid = map(int, target.out.wait_line(r"^ready ").split()[1:])
    out = target.out
    out.wait_numbers(3)
    pokes = {"closed": [(target.pid, signal.SIGUSR1, 0xa)],
             "reused": [(target.pid, signal.SIGUSR1, 0xa), (target.pid, signal.SIGUSR2, 0xb)],
             "child": [(kid, signal.SIGUSR1, 0xe)]}[mode]
    for who, sig, data in pokes:
        _poke(out, who, sig, data)
    watches = _watches(target.pid, epfd)
    holder = (kid if mode == "child" else target.pid, dup if mode != "child" else r)
    expected = {(r, 0xa if mode != "child" else 0xe, _inode(*holder))}
    if mode == "reused":
        expected.add((r, 0xb, _inode(target.pid, r)))
    assert set(watches) == expected, watches
    links = sorted(os.listdir(f"/proc/{target.pid}/fd"))

    dump_and_check_dead(procs, target, images)
    if kid:
        procs.wait_gone(kid)
    (ep,) = _epolls(images)
    moved = [w for w in ep["watches"] if "holder" in w]
    assert len(moved) == 1 and moved[0]["holder"] == list(holder), ep
    restore_detached(procs, target.pid, out, images)
    if kid:
        assert is_alive(kid)
    assert sorted(os.listdir(f"/proc/{target.pid}/fd")) == links
    assert set(_watches(target.pid, epfd)) == {
        (t, d, _inode(*holder) if d != 0xb else _inode(target.pid, r)) for t, d, _ in expected}
    for who, sig, data in pokes:
        _poke(out, who, sig, data)
    assert_consecutive(out.wait_numbers(len(out.numbers()) + 3))


def test_watch_held_outside_refused(build: Builder, procs: Procs, images: Path) -> None:
    """A watch whose file only a process outside the tree holds (a grandchild whose
    parent exited): refused at dump naming the epoll and the fd; the target runs on."""
    target = procs.start([build("epoll_moved"), "outside"])
    epfd, r, _, grandchild = map(int, target.out.wait_line(r"^ready ").split()[1:])
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert not (images / "inventory.json").exists(), "a refused dump left an inventory"
    assert re.search(rf"process {target.pid} fd {epfd} \(epoll\) watches fd {r}\b.*"
                     rf"fd {r} is closed, and no process of the dumped tree holds", err), err
    assert is_alive(target.pid) and is_alive(grandchild)
    n = len(target.out.numbers())
    assert_consecutive(target.out.wait_numbers(n + 4, timeout=5))
    assert proc_state(target.pid) in ("R", "S")
    assert proc_status(target.pid)["TracerPid"] == "0"


def test_epoll_shown(build: Builder, procs: Procs, images: Path) -> None:
    """ckpt show --fds lists the epoll fd, with no inherit-fd key but orig-fd[N]."""
    target = procs.start([build("epoll_loop")])
    target.out.wait_line(r"^ready ")
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    assert is_alive(target.pid)
    fds = json.loads(ckpt_ok("show", "--fds", images).stdout)
    eps = [e for e in fds if e["kind"] == "epoll"]
    assert len(eps) == 2, fds  # the parent's and the child's, one description
    assert len({e["file"] for e in eps}) == 1
    assert all(e["key"] is None for e in eps)


PIDFD_WATCHER = """
import os, select, sys
child = os.fork()
if child == 0:
    os.execvp("sleep", ["sleep", "1000"])
pidfd = os.pidfd_open(child)
ep = select.epoll()
ep.register(pidfd, select.EPOLLIN)
print("watching", child, pidfd, ep.fileno(), flush=True)
while True:
    for fd, ev in ep.poll():
        print("exited", fd == pidfd, os.waitid(os.P_PIDFD, pidfd, os.WEXITED).si_status,
              flush=True)
        sys.exit(0)
"""


def test_watch_of_a_pidfd(procs: Procs, images: Path, tmp_path: Path) -> None:
    """An epoll watching a pidfd of a child (asyncio's PidfdChildWatcher does): the
    watch is added again on the real pidfd, which the process opens itself after the
    restore (its stand-in before that, /dev/null, cannot be watched), and reports the
    child's exit."""
    (tmp_path / "watcher.py").write_text(PIDFD_WATCHER)
    target = procs.start([PYTHON, tmp_path / "watcher.py"])
    _, child, pidfd, epfd = target.out.wait_line(r"^watching ").split()
    dump_and_check_dead(procs, target, images)
    procs.wait_gone(int(child))
    restore_detached(procs, target.pid, target.out, images)
    assert [w[0] for w in _watches(target.pid, int(epfd))] == [int(pidfd)]
    assert os.readlink(f"/proc/{target.pid}/fd/{pidfd}") == "anon_inode:[pidfd]"
    os.kill(int(child), signal.SIGTERM)
    target.out.wait_line(rf"^exited True {signal.SIGTERM}$")
