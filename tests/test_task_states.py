"""Task states: stopped processes and threads (SIGSTOP, job-control stops) stay stopped
after a dump that leaves them running and after a restore, and carry on at SIGCONT;
signals sent to them while stopped are handled only then."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Proc,
    Procs,
    assert_consecutive,
    assert_silent,
    assert_tags_carry_on,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    only_child,
    proc_ids,
    proc_state,
    proc_status,
    restore_detached,
    tagged_numbers,
    wait_until,
)


def thread_states(pid: int) -> set[str]:
    states = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            raw = f.read()
        states.add(raw[raw.rindex(b")") + 2:].split()[0].decode())
    return states



def start_stopped_job(build: Builder, procs: Procs) -> tuple[int, int]:
    """jobstop with its child stopped by SIGTSTP (a job-control stop: its group is not
    orphaned) and a SIGUSR1 left pending in it; returns (parent, child)."""
    target = procs.start([build("jobstop")])
    child = int(target.out.wait_line(r"^CHILD ").split()[1])
    target.out.wait_line(r"^3 child-thread$")
    os.kill(child, signal.SIGTSTP)
    target.out.wait_line(r"^EVENT stopped 20$")
    wait_until(lambda: thread_states(child) == {"T"}, 5, "every thread of the job stopped")
    os.kill(child, signal.SIGUSR1)
    return target.pid, child


def test_stopped_job_restored_stopped(build: Builder, procs: Procs, images: Path) -> None:
    pid, child = start_stopped_job(build, procs)
    target = procs.tracked[-1]
    assert proc_status(child)["ShdPnd"] != "0000000000000000"
    dump_and_check_dead(procs, target, images)
    procs.wait_gone(child)  # re-parented to pytest: reaped here
    count = len(target.out.lines())
    restore_detached(procs, pid, target.out, images)
    assert thread_states(child) == {"T"}
    target.out.wait_line(r" parent$", start=count)
    assert_silent(child, target.out, quiet=0.0)  # the child is alive
    wait_until(lambda: len([ln for ln in target.out.lines()[count:]
                            if ln.endswith(" parent")]) >= 5, 10, "the parent ticking")
    after = target.out.lines()[count:]
    assert not [ln for ln in after if "child" in ln or ln == "USR1"], after
    assert thread_states(child) == {"T"}
    # Stopped with the same signal: if the parent sees the stop again, it says 20.
    assert all(ln == "EVENT stopped 20" for ln in after if ln.startswith("EVENT"))
    os.kill(child, signal.SIGCONT)
    target.out.wait_line(r"^USR1$", start=count)
    target.out.wait_line(r"^EVENT continued$", start=count)
    assert_tags_carry_on(target.out, ("child-main", "child-thread"), 3)
    assert_consecutive(tagged_numbers(target.out, "parent"))
    assert thread_states(child) <= {"S", "R"}


def test_stopped_process_left_running_stays_stopped(build: Builder, procs: Procs,
                                                    images: Path) -> None:
    """dump -R of a process stopped by SIGSTOP leaves it stopped, untraced, its mask as
    it was; SIGCONT lets it carry on."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    os.kill(target.pid, signal.SIGSTOP)
    wait_until(lambda: proc_state(target.pid) == "T", 5, "the stop")
    blocked = proc_status(target.pid)["SigBlk"]
    n = len(target.out.numbers())
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    status = proc_status(target.pid)
    assert status["State"].startswith("T") and status["TracerPid"] == "0"
    assert status["SigBlk"] == blocked
    assert_silent(target.pid, target.out)
    assert len(target.out.numbers()) == n
    os.kill(target.pid, signal.SIGCONT)
    assert_consecutive(target.out.wait_numbers(n + 3))
    # And the images restore it stopped too.
    os.kill(target.pid, signal.SIGKILL)
    procs.wait_gone(target)
    restore_detached(procs, target.pid, target.out, images)
    assert proc_state(target.pid) == "T"
    os.kill(target.pid, signal.SIGCONT)
    assert_consecutive(target.out.wait_numbers(n + 3))


