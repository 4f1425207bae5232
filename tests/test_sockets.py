"""Sockets that are not a connected pair: unix listeners (path and abstract), bound and
unbound unix sockets with datagrams queued, TCP listeners (IPv4, IPv6) and UDP
sockets; and the refusals (TCP connections, pending connections, queues ckpt
cannot send again)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from ckpt.kernel.sock_diag import unix_sockets
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Output,
    Proc,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    free_port,
    is_alive,
    left_behind,
    my_children,
    proc_state,
    proc_status,
    restore_detached,
    scaled,
)

TIMEOUT = 5.0  # seconds, scaled where used


def _ask_stream(family: socket.AddressFamily, kind: socket.SocketKind, addr: object,
                data: bytes) -> bytes:
    """Connect to ``addr``, send ``data``, read until the server closes."""
    with socket.socket(family, kind) as s:
        s.settimeout(scaled(TIMEOUT))
        s.connect(addr)
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
            if kind == socket.SOCK_SEQPACKET:
                break
        return b"".join(chunks)


def _ask_dgram(family: socket.AddressFamily, to: object, data: bytes,
               bind: object = None) -> tuple[bytes, object]:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(scaled(TIMEOUT))
        if bind is not None:
            s.bind(bind)
        s.sendto(data, to)
        return s.recvfrom(4096)


def _start_server(procs: Procs, tmp_path: Path) -> tuple[Proc, dict[str, object]]:
    d = tmp_path / "d"
    d.mkdir()
    tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    server = procs.start([PYTHON, PROGS / "sockserver.py", d, str(tcp), str(udp)])
    _, pid, child, v6 = server.out.wait_line(r"^ready ").split()
    assert int(pid) == server.pid
    server.out.wait_line(r"^C 3$")
    return server, {"dir": d, "tcp": tcp, "udp": udp, "v6": int(v6), "child": int(child),
                    "abstract": b"\0ckpt-test-echo-%d" % server.pid}


def _serves(srv: dict[str, object], tag: bytes) -> None:
    """Every listener of sockserver answers a new client."""
    d = srv["dir"]
    assert isinstance(d, Path)
    unix, inet, inet6 = socket.AF_UNIX, socket.AF_INET, socket.AF_INET6
    assert _ask_stream(unix, socket.SOCK_STREAM, str(d / "echo.sock"),
                       b"u-" + tag + b"\n") == b"echo u-" + tag + b"\n"
    assert _ask_stream(unix, socket.SOCK_SEQPACKET, srv["abstract"],
                       b"a-" + tag) == b"echo a-" + tag + b"\n"
    assert _ask_stream(inet, socket.SOCK_STREAM, ("127.0.0.1", srv["tcp"]),
                       b"t-" + tag + b"\n") == b"echo t-" + tag + b"\n"
    assert _ask_stream(inet6, socket.SOCK_STREAM, ("::1", srv["v6"]),
                       b"6-" + tag + b"\n") == b"echo 6-" + tag + b"\n"
    assert _ask_dgram(inet, ("127.0.0.1", srv["udp"]), b"d-" + tag) == (
        b"udp d-" + tag, ("127.0.0.1", srv["udp"]))
    client = str(d / f"client-{tag.decode()}.sock")
    assert _ask_dgram(unix, str(d / "dgram.sock"), b"x-" + tag, bind=client) == (
        b"unix x-" + tag, str(d / "dgram.sock"))


def _dump_tree(procs: Procs, pids: list[int], images: Path, *extra: str) -> None:
    ckpt_ok("dump", "-t", pids[0], "-D", images, *extra)
    for pid in pids:
        procs.wait_gone(pid)


def _last(out: Output, role: str) -> int:
    return max((int(m[1]) for m in map(re.compile(rf"^{role} (\d+)$").match, out.lines())
                if m), default=-1)


def test_servers_serve_new_clients_after_restore(procs: Procs, images: Path,
                                                 tmp_path: Path) -> None:
    """A tree whose root listens on a unix path, an abstract name, 127.0.0.1:PORT and
    [::1]:PORT and serves UDP and unix datagrams, and whose child talks to it over a
    connection the root accepted: after dump and restore, new clients are served on
    every socket, the pair goes on, the options, backlogs and file mode come back."""
    server, srv = _start_server(procs, tmp_path)
    _serves(srv, b"before")  # the server closes first: its port holds TIME_WAIT sockets
    sock_file = srv["dir"] / "echo.sock"  # type: ignore[operator]
    before = os.stat(sock_file)
    _dump_tree(procs, [server.pid, srv["child"]], images)  # type: ignore[list-item]
    files = json.loads((images / "files.json").read_text())
    kinds = sorted(d["kind"] for d in files.values() if d["kind"] in ("unix", "inet"))
    assert kinds == ["inet"] * 4 + ["unix"] * 6, kinds
    counts = _last(server.out, "P"), _last(server.out, "C")

    restore_detached(procs, server.pid, server.out, images)
    server.out.wait_line(rf"^P {counts[0] + 3}$")
    server.out.wait_line(rf"^C {counts[1] + 3}$")
    _serves(srv, b"after")
    # The server prints what it served after answering: wait for its lines.
    for want in ("unix u-", "abstract a-", "tcp4 t-", "tcp6 6-"):
        server.out.wait_line(rf"^served {want}after$")
    server.out.wait_line(r"^udp d-after$")
    server.out.wait_line(r"^dgram x-after$")
    lines = server.out.lines()
    assert not [ln for ln in lines if "BAD" in ln]
    for want in ("unix u-", "abstract a-", "tcp4 t-", "tcp6 6-"):
        assert lines.count(f"served {want}before") == lines.count(f"served {want}after") == 1
    assert "udp d-after" in lines and "dgram x-after" in lines

    after = os.stat(sock_file)
    assert stat.S_ISSOCK(after.st_mode)
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == (
        stat.S_IMODE(before.st_mode), before.st_uid, before.st_gid) == (0o640, 1234, 4321)
    listener = [i for i in unix_sockets().values()
                if i["state"] == 10 and i["name"] == os.fsencode(sock_file).hex() + "00"]
    assert [i["wqueue"] for i in listener] == [5], "the unix backlog changed"

    n = len(server.out.lines())
    os.kill(server.pid, signal.SIGUSR1)
    opts = server.out.wait_line(r"^opts ", start=n)
    for want in ("t4.nodelay=1", "t4.keepalive=1", "t4.reuseaddr=0", "t4.listening=1",
                 "t4.backlog=7", "t6.backlog=11", "t6.v6only=1", "t6.reuseaddr=1",
                 "t6.reuseport=1", f"ux.name={sock_file}",
                 f"ab.name={srv['abstract']!r}", f"ud.name=127.0.0.1:{srv['udp']}"):
        assert want in opts.split(), f"{want} not in {opts}"


def test_leave_running_then_restore_refuses_a_live_address(procs: Procs, images: Path,
                                                           tmp_path: Path) -> None:
    """Dumped with -R, the server still holds its addresses: the restore refuses, names
    the socket file in use, unlinks nothing, and the server goes on serving."""
    server, srv = _start_server(procs, tmp_path)
    ckpt_ok("dump", "-t", server.pid, "-D", images, "-R")
    kids = my_children()
    err = ckpt_fails("restore", "-D", images, "-d")
    assert re.search(r"echo\.sock: socket:\[\d+\] is bound to it", err), err
    assert my_children() == kids, "the failed restore left a process behind"
    _serves(srv, b"still")


def test_restore_leaves_a_file_that_is_not_a_socket(procs: Procs, images: Path,
                                                    tmp_path: Path) -> None:
    target = procs.start([PYTHON, PROGS / "sockhold.py", "unix-dgram", tmp_path])
    target.out.wait_numbers(2)
    _dump_tree(procs, [target.pid], images)
    path = tmp_path / "srv.sock"
    path.unlink()
    path.write_text("mine\n")
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"cannot bind {path}: it exists and is not a socket" in err, err
    assert path.read_text() == "mine\n"
    assert not left_behind(target.pid)


def test_unix_datagrams_keep_their_senders(procs: Procs, images: Path,
                                           tmp_path: Path) -> None:
    """Datagrams queued on a bound socket from a bound client of the tree (an empty one
    too) and from an unbound socket come back in order, each from the same address;
    the client is connected to the server again."""
    target = procs.start([PYTHON, PROGS / "sockhold.py", "unix-dgram", tmp_path])
    target.out.wait_numbers(2)
    _dump_tree(procs, [target.pid], images)
    restore_detached(procs, target.pid, target.out, images)
    n = len(target.out.lines())
    os.kill(target.pid, signal.SIGUSR1)
    target.out.wait_line(r"^cli peer ", start=n)
    cli = b"\0ckpt-test-cli-%d" % target.pid
    srv = str(tmp_path / "srv.sock")
    got = [ln for ln in target.out.lines()[n:] if not ln.isdigit()]
    assert got == [f"got {b'from-cli'!r} from {cli!r}", f"got {b'from-anon'!r} from None",
                   f"got {b''!r} from {cli!r}", "queue empty",
                   f"got {b'again'!r} from {cli!r}", f"cli peer {srv!r}"], got
    assert_consecutive(target.out.numbers())


def test_relative_name(procs: Procs, images: Path, tmp_path: Path) -> None:
    """A listener bound by a relative name keeps that name, in the same directory, and
    stays non-blocking (O_NONBLOCK)."""
    target = procs.start([PYTHON, PROGS / "sockhold.py", "relative", tmp_path])
    target.out.wait_numbers(2)
    _dump_tree(procs, [target.pid], images)
    restore_detached(procs, target.pid, target.out, images)
    assert stat.S_ISSOCK(os.stat(tmp_path / "rel.sock").st_mode)
    n = len(target.out.lines())
    os.kill(target.pid, signal.SIGUSR1)
    target.out.wait_line(r"^would block|^accepted at once", start=n)
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(str(tmp_path / "rel.sock"))
        # The listener listens again from inside the restored process: its clients see
        # that process as their peer, not ckpt.
        pid, _uid, _gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET,
                                                           socket.SO_PEERCRED, 12))
        assert pid == target.pid
    target.out.wait_line(r"^accepted$", start=n)
    got = [ln for ln in target.out.lines()[n:] if not ln.isdigit()]
    assert got == ["name 'rel.sock'", "would block", "accepted"], got


def test_udp_connected_and_unbound(procs: Procs, images: Path) -> None:
    """A connected UDP socket sends to its peer with send(), from its old port; an
    unbound one stays unbound."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(scaled(TIMEOUT))
        target = procs.start([PYTHON, PROGS / "sockhold.py", "udp-connected",
                              str(peer.getsockname()[1])])
        port = int(target.out.wait_line(r"^local ").split()[1])
        target.out.wait_numbers(2)
        _dump_tree(procs, [target.pid], images)
        restore_detached(procs, target.pid, target.out, images)
        n = len(target.out.lines())
        os.kill(target.pid, signal.SIGUSR1)
        assert peer.recvfrom(100) == (b"ping", ("127.0.0.1", port))
        assert target.out.wait_line(r"^unbound ", start=n) == "unbound 0.0.0.0 0"


