"""Connections to unix listeners that were not accepted yet come back, in the order
accept() takes them: from clients of the tree (connected again from their own
processes, so each end sees the other's pid, as before), and, with --ext-unix-sk,
from a client outside the tree, as a connection whose client left. Without
--ext-unix-sk that one is refused, the tree left running."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Procs,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    proc_state,
    restore_detached,
    scaled,
    signal_report,
)


def test_pending_connections(procs: Procs, images: Path, tmp_path: Path) -> None:
    target = procs.start([PYTHON, PROGS / "pending.py", tmp_path])
    pid = int(target.out.wait_line(r"^ready ").split()[1])
    target.out.wait_line(r"^child ready")
    child = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    outside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        outside.connect(b"\0ckpt-test-pend-%d" % pid)
        err = ckpt_fails("dump", "-t", pid, "-D", images)
        assert "--ext-unix-sk" in err and "not accepted yet" in err, err
        assert is_alive(pid) and proc_state(pid) in ("R", "S")
        ckpt_ok("dump", "-t", pid, "-D", images, "--ext-unix-sk")
        procs.wait_gone(target)
        procs.wait_gone(child)
        outside.settimeout(scaled(5))
        try:
            gone = outside.recv(10) == b""
        except ConnectionResetError:
            gone = True
        assert gone, "the outside client's connection should be gone"
    finally:
        outside.close()
    restored = restore_detached(procs, pid, target.out, images)
    got = signal_report(restored)
    start = len(restored.out.lines())
    os.kill(child, signal.SIGUSR1)
    got.append(restored.out.wait_line(r"^CHILD ", start=start))
    assert got == [
        f"ACCEPT stream {pid}", f"ACCEPT stream {child}", f"ACCEPT stream {pid}",
        f"c1 sees listener {pid}", "first reads from-c1", "third reads eof",
        f"ACCEPT seqpacket {child} reads eof", "CHILD c2 reads to-c2"], got



def test_names_gone_and_peers_closed(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A listener whose socket file was removed, a datagram socket whose file was
    replaced: bound again to their names, with files no one reaches (the replacement
    is left alone). Datagram sockets whose peer closed: still connected to it (its
    name, what it sent), sending fails as it did."""
    folder = tmp_path / "d"
    folder.mkdir()
    target = procs.start([PYTHON, PROGS / "sockgone.py", folder])
    target.out.wait_line(r"^ready")
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    assert not (folder / "a" / "srv.sock").exists()
    restored = restore_detached(procs, target.pid, target.out, images)
    assert not (folder / "a" / "srv.sock").exists(), "the removed name came back"
    assert signal_report(restored) == [
        f"srv name {folder / 'a' / 'srv.sock'}", "srv connect ENOENT",
        f"dg name {folder / 'b.sock'}", "b.sock holds replaced",
        f"d1 peer {folder / 'peer.sock'}", f"d1 got hello from {folder / 'peer.sock'}",
        "d1 send ECONNREFUSED", "d2 send ECONNREFUSED"]


def test_more_waiting_than_the_backlog_now(procs: Procs, images: Path) -> None:
    """A listener that lowered its backlog (listen again) below the connections already
    waiting: the kernel kept them, and so does the restore (it connected them again
    under the lower backlog and hung on the second); the backlog is the lower one after."""
    target = procs.start([PYTHON, PROGS / "backlog_lowered.py"])
    pid = int(target.out.wait_line(r"^ready ").split()[1])
    ckpt_ok("dump", "-t", pid, "-D", images)
    procs.wait_gone(target)
    restored = restore_detached(procs, pid, target.out, images)
    assert signal_report(restored) == ["accepted 4: 0 1 2 3", "room 2"]
