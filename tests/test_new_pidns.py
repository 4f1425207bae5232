"""restore --new-pidns: the tree in a PID namespace of its own, every process under its
saved PID there, ckpt's minimal init as PID 1; the same images restored many times side
by side while the dumped tree itself runs on."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    left_behind,
    only_child,
    proc_ids,
    proc_ppid,
    proc_state,
    proc_status,
    scaled,
    wait_until,
)
from terminal import Terminal, job_control_round

TREE = PROGS / "pidns_tree.py"


def nspid(pid: int) -> list[int]:
    """``pid``'s PID in each of its namespaces, the host's first."""
    return [int(x) for x in proc_status(pid)["NSpid"].split()]


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        kids += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return kids


def role_ticks(out: Output, role: str) -> list[tuple[int, str]]:
    rx = re.compile(rf"^{role} (\d+) (.*)$")
    return [(int(m[1]), m[2]) for m in map(rx.match, out.lines()) if m]


def start_tree(procs: Procs) -> tuple[Output, int, int, int]:
    """pidns_tree.py running: its output, and the PIDs of its root, A and the zombie."""
    target = procs.start([PYTHON, TREE])
    p, a, z = map(int, target.out.wait_line(r"^pids ").split()[1:])
    for role in "PAT":
        target.out.wait_line(rf"^{role} 3 ")
    assert proc_state(z) == "Z"
    return target.out, p, a, z


def restore_copy(procs: Procs, images: Path, out: Path, key: str, *extra: str,
                 detach: bool = True) -> tuple[int, int] | subprocess.Popen[str]:
    """``ckpt restore --new-pidns`` with the file of KEY replaced by a new ``out``:
    (the root's and the init's host PIDs) with ``detach``, else the running ckpt."""
    pidfile = out.with_suffix(".pid")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    argv = ckpt_cmd() + ["restore", "-D", str(images), "--new-pidns", "--pidfile",
                         str(pidfile), "--inherit-fd", f"fd[{fd}]:{key}", *extra]
    try:
        if not detach:
            ckpt = subprocess.Popen(argv, pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            wait_until(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), 60,
                       "the pidfile")
            init = proc_ppid(int(pidfile.read_text()))
            procs.adopt(init, Output(out))
            return ckpt
        res = subprocess.run(argv + ["-d"], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=scaled(60))
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    root = int(pidfile.read_text())
    init = proc_ppid(root)
    procs.adopt(init, Output(out))
    procs.adopt(root, Output(out))
    return root, init


def check_copy(root: int, init: int, out: Output, p: int, a: int, z: int) -> None:
    """One restored copy of pidns_tree.py: its PIDs in its namespace are the saved ones,
    the init is PID 1 there and small, /proc inside names the namespace's PIDs, every
    thread and process ticks on, the zombie is back and is reaped with its status."""
    assert nspid(root)[1:] == [p] and root != p, nspid(root)
    assert nspid(init)[1:] == [1]
    assert proc_status(init)["Name"] == "ckpt-init"
    # the init unmaps ckpt's memory once the tree runs, maybe after the restore returned
    wait_until(lambda: int(proc_status(init)["VmRSS"].split()[0]) <= 64, 10,
               "the init's memory down to its one page")
    assert len(os.listdir(f"/proc/{root}/task")) == 2, "the root's thread is missing"
    kids = {nspid(k)[-1]: k for k in children(root)}
    assert sorted(kids) == sorted([a, z]), kids
    assert proc_state(kids[z]) == "Z" and is_alive(kids[a])
    assert os.readlink(f"/proc/{root}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    for role, pid in (("P", p), ("A", a), ("T", p)):
        n = len(role_ticks(out, role))
        wait_until(lambda r=role, n=n: len(role_ticks(out, r)) >= n + 3, 10,
                   f"3 more ticks of {role}")
        got = role_ticks(out, role)
        assert_consecutive([t for t, _ in got], got[0][0])
        assert {rest for _, rest in got} == {f"getpid={pid} stat={pid}"}, got[-3:]
    os.kill(root, signal.SIGUSR1)
    assert out.wait_line(r"^reaped ") == "reaped Z 5"
    wait_until(lambda: proc_state(kids[z]) is None, 10, "the zombie to be reaped")


def test_taken_pid_restored_twice_side_by_side(procs: Procs, images: Path,
                                               tmp_path: Path) -> None:
    """The tree dumped with -R keeps its PIDs: a plain restore fails naming the PID and
    --new-pidns; two --new-pidns copies then run at once beside the original."""
    out, p, a, z = start_tree(procs)
    ckpt_ok("dump", "-t", p, "-D", images, "-R")
    err = ckpt_fails("restore", "-D", images, "-d")
    assert f"PID {p} is taken" in err and "--new-pidns" in err, err
    key = str(out.path).lstrip("/")
    copies = [restore_copy(procs, images, tmp_path / f"copy{i}.out", key) for i in (1, 2)]
    for (root, init), i in zip(copies, (1, 2), strict=True):
        check_copy(root, init, Output(tmp_path / f"copy{i}.out"), p, a, z)
    assert len({c[0] for c in copies} | {p}) == 3
    for root, _ in copies:
        assert is_alive(root)
    n = len(role_ticks(out, "P"))
    wait_until(lambda: len(role_ticks(out, "P")) >= n + 3, 10, "the original's ticks")
    assert {rest for _, rest in role_ticks(out, "P")} == {f"getpid={p} stat={p}"}


def test_exit_status_passed_on_and_orphans_reaped(procs: Procs, images: Path,
                                                  tmp_path: Path) -> None:
    """Without -d ckpt waits: the init reaps an orphan of the tree, and ends with the
    root, whose exit code (7) or signal (SIGKILL: 137) ckpt exits with."""
    out, p, a, z = start_tree(procs)
    ckpt_ok("dump", "-t", p, "-D", images)
    procs.wait_gone(p)
    key = str(out.path).lstrip("/")
    ckpt = restore_copy(procs, images, tmp_path / "copy.out", key, detach=False)
    assert isinstance(ckpt, subprocess.Popen)
    copy = Output(tmp_path / "copy.out")
    root = int((tmp_path / "copy.pid").read_text())
    init = proc_ppid(root)
    copy.wait_line(r"^P \d+ ")
    os.kill(root, signal.SIGUSR2)
    orphan_ns = int(copy.wait_line(r"^orphan ").split()[1])
    orphan = next(k for k in children(init) if nspid(k)[-1] == orphan_ns)
    assert proc_ppid(orphan) == init, "the orphan was not adopted by the namespace's init"
    wait_until(lambda: proc_state(orphan) is None, 10, "the orphan to end and be reaped")
    assert is_alive(root) and is_alive(init)
    os.kill(root, signal.SIGTERM)
    assert ckpt.wait(scaled(30)) == 7, ckpt.stderr.read() if ckpt.stderr else ""
    wait_until(lambda: proc_state(init) is None, 10, "the init to end with the root")

    ckpt = restore_copy(procs, images, tmp_path / "copy2.out", key, detach=False)
    assert isinstance(ckpt, subprocess.Popen)
    root = int((tmp_path / "copy2.pid").read_text())
    Output(tmp_path / "copy2.out").wait_line(r"^A \d+ ")
    os.kill(root, signal.SIGKILL)
    assert ckpt.wait(scaled(30)) == 128 + signal.SIGKILL


def _numbers(path: Path) -> list[int]:
    text = path.read_text() if path.exists() else ""
    return [int(ln.split()[0]) for ln in text[:text.rfind("\n") + 1].splitlines()]


def dumped_job(term: Terminal, build: Builder, procs: Procs, out: Path, images: Path) -> int:
    """A counter started as a job of ``term``'s shell and dumped with -j; its PID."""
    term.run(f"{build('counter')} > {out} &")
    pid = int(re.findall(r"^PID=(\d+)$", term.run("echo PID=$!")[1], re.M)[0])
    wait_until(lambda: len(_numbers(out)) >= 3, 10, "the counter's lines")
    rc, said = term.run(f"ckpt dump -j -t {pid} -D {images}")
    assert rc == 0, said
    procs.wait_gone(pid)
    return pid


