"""Fault injection: a dump or restore made to fail at each of its steps (CKPT_FAULT),
ckpt SIGKILLed there (``:kill``), or sent SIGINT, SIGTERM, SIGHUP or SIGPIPE there.

A failed dump or pre-dump leaves every process of the tree as it was: running,
not traced, same signal mask per thread, same mappings, same fds, each counter
going on without a gap, and no inventory (no complete dump) in the folder. So
does one interrupted by a signal, which exits with 128 + its number. A killed
one leaves the tree running, and the next ckpt takes back the scratch area it
left (or wakes a thread it left in the middle of an injected syscall): then the
tree is as it was. A failed, interrupted or killed restore leaves nothing behind:
no process of the tree, no stray child, no pidfile. After any of them, a plain
dump or restore works.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckpt import faults
from ckpt_helpers import (
    PYTHON,
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    ckpt_stopped_at,
    dump_and_check_dead,
    is_alive,
    my_children,
    only_child,
    proc_ppid,
    proc_state,
    proc_status,
    reap_guards,
    run_ckpt,
    scaled,
    wait_until,
)

# notes of killed ckpts kept from other helpers' ckpts (conftest.own_notes)
pytestmark = pytest.mark.usefixtures("own_notes")

# A point reached once per task also fails at its second hit: the child, once the
# root was dumped (or restored) completely.
SECOND = ["dump.task.core:2", "dump.task.pages:2", "dump.task.done:2",
          "restore.task.fds:2", "restore.task.memory:2", "restore.task.children:2",
          "restore.task.final:2"]
# reached only when a dump lets the tree go (-R, pre-dump, a failure), or once the
# restored tree runs: tests/test_cut_modes.py
LATER_POINTS = ["dump.unmap", "restore.done"]
DUMP_POINTS = [n for n in faults.names()
               if n.startswith(("dump.", "predump.")) and n not in LATER_POINTS]
DUMP_POINTS += [n for n in SECOND if n.startswith("dump.")]
RESTORE_POINTS = [n for n in faults.names()
                  if n.startswith("restore.") and n not in LATER_POINTS]
RESTORE_POINTS += [n for n in SECOND if n.startswith("restore.")]
# ckpt killed at each point; in the middle of its first injected syscall (the mmap of
# the scratch area) and of its 40th (a signal handler read), the parking code holds
# the process for the next ckpt.
KILL_POINTS = DUMP_POINTS + ["dump.inject:40"]
# a restore killed from here on leaves the complete tree running; before, it takes the
# tree along (in the middle of letting it go, its guard kills what was let go)
LET_GO_POINTS = ("restore.let_live",)


def test_every_point_exercised() -> None:
    """Each declared point is made to fail below (tests/unit/test_fault_points.py checks
    that the declared points are the ones in the code)."""
    assert {p.partition(":")[0] for p in DUMP_POINTS + RESTORE_POINTS + LATER_POINTS} \
        == set(faults.names())


# ------------------------------------------------------------------ the tree


def prefixed(out: Output, prefix: str) -> list[int]:
    return [int(line[len(prefix):]) for line in out.lines()
            if line.startswith(prefix) and line[len(prefix):].isdigit()]


def counters(out: Output) -> dict[str, list[int]]:
    return {"P": out.numbers(), "t": prefixed(out, "t "), "c": prefixed(out, "c ")}


def wait_counting(out: Output, more: int = 3, timeout: float = 5.0) -> None:
    """Each counter (root, its thread, the child) goes on, from 0, without a gap."""
    before = {k: len(v) for k, v in counters(out).items()}

    def advanced() -> bool:
        now = counters(out)
        return all(len(now[k]) >= before[k] + more for k in now)

    wait_until(advanced, timeout, f"every counter to advance by {more}: {before}")
    for name, nums in counters(out).items():
        try:
            assert_consecutive(nums)
        except AssertionError as e:
            raise AssertionError(f"counter {name}: {e}") from None



def snapshot(pid: int) -> dict[str, object]:
    """What a failed dump must not change: per thread tracer and mask, maps, fds."""
    threads = {}
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        threads[int(tid)] = (st["TracerPid"], st["SigBlk"])
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    return {"threads": threads, "maps": maps, "fds": fds}


@dataclass
class Tree:
    root: int
    child: int
    out: Output


def start_tree(build: Builder, procs: Procs, tmp_path: Path) -> Tree:
    root = procs.start([build("faulttree"), tmp_path / "lines.txt"])
    child = only_child(root.pid)
    procs.adopt(child, root.out)
    wait_until(lambda: len(os.listdir(f"/proc/{root.pid}/task")) == 2, 5, "the thread")
    wait_counting(root.out)
    return Tree(root.pid, child, root.out)


def assert_untouched(tree: Tree, before: dict[int, dict[str, object]]) -> None:
    for pid in (tree.root, tree.child):
        assert is_alive(pid), f"{pid} is gone (state {proc_state(pid)})"
    wait_counting(tree.out, more=4)
    assert proc_ppid(tree.child) == tree.root
    for pid in (tree.root, tree.child):
        after = snapshot(pid)
        for tid, (tracer, _blk) in after["threads"].items():  # type: ignore[attr-defined]
            assert tracer == "0", f"thread {tid} still traced by {tracer}"
            state = proc_state(tid)
            assert state in ("R", "S"), f"thread {tid} left in state {state}"
        for key in ("threads", "fds", "maps"):
            assert after[key] == before[pid][key], (
                f"process {pid}: {key} changed:\n{before[pid][key]}\n->\n{after[key]}")


def assert_pipe_intact(tree: Tree) -> None:
    os.kill(tree.root, signal.SIGUSR1)
    line = wait_until(lambda: next((x for x in tree.out.lines() if x.startswith("pipe")), None),
                      5, "the pipe check")
    assert line == "pipe ok 5000", line


def restore_and_check(procs: Procs, tree: Tree, images: Path) -> None:
    ckpt_ok("restore", "-D", images, "-d")
    assert is_alive(tree.root) and is_alive(tree.child)
    procs.adopt(tree.root, tree.out)
    procs.adopt(tree.child, tree.out)
    assert proc_ppid(tree.child) == tree.root
    assert proc_status(tree.root)["TracerPid"] == "0"
    wait_counting(tree.out)
    assert_pipe_intact(tree)


# ------------------------------------------------------------------ dump and pre-dump


@pytest.mark.parametrize("point", DUMP_POINTS)
def test_dump_fault(build: Builder, procs: Procs, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    tree = start_tree(build, procs, tmp_path)
    before = {pid: snapshot(pid) for pid in (tree.root, tree.child)}
    images = tmp_path / "images"
    command = "pre-dump" if point.startswith("predump.") else "dump"
    monkeypatch.setenv("CKPT_FAULT", point)
    err = ckpt_fails(command, "-t", tree.root, "-D", images)
    monkeypatch.delenv("CKPT_FAULT")
    assert f"injected fault at {point.partition(':')[0]}" in err, err
    assert not (images / "inventory.json").exists(), "a failed dump left an inventory"
    assert_untouched(tree, before)
    # The same folder, with what the failed dump left in it, takes a plain dump.
    ckpt_ok("dump", "-t", tree.root, "-D", images)
    for pid in (tree.child, tree.root):
        procs.wait_gone(pid)
    restore_and_check(procs, tree, images)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_dump_killed(build: Builder, procs: Procs, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    tree = start_tree(build, procs, tmp_path)
    before = {pid: snapshot(pid) for pid in (tree.root, tree.child)}
    images = tmp_path / "images"
    command = "pre-dump" if point.startswith("predump.") else "dump"
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt(command, "-t", tree.root, "-D", images)
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    for pid in (tree.root, tree.child):
        assert is_alive(pid), f"{pid} did not survive ckpt's death (state {proc_state(pid)})"
    # Killed once the images were complete and synced, ckpt leaves a valid dump.
    complete = point == "dump.before_kill"
    assert (images / "inventory.json").exists() == complete, "inventory.json"
    if not complete and images.exists():  # a partial dump is refused in one line
        err = ckpt_fails("restore", "-D", images, "-d")  # after undoing what ckpt left
        assert [ln for ln in err.splitlines() if "error" in ln] == [
            f"ckpt restore: error: {images}/inventory.json: missing; {images} holds no "
            "complete dump"], err
    # The next ckpt undoes what the killed one left (recovery.py), and dumps.
    res = ckpt_ok("dump", "-R", "-t", tree.root, "-D", tmp_path / "again")
    assert "Traceback" not in res.stderr
    assert_untouched(tree, before)
    ckpt_ok("dump", "-t", tree.root, "-D", tmp_path / "last")
    for pid in (tree.child, tree.root):
        procs.wait_gone(pid)
    restore_and_check(procs, tree, tmp_path / "last")


STOP_AND_SIGNAL = [("dump", "dump.frozen", signal.SIGINT),
                   ("dump", "dump.task.pages", signal.SIGTERM),
                   ("dump", "dump.task.fds:2", signal.SIGHUP),
                   ("dump", "dump.before_kill", signal.SIGPIPE),
                   ("pre-dump", "predump.planned", signal.SIGTERM)]


@pytest.mark.parametrize("command, point, sig", STOP_AND_SIGNAL,
                         ids=[f"{p}-{s.name}" for _, p, s in STOP_AND_SIGNAL])
def test_dump_interrupted(build: Builder, procs: Procs, tmp_path: Path, command: str,
                          point: str, sig: signal.Signals) -> None:
    tree = start_tree(build, procs, tmp_path)
    before = {pid: snapshot(pid) for pid in (tree.root, tree.child)}
    images = tmp_path / "images"
    err, code = interrupted_at(point, sig, command, "-t", tree.root, "-D", images)
    assert code == 128 + sig, err
    assert err.strip() == f"ckpt {command}: interrupted by {sig.name}", err
    assert not (images / "inventory.json").exists(), "an interrupted dump left an inventory"
    assert_untouched(tree, before)
    ckpt_ok("dump", "-t", tree.root, "-D", images)
    for pid in (tree.child, tree.root):
        procs.wait_gone(pid)
    restore_and_check(procs, tree, images)


def interrupted_at(point: str, sig: signal.Signals, *args: str | int | Path
                   ) -> tuple[str, int]:
    """Run ckpt ARGS stopped at ``point`` (``:stop``), send it ``sig`` and let it go on;
    return its stderr and exit status."""
    with ckpt_stopped_at(point, *args) as p:
        p.send_signal(sig)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=scaled(60))
    assert "Traceback" not in err, err
    return err, p.returncode


# ------------------------------------------------------------------ restore


@dataclass
class Dumped:
    images: Path
    tree: Tree
    sizes: dict[Path, int]


@pytest.fixture(scope="module")
def dumped(build: Builder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dumped]:
    """The tree dumped (and killed) once; each test restores a copy of the images."""
    base = tmp_path_factory.mktemp("faults")
    out, lines = base / "target.out", base / "lines.txt"
    with open(out, "wb") as f, open(os.devnull, "rb") as null:
        popen = subprocess.Popen([build("faulttree"), str(lines)], stdin=null, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    child = -1
    try:
        child = only_child(popen.pid)
        tree = Tree(popen.pid, child, Output(out))
        wait_counting(tree.out)
        images = base / "images"
        res = subprocess.run(ckpt_cmd() + ["dump", "-t", str(popen.pid), "-D", str(images)],
                             capture_output=True, text=True, timeout=scaled(60))
        assert res.returncode == 0, res.stderr
        assert popen.wait(scaled(10)) == -signal.SIGKILL
        wait_until(lambda: not os.path.exists(f"/proc/{child}") or _reap(child), 5,
                   "the dumped child to be gone")
        yield Dumped(images, tree, {out: out.stat().st_size, lines: lines.stat().st_size})
    finally:
        popen.kill()
        popen.wait()
        if child > 0 and os.path.exists(f"/proc/{child}"):
            os.kill(child, signal.SIGKILL)
            wait_until(lambda: not os.path.exists(f"/proc/{child}") or _reap(child), 5,
                       "the child to be gone")


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it is a zombie child of ours (re-parented: we are a subreaper)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_restore_fault(dumped: Dumped, procs: Procs, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    images = fresh_images(dumped, tmp_path)
    tree = dumped.tree
    pidfile = tmp_path / "restored.pid"
    monkeypatch.setenv("CKPT_FAULT", point)
    err = ckpt_fails("restore", "-D", images, "-d", "--pidfile", pidfile)
    monkeypatch.delenv("CKPT_FAULT")
    assert f"injected fault at {point.partition(':')[0]}" in err, err
    for pid in (tree.root, tree.child):
        assert proc_state(pid) is None, f"{pid} left behind (state {proc_state(pid)})"
    stray = my_children() - procs.children_before
    assert not stray, f"a failed restore left processes: {sorted(stray)}"
    assert not pidfile.exists(), "a failed restore left its pidfile"
    restore_and_check(procs, tree, images)


def assert_nothing_left(procs: Procs, tree: Tree, pidfile: Path) -> None:
    """A killed restore's processes are gone (reaped here: they became ours)."""
    for pid in (tree.root, tree.child):
        if proc_state(pid) is not None:
            procs.wait_gone(pid)
    stray = my_children() - procs.children_before
    assert not stray, f"a killed restore left processes: {sorted(stray)}"
    assert not pidfile.exists(), "a killed restore left its pidfile"


