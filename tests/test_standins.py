"""Process groups and sessions whose leader has exited, made again at restore by
stand-ins (standins.py): same PIDs, groups, sessions and parents, no stand-in left, the
processes carry on and a signal to the group still reaches it. A leader alive outside
the tree stays refused."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Output,
    Procs,
    ckpt_fails,
    ckpt_ok,
    is_alive,
    proc_ids,
    proc_state,
    proc_status,
    restore_detached,
    start_with_pid,
    wait_until,
)

PROG = PROGS / "leaderless.py"


def _start(procs: Procs, mode: str) -> tuple[int, list[int]]:
    """Start the program; track every process it names that lives (a daemon's child is
    no child of ours: a failing test would leave it behind)."""
    target = procs.start([PYTHON, PROG, mode])
    line = target.out.wait_line(r"^pids ")
    pids = [int(x) for x in line.split()[1:]]
    for pid in pids:
        try:
            procs.adopt(pid, target.out)
        except OSError:  # an exited leader
            pass
    return target.pid, pids


def _counts(out: Output, tag: str) -> list[int]:
    rx = re.compile(rf"^{tag} (\d+)$")
    return [int(m[1]) for m in map(rx.match, out.lines()) if m]


def _carry_on(out: Output, tags: list[str]) -> None:
    """Each process goes on counting from where it stopped."""
    before = {tag: len(_counts(out, tag)) for tag in tags}
    for tag in tags:
        wait_until(lambda tag=tag: len(_counts(out, tag)) >= before[tag] + 3 or None, 20,
                   f"{tag} to carry on")
        nums = _counts(out, tag)
        assert nums == list(range(nums[0], nums[0] + len(nums))), (tag, nums)


def _group_signal_reaches(out: Output, pgid: int, pids: dict[str, int]) -> None:
    os.killpg(pgid, signal.SIGUSR1)
    for tag, pid in pids.items():
        out.wait_line(rf"^{tag} usr1 {pid}$")


def _no_stand_in(pid: int, parent: int) -> None:
    """No process under the leader's PID, no zombie either, and its creator has no
    signal pending from it (the SIGCHLD of its exit)."""
    assert not os.path.exists(f"/proc/{pid}"), f"stand-in {pid} left: {proc_status(pid)}"
    status = proc_status(parent)
    assert int(status["ShdPnd"], 16) == 0 and int(status["SigPnd"], 16) == 0, status


def _dump_restore(procs: Procs, root: int, pids: list[int], images: Path, out: Output
                  ) -> None:
    ckpt_ok("dump", "-t", root, "-D", images)
    for pid in pids:
        procs.wait_gone(pid)
    inv = json.loads((images / "inventory.json").read_text())
    assert "standins" in inv["needs"], inv["needs"]
    restore_detached(procs, root, out, images)


def test_pipeline_group_whose_leader_exited(procs: Procs, images: Path) -> None:
    """A session leader's children in the group of a sibling that has exited (a
    pipeline whose first command ended), the first of them a zombie: the group is made
    again by a stand-in under the leader's PID, cloned by the root, which reaps it."""
    root, (leader, m1, m2, m3) = _start(procs, "group")
    out = procs.tracked[-1].out
    assert not is_alive(leader)
    wait_until(lambda: proc_state(m3) == "Z" or None, 10, "the zombie")
    before = {p: proc_ids(p) for p in (root, m1, m2, m3)}
    assert before[m1] == before[m2] == before[m3] == (root, leader, root), before
    _dump_restore(procs, root, [root, m1, m2, m3], images, out)
    for p in (m1, m2):
        procs.adopt(p, out)
    assert {p: proc_ids(p) for p in (root, m1, m2, m3)} == before
    assert proc_state(m3) == "Z"
    _no_stand_in(leader, root)
    with open(f"/proc/{root}/task/{root}/children") as f:
        assert sorted(int(x) for x in f.read().split()) == sorted([m1, m2, m3])
    _carry_on(out, ["R", "M1", "M2"])
    _group_signal_reaches(out, leader, {"M1": m1, "M2": m2})


def test_double_fork_daemon_whose_session_leader_exited(procs: Procs, images: Path) -> None:
    """A daemon (C, with its child D) whose session leader forked it and exited; C was
    reparented to us (the subreaper). Dumped from C: ckpt forks a stand-in under the
    leader's PID, which calls setsid and clones C as ckpt's child (CLONE_PARENT)."""
    _, (sid, c, d) = _start(procs, "daemon")
    out = procs.tracked[-1].out
    assert not is_alive(sid)
    before = {p: proc_ids(p) for p in (c, d)}
    assert before == {c: (os.getpid(), sid, sid), d: (c, sid, sid)}, before
    _dump_restore(procs, c, [c, d], images, out)
    procs.adopt(d, out)
    assert {p: proc_ids(p) for p in (c, d)} == before
    assert not os.path.exists(f"/proc/{sid}")
    _carry_on(out, ["C", "D"])
    _group_signal_reaches(out, sid, {"C": c, "D": d})