def test_shell_job_in_new_pidns_keeps_job_control(build: Builder, procs: Procs,
                                                  tmp_path: Path) -> None:
    """``ckpt restore -j --new-pidns`` in the foreground of a shell: the job has the
    terminal, Ctrl-Z stops it (and ckpt: the shell shows it stopped), ``fg`` continues
    it, Ctrl-C ends it and ckpt exits 130; its PID inside is the saved one."""
    term = Terminal(tmp_path, [str(Path(ckpt_cmd()[0]).parent)])
    try:
        out, images, pidfile = tmp_path / "out", tmp_path / "images", tmp_path / "pid"
        pid = dumped_job(term, build, procs, out, images)
        start = len(term.text())
        term.send(f"ckpt restore -j --new-pidns -D {images} --pidfile {pidfile}\n")
        wait_until(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), 30,
                   "the pidfile")
        root = int(pidfile.read_text())
        procs.adopt(proc_ppid(root), Output(out))
        assert nspid(root)[1:] == [pid]
        count = len(_numbers(out))
        wait_until(lambda: len(_numbers(out)) >= count + 5, 10, "the restored counter's lines")
        assert os.tcgetpgrp(term.master) == root, "the restored job is not in the foreground"

        job_control_round(term, root, Output(out), start)
    finally:
        term.close()