def fresh_images(dumped: Dumped, tmp_path: Path) -> Path:
    images = tmp_path / "images"
    shutil.copytree(dumped.images, images)
    for path, size in dumped.sizes.items():  # as at the dump: earlier tests wrote on
        os.truncate(path, size)
    return images


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_restore_killed(dumped: Dumped, procs: Procs, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    images = fresh_images(dumped, tmp_path)
    pidfile = tmp_path / "restored.pid"
    before = my_children()
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt("restore", "-D", images, "-d", "--pidfile", pidfile)
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    reap_guards(before)
    tree = dumped.tree
    if point in LET_GO_POINTS:  # the complete tree runs, with no pidfile
        for pid in (tree.root, tree.child):
            assert is_alive(pid), f"{pid} gone (state {proc_state(pid)})"
        assert not pidfile.exists(), "a killed restore left its pidfile"
        procs.adopt(tree.root, tree.out)
        procs.adopt(tree.child, tree.out)
        assert proc_ppid(tree.child) == tree.root
        for pid in (tree.root, tree.child):
            for tid in os.listdir(f"/proc/{pid}/task"):
                assert proc_status(int(tid))["TracerPid"] == "0", f"thread {tid} traced"
        wait_counting(tree.out)
        assert_pipe_intact(tree)
        return
    assert_nothing_left(procs, tree, pidfile)
    restore_and_check(procs, tree, images)


@pytest.mark.parametrize("point, sig", [("restore.task.memory", signal.SIGTERM),
                                        ("restore.before_detach", signal.SIGINT)])
def test_restore_interrupted(dumped: Dumped, procs: Procs, tmp_path: Path, point: str,
                             sig: signal.Signals) -> None:
    images = fresh_images(dumped, tmp_path)
    pidfile = tmp_path / "restored.pid"
    err, code = interrupted_at(point, sig, "restore", "-D", images, "-d", "--pidfile", pidfile)
    assert code == 128 + sig, err
    assert err.strip() == f"ckpt restore: interrupted by {sig.name}", err
    assert_nothing_left(procs, dumped.tree, pidfile)
    restore_and_check(procs, dumped.tree, images)


# a process of two threads, counting on stdout
_COUNTER = """
import os, threading, time
threading.Thread(target=lambda: time.sleep(10**6), daemon=True).start()
n = 0
while True:
    os.write(1, f"{n}\\n".encode())
    n += 1
    time.sleep(0.05)
"""


@pytest.mark.parametrize("point", ["restore.before_detach", "restore.task.let_go"])
def test_one_process_restore_killed(procs: Procs, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """A tree of one process gets no guard: ckpt killed before it lets the process go
    takes it along (EXITKILL), killed once its threads are let go leaves it running,
    complete and untraced, counting on where it stopped."""
    target = procs.start([PYTHON, "-c", _COUNTER])
    target.out.wait_numbers(3)
    images = tmp_path / "images"
    dump_and_check_dead(procs, target, images)
    before = my_children()
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt("restore", "-D", images, "-d")
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    if point == "restore.before_detach":
        if proc_state(target.pid) is not None:
            procs.wait_gone(target.pid)
        assert my_children() == before, "a killed restore left a process"
        return
    assert my_children() - before == {target.pid}, "no guard, no other process"
    procs.adopt(target.pid, target.out)
    tids = os.listdir(f"/proc/{target.pid}/task")
    assert len(tids) == 2
    for tid in tids:
        assert proc_status(int(tid))["TracerPid"] == "0", f"thread {tid} traced"
    count = len(target.out.numbers())
    assert_consecutive(target.out.wait_numbers(count + 5))


@pytest.mark.parametrize("point", ["restore.created", "restore.task.signals",
                                   "restore.before_detach"])
@pytest.mark.parametrize("victim", ["root", "child"])
def test_restore_process_killed_from_outside(dumped: Dumped, procs: Procs, tmp_path: Path,
                                             point: str, victim: str) -> None:
    """A process of the tree killed (kill -9, the OOM killer) while ckpt restores it:
    the restore fails saying which process was killed and how, in one line, not with a
    bare ESRCH of a ptrace call; nothing is left, and the images restore again."""
    images = fresh_images(dumped, tmp_path)
    pidfile = tmp_path / "restored.pid"
    pid = getattr(dumped.tree, victim)
    with ckpt_stopped_at(point, "restore", "-D", images, "-d", "--pidfile", pidfile) as p:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: proc_state(pid) in ("Z", None), 30, f"{pid} to die")
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=scaled(60))
    assert p.returncode == 1, err
    assert err.strip() == (f"ckpt restore: error: process {pid} was killed by SIGKILL while "
                           "it was being restored"), err
    assert_nothing_left(procs, dumped.tree, pidfile)
    restore_and_check(procs, dumped.tree, images)