def sched_of_threads(pid: int) -> list[tuple[int, int, int]]:
    """(policy, priority, nice) of each thread, as the kernel reports them."""
    out = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        out.append((os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority,
                    os.getpriority(os.PRIO_PROCESS, tid)))
    return out


def start_knobs(build: Builder, procs: Procs, *args: str) -> tuple[Proc, int, int]:
    """knobs with its child and grandchild, all three tracked to be killed at the end:
    the grandchild outlives whichever process reaps orphans (pytest included)."""
    target = procs.start([build("knobs"), *args])
    child = int(target.out.wait_line(r"^CHILD ").split()[1])
    grandchild = int(target.out.wait_line(r"^GRANDCHILD ").split()[1])
    procs.adopt(child, target.out)
    procs.adopt(grandchild, target.out)
    return target, child, grandchild


def test_scheduling_and_process_knobs(build: Builder, procs: Procs, images: Path) -> None:
    """Per thread: policy, priority, nice (SCHED_BATCH, FIFO, RR, IDLE), timer slack, TSC
    access, machine-check kill policy. Per process: oom_score_adj, THP disabled, child
    subreaper (an orphan made after the restore goes to it), membarrier registration,
    memory-deny-write-execute, dumpable 0 (set after the credentials)."""
    target, child, grandchild = start_knobs(build, procs)
    target.out.wait_line(r"^2 thp=")
    sched = sched_of_threads(target.pid)
    assert sorted(sched) == sorted([(os.SCHED_BATCH, 0, 7), (os.SCHED_FIFO, 10, 0),
                                    (os.SCHED_RR, 3, -3), (os.SCHED_IDLE, 0, 4)])
    inside = target.out.lines()[-1].split(" ", 1)[1]
    # Per thread slack/tsc/mce: fifo (slack 0 under a real-time policy, MCE kill early),
    # rr, idle (slack 777000, rdtsc faulting).
    assert inside == "thp=1 sub=1 mb=16 dumpable=0 mdwe=1 threads=0/1/1,0/1/2,777000/2/2"
    dump_and_check_dead(procs, target, images)
    procs.wait_gone(child)
    procs.wait_gone(grandchild)
    count = len(target.out.lines())
    restore_detached(procs, target.pid, target.out, images)
    procs.adopt(grandchild, target.out)  # the restored one, killed at the end
    assert sched_of_threads(target.pid) == sched
    with open(f"/proc/{target.pid}/oom_score_adj") as f:
        assert f.read().strip() == "345"
    line = target.out.wait_line(r"^\d+ thp=", start=count)
    assert line.split(" ", 1)[1] == inside
    assert proc_status(target.pid)["THP_enabled"] == "0"
    os.kill(child, signal.SIGTERM)
    wait_until(lambda: proc_ids(grandchild)[0] == target.pid, 10,
               "the orphan re-parented to the restored subreaper")
    n = len(target.out.first_field_numbers())
    wait_until(lambda: len(target.out.first_field_numbers()) >= n + 2, 10, "ticks")
    assert_consecutive(target.out.first_field_numbers())


def test_zombies_reaped_with_their_status(build: Builder, procs: Procs, images: Path) -> None:
    """Zombies that exited, were killed by their parent (SIGKILL) or by a signal of their
    own are reaped after the restore with the status they ended with."""
    target = procs.start([build("zombies")])
    e, k, t = (int(x) for x in target.out.wait_line(r"^pids ").split()[1:])
    n = len(dump_and_check_dead(procs, target, images))
    for pid in (e, k, t):
        procs.wait_gone(pid)
    restore_detached(procs, target.pid, target.out, images)
    assert {proc_state(p) for p in (e, k, t)} == {"Z"}
    target.out.wait_numbers(n + 1)
    os.kill(target.pid, signal.SIGUSR1)
    target.out.wait_line(rf"^reaped {t} ")
    reaped = [ln for ln in target.out.lines() if ln.startswith("reaped ")]
    assert reaped == [f"reaped {e} exited 7", f"reaped {k} killed 9", f"reaped {t} killed 15"]
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 2))