def test_job_shell_running_its_own_job_in_new_pidns(procs: Procs, tmp_path: Path) -> None:
    """A job control shell dumped with -j while one of its own jobs (``sleep``) held
    the terminal, restored with ``-j --new-pidns``: that job's group has the terminal
    again (not the shell's), so Ctrl-Z reaches it and the shell reports it stopped."""
    term = Terminal(tmp_path, [str(Path(ckpt_cmd()[0]).parent)])
    try:
        images, pidfile = tmp_path / "images", tmp_path / "pid"
        term.send("bash --norc -i\n")
        shell = only_child(term.shell.pid, timeout=30)
        term.send("PS1='in$ '; sleep 1001\n")
        wait_until(lambda: os.tcgetpgrp(term.master) not in (shell, term.shell.pid), 30,
                   "sleep in the foreground")
        ckpt_ok("dump", "-j", "-t", shell, "-D", images)
        procs.wait_gone(shell)
        start = len(term.text())
        term.send(f"ckpt restore -j --new-pidns -D {images} --pidfile {pidfile}\n")
        wait_until(lambda: pidfile.exists() and pidfile.read_text().endswith("\n"), 30,
                   "the pidfile")
        root = int(pidfile.read_text())
        procs.adopt(proc_ppid(root), Output(tmp_path / "none"))
        sleeper = only_child(root, timeout=30)
        wait_until(lambda: os.tcgetpgrp(term.master) == proc_ids(sleeper)[1], 30,
                   "the shell's own job in the foreground")
        term.send("\x1a")
        term.wait_for(r"Stopped +sleep 1001", start=start)
        for pid in (sleeper, root):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_alive(root), 30, "the shell to end")
    finally:
        term.close()