def test_stream_socket_whose_peer_was_closed(procs: Procs, images: Path) -> None:
    """What the closed peer had written is read, then end-of-file; writing fails."""
    target = procs.start([PYTHON, PROGS / "sockhold.py", "peer-closed"])
    target.out.wait_numbers(2)
    _dump_tree(procs, [target.pid], images)
    restore_detached(procs, target.pid, target.out, images)
    n = len(target.out.lines())
    os.kill(target.pid, signal.SIGUSR1)
    target.out.wait_line(r"^write ", start=n)
    got = [ln for ln in target.out.lines()[n:] if not ln.isdigit()]
    assert got == [f"read {b'left over'!r}", "eof", "write EPIPE"], got


def test_inherit_fd_replaces_a_tcp_listener(procs: Procs, images: Path,
                                            tmp_path: Path) -> None:
    """``show --fds`` gives a TCP listener the key socket:[INODE]; given with
    --inherit-fd, the restored server accepts on the caller's listener instead."""
    server, srv = _start_server(procs, tmp_path)
    _dump_tree(procs, [server.pid, srv["child"]], images)  # type: ignore[list-item]
    fds = json.loads(ckpt_ok("show", "--fds", images).stdout)
    keys = [e["key"] for e in fds if e["pid"] == server.pid and e["kind"] == "inet"]
    files = json.loads((images / "files.json").read_text())
    tcp4 = next(d for d in files.values() if d["kind"] == "inet" and d["addr"]
                and d["addr"][1] == srv["tcp"] and d["proto"] == socket.IPPROTO_TCP)
    key = f"socket:[{tcp4['inode']}]"
    assert key in keys, keys
    with socket.socket() as new:
        new.bind(("127.0.0.1", 0))
        new.listen(4)
        res = subprocess.run(ckpt_cmd() + ["restore", "-d", "-D", str(images),
                                           "--inherit-fd", f"fd[{new.fileno()}]:{key}"],
                             capture_output=True, text=True, timeout=scaled(60),
                             pass_fds=(new.fileno(),), stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        procs.adopt(server.pid, server.out)
        port = new.getsockname()[1]
    assert _ask_stream(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port),
                       b"t-new\n") == b"echo t-new\n"
    with pytest.raises(ConnectionRefusedError):
        _ask_stream(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", srv["tcp"]), b"x\n")


REFUSED = [
    ("tcp-established", r"fd \d+ \(TCP IPv4 socket:\[\d+\]\): ESTABLISHED TCP connection "
                        r"to 127\.0\.0\.1:\d+; dump with --tcp-established"),
    ("tcp-pending", r"fd 3 \(TCP IPv4 .*1 connection\(s\) not accepted yet"),
    ("unix-pending", r"fd \d \(stream .*sent data on its connection to "
                     r"@ckpt-test-pending-\d+ \(socket:\[\d+\]\), not accepted yet"),
    ("ebpf-filter", r"fd \d+ \(UDP IPv4 .*an eBPF program is attached to it "
                    r"\(SO_ATTACH_BPF\)"),
    ("unix-epoll", r"fd \d \(stream .*carries an epoll instance \(SCM_RIGHTS\)"),
    ("unix-outside", r"@ckpt-test-srv-\d+\) holds a datagram from @ckpt-test-gone-\d+, "
                     r"a socket outside the dumped tree"),
]


@pytest.mark.parametrize(("mode", "message"), REFUSED, ids=[m for m, _ in REFUSED])
def test_dump_refuses(procs: Procs, images: Path, mode: str, message: str) -> None:
    """A clear refusal naming the process and fd; the process counts on untouched."""
    target = procs.start([PYTHON, PROGS / "sockhold.py", mode])
    target.out.wait_numbers(3)
    fds = sorted(os.listdir(f"/proc/{target.pid}/fd"))
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert not (images / "inventory.json").exists()
    if mode != "unix-outside":  # this refusal names the socket, not yet the process
        assert re.search(rf"process {target.pid} ", err), err
    assert re.search(message, err), f"expected /{message}/ in: {err}"
    assert is_alive(target.pid) and proc_state(target.pid) in ("R", "S")
    assert proc_status(target.pid)["TracerPid"] == "0"
    n = len(target.out.numbers())
    assert_consecutive(target.out.wait_numbers(n + 4, timeout=TIMEOUT))
    assert sorted(os.listdir(f"/proc/{target.pid}/fd")) == fds
