"""Incremental dumps (pre-dump, --prev-images-dir, --track-mem) and the page server.

The target (progs/incr.c) maps a large region of which it keeps rewriting a small
part, prints a counter, checks every byte of its memory on SIGUSR1 and churns its
mappings on SIGUSR2 (a mapping moved onto another's address, a new one, parts of
the region dropped and read again as zeros).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import zlib
from pathlib import Path

import pytest

from ckpt.images import _canonical
from ckpt.kernel import pagemap
from ckpt_helpers import (
    Builder,
    Proc,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    ckpt_stopped_at,
    dump_and_check_dead,
    is_alive,
    only_child,
    pages_bytes,
    restore_detached,
    run_ckpt,
    scaled,
)

MIB = 1 << 20
REGION = 256 * MIB
SMALL = 16 * MIB  # what a dump after pre-dumps may write at most for REGION


# ---------------------------------------------------------------- helpers

def start_incr(procs: Procs, build: Builder, *args: str) -> Proc:
    target = procs.start([build("incr"), *args])
    target.out.wait_line(r"^ready$", timeout=30)
    target.out.wait_numbers(2)
    return target



def verify(proc: Proc, child: bool = False) -> None:
    """Make the process check every byte of its memory (and its child's)."""
    start = len(proc.out.lines())
    os.kill(proc.pid, signal.SIGUSR1)
    line = proc.out.wait_line(r"^verify ", timeout=30, start=start)
    assert line.startswith("verify ok "), line
    if child:
        line = proc.out.wait_line(r"^child verify ", timeout=30, start=start)
        assert line.startswith("child verify ok "), line


def churn(proc: Proc) -> None:
    start = len(proc.out.lines())
    os.kill(proc.pid, signal.SIGUSR2)
    proc.out.wait_line(r"^churned \d+$", timeout=10, start=start)


def pages_size(images: Path, pid: int) -> int:
    return pages_bytes(images, pid)


def inventory(images: Path) -> dict:
    return json.loads((images / "inventory.json").read_text())


def mm(images: Path, pid: int) -> dict:
    return json.loads((images / f"mm-{pid}.json").read_text())


def still_running(proc: Proc) -> None:
    """A pre-dumped process runs on, untraced: its counter goes on."""
    n = len(proc.out.numbers())
    proc.out.wait_numbers(n + 2)
    with open(f"/proc/{proc.pid}/status") as f:
        assert "TracerPid:\t0\n" in f.read()


def restore_and_check(procs: Procs, target: Proc, images: Path, before: int,
                      child: bool = False) -> Proc:
    restored = restore_detached(procs, target.pid, target.out, images, timeout=120)
    if child:
        procs.adopt(only_child(restored.pid), target.out)
    target.out.wait_numbers(before + 2)
    verify(restored, child=child)
    target.out.wait_numbers(len(target.out.numbers()) + 1)
    assert_consecutive(target.out.numbers())
    return restored


def page_server(procs: Procs, directory: Path) -> tuple[subprocess.Popen[str], int]:
    """``ckpt page-server`` in the background on a free port; returns it and the port."""
    server = subprocess.Popen(ckpt_cmd() + ["page-server", "-D", str(directory), "--port", "0",
                                            "--address", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith("ckpt page-server: listening on 127.0.0.1:"), line
    return server, int(line.rsplit(":", 1)[1])


def server_done(server: subprocess.Popen[str]) -> None:
    _out, err = server.communicate(timeout=scaled(60))
    assert server.returncode == 0, err


# ---------------------------------------------------------------- chains

def test_pre_dumps_then_dump_write_only_what_changed(build: Builder, procs: Procs,
                                                     tmp_path: Path) -> None:
    """pre-dump -> pre-dump -> dump of a tree whose mappings move between them: the last
    dump writes little, and a restore from it gets every byte back from the chain."""
    target = start_incr(procs, build, "-f")
    pid, kid = target.pid, only_child(target.pid)
    original_kid = procs.adopt(kid, target.out)  # reaped here once killed (a subreaper)
    d1, d2, d3 = tmp_path / "1", tmp_path / "2", tmp_path / "3"

    ckpt_ok("pre-dump", "-t", pid, "-D", d1, "--track-mem", timeout=120)
    still_running(target)
    assert pages_size(d1, pid) >= REGION
    assert inventory(d1)["type"] == "pre-dump" and inventory(d1)["parent"] is None
    assert not (d1 / f"core-{pid}.json").exists()
    assert {f"mm-{pid}.json", f"mm-{kid}.json"} <= set(inventory(d1)["files"])

    churn(target)  # moved, new and dropped mappings between the pre-dumps
    ckpt_ok("pre-dump", "-t", pid, "-D", d2, "--prev-images-dir", "../1", "--track-mem")
    still_running(target)
    parent = inventory(d2)["parent"]
    assert parent["dir"] == "../1"
    assert parent["crc32"] == inventory(d1)["crc32"]
    assert pages_size(d2, pid) < SMALL
    assert mm(d2, pid)["in_parent"] and mm(d2, kid)["in_parent"]

    churn(target)  # and again before the last one
    ckpt_ok("dump", "-t", pid, "-D", d3, "--prev-images-dir", "../2", "--track-mem")
    procs.wait_gone(target)
    procs.wait_gone(original_kid)
    before = len(target.out.numbers())
    assert inventory(d3)["type"] == "dump" and inventory(d3)["parent"]["dir"] == "../2"
    assert pages_size(d3, pid) < SMALL, f"{pages_size(d3, pid)} bytes for {REGION}"
    assert pages_size(d3, kid) < 2 * MIB
    in_parent = sum(n for _, n in mm(d3, pid)["in_parent"]) * pagemap.PAGE
    assert in_parent > REGION - SMALL

    restore_and_check(procs, target, d3, before, child=True)


def test_pre_dump_while_mappings_change(build: Builder, procs: Procs,
                                        tmp_path: Path) -> None:
    """Pre-dumps copy pages while the process runs: it unmaps, moves and maps again
    all the time (and drops pages) meanwhile; the dump after still restores exactly."""
    target = start_incr(procs, build, "-m", "160", "-c")
    pid = target.pid
    ckpt_ok("pre-dump", "-t", pid, "-D", tmp_path / "1", "--track-mem")
    ckpt_ok("pre-dump", "-t", pid, "-D", tmp_path / "2", "--track-mem", "--prev-images-dir",
            "../1")
    ckpt_ok("dump", "-t", pid, "-D", tmp_path / "3", "--prev-images-dir", "../2")
    procs.wait_gone(target)
    assert pages_size(tmp_path / "3", pid) < SMALL
    restore_and_check(procs, target, tmp_path / "3", len(target.out.numbers()))


def test_dump_after_dump_with_track_mem(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """A dump -R --track-mem is a parent like a pre-dump; chains go through it."""
    target = start_incr(procs, build, "-m", "160")
    pid = target.pid
    ckpt_ok("dump", "-t", pid, "-D", tmp_path / "a", "-R", "--track-mem")
    still_running(target)
    churn(target)
    ckpt_ok("dump", "-t", pid, "-D", tmp_path / "b", "--prev-images-dir", "../a")
    procs.wait_gone(target)
    assert pages_size(tmp_path / "b", pid) < SMALL
    restore_and_check(procs, target, tmp_path / "b", len(target.out.numbers()))


def test_parent_without_tracking_gives_a_full_dump(build: Builder, procs: Procs,
                                                    tmp_path: Path) -> None:
    """No usable memory tracking in the parent: every page is saved again, said in the
    log, and the images stand alone (no parent link)."""
    target = start_incr(procs, build, "-m", "160")
    pid = target.pid
    ckpt_ok("pre-dump", "-t", pid, "-D", tmp_path / "p")  # no --track-mem
    res = ckpt_ok("dump", "-t", pid, "-D", tmp_path / "d", "--prev-images-dir", "../p")
    assert "without --track-mem; saving every page (full dump)" in res.stderr
    procs.wait_gone(target)
    assert pages_size(tmp_path / "d", pid) >= 160 * MIB
    assert inventory(tmp_path / "d")["parent"] is None
    restore_and_check(procs, target, tmp_path / "d", len(target.out.numbers()))


def test_soft_dirty_unavailable_falls_back(build: Builder, procs: Procs,
                                          tmp_path: Path) -> None:
    """With soft-dirty as the only tracker (CKPT_TRACK_MEM=soft-dirty): on a kernel
    without CONFIG_MEM_SOFT_DIRTY --track-mem says it cannot track and the dump after
    is full; on a kernel with it, the dump after is small. Restored right either way."""
    env = dict(os.environ, CKPT_TRACK_MEM="soft-dirty")
    target = start_incr(procs, build, "-m", "160")
    pid = target.pid
    pre = subprocess.run(ckpt_cmd() + ["pre-dump", "-t", str(pid), "-D", str(tmp_path / "p"),
                                       "--track-mem"], env=env, capture_output=True, text=True)
    assert pre.returncode == 0, pre.stderr
    churn(target)
    dump = subprocess.run(ckpt_cmd() + ["dump", "-t", str(pid), "-D", str(tmp_path / "d"),
                                        "--prev-images-dir", "../p"],
                          env=env, capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    procs.wait_gone(target)
    if pagemap.probe().soft_dirty:
        assert mm(tmp_path / "p", pid)["tracking"]["method"] == "soft-dirty"
        assert pages_size(tmp_path / "d", pid) < SMALL
    else:
        assert "soft-dirty tracking is not available" in pre.stderr
        assert mm(tmp_path / "p", pid)["tracking"] is None
        assert "saving every page (full dump)" in dump.stderr
        assert pages_size(tmp_path / "d", pid) >= 160 * MIB
    restore_and_check(procs, target, tmp_path / "d", len(target.out.numbers()))


def test_chain_with_a_changed_parent_is_refused(build: Builder, procs: Procs,
                                                tmp_path: Path) -> None:
    """A parent whose files changed, or that was dumped again, or is gone: the restore
    refuses, naming the file, before it creates anything."""
    target = start_incr(procs, build, "-m", "160")
    pid = target.pid
    parent, child = tmp_path / "parent", tmp_path / "child"
    ckpt_ok("pre-dump", "-t", pid, "-D", parent, "--track-mem")
    ckpt_ok("dump", "-t", pid, "-D", child, "--prev-images-dir", "../parent")
    procs.wait_gone(target)

    pages = parent / f"pages-{pid}.img"
    with open(pages, "r+b") as f:  # one byte in the middle of the parent's page data
        f.seek(pages.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    err = ckpt_fails("restore", "-D", child, "-d")
    assert f"{pages}: corrupted (checksum mismatch)" in err
    assert "parent images of" in err
    assert not os.path.exists(f"/proc/{pid}")
    with open(pages, "r+b") as f:  # put it back: the chain restores again
        f.seek(pages.stat().st_size // 2)
        f.write(byte)

    inv = parent / "inventory.json"
    saved = inv.read_bytes()
    body = json.loads(saved)  # a parent dumped again: its inventory is another one
    body["created"] = "2000-01-01T00:00:00+0000"
    del body["crc32"]
    body["crc32"] = zlib.crc32(_canonical(body))
    inv.write_text(json.dumps(body))
    err = ckpt_fails("restore", "-D", child, "-d")
    assert f"{inv}: the parent images of {child} changed since they were dumped" in err
    assert not os.path.exists(f"/proc/{pid}")

    inv.write_bytes(saved)
    os.rename(parent, tmp_path / "elsewhere")
    err = ckpt_fails("restore", "-D", child, "-d")
    assert f"{parent}: the parent images of {child} are missing" in err
    os.rename(tmp_path / "elsewhere", parent)

    err = ckpt_fails("restore", "-D", parent, "-d")
    assert "holds a pre-dump" in err
    restore_and_check(procs, target, child, len(target.out.numbers()))


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_older_versions_are_refused(build: Builder, procs: Procs, images: Path,
                                    version: int) -> None:
    """Folders of versions 1 to 5 do not say which capabilities and per-thread
    credentials the process had: restoring them would grant ckpt's. They are refused,
    naming the version; nothing is created."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    dump_and_check_dead(procs, target, images)
    body = inventory(images)
    assert body["version"] == 11
    del body["crc32"]
    body["version"] = version
    body["crc32"] = zlib.crc32(_canonical(body))
    (images / "inventory.json").write_text(json.dumps(body, indent=1))
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"image format version {version} is not supported" in err, err
    assert not os.path.exists(f"/proc/{target.pid}")


# ---------------------------------------------------------------- page server

def test_page_server_dump_and_restore(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """A dump sent to a page server: the receiving folder restores, the sender's has
    everything but the page data."""
    received, local = tmp_path / "received", tmp_path / "local"
    server, port = page_server(procs, received)
    target = start_incr(procs, build, "-m", "160")
    pid = target.pid
    before = dump_and_check_dead(procs, target, local, "--page-server", "--address",
                                 "127.0.0.1", "--port", str(port))
    server_done(server)
    assert not (local / f"pages-{pid}.img").exists()
    assert pages_size(received, pid) >= 160 * MIB
    assert (local / "inventory.json").read_bytes() == (received / "inventory.json").read_bytes()
    restore_and_check(procs, target, received, len(before))


def test_page_server_refuses_what_it_cannot_take(procs: Procs, tmp_path: Path) -> None:
    """No page server listening, or one writing into the dump's own folder: the dump
    fails before it freezes anything, and says why."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = procs.start(["sleep", "30"])
    err = ckpt_fails("dump", "-t", target.pid, "-D", tmp_path / "x", "--page-server",
                     "--address", "127.0.0.1", "--port", str(port))
    assert f"cannot connect to the page server at 127.0.0.1:{port}" in err
    server, port = page_server(procs, tmp_path / "same")
    err = ckpt_fails("dump", "-t", target.pid, "-D", tmp_path / "same", "--page-server",
                     "--address", "127.0.0.1", "--port", str(port))
    assert "writes into" in err and "itself" in err
    server.kill()
    server.communicate()
    assert is_alive(target.pid)
    err = ckpt_fails("dump", "-t", target.pid, "-D", tmp_path / "y", "--page-server",
                     code=1)
    assert "--page-server needs --address and --port" in err


def test_failed_dump_leaves_no_images_on_the_page_server(build: Builder, procs: Procs,
                                                         tmp_path: Path) -> None:
    """A dump refused after it connected: the page server says the dump is incomplete,
    exits with an error, and its folder has no inventory; the target runs on."""
    target = procs.start([build("holdfd"), "pidfd"])  # a pidfd on PID 1: refused by the dump
    target.out.wait_numbers(2)
    server, port = page_server(procs, tmp_path / "received")
    err = ckpt_fails("dump", "-t", target.pid, "-D", tmp_path / "local", "--page-server",
                     "--address", "127.0.0.1", "--port", str(port))
    assert "pidfd" in err
    _out, server_err = server.communicate(timeout=scaled(30))
    assert server.returncode == 1
    assert "holds no complete dump" in server_err
    assert not (tmp_path / "received" / "inventory.json").exists()
    assert is_alive(target.pid)
    target.out.wait_numbers(len(target.out.numbers()) + 2)


@pytest.mark.parametrize("command, point", [("dump", "dump.task.pages"),
                                            ("pre-dump", "predump.inventory")])
@pytest.mark.usefixtures("own_notes")  # no other helper's ckpt recovers them
def test_killed_dump_leaves_no_images_on_the_page_server(
        build: Builder, procs: Procs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        command: str, point: str) -> None:
    """ckpt dump (pre-dump) SIGKILLed once pages went to the page server: the target runs
    on untraced with its memory intact, the server says the dump is incomplete and exits
    with an error, and its folder, without inventory, is refused by a restore in one
    line."""
    target = start_incr(procs, build)
    received = tmp_path / "received"
    server, port = page_server(procs, received)
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt(command, "-t", target.pid, "-D", tmp_path / "local", "--page-server",
                   "--address", "127.0.0.1", "--port", port, timeout=120)
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    _out, server_err = server.communicate(timeout=scaled(30))
    assert server.returncode == 1, server_err
    assert "holds no complete dump" in server_err, server_err
    assert not (received / "inventory.json").exists()
    assert pages_size(received, target.pid) > 0  # pages came before ckpt died
    still_running(target)
    verify(target)
    err = ckpt_fails("restore", "-D", received, "-d")  # after undoing what ckpt left
    assert [ln for ln in err.splitlines() if "error" in ln] == [
        f"ckpt restore: error: {received}/inventory.json: missing; {received} holds no "
        "complete dump"], err


@pytest.mark.parametrize("point", ["dump.task.pages", "dump.inventory"])
def test_page_server_killed_mid_dump(build: Builder, procs: Procs, tmp_path: Path,
                                     point: str) -> None:
    """The page server SIGKILLed while a dump sends it pages (sendmsg), or its other images
    (sendfile): the dump fails in one line naming the page server's connection (not a
    SIGPIPE of ckpt's own), the target runs on untraced with its memory intact, and
    neither folder holds an inventory; a dump into a fresh page server works after."""
    target = start_incr(procs, build)
    server, port = page_server(procs, tmp_path / "received")
    with ckpt_stopped_at(point, "dump", "-t", target.pid, "-D",
                         tmp_path / "local", "--page-server", "--address", "127.0.0.1",
                         "--port", port) as dump:
        server.kill()
        server.communicate(timeout=scaled(30))
        dump.send_signal(signal.SIGCONT)
        _, err = dump.communicate(timeout=scaled(120))
    assert dump.returncode == 1, err
    assert "Traceback" not in err and "SIGPIPE" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"the connection to the page server at 127.0.0.1:{port} broke" in err, err
    for side in ("local", "received"):
        assert not (tmp_path / side / "inventory.json").exists(), side
    still_running(target)
    verify(target)
    server, port = page_server(procs, tmp_path / "again")
    ckpt_ok("dump", "-R", "-t", target.pid, "-D", tmp_path / "local2", "--page-server",
            "--address", "127.0.0.1", "--port", str(port))
    server_done(server)
    still_running(target)


def test_page_server_gone_before_its_reply(build: Builder, procs: Procs,
                                           tmp_path: Path) -> None:
    """A server that took every image in and ended before its reply to the finish (a
    page server killed at that moment, whose end the dump sees only in its wait for the
    reply, as a closed or reset connection): the dump fails as when a send breaks, in
    one line naming the connection, the target running on."""
    import threading

    from ckpt import page_server as ps
    target = start_incr(procs, build)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def exact(conn: socket.socket, n: int) -> bytes:
        got = b""
        while len(got) < n:
            part = conn.recv(n - len(got))
            assert part, "the dump closed the connection"
            got += part
        return got

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            exact(conn, len(ps.MAGIC) + 4)
            hello = json.dumps({"dir": "/nowhere", "dev": 0, "ino": 0}).encode()
            conn.sendall(ps.REPLY.pack(0, len(hello)) + hello)
            while True:
                op, _fid, arg = ps.HDR.unpack(exact(conn, ps.HDR.size))
                if op in (ps.OPEN, ps.DATA):
                    exact(conn, arg)
                elif op == ps.FINISH:
                    return  # closed, no reply

    server = threading.Thread(target=serve)
    server.start()
    try:
        err = ckpt_fails("dump", "-t", target.pid, "-D", tmp_path / "local", "--page-server",
                         "--address", "127.0.0.1", "--port", port)
    finally:
        server.join(scaled(60))
        lsock.close()
    assert err.strip() == (f"ckpt dump: error: the connection to the page server at "
                           f"127.0.0.1:{port} broke before its reply to the finish; the dump "
                           "is not complete"), err
    assert not (tmp_path / "local" / "inventory.json").exists()
    still_running(target)
    verify(target)


def test_live_migration_over_page_server(build: Builder, procs: Procs,
                                         tmp_path: Path) -> None:
    """Live migration on one machine: pre-dump over a page server while the tree runs,
    then the final dump over another with --prev-images-dir, restore where they went."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    target = start_incr(procs, build, "-f")
    pid, kid = target.pid, only_child(target.pid)
    original_kid = procs.adopt(kid, target.out)  # reaped here once killed (a subreaper)

    server, port = page_server(procs, dst / "1")
    ckpt_ok("pre-dump", "-t", pid, "-D", src / "1", "--track-mem", "--page-server",
            "--address", "127.0.0.1", "--port", str(port), timeout=120)
    server_done(server)
    still_running(target)
    assert pages_size(dst / "1", pid) >= REGION
    assert not (src / "1" / f"pages-{pid}.img").exists()

    churn(target)
    server, port = page_server(procs, dst / "2")
    ckpt_ok("dump", "-t", pid, "-D", src / "2", "--prev-images-dir", "../1", "--track-mem",
            "--page-server", "--address", "127.0.0.1", "--port", str(port))
    server_done(server)
    procs.wait_gone(target)
    procs.wait_gone(original_kid)
    assert pages_size(dst / "2", pid) < SMALL
    assert pages_size(dst / "2", kid) < 2 * MIB
    assert inventory(dst / "2")["parent"]["dir"] == "../1"
    restore_and_check(procs, target, dst / "2", len(target.out.numbers()), child=True)

