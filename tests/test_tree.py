"""Process trees: same PIDs, parents, groups and sessions; zombies, waiting parents,
shared memory, shared file offsets and pipes between processes of the tree."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ckpt.kernel import libc, procfs
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    left_behind,
    proc_ids,
    proc_ppid,
    proc_state,
    proc_status,
    restore_detached,
    start_with_pid,
    wait_until,
)


def _role_numbers(out: Output, role: str) -> list[int]:
    rx = re.compile(rf"^{role} (\d+)\b")
    return [int(m[1]) for m in map(rx.match, out.lines()) if m]


def _dump_tree(procs: Procs, root: int, pids: list[int], images: Path, *extra: str) -> None:
    """Dump the tree at ``root``, then reap every process of it (we are their subreaper)."""
    ckpt_ok("dump", "-t", root, "-D", images, *extra)
    for pid in pids:
        procs.wait_gone(pid)
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} survived the dump"


def test_tree_with_zombie_waiter_groups_sessions_and_shared_memory(
        build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("tree")])
    out = target.out
    pids_line = out.wait_line(r"^pids ")
    p, a, b, c, g, z = map(int, pids_line.split()[1:])
    assert p == target.pid
    for role in "PABG":  # C is blocked in waitpid() until G ends
        out.wait_line(rf"^{role} 5\b")
    assert proc_state(z) == "Z"
    ids = {pid: proc_ids(pid) for pid in (a, b, c, g)}
    ids[p] = (os.getpid(), *proc_ids(p)[1:])  # the root comes back re-parented to us
    assert ids[b][1] == b and ids[c][2] == c and ids[g][2] == c  # the set-up is as meant
    a_before = max(int(m[1]) for m in re.finditer(r"^P \d+ a=(\d+)$", "\n".join(out.lines()),
                                                  re.M))

    _dump_tree(procs, p, [p, a, b, c, g, z], images)
    counts = {role: len(_role_numbers(out, role)) for role in "PABG"}
    restore_detached(procs, p, out, images)

    for pid, want in ids.items():
        assert is_alive(pid), f"process {pid} not running after restore"
        assert proc_ids(pid) == want, f"process {pid}: (ppid, pgid, sid) {proc_ids(pid)} != {want}"
    assert proc_state(z) == "Z" and proc_ppid(z) == p, "the zombie did not come back"
    for role in "PABG":
        out.wait_line(rf"^{role} {counts[role] + 3}\b")
    # Shared anonymous memory: A's stores still reach P (A, starved under load, may tick
    # later than P: wait for P to see it).
    wait_until(lambda: max(int(m[1]) for m in re.finditer(
        r"^P \d+ a=(\d+)$", "\n".join(out.lines()), re.M)) > a_before + 3, 20,
        "P to see A's writes to the shared page")

    os.kill(g, signal.SIGUSR2)  # C, blocked in waitpid() since before the dump, reaps G
    assert out.wait_line(r"^C waited") == "C waited G 3"
    os.kill(p, signal.SIGUSR1)  # P reaps the zombie with its saved exit status
    assert out.wait_line(r"^P reaped") == "P reaped Z 5"
    procs.wait_gone(z)
    out.wait_line(r"^C 3$")
    # One shared offset: no process overwrote another's lines, none lost a tick.
    for role in "PABCG":
        assert_consecutive(_role_numbers(out, role))
    assert all(re.match(r"^(pids|[PABCG] \d+|C waited|P reaped)", ln) for ln in out.lines())


def test_pipe_chain_mid_stream(build: Builder, procs: Procs, images: Path) -> None:
    """producer | filter | consumer with full pipes: no byte lost or repeated."""
    target = procs.start([build("chain")])
    out = target.out
    pids = [int(x) for x in out.wait_line(r"^pids ").split()[1:]]
    out.wait_line(r"^ok 100000$", timeout=20)
    ids = {pid: proc_ids(pid) for pid in pids[1:]}
    _dump_tree(procs, pids[0], pids, images)
    last = int(out.lines()[-1].split()[1])
    pipes = [f for f in os.listdir(images) if f.startswith("pipes")]
    assert pipes, "no pipe data in the images"
    restore_detached(procs, pids[0], out, images)
    for pid, want in ids.items():
        assert proc_ids(pid) == want
    out.wait_line(rf"^ok {last + 100000}$", timeout=30)
    assert not [ln for ln in out.lines() if ln.startswith(("BAD", "child"))], out.lines()[-5:]
    oks = [int(ln.split()[1]) // 20000 for ln in out.lines() if ln.startswith("ok ")]
    assert_consecutive(oks)
    # The parent still waits in wait(): it sees the consumer end.
    os.kill(pids[3], signal.SIGTERM)
    assert out.wait_line(rf"^child {pids[3]} ") == f"child {pids[3]} {signal.SIGTERM}"


def _each_socket(pid: int, read: Callable[[socket.socket], Any]) -> dict[int, Any]:
    """``read`` of each socket fd of ``pid``, through a copy of it."""
    out = {}
    pidfd = os.pidfd_open(pid)
    try:
        for fd in sorted(map(int, os.listdir(f"/proc/{pid}/fd"))):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                with socket.socket(fileno=libc.pidfd_getfd(pidfd, fd)) as s:
                    out[fd] = read(s)
    finally:
        os.close(pidfd)
    return out


def _peercreds(pid: int) -> dict[int, tuple[int, int, int]]:
    """SO_PEERCRED (pid, uid, gid) of each unix socket fd of ``pid``."""
    return _each_socket(pid, lambda s: struct.unpack(
        "3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)))


def test_socketpair_between_parent_and_child(procs: Procs, images: Path) -> None:
    """A stream socketpair in use both ways, and a seqpacket pair with 30 queued messages
    that the child reads only after the restore; the child's ends name the parent, which
    made both pairs, in SO_PEERCRED."""
    target = procs.start([PYTHON, PROGS / "sockpair_tree.py"])
    out = target.out
    parent, child = map(int, out.wait_line(r"^pids ", timeout=20).split()[1:])
    out.wait_line(r"^P 5$")
    ids = proc_ids(child)
    creds = _peercreds(child)
    assert [pid for pid, _, _ in creds.values()] == [parent, parent], creds
    _dump_tree(procs, parent, [parent, child], images)
    count = len(_role_numbers(out, "P"))
    restore_detached(procs, parent, out, images)
    assert proc_ids(child) == ids
    assert _peercreds(child) == creds, "SO_PEERCRED does not name the pairs' maker"
    out.wait_line(rf"^P {count + 3}$")
    os.kill(child, signal.SIGUSR1)
    assert out.wait_line(r"^extra ") == "extra ok"
    out.wait_line(rf"^P {count + 6}$")
    assert_consecutive(_role_numbers(out, "P"))
    assert not [ln for ln in out.lines() if ln.startswith("BAD")]


def _names(pid: int) -> dict[int, str]:
    """getsockname() of each unix socket fd of ``pid`` (its listener's name for an
    accepted end)."""
    return _each_socket(pid, lambda s: repr(s.getsockname()))


def test_accepted_connections_name_their_peers(procs: Procs, images: Path,
                                               tmp_path: Path) -> None:
    """Connections a server accepted from its child (stream on a path, seqpacket on an
    abstract name) and from itself: after a restore, and after a second dump and
    restore, each end's SO_PEERCRED names its peer process as before (the accepted
    ends the child, the child's ends the server that listened), each end keeps its
    name, the pings go on and the listeners take new clients."""
    target = procs.start([PYTHON, PROGS / "accepted_tree.py", tmp_path])
    out = target.out
    server, child = map(int, out.wait_line(r"^pids ", timeout=20).split()[1:])
    out.wait_line(r"^P 3$")
    creds = {server: _peercreds(server), child: _peercreds(child)}
    names = {server: _names(server), child: _names(child)}
    assert sorted(pid for pid, _, _ in creds[server].values()) == [
        server, server, server, server, child, child], creds  # 2 listeners, own, 2 accepted
    assert [pid for pid, _, _ in creds[child].values()] == [server, server], creds
    for round in range(2):
        _dump_tree(procs, server, [server, child], images / str(round))
        count = len(_role_numbers(out, "P"))
        restore_detached(procs, server, out, images / str(round))
        for pid in (server, child):
            assert _peercreds(pid) == creds[pid], f"SO_PEERCRED of {pid} changed"
            assert _names(pid) == names[pid], f"socket names of {pid} changed"
        out.wait_line(rf"^P {count + 3}$")
    with socket.socket(socket.AF_UNIX) as c, \
            socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as q:
        c.connect(str(tmp_path / "acc.sock"))
        q.connect(b"\0ckpt-test-acc-%d" % server)
        os.kill(server, signal.SIGUSR1)
        for s in (c, q):
            s.settimeout(30)
            assert s.recv(10) == b"hello"
            assert struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    12))[0] == server
    assert_consecutive(_role_numbers(out, "P"))
    assert not [ln for ln in out.lines() if ln.startswith("BAD")]


def test_fifo_with_buffered_bytes(build: Builder, procs: Procs, images: Path,
                                  tmp_path: Path) -> None:
    """A FIFO between parent and child keeps the 100 lines buffered in it at the dump."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = procs.start([build("fifo"), fifo])
    out = target.out
    parent, child = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^P 3$")
    _dump_tree(procs, parent, [parent, child], images)
    descs = json.loads((images / "files.json").read_text()).values()
    assert [d for d in descs if d.get("fifo") == str(fifo)], "the FIFO was not saved as one"
    counts = {r: len(_role_numbers(out, r)) for r in "PC"}
    restore_detached(procs, parent, out, images)
    out.wait_line(rf"^P {counts['P'] + 2}$")
    os.kill(parent, signal.SIGUSR1)
    early = sum(len(f"early {i}\n") for i in range(100))
    assert out.wait_line(r"^drained ") == f"drained ok {early}"
    os.kill(child, signal.SIGUSR2)
    assert out.wait_line(r"^got ") == "got late 0"
    for role in "PC":
        assert_consecutive(_role_numbers(out, role))


