"""Established TCP connections (--tcp-established) across dump and restore: an echo pair
streaming numbered lines both ways, redis-server with an idle client and with a
pipeline in flight, each half-closed state, the network lock released on success,
failure and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

import ckpt
from ckpt.kernel import libc
from ckpt.kernel import tcp_repair as repair
from ckpt.kernel.sock_diag import InetDiag, inet_sockets
from ckpt.resources.filekind import TcpFlags
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Output,
    Proc,
    Procs,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    ckpt_stopped_at,
    free_port,
    is_alive,
    my_children,
    only_child,
    proc_state,
    reap_guards,
    run_ckpt,
    scaled,
    wait_until,
)
from tcp_helpers import (
    Netns,
    RespReader,
    ckpt_tables,
    lock_drops,
    lock_of,
    lock_present,
    need,
    resp,
    start_redis,
    table_present,
)

TIMEOUT = 20.0  # seconds, scaled where used
ECHO = PROGS / "tcp_echo.py"


def _got(out: Output, name: str) -> int:
    """The last count of lines ``name`` reported; fails on a reported error."""
    lines = out.lines()
    errors = [ln for ln in lines if "ERROR" in ln]
    assert not errors, errors
    counts = [int(m[1]) for m in map(re.compile(rf"^{name} got (\d+)$").match, lines) if m]
    return max(counts, default=0)


def _streaming(out: Output, more: int = 2000, names: tuple[str, ...] = ("server", "client")
               ) -> None:
    """Both ends receive ``more`` lines beyond what they had: the connection carries on."""
    _streams({n: out for n in names}, more)


def _streams(outs: dict[str, Output], more: int = 2000, timeout: float = TIMEOUT) -> None:
    """Each end (by name, with the output it prints to) receives ``more`` lines beyond
    what it had, none lost, repeated or out of order (each end checks)."""
    start = {n: _got(o, n) for n, o in outs.items()}
    for n, o in outs.items():
        wait_until(lambda n=n, o=o: _got(o, n) >= start[n] + more, timeout,
                   f"{n} to receive {more} more lines")


def _start_pair(procs: Procs) -> tuple[Proc, int]:
    pair = procs.start([PYTHON, ECHO, "pair"])
    child = only_child(pair.pid)
    _streaming(pair.out)
    return pair, child


def _dump_pair(procs: Procs, images: Path) -> tuple[Proc, int, dict[str, object]]:
    """A streaming pair dumped (killed) with --tcp-established; the lock it left held."""
    pair, child = _start_pair(procs)
    ckpt_ok("dump", "-t", pair.pid, "-D", images, "--tcp-established")
    procs.wait_gone(pair)
    procs.wait_gone(child)
    lock = lock_of(images)
    assert lock is not None and lock_present(lock)
    return pair, child, lock


def _restore(procs: Procs, images: Path, pids: list[int], out: Output, *extra: str) -> None:
    ckpt_ok("restore", "-D", images, "-d", "--tcp-established", *extra)
    for pid in pids:
        assert is_alive(pid), f"{pid} not restored (state {proc_state(pid)})"
        procs.adopt(pid, out)


def _queued(images: Path) -> list[tuple[int, int]]:
    """(bytes in the send queue, bytes in the receive queue) of each saved connection."""
    files = json.loads((images / "files.json").read_text())
    return [(d["tcp"]["send"]["len"], d["tcp"]["recv"]["len"]) for d in files.values()
            if "tcp" in d]


def test_echo_pair_survives(procs: Procs, images: Path) -> None:
    """Both ends in the tree, lines streaming both ways: after dump (killed) and restore,
    every line arrives once and in order, both ways; the lock is held between dump and
    restore and gone after."""
    need("nft")
    pair, child = _start_pair(procs)
    ckpt_ok("dump", "-t", pair.pid, "-D", images, "--tcp-established")
    procs.wait_gone(pair)
    procs.wait_gone(child)
    assert len(_queued(images)) == 2
    lock = lock_of(images)
    assert lock is not None and lock_present(lock)
    _restore(procs, images, [pair.pid, child], pair.out)
    assert not lock_present(lock)
    _streaming(pair.out, 5000)


def _segment_sizes(pids: list[int]) -> list[int]:
    """The segment size (``ss``'s mss) of each TCP connection of ``pids``."""
    out = subprocess.run(["ss", "-tnpiH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    sizes, owned = [], False
    for ln in out.splitlines():
        if not ln[:1].isspace():  # a connection; its details on the next line
            owned = any(f"pid={p}," in ln for p in pids)
        elif owned and (m := re.search(r"\bmss:(\d+)", ln)):
            sizes.append(int(m[1]))
    return sizes


def test_segment_size_kept(procs: Procs, images: Path) -> None:
    """A restored connection sends segments as large as before (it sent 524-byte ones,
    from the kernel's default, for the rest of its life: the MSS clamp set after the
    repair-mode connect did not change the size the connect had worked out)."""
    need("nft")
    pair, child = _start_pair(procs)
    before = _segment_sizes([pair.pid, child])
    assert len(before) == 2 and min(before) > 16000, before  # loopback: 32768
    ckpt_ok("dump", "-t", pair.pid, "-D", images, "--tcp-established")
    procs.wait_gone(pair)
    procs.wait_gone(child)
    _restore(procs, images, [pair.pid, child], pair.out)
    _streaming(pair.out)
    after = _segment_sizes([pair.pid, child])
    # (a connect in repair mode takes a clamp of 32767 at most: what a loopback
    # connection gets, over 60 times the 524 of before; a network's 1460 is whole)
    assert len(after) == 2 and min(after) >= min(min(before), 32767) - 64, (before, after)


def test_echo_pair_leave_running_then_dump(procs: Procs, images: Path,
                                           tmp_path: Path) -> None:
    """-R: the pair streams on at once, the lock released; then dumped without -R,
    restored, and streaming still."""
    need("nft")
    pair, child = _start_pair(procs)
    ckpt_ok("dump", "-t", pair.pid, "-D", tmp_path / "running", "--tcp-established", "-R")
    assert lock_of(tmp_path / "running") is None
    assert ckpt_tables(pair.pid) == set()
    _streaming(pair.out)
    ckpt_ok("dump", "-t", pair.pid, "-D", images, "--tcp-established")
    procs.wait_gone(pair)
    procs.wait_gone(child)
    _restore(procs, images, [pair.pid, child], pair.out)
    _streaming(pair.out, 5000)


def test_redis_idle_client(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A client sets keys and stays connected; redis is dumped and restored; the same
    connection gets the keys and increments a counter."""
    server, port = start_redis(procs, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        rd = RespReader(c)
        for i in range(10):
            c.sendall(resp("SET", f"key{i}", f"value{i}"))
            assert rd.reply() == "OK"
        c.sendall(resp("INCR", "counter"))
        assert rd.reply() == 1
        ckpt_ok("dump", "-t", server.pid, "-D", images, "--tcp-established")
        procs.wait_gone(server)
        _restore(procs, images, [server.pid], server.out)
        for i in range(10):
            c.sendall(resp("GET", f"key{i}"))
            assert rd.reply() == f"value{i}"
        c.sendall(resp("INCR", "counter"))
        assert rd.reply() == 2


def test_redis_pipeline_in_flight(procs: Procs, images: Path, tmp_path: Path) -> None:
    """10,000 INCRs sent without waiting while redis is dumped: every reply arrives, in
    order, exactly once (1, 2, ..., 10000), on the same connection."""
    server, port = start_redis(procs, tmp_path)
    n = 10_000
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(60)) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies queue up in redis
        rd = RespReader(c)
        c.sendall(resp("PING"))
        assert rd.reply() == "PONG"
        half = threading.Event()
        failed: list[BaseException] = []

        def send() -> None:
            try:
                for i in range(n):
                    c.sendall(resp("INCR", "counter"))
                    if i == n // 2:
                        half.set()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                failed.append(e)
                half.set()

        sender = threading.Thread(target=send)
        sender.start()
        assert half.wait(scaled(TIMEOUT))
        ckpt_ok("dump", "-t", server.pid, "-D", images, "--tcp-established")
        procs.wait_gone(server)
        assert any(s or r for s, r in _queued(images)), "nothing was in flight"
        _restore(procs, images, [server.pid], server.out)
        got = [rd.reply() for _ in range(n)]
        sender.join(scaled(TIMEOUT))
        assert not failed, failed
        assert got == list(range(1, n + 1))
        c.sendall(resp("GET", "counter"))
        assert rd.reply() == str(n)


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize("point", ["dump.network_locked", "dump.files", "dump.before_kill"])
def test_failed_dump_releases_the_lock(procs: Procs, images: Path,
                                       monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """A dump that fails once the connections are locked releases the lock: the pair
    streams on as if nothing happened."""
    need("nft")
    pair, _ = _start_pair(procs)
    monkeypatch.setenv("CKPT_FAULT", point)
    err = ckpt_fails("dump", "-t", pair.pid, "-D", images, "--tcp-established")
    monkeypatch.delenv("CKPT_FAULT")
    assert f"injected fault at {point}" in err, err
    assert ckpt_tables(pair.pid) == set()
    _streaming(pair.out)


@pytest.mark.parametrize("point", ["restore.fds_opened", "restore.task.memory",
                                   "restore.network_unlocked"])
def test_failed_restore_releases_the_lock(procs: Procs, images: Path,
                                          monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    need("nft")
    pair, child, lock = _dump_pair(procs, images)
    monkeypatch.setenv("CKPT_FAULT", point)
    err = ckpt_fails("restore", "-D", images, "-d", "--tcp-established")
    monkeypatch.delenv("CKPT_FAULT")
    assert f"injected fault at {point}" in err, err
    assert not lock_present(lock)
    assert proc_state(pair.pid) is None and proc_state(child) is None


@pytest.mark.parametrize("point", ["restore.task.memory", "restore.before_detach",
                                   "restore.network_unlocked", "restore.task.let_go",
                                   "restore.let_live"])
@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_killed_restore(procs: Procs, images: Path, monkeypatch: pytest.MonkeyPatch,
                        point: str) -> None:
    """A restore SIGKILLed at each step from the network unlock to the tree let go.
    Before every thread is let go (EXITKILL cleared) it takes its processes along (its
    guard kills those it let go already), the lock stays unless it was released, and the
    next restore brings the pair back streaming (both ends are in the tree: no peer saw
    the connection close). After, the pair streams on."""
    need("nft")
    pair, child, lock = _dump_pair(procs, images)
    before = my_children()
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt("restore", "-D", images, "-d", "--tcp-established")
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    reap_guards(before)
    if point == "restore.let_live":
        for pid in (pair.pid, child):
            assert is_alive(pid), f"{pid} gone (state {proc_state(pid)})"
            procs.adopt(pid, pair.out)
    else:
        for pid in (pair.pid, child):
            if proc_state(pid) is not None:  # killed with ckpt; reaped here (a subreaper)
                procs.wait_gone(pid)
        assert lock_present(lock) == (point in ("restore.task.memory",
                                                "restore.before_detach"))
        _restore(procs, images, [pair.pid, child], pair.out)
    assert not lock_present(lock)
    _streaming(pair.out, 3000)

def test_restore_without_the_flag_keeps_the_lock(procs: Procs, images: Path) -> None:
    """Images with connections restored without --tcp-established: refused before
    anything is made, the lock left for the next try, which works."""
    need("nft")
    pair, child = _start_pair(procs)
    ckpt_ok("dump", "-t", pair.pid, "-D", images, "--tcp-established")
    procs.wait_gone(pair)
    procs.wait_gone(child)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert re.search(r"the images hold 2 TCP connection\(s\) .*restore with "
                     r"--tcp-established", err), err
    lock = lock_of(images)
    assert lock is not None and lock_present(lock)
    _restore(procs, images, [pair.pid, child], pair.out)
    _streaming(pair.out)


def test_dump_refuses_connections_without_the_flag(procs: Procs, images: Path) -> None:
    pair, _ = _start_pair(procs)
    err = ckpt_fails("dump", "-t", pair.pid, "-D", images)
    assert re.search(r"ESTABLISHED TCP connection to 127\.0\.0\.1:\d+; dump with "
                     r"--tcp-established", err), err
    _streaming(pair.out)


def test_ctrl_c_releases_the_lock(procs: Procs, images: Path, tmp_path: Path) -> None:
    """Ctrl-C (KeyboardInterrupt) while the connections are locked, in a dump and then in
    a restore: the lock goes either way; the interrupted dump leaves the pair running."""
    need("nft")
    pair, child = _start_pair(procs)

    def interrupt_at(action: str):  # type: ignore[no-untyped-def]
        def notify(what: str, pid: int) -> None:
            if what == action:
                raise KeyboardInterrupt
        return notify

    with pytest.raises(KeyboardInterrupt):
        ckpt.dump(pair.pid, str(tmp_path / "first"), tcp=TcpFlags(established=True),
                  notify=interrupt_at("network-lock"))
    assert ckpt_tables(pair.pid) == set()
    _streaming(pair.out)
    ckpt.dump(pair.pid, str(images), tcp=TcpFlags(established=True))
    procs.wait_gone(pair)
    procs.wait_gone(child)
    lock = lock_of(images)
    assert lock is not None and lock_present(lock)
    with pytest.raises(KeyboardInterrupt):
        ckpt.restore(str(images), tcp=TcpFlags(established=True),
                     notify=interrupt_at("post-restore"))
    assert not lock_present(lock)
    assert proc_state(pair.pid) is None


def test_tcp_close_restores_connections_closed(procs: Procs, images: Path,
                                               tmp_path: Path) -> None:
    """--tcp-close at restore: each end finds its connection gone (an error, no data) and
    says so; the processes run on."""
    need("nft")
    pair, child, lock = _dump_pair(procs, images)
    ckpt_ok("restore", "-D", images, "-d", "--tcp-close")
    assert not lock_present(lock)
    procs.adopt(pair.pid, pair.out)
    procs.adopt(child, pair.out)
    wait_until(lambda: len([ln for ln in pair.out.lines() if "ERROR" in ln]) >= 1, TIMEOUT,
               "an end to report its connection gone")
    os.kill(pair.pid, signal.SIGKILL)


# ------------------------------------------------------------------ half-closed states

HALF = PROGS / "tcp_half.py"
STATES = {"FIN_WAIT1": 4, "FIN_WAIT2": 5, "CLOSE_WAIT": 8, "LAST_ACK": 9, "CLOSING": 11}


def _target_end(ends: tuple[int, int]) -> InetDiag | None:
    """The target's socket of the connection between 127.0.0.1 ports ``ends`` (the
    target's, the peer's), as sock_diag lists it; None when it does not (closed). Both
    ports: connect() gives a local port to connections to other places too (other tests
    running side by side)."""
    return next((s for fam in (socket.AF_INET, socket.AF_INET6)
                 for s in inet_sockets(fam, socket.IPPROTO_TCP)
                 if (s.sport, s.dport) == ends and s.inode), None)


def _state_of(ends: tuple[int, int]) -> int | None:
    """The TCP state of the target's end (see ``_target_end``); None when closed."""
    s = _target_end(ends)
    return None if s is None else s.state


def _rqueue(ends: tuple[int, int]) -> int | None:
    """The bytes queued for reading on the target's end (see ``_target_end``)."""
    s = _target_end(ends)
    return None if s is None else s.rqueue


def _connected(procs: Procs, prog: Path, host: str = "127.0.0.1"
               ) -> tuple[Proc, socket.socket, tuple[int, int]]:
    """``prog HOST PORT`` connected to a peer of the test's (which it prints "local PORT"
    for): (the target, the peer, the ports of the target's end and of the peer's). An
    IPv4-mapped ``host`` gives the target an IPv6 socket talking IPv4 to an IPv4 peer."""
    wire = repair.on_the_wire(host)
    with socket.socket(wire[0]) as lst:
        lst.bind((wire[1], 0))
        lst.listen(1)
        target = procs.start([PYTHON, prog, host, str(lst.getsockname()[1])])
        peer, _ = lst.accept()
    peer.settimeout(scaled(TIMEOUT))
    port = int(target.out.wait_line(r"^local ").split()[1])
    return target, peer, (port, peer.getsockname()[1])


def _half_closed(procs: Procs, images: Path, state: str, host: str) -> None:
    """The target's end (connected to ``host``) is brought to ``state`` (the test's end,
    the peer, answering or not), dumped (killed) and restored; then both ends finish
    the close and every byte and FIN arrives once."""
    need("nft")
    target, peer, ends = _connected(procs, HALF, host)
    with peer:
        quiet = state in ("FIN_WAIT1", "LAST_ACK", "CLOSING")  # our FIN never acknowledged
        from tcp_helpers import dropped
        ours = (repair.on_the_wire(host)[1], ends[0])
        with dropped(ours, peer.getsockname()[:2]) if quiet else _nothing():
            if state in ("CLOSE_WAIT", "LAST_ACK"):
                peer.sendall(b"before")
                peer.shutdown(socket.SHUT_WR)
                wait_until(lambda: _state_of(ends) == STATES["CLOSE_WAIT"], TIMEOUT,
                           "CLOSE_WAIT")
            if state != "CLOSE_WAIT":
                os.kill(target.pid, signal.SIGUSR1)
                target.out.wait_line("^shut$")
            if state == "CLOSING":
                peer.shutdown(socket.SHUT_WR)
            wait_until(lambda: _state_of(ends) == STATES[state], TIMEOUT, state)
            ckpt_ok("dump", "-t", target.pid, "-D", images, "--tcp-established")
            procs.wait_gone(target)
        files = json.loads((images / "files.json").read_text())
        assert [d["state"] for d in files.values() if "tcp" in d] == [STATES[state]]
        _restore(procs, images, [target.pid], target.out)
        if state != "CLOSE_WAIT":  # our FIN reaches the peer (again, if it was lost)
            assert peer.recv(100) == b""
        if state == "FIN_WAIT2":
            peer.sendall(b"after")
        if state in ("FIN_WAIT1", "FIN_WAIT2"):
            peer.shutdown(socket.SHUT_WR)
        os.kill(target.pid, signal.SIGUSR2)
        target.out.wait_line("^closed$")
        lines = target.out.lines()
        expected = {"CLOSE_WAIT": b"before", "LAST_ACK": b"before", "FIN_WAIT2": b"after"}
        assert f"read {expected.get(state, b'')!r}" in lines, lines
        assert ("write ok" if state == "CLOSE_WAIT" else "write EPIPE") in lines, lines
        if state == "CLOSE_WAIT":
            assert peer.recv(100) == b"reply"
            assert peer.recv(100) == b""


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1"],
                         ids=["ipv4", "ipv6", "ipv4-mapped"])
@pytest.mark.parametrize("state", list(STATES))
def test_half_closed(procs: Procs, images: Path, state: str, host: str) -> None:
    _half_closed(procs, images, state, host)


# ------------------------------------------------------------------ ckpt killed mid-dump

KILLED = PROGS / "ckpt_killed.py"
POLL_ECHO = PROGS / "tcp_poll_echo.py"
RELEASED = r"network lock (\S+) \(\w+\) left by a ckpt killed during a dump released"


def _kill_ckpt_during_dump(pid: int, images: Path, when: str) -> str:
    """Run a dump of ``pid`` that kills itself (tests/progs/ckpt_killed.py WHEN); its
    log. The run ends once its guard has (its stderr is the guard's): the guard, now
    this process's child (a subreaper), is reaped."""
    before = my_children()
    res = subprocess.run([PYTHON, KILLED, str(pid), str(images), when],
                         capture_output=True, text=True, timeout=scaled(60))
    assert res.returncode == -signal.SIGKILL, res.stderr
    reap_guards(before, Path(PYTHON).name[:15])
    return res.stderr


def _in_repair_mode(pid: int) -> list[bool]:
    """For each TCP socket of ``pid``: whether it is in repair mode."""
    out = []
    pidfd = os.pidfd_open(pid)
    try:
        for fd in sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd")):
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=libc.pidfd_getfd(pidfd, fd)) as s:
                if s.type == socket.SOCK_STREAM and s.family != socket.AF_UNIX:
                    out.append(bool(s.getsockopt(socket.IPPROTO_TCP, 19)))  # TCP_REPAIR
    finally:
        os.close(pidfd)
    return out


@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_ckpt_killed_with_the_network_locked(procs: Procs, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """ckpt killed (SIGKILL) once the pair's connection is locked: its guard (guard.py)
    releases the lock as soon as ckpt is gone, and says so; the pair streams on, nothing
    lost or repeated, with no other ckpt run."""
    need("nft")
    notes = tmp_path / "notes"  # this test's own: no other ckpt recovers it first
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(notes))
    pair, child = _start_pair(procs)
    err = _kill_ckpt_during_dump(pair.pid, tmp_path / "killed", "locked")
    m = re.search(RELEASED, err)
    assert m, err
    assert not table_present(m[1])
    assert list(notes.glob("*.json")) == []
    assert is_alive(pair.pid) and is_alive(child)
    _streaming(pair.out, 3000)
    assert not (tmp_path / "killed" / "inventory.json").exists()



@pytest.mark.parametrize("point", ["dump.task.fds", "dump.task.pages", "dump.inject:40",
                                   "dump.files", "dump.before_kill"])
@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_ckpt_killed_at_each_step(procs: Procs, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """``ckpt dump --tcp-established`` SIGKILLed at each step after the lock, up to the
    images complete: the pair streams on with no other ckpt run, no lock or repair mode
    left, each thread untraced (the guard woke what was parked)."""
    need("nft")
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(tmp_path / "notes"))
    pair, child = _start_pair(procs)
    before = my_children()
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt("dump", "-t", pair.pid, "-D", tmp_path / "killed", "--tcp-established")
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    reap_guards(before)
    m = re.search(RELEASED, res.stderr)
    assert m, res.stderr
    assert not table_present(m[1])
    assert list((tmp_path / "notes").glob("*.json")) == []
    for pid in (pair.pid, child):
        assert _in_repair_mode(pid) == [False]
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                assert "TracerPid:\t0\n" in f.read(), f"thread {tid} still traced"
    _streaming(pair.out, 3000)

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("step", ["probe", "lock"])
@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_ckpt_cut_while_nft_runs(procs: Procs, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch, step: str, sig: int) -> None:
    """ckpt cut while nft checks the backend (the probe) or puts the lock's rules in
    (an nft that lingers after its work): no table is left, nor the lock's note, and
    the pair streams on. (A SIGTERM there left the lock's rules with their note, once
    in a run of random cuts: the interrupted call's lock reached no clean-up; and the
    probe's tables of killed ckpts piled up: the probe now only checks, nft -c.)"""
    need("nft")
    notes = tmp_path / "notes"
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(notes))
    slow = tmp_path / "bin"
    slow.mkdir()
    word = "add chain inet ckpt_probe_" if step == "probe" else "add rule"
    ran = slow / "nft.ran"
    (slow / "nft").write_text(f"""#!/bin/sh
t=$(mktemp); cat > "$t"; {shutil.which('nft')} "$@" < "$t"; rc=$?
if grep -q "{word}" "$t"; then rm -f "$t"; echo $$ > "{ran}"; exec sleep 30; fi
rm -f "$t"; exit $rc
""")
    (slow / "nft").chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow}:{os.environ['PATH']}")
    pair, child = _start_pair(procs)
    before = my_children()
    ckpt = subprocess.Popen(ckpt_cmd() + ["dump", "-t", str(pair.pid), "-D",
                                          str(tmp_path / "cut"), "--tcp-established"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(ran.exists, TIMEOUT, f"nft to do the {step}'s work")
        ckpt.send_signal(sig)
        _, err = ckpt.communicate(timeout=scaled(60))
    finally:
        if ckpt.poll() is None:
            ckpt.kill()
            ckpt.wait()
    reap_guards(before)
    assert ckpt.returncode in (128 + sig, -sig), err
    assert "Traceback" not in err, err
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f" ckpt_probe_{ckpt.pid}\n" not in tables, tables
    assert ckpt_tables(pair.pid) == set(), err
    assert list(notes.glob("*.json")) == []
    assert is_alive(pair.pid) and is_alive(child)
    _streaming(pair.out, 3000)


@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_ckpt_killed_with_its_guard(procs: Procs, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """ckpt and its guard both killed once the pair's connection is locked (a service
    manager killing ckpt's cgroup): the pair runs on but its packets are dropped. The
    lock has a note naming it; the next ckpt (a dump with -R of the same pair) finds the
    note of a dead ckpt whose sockets are still open, removes the rules and says so: the
    pair streams on, nothing lost or repeated."""
    need("nft")
    notes = tmp_path / "notes"
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(notes))
    pair, child = _start_pair(procs)
    _kill_ckpt_during_dump(pair.pid, tmp_path / "killed", "guard-too")
    found = [json.loads(n.read_text()) for n in notes.glob("*.json")]
    assert len(found) == 1, found
    name = str(found[0]["name"])
    assert table_present(name)
    assert is_alive(pair.pid) and is_alive(child)
    out = ckpt_ok("check").stdout
    assert re.search(rf"network lock {name} .*left by a ckpt killed during a dump", out), out
    res = ckpt_ok("dump", "-t", pair.pid, "-D", tmp_path / "again", "--tcp-established", "-R")
    assert re.search(RELEASED.replace(r"(\S+)", re.escape(name)), res.stderr), res.stderr
    assert not table_present(name)
    assert list(notes.glob("*.json")) == []
    _streaming(pair.out, 3000)


@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_ckpt_killed_with_a_socket_in_repair_mode(procs: Procs, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ckpt killed while it reads a connection in repair mode (where the process's reads
    fail with EPERM and its writes send nothing): its guard takes the socket out of
    repair mode and removes the lock, with no other ckpt run; the connection echoes
    again, the bytes before and after in order."""
    need("nft")
    notes = tmp_path / "notes"
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(notes))
    target, peer, _ = _connected(procs, POLL_ECHO)
    with peer:
        peer.sendall(b"before")
        assert peer.recv(100) == b"before"
        err = _kill_ckpt_during_dump(target.pid, tmp_path / "killed", "repair")
        m = re.search(RELEASED + r".*; 1 socket\(s\) taken out of repair mode", err)
        assert m, err
        assert _in_repair_mode(target.pid) == [False]
        assert not table_present(m[1])
        assert list(notes.glob("*.json")) == []
        peer.sendall(b"after")
        got = b""
        while len(got) < 5:
            got += peer.recv(100)
        assert got == b"after"
        target.out.wait_line("^echoed 11$")


# ------------------------------------------------------------------ two network namespaces


def _ckpt_in(ns: Netns, *args: str | int | Path) -> subprocess.CompletedProcess[str]:
    """``ckpt ARGS`` run in ``ns``'s network namespace; it must succeed."""
    argv = ns.enter_argv(ckpt_cmd() + [str(a) for a in args])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60),
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{argv} exited {res.returncode}\n{res.stderr}"
    return res


def test_peer_in_another_namespace_goes_quiet(procs: Procs, images: Path) -> None:
    """The server dumped, its client outside the tree in a network namespace of its own
    (a veth pair, link-local addresses the test made). While the server is dumped the
    client retransmits: the lock drops every packet (its counter says so). Then the
    client's host goes quiet (its end of the link down) while the server is restored:
    the window probe and retransmissions of the restore are lost. Once the host is back,
    both ends stream on: every line once, in order, both ways."""
    need("nft", "ip")
    with Netns() as ns:
        server = procs.start([PYTHON, ECHO, "serve", ns.here], name="server")
        port = server.out.wait_line(r"^port ").split()[1]
        client = procs.start(ns.exec_argv([PYTHON, str(ECHO), "connect", ns.here, port]),
                             name="client")
        outs = {"server": server.out, "client": client.out}
        _streams(outs)
        ckpt_ok("dump", "-t", server.pid, "-D", images, "--tcp-established")
        procs.wait_gone(server)
        lock = lock_of(images)
        assert lock is not None and lock["backend"] == "nftables"
        wait_until(lambda: lock_drops(str(lock["name"])) > 0, TIMEOUT,
                   "the client's retransmissions to meet the lock")
        ns.quiet(True)
        try:
            _restore(procs, images, [server.pid], server.out)
        finally:
            ns.quiet(False)
        assert not lock_present(lock)
        _streams(outs, 5000, timeout=90)  # the client's retransmissions backed off meanwhile
        os.kill(client.pid, signal.SIGKILL)


def test_client_dumped_in_its_own_namespace(procs: Procs, images: Path) -> None:
    """The two-namespace pair the other way round: the client, in a network namespace
    of its own, dumped and restored by a ckpt running in that namespace (its lock is
    that namespace's); the server, in the root namespace, outside the tree. The
    restored client is in its namespace again and both ends stream on."""
    need("nft", "ip", "nsenter")
    with Netns() as ns:
        server = procs.start([PYTHON, ECHO, "serve", ns.here], name="server")
        port = server.out.wait_line(r"^port ").split()[1]
        client = procs.start(ns.enter_argv([PYTHON, str(ECHO), "connect", ns.here, port]),
                             name="client")
        wait_until(lambda: ns.holds(client.pid), TIMEOUT, "nsenter to enter the namespace")
        outs = {"server": server.out, "client": client.out}
        _streams(outs)
        _ckpt_in(ns, "dump", "-t", client.pid, "-D", images, "--tcp-established")
        procs.wait_gone(client)
        lock = lock_of(images)
        assert lock is not None and lock_present(lock, ns) and not lock_present(lock)
        _ckpt_in(ns, "restore", "-D", images, "-d", "--tcp-established")
        assert is_alive(client.pid) and ns.holds(client.pid)
        procs.adopt(client.pid, client.out)
        assert not lock_present(lock, ns)
        _streams(outs, 5000)
        os.kill(client.pid, signal.SIGKILL)


# ------------------------------------------------------------------ connections that ended

ENDED = PROGS / "tcp_ended.py"


def _reset(peer: socket.socket) -> None:
    """Close ``peer`` with a reset (SO_LINGER 0)."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()


def _signal_and_wait(target: Proc, sig: int, line: str, pid: int | None = None) -> None:
    """Send ``sig`` to ``target`` (or to ``pid``, printing to the same output) and wait
    for a new line matching ``line``."""
    n = len(target.out.lines())
    os.kill(pid or target.pid, sig)
    target.out.wait_line(line, start=n)


def _finish_ended(procs: Procs, images: Path, target: Proc) -> list[str]:
    """Dump (no --tcp-established needed: nothing is locked) and restore ``target``; it
    reads and writes its ended connection; what it printed then."""
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    assert lock_of(images) is None
    files = json.loads((images / "files.json").read_text())
    assert [d["tcp"].get("ended") for d in files.values() if "tcp" in d] == [True]
    _restore(procs, images, [target.pid], target.out)
    n = len(target.out.lines())
    os.kill(target.pid, signal.SIGUSR2)
    target.out.wait_line("^write ", start=n)
    return target.out.lines()[n:]


def test_reset_connection_seen_by_the_process(procs: Procs, images: Path) -> None:
    """The peer sent bytes, then reset the connection; the process saw the error
    (ECONNRESET) but not the bytes. Restored, it reads the bytes, then the end of
    file, and a write fails with EPIPE: as it would have without the dump."""
    target, peer, ends = _connected(procs, ENDED)
    peer.sendall(b"unread")
    wait_until(lambda: _rqueue(ends) == 6, TIMEOUT, "the bytes to arrive")
    _reset(peer)
    wait_until(lambda: _state_of(ends) is None, TIMEOUT, "the reset")  # CLOSE: unhashed
    _signal_and_wait(target, signal.SIGUSR1, "^error ECONNRESET$")
    assert _finish_ended(procs, images, target) == ["read b'unread'", "eof", "write EPIPE"]


def test_reset_while_frozen_is_refused(procs: Procs, images: Path) -> None:
    """The peer resets the connection and the process has not seen the error yet (as
    when the reset comes while it is frozen): the dump is refused, naming the state,
    and the process still gets its error; dumped once it has, it restores."""
    target, peer, ends = _connected(procs, ENDED)
    peer.sendall(b"unread")
    wait_until(lambda: _rqueue(ends) == 6, TIMEOUT, "the bytes to arrive")
    _reset(peer)
    wait_until(lambda: _state_of(ends) is None, TIMEOUT, "the reset")
    err = ckpt_fails("dump", "-t", target.pid, "-D", images, "--tcp-established")
    assert re.search(r"process \d+ fd \d+ .*connection ended \(state CLOSE\) with an error "
                     r"the process has not read yet .*retry once the process has seen the "
                     r"error", err), err
    _signal_and_wait(target, signal.SIGUSR1, "^error ECONNRESET$")
    assert _finish_ended(procs, images, target) == ["read b'unread'", "eof", "write EPIPE"]


def test_reset_before_the_lock_is_tried_again(procs: Procs, images: Path) -> None:
    """The peer resets the connection once the dump froze the process, before the
    network lock: the dump finds the error unread and, the tree let go as it was, tries
    again a moment later (no action script hears it twice); the process has read its
    error meanwhile, and the connection is saved as ended. Restored, the process ticks
    on. The dump was refused: a real server (haproxy before nginx) met it under load."""
    need("nft")
    target, peer, ends = _connected(procs, PROGS / "tcp_reset_reader.py")
    target.out.wait_line("^tick 2$")
    with ckpt_stopped_at("dump.frozen", "dump", "-t", target.pid, "-D", images,
                         "--tcp-established", "-v4", "-o", "dump.log") as p:
        _reset(peer)
        wait_until(lambda: _state_of(ends) is None, TIMEOUT, "the reset")
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=scaled(60))
    assert p.returncode == 0, err
    assert "the dump is tried again" in (images / "dump.log").read_text()
    procs.wait_gone(target)
    assert "error ECONNRESET" in target.out.lines()
    files = json.loads((images / "files.json").read_text())
    assert [d["tcp"].get("ended") for d in files.values() if "tcp" in d] == [True]
    _restore(procs, images, [target.pid], target.out)
    n = len(target.out.lines())
    target.out.wait_line("^tick ", start=n + 3)


def test_connection_closed_both_ways(procs: Procs, images: Path) -> None:
    """Both ends sent their FIN (the peer's bytes before it, unread): the socket is in
    CLOSE. Restored, the process reads the bytes, then the end of file; writes fail."""
    target, peer, ends = _connected(procs, ENDED)
    with peer:
        peer.sendall(b"bye")
        peer.shutdown(socket.SHUT_WR)
        wait_until(lambda: _state_of(ends) == STATES["CLOSE_WAIT"], TIMEOUT, "CLOSE_WAIT")
        _signal_and_wait(target, signal.SIGHUP, "^shut$")
        assert peer.recv(10) == b""
        wait_until(lambda: _state_of(ends) is None, TIMEOUT, "the close")
        assert _finish_ended(procs, images, target) == ["read b'bye'", "eof", "write EPIPE"]


# ------------------------------------------------------------------ not accepted yet

INFLIGHT = PROGS / "tcp_inflight.py"


def _waiting(port: int) -> list[tuple[int, int]]:
    """(client port, bytes received) of each connection to 127.0.0.1:``port`` that no
    process holds yet (in the listener's queue)."""
    return [(s.dport, s.rqueue) for s in inet_sockets(socket.AF_INET, socket.IPPROTO_TCP)
            if s.sport == port and not s.inode and s.state == 1]


def _inflight_tree(procs: Procs, *mode: str) -> tuple[Proc, int, int, int]:
    """tcp_inflight.py's tree (``mode``: "defer"): the process, its listener's port, its
    client child and the client's port."""
    tree = procs.start([PYTHON, INFLIGHT, "tree", *mode])
    port = int(tree.out.wait_line(r"^port ").split()[1])
    client = only_child(tree.pid)
    return tree, port, client, int(tree.out.wait_line(r"^client local ").split()[2])


def _served(tree: Proc, client: int, ping: bool = True) -> None:
    """tcp_inflight.py's restored tree: its client (told to send its "ping" first, with
    ``ping``) is accepted by the server, which gets the ping and answers "pong"."""
    if ping:
        _signal_and_wait(tree, signal.SIGUSR1, "^client sent$", client)
    os.kill(tree.pid, signal.SIGUSR2)
    tree.out.wait_line("^client (got|error) ")
    lines = tree.out.lines()
    assert "server got b'ping'" in lines and "client got b'pong'" in lines, lines


@pytest.mark.parametrize("sent", ["after", "unacknowledged"])
def test_not_accepted_from_the_tree(procs: Procs, images: Path, sent: str) -> None:
    """The server's connection from its own child is not accepted yet at dump. At
    restore the child's socket connects again to the restored listener, so the
    server accepts it as it would have; the child's "ping" (sent after the restore, or
    sent before the dump and never acknowledged: the test drops it on its way) reaches
    the server once, and the server's answer the child."""
    need("nft")
    tree, port, client, cport = _inflight_tree(procs)
    assert _waiting(port) == [(cport, 0)]
    if sent == "unacknowledged":
        from tcp_helpers import dropped
        with dropped(("127.0.0.1", cport), ("127.0.0.1", port)):
            _signal_and_wait(tree, signal.SIGUSR1, "^client sent$", client)
            ckpt_ok("dump", "-t", tree.pid, "-D", images, "--tcp-established")
    else:
        ckpt_ok("dump", "-t", tree.pid, "-D", images, "--tcp-established")
    procs.wait_gone(tree)
    procs.wait_gone(client)
    files = json.loads((images / "files.json").read_text())
    assert [d["in_flight"] for d in files.values() if "in_flight" in d] == \
        [[["127.0.0.1", cport]]]
    assert [d["tcp"].get("reconnect") for d in files.values() if "tcp" in d] == [True]
    _restore(procs, images, [tree.pid, client], tree.out)
    _served(tree, client, ping=sent == "after")


def test_not_accepted_client_port_shared_meanwhile(procs: Procs, images: Path) -> None:
    """Between dump and restore a connection from outside (to another peer) took the
    client's port, as the kernel's connects share their ports: the client's socket is
    bound again all the same (a plain bind failed "Address already in use", seen under
    load) and connects again; the outsider's connection carries on."""
    need("nft")
    tree, port, client, cport = _inflight_tree(procs)
    assert _waiting(port) == [(cport, 0)]
    ckpt_ok("dump", "-t", tree.pid, "-D", images, "--tcp-established")
    procs.wait_gone(tree)
    procs.wait_gone(client)
    with socket.create_server(("127.0.0.1", 0)) as other, \
            socket.socket() as outsider:  # no SO_REUSEADDR, as a connect's own port
        outsider.bind(("127.0.0.1", cport))
        outsider.connect(other.getsockname())
        peer, _ = other.accept()
        with peer:
            _restore(procs, images, [tree.pid, client], tree.out)
            _signal_and_wait(tree, signal.SIGUSR1, "^client sent$", client)
            os.kill(tree.pid, signal.SIGUSR2)
            tree.out.wait_line("^client got ")
            outsider.sendall(b"still")
            assert peer.recv(10) == b"still"
    lines = tree.out.lines()
    assert "server got b'ping'" in lines and "client got b'pong'" in lines, lines


def test_not_accepted_with_bytes_received(procs: Procs, images: Path) -> None:
    """A connection not accepted yet that has received bytes (which only the kernel
    holds) is refused, naming it; with --skip-in-flight it is dropped: the restored
    client's connection is reset."""
    need("nft")
    tree, port, client, cport = _inflight_tree(procs)
    _signal_and_wait(tree, signal.SIGUSR1, "^client sent$", client)
    wait_until(lambda: _waiting(port) == [(cport, 4)], TIMEOUT, "the bytes to arrive")
    err = ckpt_fails("dump", "-t", tree.pid, "-D", images, "--tcp-established")
    assert re.search(rf"process {tree.pid} fd \d+ .*listening with a connection from "
                     rf"127\.0\.0\.1:{cport} not accepted yet, which has received 4 bytes "
                     r".*--skip-in-flight drops it", err), err
    ckpt_ok("dump", "-t", tree.pid, "-D", images, "--tcp-established", "--skip-in-flight")
    procs.wait_gone(tree)
    procs.wait_gone(client)
    _restore(procs, images, [tree.pid, client], tree.out)
    tree.out.wait_line("^client (got|error) ")
    assert "client error ECONNRESET" in tree.out.lines(), tree.out.lines()


def test_not_accepted_from_outside(procs: Procs, images: Path) -> None:
    """A connection from outside the tree, not accepted yet, is refused, naming its
    client; with --skip-in-flight it is dropped (its client sees a reset) and the
    restored server accepts a new connection."""
    server = procs.start([PYTHON, INFLIGHT, "serve"])
    port = int(server.out.wait_line(r"^port ").split()[1])
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as outside:
        oport = outside.getsockname()[1]
        wait_until(lambda: _waiting(port) == [(oport, 0)], TIMEOUT, "the connection")
        err = ckpt_fails("dump", "-t", server.pid, "-D", images)
        assert re.search(r"listening on 127\.0\.0\.1:\d+ with 1 connection\(s\) not "
                         r"accepted yet; dump with --tcp-established", err), err
        err = ckpt_fails("dump", "-t", server.pid, "-D", images, "--tcp-established")
        assert re.search(rf"listening with a connection from 127\.0\.0\.1:{oport} not "
                         r"accepted yet, whose client is outside the dumped tree; ckpt "
                         r"cannot bring it back \(--skip-in-flight drops it", err), err
        assert _waiting(port) == [(oport, 0)]  # the refused dump left it in the queue
        ckpt_ok("dump", "-t", server.pid, "-D", images, "--skip-in-flight")
        procs.wait_gone(server)
        with pytest.raises(ConnectionResetError):
            outside.recv(10)
    _restore(procs, images, [server.pid], server.out)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as again:
        os.kill(server.pid, signal.SIGUSR2)
        again.sendall(b"ping")
        assert again.recv(10) == b"pong"


def _held(port: int) -> list[int]:
    """The client ports of the connections to 127.0.0.1:``port`` a listener holds in
    SYN_RECV (TCP_DEFER_ACCEPT: the client has sent nothing yet)."""
    return [s.dport for s in inet_sockets(socket.AF_INET, socket.IPPROTO_TCP, 1 << 3)
            if s.sport == port]


def test_held_by_defer_accept_from_the_tree(procs: Procs, images: Path) -> None:
    """A listener with TCP_DEFER_ACCEPT holds its child's connection (which sent nothing
    yet) in SYN_RECV, out of its accept queue's count. The dump finds it: the child's
    socket connects again at restore, so once it sends its "ping" the server accepts
    it and answers (it was rebuilt established to a server that had no such
    connection: the ping met a reset)."""
    need("nft")
    tree, port, client, cport = _inflight_tree(procs, "defer")
    wait_until(lambda: _held(port) == [cport], TIMEOUT, "the held connection")
    err = ckpt_fails("dump", "-t", tree.pid, "-D", images, "--tcp-close")
    assert re.search(r"listening on 127\.0\.0\.1:\d+ with 1 connection\(s\) held by "
                     r"TCP_DEFER_ACCEPT until their client sends; dump with "
                     r"--tcp-established", err), err
    ckpt_ok("dump", "-t", tree.pid, "-D", images, "--tcp-established")
    procs.wait_gone(tree)
    procs.wait_gone(client)
    files = json.loads((images / "files.json").read_text())
    assert [d["tcp"].get("reconnect") for d in files.values() if "tcp" in d] == [True]
    _restore(procs, images, [tree.pid, client], tree.out)
    _served(tree, client)


def test_held_by_defer_accept_from_outside(procs: Procs, images: Path) -> None:
    """A connection from outside the tree that TCP_DEFER_ACCEPT holds is refused,
    naming it (it was dropped without a word); --skip-in-flight drops it."""
    server = procs.start([PYTHON, INFLIGHT, "serve", "defer"])
    port = int(server.out.wait_line(r"^port ").split()[1])
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as outside:
        oport = outside.getsockname()[1]
        wait_until(lambda: _held(port) == [oport], TIMEOUT, "the held connection")
        err = ckpt_fails("dump", "-t", server.pid, "-D", images, "--tcp-established")
        assert re.search(rf"listening with a connection from 127\.0\.0\.1:{oport} held by "
                         r"TCP_DEFER_ACCEPT until its client sends, whose client is outside "
                         r"the dumped tree; ckpt cannot bring it back", err), err
        assert _held(port) == [oport]
        ckpt_ok("dump", "-t", server.pid, "-D", images, "--skip-in-flight")
        procs.wait_gone(server)
    _restore(procs, images, [server.pid], server.out)
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as again:
        again.sendall(b"ping")
        os.kill(server.pid, signal.SIGUSR2)
        assert again.recv(10) == b"pong"


# ------------------------------------------------------------------ connections being made

CONNECTING = PROGS / "tcp_connecting.py"


@pytest.mark.parametrize("mode", ["block", "poll"])
def test_connect_under_way(procs: Procs, images: Path, mode: str) -> None:
    """A connect() whose SYN the peer (the test's listener, outside the tree) never got
    (the test drops it on its way) is dumped in SYN_SENT, with the process inside a
    blocking connect() or polling a non-blocking one. Without --tcp-established the
    dump is refused, naming it. Restored once the way is open, its SYN goes out again:
    the listener accepts it and bytes go both ways."""
    need("nft")
    from tcp_helpers import dropped
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        lst.settimeout(scaled(TIMEOUT))
        port, cport = lst.getsockname()[1], free_port()
        ends = (cport, port)
        with dropped(("127.0.0.1", cport), ("127.0.0.1", port)):
            target = procs.start([PYTHON, CONNECTING, "127.0.0.1", str(port), str(cport),
                                  mode])
            target.out.wait_line("^connecting$")
            wait_until(lambda: _state_of(ends) == 2, TIMEOUT, "SYN_SENT")
            err = ckpt_fails("dump", "-t", target.pid, "-D", images)
            assert re.search(rf"TCP connection being made \(SYN_SENT\) to 127\.0\.0\.1:"
                             rf"{port}; dump with --tcp-established", err), err
            ckpt_ok("dump", "-t", target.pid, "-D", images, "--tcp-established")
            procs.wait_gone(target)
        files = json.loads((images / "files.json").read_text())
        assert [d["tcp"].get("syn_sent") for d in files.values() if "tcp" in d] == [True]
        _restore(procs, images, [target.pid], target.out)
        conn, peer = lst.accept()
        with conn:
            assert peer[1] == cport
            conn.settimeout(scaled(TIMEOUT))
            target.out.wait_line("^connected$")
            got = b""
            while len(got) < 4:
                got += conn.recv(4 - len(got))
            assert got == b"ping"
            conn.sendall(b"pong")
            target.out.wait_line("^got ")
            assert "got b'pong'" in target.out.lines(), target.out.lines()


@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_dump_waits_for_a_lock_under_recovery(procs: Procs, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A network lock left by a ckpt killed with its guard, its note held by another
    ckpt recovering it (a stand-in here, which then lets go without doing it): the next
    dump waits for that recovery instead of leaving the lock to it, then releases the
    lock itself; the pair streams on."""
    import fcntl
    import threading
    need("nft")
    notes = tmp_path / "notes"
    monkeypatch.setenv("CKPT_NETLOCK_DIR", str(notes))
    pair, child = _start_pair(procs)
    _kill_ckpt_during_dump(pair.pid, tmp_path / "killed", "guard-too")
    [note] = list(notes.glob("*.json"))
    name = str(json.loads(note.read_text())["name"])
    held = os.open(note, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # a recoverer at work
    threading.Timer(scaled(3), os.close, (held,)).start()  # it dies, the note left
    res = ckpt_ok("dump", "-t", pair.pid, "-D", tmp_path / "again", "--tcp-established", "-R",
                  "-v4", "-o", "dump.log")
    log = (tmp_path / "again/dump.log").read_text()
    assert re.search(RELEASED.replace(r"(\S+)", re.escape(name)), log), (log, res.stderr)
    assert "waiting for the ckpt recovering it" in log, log
    assert not table_present(name)
    assert list(notes.glob("*.json")) == []
    _streaming(pair.out, 3000)