def ask(path: Path, key: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(scaled(30))
        s.connect(str(path))
        s.sendall(key.encode())
        return s.makefile().readline().strip()


def test_listener_copies_each_get_their_own(procs: Procs, images: Path,
                                            tmp_path: Path) -> None:
    """A service's unix listener, passed in by its parent: a copy restored while the
    original runs is refused on its path, naming --inherit-fd; two copies each given a
    listener of its own answer on it from their warm state, and so does the original."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "orig.sock"))
    listener.listen(8)
    out = tmp_path / "service.out"
    with open(out, "wb") as f:
        popen = subprocess.Popen([PYTHON, str(PROGS / "warm_service.py")], stdout=f,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 pass_fds=(listener.fileno(),), start_new_session=True,
                                 env={**os.environ, "SERVICE_MB": "2",
                                      "SERVICE_FD": str(listener.fileno())})
    procs.adopt(popen.pid, Output(out))
    Output(out).wait_line(r"^ready ", timeout=60)
    ino = os.fstat(listener.fileno()).st_ino
    listener.close()
    p = popen.pid
    warm = f"{p} {p} 20000 value-000000007-" + "x" * 40
    assert ask(tmp_path / "orig.sock", "key-000000007") == warm
    ckpt_ok("dump", "-t", p, "-D", images, "-R")
    err = ckpt_fails("restore", "-D", images, "-d", "--new-pidns")
    assert "orig.sock" in err and f"--inherit-fd 'fd[N]:socket:[{ino}]'" in err, err
    roots = []
    for i in (1, 2):
        own = socket.socket(socket.AF_UNIX)
        own.bind(str(tmp_path / f"copy{i}.sock"))
        own.listen(8)
        try:
            res = subprocess.run(ckpt_cmd() + [
                "restore", "-D", str(images), "-d", "--new-pidns", "--pidfile",
                str(tmp_path / f"copy{i}.pid"), "--inherit-fd",
                f"fd[{own.fileno()}]:socket:[{ino}]"], pass_fds=(own.fileno(),),
                capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=scaled(60))
        finally:
            own.close()
        assert res.returncode == 0, res.stderr
        root = int((tmp_path / f"copy{i}.pid").read_text())
        procs.adopt(proc_ppid(root), Output(out))
        roots.append(root)
        assert nspid(root)[1:] == [p]
    for i in (1, 2):
        assert ask(tmp_path / f"copy{i}.sock", "key-000000007") == warm
    assert ask(tmp_path / "orig.sock", "key-000000007") == warm
    assert all(is_alive(r) for r in [p, *roots])


def test_dump_inside_a_new_pidns_and_of_its_whole_tree(procs: Procs, images: Path,
                                                       tmp_path: Path) -> None:
    """A copy restored with --new-pidns is dumped by its host PID (-R: it runs on), the
    images holding the PIDs it has in its namespace; then its namespace is dumped by
    its init's PID, the init standing for its tree, and restored in a new namespace:
    the tree goes on where it was, under the same PIDs."""
    out, p, a, z = start_tree(procs)
    ckpt_ok("dump", "-t", p, "-D", images)
    procs.wait_gone(p)
    key = str(out.path).lstrip("/")
    first = restore_copy(procs, images, tmp_path / "first.out", key)
    assert isinstance(first, tuple)
    root, init = first
    inner = tmp_path / "inner"
    ckpt_ok("dump", "-t", root, "-D", inner, "-R")
    inventory = json.loads((inner / "inventory.json").read_text())
    assert inventory["root_pid"] == p
    assert sorted(t["pid"] for t in inventory["tasks"]) == sorted([p, a, z])
    copy1 = Output(tmp_path / "first.out")
    n = len(role_ticks(copy1, "P"))
    wait_until(lambda: len(role_ticks(copy1, "P")) >= n + 3, 10, "ticks after dump -R")

    whole = tmp_path / "whole"
    ckpt_ok("dump", "-t", init, "-D", whole)
    procs.wait_gone(init)  # ended with the dumped root, which it reaped
    procs.wait_gone(root)
    last = role_ticks(copy1, "P")[-1][0]
    again = restore_copy(procs, whole, tmp_path / "again.out",
                         str(tmp_path / "first.out").lstrip("/"))
    assert isinstance(again, tuple)
    copy2 = Output(tmp_path / "again.out")
    check_copy(*again, copy2, p, a, z)
    assert role_ticks(copy2, "P")[0][0] == last + 1, "the tree did not go on where it was"


def _mount_tmpfs(at: Path, *enter: str) -> None:
    at.mkdir(exist_ok=True)
    subprocess.run([*enter, "mount", "-t", "tmpfs", "ckpt-test", str(at)], check=True,
                   capture_output=True, timeout=scaled(10))


def _umount(at: Path, *enter: str) -> None:
    subprocess.run([*enter, "umount", str(at)], capture_output=True, timeout=scaled(10))


def test_host_mounts_since_the_restore_are_not_the_trees(procs: Procs, images: Path,
                                                          tmp_path: Path) -> None:
    """The tree's mount namespace is a copy of ckpt's made at the restore: what the host
    mounts and unmounts afterwards (other containers come and go) does not stop a dump
    of the tree; a mount the tree made itself, which a restore would not give it, does."""
    out, p, _a, _z = start_tree(procs)
    gone, new, inside = tmp_path / "gone", tmp_path / "new", tmp_path / "inside"
    _mount_tmpfs(gone)
    try:
        ckpt_ok("dump", "-t", p, "-D", images)
        procs.wait_gone(p)
        first = restore_copy(procs, images, tmp_path / "first.out", str(out.path).lstrip("/"))
        assert isinstance(first, tuple)
        root, _init = first
        _umount(gone)
        _mount_tmpfs(new)
        ckpt_ok("dump", "-t", root, "-D", tmp_path / "after-host", "-R")
        in_tree = ("nsenter", "-t", str(root), "-m")
        _mount_tmpfs(inside, *in_tree)
        if os.path.ismount(inside):
            return  # the host's mounts are shared: the tree's mount came back to it
        err = ckpt_fails("dump", "-t", root, "-D", tmp_path / "after-tree", "-R")
        assert f"mounts differ from ckpt's at {inside}:" in err, err
        assert is_alive(root)
    finally:
        for at in (gone, new, inside):
            _umount(at)


def test_detached_shell_job_in_new_pidns(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """``ckpt restore -d -j --new-pidns``: the job runs on in its namespace under its
    saved PID, in a group of its own, in the terminal's session, on the terminal."""
    term = Terminal(tmp_path, [str(Path(ckpt_cmd()[0]).parent)])
    try:
        out, images, pidfile = tmp_path / "out", tmp_path / "images", tmp_path / "pid"
        pid = dumped_job(term, build, procs, out, images)
        rc, said = term.run(f"ckpt restore -d -j --new-pidns -D {images} --pidfile {pidfile}")
        assert rc == 0, said
        root = int(pidfile.read_text())
        procs.adopt(proc_ppid(root), Output(out))
        assert nspid(root)[1:] == [pid]
        fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
        assert (int(fields[2]), int(fields[3])) == (root, term.shell.pid), fields[:6]
        assert os.readlink(f"/proc/{root}/fd/0") == term.slave_path
        count = len(_numbers(out))
        wait_until(lambda: len(_numbers(out)) >= count + 5, 10, "the restored counter's lines")
        assert_consecutive(_numbers(out))
    finally:
        term.close()


def test_own_pidns_init_with_a_zombie_in_its_group(procs: Procs, images: Path) -> None:
    """A tree whose root is the init of a PID namespace of its own (``unshare --pid --fork
    setsid``, as a container's), with a zombie child in the root's group: restored, the
    zombie joins that group by the PID it knows it by (by its host PID it was refused:
    EPERM). A restore failing once the child exists takes the namespace down, and does
    not wait forever for the dying init, which itself waits until ckpt reaps the child
    it traces."""
    target = procs.start(["unshare", "--pid", "--fork", "setsid", PYTHON, TREE])
    out = target.out
    _, a_in, z_in = map(int, out.wait_line(r"^pids ").split()[1:])
    for role in "PAT":
        out.wait_line(rf"^{role} 3 ")
    root = children(target.pid)[0]
    kids = {nspid(k)[-1]: k for k in children(root)}
    a, z = kids[a_in], kids[z_in]
    assert nspid(root)[1:] == [1] and proc_state(z) == "Z"
    ids = {pid: proc_ids(pid) for pid in (root, a, z)}
    assert ids[z][1] == root
    ckpt_ok("dump", "-t", root, "-D", images)
    procs.wait_gone(target)  # unshare ends with its child, the namespace's init
    wait_until(lambda: not any(is_alive(p) for p in (root, a, z)), 10, "the tree to go")

    res = subprocess.run(ckpt_cmd() + ["restore", "-D", str(images), "-d"],
                         env=dict(os.environ, CKPT_FAULT="restore.task.fds:2"),
                         capture_output=True, text=True, timeout=scaled(60),
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and "injected fault at restore.task.fds" in res.stderr, \
        res.stderr
    assert not any(left_behind(p) for p in (root, a, z)), "a failed restore left processes"

    ckpt_ok("restore", "-D", images, "-d")
    procs.adopt(root, out)
    assert nspid(root)[1:] == [1] and nspid(z)[1:] == [z_in] and nspid(a)[1:] == [a_in]
    assert proc_state(z) == "Z" and proc_ids(z)[1:] == ids[z][1:]
    for role in "PA":
        n = len(role_ticks(out, role))
        wait_until(lambda r=role, n=n: len(role_ticks(out, r)) >= n + 3, 10,
                   f"3 more ticks of {role}")
    start = len(out.lines())
    os.kill(root, signal.SIGUSR1)
    assert out.wait_line(r"^reaped ", start=start) == "reaped Z 5"