def test_daemon_session_in_the_tree_of_a_subreaper(procs: Procs, images: Path) -> None:
    """The same daemon reparented to the dumped root (a child subreaper): the root clones
    the session's stand-in, which clones C with CLONE_PARENT (C's parent is the root
    again), then exits and is reaped by the root."""
    root, (sid, c, d) = _start(procs, "subreaper")
    out = procs.tracked[-1].out
    before = {p: proc_ids(p) for p in (root, c, d)}
    assert before[c] == (root, sid, sid) and before[d] == (c, sid, sid), before
    _dump_restore(procs, root, [root, c, d], images, out)
    for p in (c, d):
        procs.adopt(p, out)
    assert {p: proc_ids(p) for p in (root, c, d)} == before
    _no_stand_in(sid, root)
    _carry_on(out, ["A", "C", "D"])
    _group_signal_reaches(out, sid, {"C": c, "D": d})


def test_group_leader_alive_outside_the_tree_is_refused(procs: Procs, images: Path) -> None:
    """A group whose leader lives on outside the tree: its PID is taken, the dump is
    refused naming the process, the group and its leader, and the tree runs on."""
    root, (leader, *members) = _start(procs, "outside")
    out = procs.tracked[-1].out
    assert is_alive(leader) and proc_ids(members[0])[1] == leader
    err = ckpt_fails("dump", "-t", root, "-D", images)
    named = re.search(rf"process (\d+) is in process group {leader}, whose leader {leader} "
                      r"\(python3?\S*\) is alive outside the dumped tree", err)
    assert named and int(named[1]) in members, err
    _carry_on(out, ["R", "M1", "M2"])


def test_leader_pid_taken_at_restore(procs: Procs, images: Path) -> None:
    """The leader's PID taken by another process when the tree comes back: the restore
    fails naming the group and the holder, and leaves nothing behind."""
    root, (leader, m1, m2, m3) = _start(procs, "group")
    pids = [root, m1, m2, m3]
    ckpt_ok("dump", "-t", root, "-D", images)
    for pid in pids:
        procs.wait_gone(pid)
    start_with_pid(procs, ["sleep", "1000"], leader)
    err = ckpt_fails("restore", "-D", images, "-d")
    assert (f"the stand-in for process group {leader}, whose leader had exited: PID "
            f"{leader} is taken by sleep" in err), err
    assert not [p for p in pids if _runs_prog(p)], "a process of the tree was left"
    assert is_alive(leader)


def _runs_prog(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return PROG.name.encode() in f.read()
    except OSError:
        return False


def test_daemon_restore_sibling_is_refused(procs: Procs, images: Path) -> None:
    """--restore-sibling of a root whose session leader had exited: the root would be
    a child of ckpt's parent, which cannot reap the stand-in; refused in one line, nothing
    left, and a plain restore of the same images works after."""
    _, (sid, c, d) = _start(procs, "daemon")
    out = procs.tracked[-1].out
    ckpt_ok("dump", "-t", c, "-D", images)
    for pid in (c, d):
        procs.wait_gone(pid)
    err = ckpt_fails("restore", "-D", images, "-d", "--restore-sibling")
    assert f"process {c}: its session's leader {sid} had exited" in err, err
    assert not [p for p in (c, d) if _runs_prog(p)], "a process was left"
    restore_detached(procs, c, out, images)
    procs.adopt(d, out)
    assert proc_ids(d) == (c, sid, sid)


def test_zombie_in_a_siblings_group(procs: Procs, images: Path) -> None:
    """A zombie in the group of its sibling, which lives in the tree: the restored zombie
    joins that group before it exits (every zombie exits once the tree is complete),
    not its parent's."""
    root, (leader, m1, m2, m3) = _start(procs, "zombie")
    out = procs.tracked[-1].out
    wait_until(lambda: proc_state(m3) == "Z" or None, 10, "the zombie")
    before = {p: proc_ids(p) for p in (root, leader, m1, m2, m3)}
    assert before[m3] == (root, leader, root) and before[leader] == (root, leader, root)
    ckpt_ok("dump", "-t", root, "-D", images)
    for pid in (root, leader, m1, m2, m3):
        procs.wait_gone(pid)
    inv = json.loads((images / "inventory.json").read_text())
    assert "standins" not in inv.get("needs", []), inv
    restore_detached(procs, root, out, images)
    for p in (leader, m1, m2):
        procs.adopt(p, out)
    assert {p: proc_ids(p) for p in (root, leader, m1, m2, m3)} == before
    assert proc_state(m3) == "Z"
    _carry_on(out, ["R", "L", "M1", "M2"])
    _group_signal_reaches(out, leader, {"L": leader, "M1": m1, "M2": m2})