def test_dump_waits_for_a_recovery_under_way(build: Builder, procs: Procs, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump killed in the middle of an injected syscall leaves a note; while another
    ckpt (or the killed dump's guard) holds it to recover the process, a new dump must
    not take the process as it is (parked in ckpt's code, the scratch area mapped): it
    waits for the recovery, then finds the note gone, or (the recoverer gone too)
    recovers it itself."""
    import fcntl
    import threading
    tree = start_tree(build, procs, tmp_path)
    before = {pid: snapshot(pid) for pid in (tree.root, tree.child)}
    monkeypatch.setenv("CKPT_FAULT", "dump.inject:40:kill")
    res = run_ckpt("dump", "-t", tree.root, "-D", tmp_path / "killed")
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    notes = Path(os.environ["CKPT_NOTES_DIR"])
    [note] = [notes / n for n in os.listdir(notes) if n.endswith(".jsonl")]
    held = os.open(note, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # a recoverer at work
    threading.Timer(scaled(3), os.close, (held,)).start()  # it dies, the note left
    ckpt_ok("dump", "-R", "-t", tree.root, "-D", tmp_path / "again", "-v4", "-o", "dump.log")
    assert not note.exists()
    assert "waiting for the ckpt recovering it" in (tmp_path / "again/dump.log").read_text()
    assert_untouched(tree, before)
    ckpt_ok("dump", "-t", tree.root, "-D", tmp_path / "last")
    for pid in (tree.child, tree.root):
        procs.wait_gone(pid)
    restore_and_check(procs, tree, tmp_path / "last")


def test_dump_leaves_a_running_dumps_note_alone(build: Builder, procs: Procs,
                                               tmp_path: Path) -> None:
    """The note of a dump still running (locked by the ckpt whose PID names it) is left
    to it: another dump neither recovers it nor waits for it."""
    import fcntl
    tree = start_tree(build, procs, tmp_path)
    notes = Path(os.environ["CKPT_NOTES_DIR"])
    notes.mkdir(parents=True, exist_ok=True)
    note = notes / f"{os.getpid()}.jsonl"  # as if this process were a dump under way
    held = os.open(note, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        ckpt_ok("dump", "-R", "-t", tree.root, "-D", tmp_path / "images", "-v4",
                "-o", "dump.log")
        assert note.exists()
        assert "waiting" not in (tmp_path / "images/dump.log").read_text()
    finally:
        os.close(held)
        note.unlink()


@pytest.mark.parametrize("point", ["dump.frozen", "dump.task.core", "dump.task.pages",
                                   "dump.task.fds:2"])
@pytest.mark.parametrize("victim", ["root", "child"])
def test_dump_process_killed_from_outside(build: Builder, procs: Procs, tmp_path: Path,
                                          point: str, victim: str) -> None:
    """A process of the tree killed (kill -9, the OOM killer) while ckpt dumps it: the
    dump fails in one line naming it and the signal; the other process runs on. It hung
    for good when the root was killed with ckpt's code parked in it (a write of its
    memory, the parking code taken back, gave 0 bytes again and again), else said
    "No such process" or "short read of ... pagemap"."""
    tree = start_tree(build, procs, tmp_path)
    pid = getattr(tree, victim)
    with ckpt_stopped_at(point, "dump", "-t", tree.root, "-D", tmp_path / "images") as p:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: proc_state(pid) in ("Z", None), 30, f"{pid} to die")
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=scaled(60))
    assert p.returncode == 1, err
    lines = [ln for ln in err.splitlines() if "Warn" not in ln]
    assert lines == [f"ckpt dump: error: process {pid} was killed by SIGKILL during the "
                     "dump"], err
    assert not (tmp_path / "images" / "inventory.json").exists()
    other = tree.child if victim == "root" else tree.root
    assert is_alive(other)
    with open(f"/proc/{other}/status") as f:
        assert "TracerPid:\t0\n" in f.read()
