"""criu's RPC served by ``ckpt swrk FD``: each request type, notifications in order,
dump and restore of real processes through it, inherit_fd as runc uses it, and
malformed or refused requests answered with an error."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ckpt.hooks import DUMP_ACTIONS, RESTORE_ACTIONS
from ckpt.rpc import schema
from ckpt_helpers import (
    Builder,
    Output,
    Proc,
    Procs,
    assert_consecutive,
    is_alive,
    proc_ppid,
    proc_state,
    scaled,
    wait_until,
)
from criu_rpc import Client, criu_cmd, open_dir

NOTIFY_ACK = {"type": schema.NOTIFY, "notify_success": True}


def _ok(resp: dict[str, Any], kind: int) -> dict[str, Any]:
    assert resp["type"] == kind and resp["success"], resp
    return resp


def _refused(resp: dict[str, Any], kind: int, *words: str) -> str:
    """Insist ``resp`` is a failed answer to ``kind`` whose message has every word."""
    assert resp["type"] == kind and not resp["success"], resp
    msg = resp.get("cr_errmsg", "")
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def _closed_with(client: Client, code: int) -> None:
    got, err = client.close()
    assert got == code, f"ckpt swrk exited {got}, expected {code}: {err}"
    assert "Traceback" not in err, err


# ------------------------------------------------------------ the service requests

def test_version_feature_check_keep_open() -> None:
    """VERSION says criu >= 3.0 (runc's minimum); with keep_open the session goes on."""
    with Client() as c:
        resp = _ok(c.call({"type": schema.VERSION, "keep_open": True}), schema.VERSION)
        v = resp["version"]
        assert (v["major_number"], v["minor_number"]) >= (3, 0)
        assert v["gitid"].startswith("ckpt-")
        resp = _ok(c.call({"type": schema.FEATURE_CHECK, "features": {"mem_track": True}}),
                   schema.FEATURE_CHECK)
        assert resp["features"] == {"mem_track": True, "lazy_pages": False,
                                    "pidfd_store": False}
        _closed_with(c, 0)


def test_check() -> None:
    with Client() as c:
        _ok(c.call({"type": schema.CHECK}), schema.CHECK)
        _closed_with(c, 0)


def test_criu_version_line() -> None:
    """``ckpt-criu --version`` prints criu's "Version: X.Y" line, which runc parses."""
    res = subprocess.run([*criu_cmd(), "--version"], capture_output=True, text=True,
                         timeout=scaled(60))
    assert res.returncode == 0, res.stderr
    m = re.match(r"Version: (\d+)\.(\d+)(?:\.(\d+))?\n", res.stdout)
    assert m and (int(m[1]), int(m[2])) >= (3, 0), res.stdout
    assert "GitID: ckpt-" in res.stdout
    assert subprocess.run([*criu_cmd(), "-V"], capture_output=True, text=True,
                          timeout=scaled(60)).stdout == res.stdout


def test_criu_entry_point_serves_swrk_and_ckpt_commands(tmp_path: Path) -> None:
    """Named as criu, ``ckpt-criu swrk FD`` serves the RPC, other commands are ckpt's."""
    with Client(cmd=criu_cmd()) as c:
        _ok(c.call({"type": schema.VERSION}), schema.VERSION)
        _closed_with(c, 0)
    res = subprocess.run([*criu_cmd(), "restore", "-D", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=scaled(60))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr


# ------------------------------------------------------------ dump and restore

def _dump_req(pid: int, images_fd: int, **opts: Any) -> dict[str, Any]:
    return {"type": schema.DUMP, "opts": {"images_dir_fd": images_fd, "pid": pid,
                                          "log_level": 4, "log_file": "dump.log", **opts}}


def _restore_req(images_fd: int, **opts: Any) -> dict[str, Any]:
    return {"type": schema.RESTORE, "opts": {"images_dir_fd": images_fd, "log_level": 4,
                                             "log_file": "restore.log", **opts}}


def test_dump_and_restore_with_notifications(build: Builder, procs: Procs,
                                             images: Path) -> None:
    """runc's sequence on a plain process: DUMP with notify_scripts (each notification
    acknowledged, in criu's order, the process frozen from query-ext-files to post-dump),
    then RESTORE as a sibling: post-restore names the PID while the process is still
    stopped, and the response carries it; the counter goes on under its PID."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    images_fd = open_dir(images)
    seen: dict[str, str | None] = {}

    def watch(script: str, pid: int) -> None:
        seen[script] = proc_state(target.pid)

    try:
        with Client() as c:
            resp = c.call(_dump_req(target.pid, images_fd, notify_scripts=True), watch)
            _ok(resp, schema.DUMP)
            assert resp["dump"] == {"restored": False}
            assert c.notes == [("pre-dump", 0), ("query-ext-files", 0), ("post-dump", 0)]
            assert [a for a, _ in c.notes] == list(DUMP_ACTIONS)
            _closed_with(c, 0)
        assert seen["pre-dump"] in ("R", "S"), seen
        assert seen["query-ext-files"] == "t" and seen["post-dump"] == "t", seen
        assert procs.wait_gone(target) == -signal.SIGKILL
        before = target.out.numbers()
        assert "dump" in (images / "dump.log").read_text()

        with Client() as c:
            resp = c.call(_restore_req(images_fd, notify_scripts=True, rst_sibling=True),
                          watch)
            _ok(resp, schema.RESTORE)
            assert resp["restore"]["pid"] == target.pid
            # rst_sibling: our child at once, not ckpt's (ckpt is still there)
            assert proc_ppid(target.pid) == os.getpid()
            assert c.notes == [("pre-restore", 0), ("post-restore", target.pid),
                               ("pre-resume", 0), ("post-resume", 0)]
            assert [a for a, _ in c.notes] == list(RESTORE_ACTIONS)
            _closed_with(c, 0)
        assert seen["post-restore"] == "t" and seen["pre-resume"] == "t", seen
        procs.adopt(target.pid, target.out)
        nums = target.out.wait_numbers(len(before) + 5)
        assert_consecutive(nums)
        assert is_alive(target.pid)
        assert "restored" in (images / "restore.log").read_text()
    finally:
        os.close(images_fd)


def test_restore_in_a_new_pidns_as_a_sibling(build: Builder, procs: Procs,
                                             images: Path) -> None:
    """criu has no RPC field for ckpt's --new-pidns: empty_ns CLONE_NEWPID at RESTORE
    asks for it (a bit criu refuses). With rst_sibling, the namespace's init is the
    client's child (the root must be the init's): the counter goes on under its saved
    PID inside, the response and post-restore name its PID on the host, and the init
    ends with the root's status, which the client reaps."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    images_fd = open_dir(images)
    try:
        with Client() as c:
            _ok(c.call(_dump_req(target.pid, images_fd)), schema.DUMP)
            _closed_with(c, 0)
        procs.wait_gone(target)
        before = target.out.numbers()
        with Client() as c:
            resp = c.call(_restore_req(images_fd, empty_ns=0x20000000, rst_sibling=True,
                                       notify_scripts=True))
            _ok(resp, schema.RESTORE)
            notes = c.notes
            _closed_with(c, 0)
    finally:
        os.close(images_fd)
    root = resp["restore"]["pid"]
    assert notes == [("pre-restore", 0), ("post-restore", root), ("pre-resume", 0),
                     ("post-resume", 0)], notes  # the PID as the client sees it
    status = Path(f"/proc/{root}/status").read_text()
    nspid = [int(x) for x in re.findall(r"^NSpid:\s+(.*)$", status, re.M)[0].split()]
    assert nspid == [root, target.pid], nspid
    init = proc_ppid(root)
    assert proc_ppid(init) == os.getpid(), "the namespace's init is not the client's child"
    nums = target.out.wait_numbers(len(before) + 5)
    assert_consecutive(nums)
    os.kill(root, signal.SIGTERM)
    pid, wstatus = os.waitpid(init, 0)
    assert os.waitstatus_to_exitcode(wstatus) == 128 + signal.SIGTERM


def _start_on_pipe(procs: Procs, argv: list[str]) -> tuple[Proc, int]:
    """Start ``argv`` in a new session with its stdout on a pipe; (proc, read end)."""
    r, w = os.pipe()
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(w)
    proc = Proc(popen.pid, Output(Path(os.devnull)), popen, os.pidfd_open(popen.pid))
    procs.tracked.append(proc)
    return proc, r


def _read_numbers(fd: int, count: int) -> list[int]:
    """Numbers read from pipe ``fd`` until ``count`` lines or the end of the pipe."""
    buf = b""
    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
        while buf.count(b"\n") < count:
            chunk = f.read(4096)
            if not chunk:
                break
            buf += chunk
    return [int(x) for x in buf.split(b"\n") if x.strip()]


def test_inherit_fd_replaces_stdout_pipe(build: Builder, procs: Procs, images: Path) -> None:
    """runc's container stdio: the counter's stdout pipe went away with the dump; the
    RESTORE names it pipe:[INODE] in inherit_fd with ckpt's own fd 1 (a new pipe,
    given to ckpt swrk as its stdout, as runc does). The numbers go on in the new pipe."""
    target, old_r = _start_on_pipe(procs, [str(build("counter"))])
    key = os.readlink(f"/proc/{target.pid}/fd/1")
    assert key.startswith("pipe:[")
    images_fd = open_dir(images)
    new_r, new_w = os.pipe()
    try:
        seen = _read_numbers(old_r, 3)  # maybe all the counter printed before the dump
        with Client() as c:
            _ok(c.call(_dump_req(target.pid, images_fd)), schema.DUMP)
            _closed_with(c, 0)
        assert procs.wait_gone(target) == -signal.SIGKILL
        last = (seen + _read_numbers(old_r, 1 << 30))[-1]  # everything up to the dump
        with Client(stdio=(None, new_w, None)) as c:
            resp = c.call(_restore_req(images_fd, inherit_fd=[{"key": key, "fd": 1}]))
            _ok(resp, schema.RESTORE)
            _closed_with(c, 0)
        os.close(new_w)
        new_w = -1
        procs.adopt(target.pid, target.out)
        assert os.readlink(f"/proc/{target.pid}/fd/1") != key
        nums = _read_numbers(new_r, 5)
        assert nums[:5] == list(range(last + 1, last + 6)), (last, nums)
    finally:
        for fd in (images_fd, old_r, new_r, new_w):
            if fd >= 0:
                os.close(fd)


def test_pre_dump_then_dump_in_one_session(build: Builder, procs: Procs,
                                           tmp_path: Path) -> None:
    """PRE_DUMP with track_mem, then DUMP naming it as parent_img, in one session (criu's
    pre-dump loop); the process restores from the pair."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    pre_fd, final_fd = open_dir(tmp_path / "pre"), open_dir(tmp_path / "final")
    try:
        with Client() as c:
            _ok(c.call({"type": schema.PRE_DUMP, "opts": {
                "images_dir_fd": pre_fd, "pid": target.pid, "track_mem": True}}),
                schema.PRE_DUMP)
            assert is_alive(target.pid)
            _ok(c.call(_dump_req(target.pid, final_fd, track_mem=True,
                                 parent_img="../pre")), schema.DUMP)
            _closed_with(c, 0)
        assert procs.wait_gone(target) == -signal.SIGKILL
        before = target.out.numbers()
        with Client() as c:  # exec_cmd: ckpt becomes this command once it has answered
            _ok(c.call(_restore_req(final_fd, exec_cmd=["/bin/sh", "-c", "echo executed"])),
                schema.RESTORE)
            _closed_with(c, 0)
        procs.adopt(target.pid, target.out)
        assert_consecutive(target.out.wait_numbers(len(before) + 3))
        assert (tmp_path / "final" / "restore.log").read_text().endswith("executed\n")
    finally:
        os.close(pre_fd)
        os.close(final_fd)


def test_page_server_request(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """PAGE_SERVER starts a page server (keep_open), a DUMP in another session sends the
    images to it (opts.ps), WAIT_PID reaps it, and the received images restore."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    src_fd, dst_fd = open_dir(tmp_path / "src"), open_dir(tmp_path / "dst")
    try:
        with Client() as server:
            resp = _ok(server.call({"type": schema.PAGE_SERVER, "keep_open": True, "opts": {
                "images_dir_fd": dst_fd, "log_file": "ps.log",
                "ps": {"address": "127.0.0.1", "port": 0}}}), schema.PAGE_SERVER)
            ps = resp["ps"]
            assert ps["port"] > 0 and ps["pid"] > 0
            with Client() as c:
                _ok(c.call(_dump_req(target.pid, src_fd, ps={"address": "127.0.0.1",
                                                             "port": ps["port"]})),
                    schema.DUMP)
                _closed_with(c, 0)
            resp = _ok(server.call({"type": schema.WAIT_PID, "pid": ps["pid"]}),
                       schema.WAIT_PID)
            assert os.waitstatus_to_exitcode(resp["status"]) == 0
            _closed_with(server, 0)
        assert procs.wait_gone(target) == -signal.SIGKILL
        before = target.out.numbers()
        assert not list((tmp_path / "src").glob("pages-*.img"))
        with Client() as c:
            _ok(c.call(_restore_req(dst_fd)), schema.RESTORE)
            _closed_with(c, 0)
        procs.adopt(target.pid, target.out)
        assert_consecutive(target.out.wait_numbers(len(before) + 3))
    finally:
        os.close(src_fd)
        os.close(dst_fd)


@pytest.mark.skipif(shutil.which("criu") is None, reason="criu is not installed")
def test_criu_itself_reads_our_requests() -> None:
    """The codec against criu's own: criu swrk answers a VERSION request we encoded."""
    with Client(cmd=["criu"]) as c:
        resp = _ok(c.call({"type": schema.VERSION}), schema.VERSION)
        assert resp["version"]["major_number"] >= 3


def test_client_refusing_post_dump_leaves_process_running(build: Builder, procs: Procs,
                                                          images: Path) -> None:
    """A client that answers post-dump with a failure: the dump fails and the process
    runs on as it was (criu's post-dump script semantics), with no inventory left."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(2)
    images_fd = open_dir(images)

    def refuse(script: str, pid: int) -> dict[str, Any] | None:
        return {"type": schema.NOTIFY, "notify_success": False} if script == "post-dump" \
            else None

    try:
        with Client() as c:
            resp = c.call(_dump_req(target.pid, images_fd, notify_scripts=True), refuse)
            _refused(resp, schema.DUMP, "post-dump")
            _closed_with(c, 1)
        assert is_alive(target.pid) and proc_state(target.pid) != "t"
        n = len(target.out.numbers())
        target.out.wait_numbers(n + 2)
        assert not (images / "inventory.json").exists()
    finally:
        os.close(images_fd)


def test_client_refusing_post_restore_kills_what_was_restored(build: Builder, procs: Procs,
                                                              images: Path) -> None:
    """A client that fails post-restore: the restore is undone, the PID is free again."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(2)
    images_fd = open_dir(images)
    try:
        with Client() as c:
            _ok(c.call(_dump_req(target.pid, images_fd)), schema.DUMP)
            _closed_with(c, 0)
        procs.wait_gone(target)
        with Client() as c:
            resp = c.call(_restore_req(images_fd, notify_scripts=True),
                          lambda script, pid: {"type": schema.NOTIFY, "notify_success": False}
                          if script == "post-restore" else None)
            _refused(resp, schema.RESTORE, "post-restore")
            assert resp["restore"]["pid"] == -1
            _closed_with(c, 1)
        wait_until(lambda: not os.path.exists(f"/proc/{target.pid}"), 10,
                   f"process {target.pid} to be gone")
    finally:
        os.close(images_fd)


# ------------------------------------------------------------ errors

@pytest.mark.parametrize("packet, words", [
    (b"\xff", ["malformed", "varint"]),
    (b"\x08", ["malformed", "varint"]),
    (b"\x12\x05ab", ["malformed", "past the end"]),
    (b"\x18\x01", ["malformed", "required field type"]),  # notify_success only
    (b"\x08\x01\x12\x03\x08\x80\x80", ["malformed", "varint"]),  # truncated inside opts
    (b"\x08\x01\x13", ["malformed", "wire type 3"]),
    (b"", ["malformed", "required field type"]),  # an empty packet is no request
], ids=["bad-varint", "truncated-varint", "truncated-field", "no-type", "truncated-opts",
        "group", "empty"])
def test_malformed_packets(packet: bytes, words: list[str]) -> None:
    with Client() as c:
        c.send_raw(packet)
        resp = c.recv()
        _refused(resp, schema.EMPTY, *words)
        assert resp["cr_errno"] == errno.EBADMSG
        _closed_with(c, 1)


@pytest.mark.parametrize("req, kind, words", [
    ({"type": 42}, schema.EMPTY, ["request type 42"]),
    ({"type": schema.NOTIFY, "notify_success": True}, schema.EMPTY, ["not a request"]),
    ({"type": schema.DUMP}, schema.DUMP, ["without opts"]),
    ({"type": schema.DUMP, "keep_open": True, "opts": {"images_dir_fd": -1}},
     schema.DUMP, ["keep_open"]),
    ({"type": schema.CPUINFO_CHECK}, schema.CPUINFO_CHECK, ["not supported"]),
    ({"type": schema.WAIT_PID, "pid": 1}, schema.WAIT_PID, ["not a process"]),
    ({"type": schema.RESTORE, "opts": {"images_dir_fd": -1}}, schema.RESTORE,
     ["images_dir"]),
    ({"type": schema.RESTORE, "opts": {"images_dir_fd": 9999}}, schema.RESTORE,
     ["images_dir_fd 9999"]),
], ids=["unknown-type", "notify", "no-opts", "keep-open", "cpuinfo", "wait-pid",
        "no-images", "bad-images-fd"])
def test_bad_requests(req: dict[str, Any], kind: int, words: list[str]) -> None:
    with Client() as c:
        _refused(c.call(req), kind, *words)
        _closed_with(c, 1)


@pytest.mark.parametrize("opt, value, words", [
    ("veths", [{"if_in": "a", "if_out": "b"}], ["veths", "containers"]),
    ("cg_root", [{"path": "/sys/fs/cgroup/x"}], ["cg_root", "at dump"]),
    ("manage_cgroups_mode", 9, ["manage_cgroups_mode", "unknown mode 9"]),
    ("empty_ns", 0x20000000, ["empty_ns", "CLONE_NEWNET"]),
    ("lazy_pages", True, ["lazy_pages"]),
    ("log_file", "sub/dump.log", ["log_file", "'/'"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_refused_options_leave_the_process_alone(build: Builder, procs: Procs, images: Path,
                                                 opt: str, value: Any,
                                                 words: list[str]) -> None:
    """An option ckpt cannot honour is refused by name before anything is touched."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(1)
    images_fd = open_dir(images)
    try:
        with Client() as c:
            resp = c.call(_dump_req(target.pid, images_fd, **{opt: value}))
            _refused(resp, schema.DUMP, *words)
            _closed_with(c, 1)
        assert is_alive(target.pid) and proc_state(target.pid) != "t"
        assert not (images / "inventory.json").exists()
    finally:
        os.close(images_fd)


def test_neutral_container_options_are_accepted(build: Builder, procs: Procs,
                                                images: Path) -> None:
    """Options that ask for nothing (root "/", manage_cgroups false, empty_ns 0, a newer
    criu's unknown field) do not stop a dump; the unknown field is logged. Nor do
    runc's for a tree without namespaces of its own (freeze_cgroup, ext_mnt naming no
    mount of it, orphan_pts_master: accepted, logged)."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(1)
    images_fd = open_dir(images)
    try:
        with Client() as c:
            req = _dump_req(target.pid, images_fd, root="/", manage_cgroups=False, empty_ns=0,
                            tcp_established=True, leave_running=True,
                            freeze_cgroup="/sys/fs/cgroup/freezer/x", orphan_pts_master=True,
                            ext_mnt=[{"key": "/data", "val": "/data"}])
            from ckpt.rpc.wire import encode
            c.send_raw(encode(req, "req") + b"\x12\x03\xf8\x07\x01")  # opts field 127
            _ok(c.recv(), schema.DUMP)
            _closed_with(c, 0)
        assert is_alive(target.pid)
        log = (images / "dump.log").read_text()
        assert "option field 127 is unknown" in log
    finally:
        os.close(images_fd)


def test_query_ext_files_answer_adds_externals(procs: Procs, images: Path,
                                               tmp_path: Path) -> None:
    """A unix socket connected outside the tree is refused at dump, naming it; the same
    dump passes when the client names it in its answer to query-ext-files."""
    ours, theirs = socket.socketpair()
    out = tmp_path / "reader.out"
    with open(out, "wb") as f:
        reader = subprocess.Popen(["sh", "-c", 'while read l; do echo "got $l"; done'],
                                  stdin=theirs, stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    procs.adopt(reader.pid, Output(out))
    key = f"unix[{os.fstat(theirs.fileno()).st_ino}]"
    theirs.close()
    images_fd = open_dir(images)
    try:
        with Client() as c:
            resp = c.call(_dump_req(reader.pid, images_fd, notify_scripts=True,
                                    leave_running=True))
            _refused(resp, schema.DUMP, key)
            _closed_with(c, 1)

        def name_it(script: str, pid: int) -> dict[str, Any] | None:
            if script != "query-ext-files":
                return None
            return {"type": schema.NOTIFY, "notify_success": True,
                    "opts": {"images_dir_fd": -1, "external": [key]}}

        with Client() as c:
            _ok(c.call(_dump_req(reader.pid, images_fd, notify_scripts=True,
                                 leave_running=True), name_it), schema.DUMP)
            _closed_with(c, 0)
        ours.sendall(b"on\n")
        Output(out).wait_line("^got on$")  # left running, socket and all
    finally:
        os.close(images_fd)
        ours.close()


def test_file_locks_option(procs: Procs, tmp_path: Path, images: Path) -> None:
    """A tree holding a lock: refused without file_locks, naming the flag and leaving it
    running; dumped with it, and restored with its lock."""
    flock = shutil.which("flock")
    if flock is None:
        pytest.skip("flock(1) (util-linux) is not installed")
    lk = tmp_path / "lk"
    target = procs.start([flock, lk, "sleep", "1000"])
    wait_until(lambda: f" {target.pid} " in Path("/proc/locks").read_text(), 10,
               "flock(1)'s lock")
    sleeper = int(Path(f"/proc/{target.pid}/task/{target.pid}/children").read_text())
    images_fd = open_dir(images)
    try:
        with Client() as c:
            _refused(c.call(_dump_req(target.pid, images_fd)), schema.DUMP, "--file-locks")
            _closed_with(c, 1)
        assert is_alive(target.pid) and proc_state(target.pid) != "t"
        with Client() as c:
            _ok(c.call(_dump_req(target.pid, images_fd, file_locks=True)), schema.DUMP)
            _closed_with(c, 0)
        procs.wait_gone(target)
        procs.wait_gone(sleeper)
        with Client() as c:
            _ok(c.call(_restore_req(images_fd)), schema.RESTORE)
            _closed_with(c, 0)
        procs.adopt(target.pid, target.out)
        wait_until(lambda: f" {target.pid} " in Path("/proc/locks").read_text(), 10,
                   "the restored lock")
    finally:
        os.close(images_fd)


def test_libcriu_client_drives_ckpt(build: Builder, procs: Procs, images: Path) -> None:
    """criu's own C library, libcriu (what crun links when built with CRIU support;
    Debian 12's crun 1.8.1 is not, and says so), with ckpt-criu as its service binary:
    its version query, check, dump and restore of a counter, which goes on where it
    stopped under its PID."""
    if not Path("/usr/lib/x86_64-linux-gnu/libcriu.so.2").exists():
        pytest.skip("libcriu is not installed (Debian package criu)")
    client = build("libcriu_client", extra=("-l:libcriu.so.2",))
    images.mkdir(exist_ok=True)
    service = criu_cmd()
    if len(service) != 1:
        pytest.skip("libcriu needs ckpt-criu as one executable (the venv's console script)")

    def call(*args: str) -> str:
        res = subprocess.run([str(client), service[0], str(images), *args],
                             capture_output=True, text=True, timeout=scaled(60))
        log = images / "libcriu.log"
        assert res.returncode == 0, (res.stdout, res.stderr,
                                     log.read_text() if log.exists() else "")
        return res.stdout.strip()

    version = call("version").split()
    assert version[0] == "version" and int(version[1]) >= 30000, version
    assert call("check") == "check 0"
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    assert call("dump", str(target.pid)) == "dump 0"
    procs.wait_gone(target)
    before = target.out.numbers()
    assert call("restore") == f"restore {target.pid}"
    procs.adopt(target.pid, target.out)
    nums = target.out.wait_numbers(len(before) + 5)
    assert_consecutive(nums)