def test_fifo_swapped_for_a_link_gets_no_bytes(build: Builder, procs: Procs, images: Path,
                                               tmp_path: Path) -> None:
    """The FIFO replaced since the dump by a symbolic link to another FIFO: the restore
    refuses, naming it, and the bytes buffered at the dump go nowhere (before, they
    were written into whatever the link led to); nothing of the tree runs."""
    fifo, other = tmp_path / "fifo", tmp_path / "other"
    os.mkfifo(fifo)
    os.mkfifo(other)
    target = procs.start([build("fifo"), fifo])
    parent, child = map(int, target.out.wait_line(r"^pids ").split()[1:])
    target.out.wait_line(r"^P 3$")
    _dump_tree(procs, parent, [parent, child], images)
    fifo.unlink()
    fifo.symlink_to(other)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"{fifo} is no longer a FIFO" in err, err
    assert not left_behind(parent) and not left_behind(child)
    rw = os.open(other, os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(rw, 4096)
    finally:
        os.close(rw)


def test_child_pid_taken(build: Builder, procs: Procs, images: Path) -> None:
    """A child's saved PID is held by another process: its parent, restored already, tries
    to clone it; the error names the PID and the holder, and nothing of the tree is left
    (the holder runs on, untraced)."""
    target = procs.start([PYTHON, PROGS / "sockpair_tree.py"])
    parent, child = map(int, target.out.wait_line(r"^pids ", timeout=20).split()[1:])
    target.out.wait_line(r"^P 2$")
    _dump_tree(procs, parent, [parent, child], images)
    holder = start_with_pid(procs, [build("counter")], child)
    holder.out.wait_numbers(2)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"PID {child} is taken by" in err and "counter" in err, err
    assert not left_behind(parent), "the parent was left after a failed restore"
    assert is_alive(child) and proc_ppid(child) == os.getpid()
    assert proc_status(child)["TracerPid"] == "0"
    count = len(holder.out.numbers())
    holder.out.wait_numbers(count + 2)


def test_leader_pid_kept_by_its_group(procs: Procs, images: Path) -> None:
    """The root's PID is still a process group's and session's number (the root was
    killed after a dump -R, its child lived on, as a job's does): the error names the
    process keeping it, not "a process that just exited"."""
    target = procs.start(["sh", "-c", "sleep 1000 & wait"])
    child = wait_until(lambda: next(iter(procfs.children(target.pid)), None), 10,
                       "the shell's sleep")
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    target.popen.kill()
    procs.wait_gone(target)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"PID {target.pid} is taken by the process group" in err, err
    assert f"{child} (sleep)" in err, err
    assert is_alive(child)


def test_vfork_child_on_its_way_to_exec_is_waited_for(build: Builder, procs: Procs,
                                                      images: Path) -> None:
    """A parent that keeps vfork()ing children which exec soon (a shell starting
    commands) is dumped once the child has exec'd, not refused; it counts on after."""
    target = procs.start([build("vforker")])
    target.out.wait_numbers(5)
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    tasks = json.loads((images / "inventory.json").read_text())["tasks"]
    for pid in [t["pid"] for t in tasks]:  # the exec'd child holds the group's PID
        procs.wait_gone(pid)
    restore_detached(procs, target.pid, target.out, images)
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 5))
    assert not [ln for ln in target.out.lines() if "FAILED" in ln]