def test_tree_in_a_shells_group_with_zombies(build: Builder, procs: Procs,
                                             images: Path) -> None:
    """A tree started from a shell without job control (sh -c 'prog &'): its process
    group and session are the shell's, whose leader is outside the dumped tree. Without
    -j the dump is refused, suggesting it; with -j the tree, zombies included, comes back
    in one group (the restorer's, as criu does) and the zombies are reaped with their
    status."""
    shell = procs.start(["sh", "-c", f"{build('zombies')} & wait"])
    root = only_child(shell.pid)
    shell.out.wait_line(r"^pids ")
    assert proc_ids(root)[1:] == (shell.pid, shell.pid)
    err = ckpt_fails("dump", "-t", root, "-D", images)
    assert f"process {root}" in err and "-j" in err, err
    e, k, t = (int(x) for x in shell.out.wait_line(r"^pids ").split()[1:])
    ckpt_ok("dump", "-t", root, "-D", images, "-j")
    for pid in (root, e, k, t):
        procs.wait_gone(pid)
    n = len(shell.out.numbers())
    ckpt_ok("restore", "-D", images, "-d", "-j")
    procs.adopt(root, shell.out)
    group = os.getpgrp()
    assert {proc_ids(p)[1] for p in (root, e, k, t)} == {group}
    os.kill(root, signal.SIGUSR1)
    shell.out.wait_line(rf"^reaped {t} ")
    reaped = [ln for ln in shell.out.lines() if ln.startswith("reaped ")]
    assert reaped == [f"reaped {e} exited 7", f"reaped {k} killed 9", f"reaped {t} killed 15"]
    assert_consecutive(shell.out.wait_numbers(n + 2))


def test_sigtrap_handler_and_pending_sigtrap(build: Builder, procs: Procs,
                                             images: Path) -> None:
    """ckpt's injected syscalls raise no SIGTRAP of their own: a SIGTRAP handler and a
    SIGTRAP pending (blocked, with its value) are the same after dump -R and after a
    restore, and the handler gets that very signal once it is unblocked."""
    trap = 1 << (signal.SIGTRAP - 1)
    target = procs.start([build("sigtrap")])
    target.out.wait_numbers(2)

    def trap_state() -> tuple[bool, bool, bool]:
        st = proc_status(target.pid)
        return (bool(int(st["SigCgt"], 16) & trap), bool(int(st["ShdPnd"], 16) & trap),
                bool(int(st["SigBlk"], 16) & trap))

    assert trap_state() == (True, True, True)
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    assert trap_state() == (True, True, True)
    n = len(dump_and_check_dead(procs, target, images, "--overwrite"))
    restore_detached(procs, target.pid, target.out, images)
    assert trap_state() == (True, True, True)
    os.kill(target.pid, signal.SIGUSR1)
    assert target.out.wait_line(r"^TRAP ") == "TRAP code=-1 value=4242"  # SI_QUEUE
    assert_consecutive(target.out.wait_numbers(n + 2))
    assert [ln for ln in target.out.lines() if ln.startswith("TRAP")] == [
        "TRAP code=-1 value=4242"]


def test_zombie_leader_refused_unharmed(build: Builder, procs: Procs, images: Path) -> None:
    """A child whose main thread exited while its other thread runs looks like a zombie:
    saving it as one would lose the thread. The dump refuses, naming it; the tree runs
    on, untraced."""
    target = procs.start([build("zombie_leader")])
    child = int(target.out.wait_line(r"^CHILD ").split()[1])
    target.out.wait_line(r"^2 thread$")
    assert proc_state(child) == "Z"
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"process {child}" in err and "main thread has exited" in err, err
    assert not (images / "inventory.json").exists()
    assert_tags_carry_on(target.out, ("parent", "thread"))
    assert proc_status(target.pid)["TracerPid"] == "0"
    assert all(proc_status(f"{child}/task/{t}")["TracerPid"] == "0"  # type: ignore[arg-type]
               for t in os.listdir(f"/proc/{child}/task"))
