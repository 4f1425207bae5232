"""Credentials come back exactly, per thread: uids, gids, groups, the five capability
sets, securebits, no_new_privs, loginuid and the parent-death signal; never more than
the process had. What ckpt could not give back is refused at dump, the process
unharmed."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
    scaled,
    wait_until,
)

CRED_KEYS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
             "NoNewPrivs", "Seccomp", "Seccomp_filters")


def thread_creds(pid: int) -> dict[int, dict[str, str]]:
    """Per thread: its credential lines of /proc/PID/task/TID/status, and its loginuid."""
    out = {}
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        status = proc_status(f"{pid}/task/{tid}")  # type: ignore[arg-type]
        creds = {k: status[k] for k in CRED_KEYS}
        with open(f"/proc/{pid}/task/{tid}/loginuid") as f:
            creds["loginuid"] = f.read()
        out[tid] = creds
    return out


def last_report(lines: list[str], who: str) -> str:
    return next(ln.split(" ", 2)[2] for ln in reversed(lines) if ln.split(" ")[1:2] == [who])


def test_credentials_per_thread(build: Builder, procs: Procs, images: Path) -> None:
    """Every credential of each thread, read from /proc and from inside (securebits, the
    parent-death signal, dumpable set again after a uid change). Restored without -d,
    so ckpt stays the parent and the parent-death signals are set again."""
    target = procs.start([build("creds")])
    target.out.wait_line("^READY$")
    target.out.wait_line(r"^3 thread ")
    before = thread_creds(target.pid)
    main_tid, other_tid = sorted(before)
    assert before[main_tid]["Uid"].split() == ["1000", "1001", "1002", "1002"]
    assert before[other_tid]["Uid"].split() == ["3000"] * 4
    assert before[main_tid]["CapAmb"] == "0000000000000400"
    assert before[main_tid]["loginuid"] == "4321"
    assert before[other_tid]["NoNewPrivs"] == "1" and before[main_tid]["NoNewPrivs"] == "0"
    lines = target.out.lines()
    assert last_report(lines, "main") == "sb=4 pd=12 dumpable=1"
    assert last_report(lines, "thread") == "sb=4 pd=1 dumpable=1"
    dump_and_check_dead(procs, target, images)
    count = len(target.out.lines())
    restorer = subprocess.Popen([*ckpt_cmd(), "restore", "-D", str(images)],
                                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        target.out.wait_line(r" main ", start=count)
        target.out.wait_line(r" thread ", start=count)
        assert thread_creds(target.pid) == before
        lines = target.out.lines()[count:]
        # Dumpable 1 after the uid change, which would have reset it.
        assert last_report(lines, "main") == "sb=4 pd=12 dumpable=1"
        assert last_report(lines, "thread") == "sb=4 pd=1 dumpable=1"
        for who in ("main", "thread"):
            nums = [int(ln.split()[0]) for ln in target.out.lines() if f" {who} " in ln]
            assert_consecutive(nums)
    finally:
        os.kill(target.pid, signal.SIGKILL)
        restorer.wait(scaled(30))


def test_root_without_capabilities_gets_none(build: Builder, procs: Procs,
                                             images: Path) -> None:
    """A uid-0 process with empty capability sets and no_new_privs (as setpriv makes
    it) comes back with none: never with ckpt's."""
    target = procs.start(["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                          "--no-new-privs", build("counter")])
    target.out.wait_numbers(3)
    before = thread_creds(target.pid)
    assert before[target.pid]["CapBnd"] == "0000000000000000"
    assert before[target.pid]["Uid"].split() == ["0"] * 4
    n = len(dump_and_check_dead(procs, target, images))
    restore_detached(procs, target.pid, target.out, images)
    assert thread_creds(target.pid) == before
    assert_consecutive(target.out.wait_numbers(n + 3))


def test_capability_ckpt_lacks_is_refused(build: Builder, procs: Procs, images: Path) -> None:
    """ckpt without CAP_NET_RAW could not give it back: the dump refuses, naming it and
    the process, which runs on unharmed."""
    target = procs.start([build("counter")])
    target.out.wait_numbers(3)
    blocked = proc_status(target.pid)["SigBlk"]
    res = subprocess.run(["setpriv", "--bounding-set=-net_raw", "--inh-caps=-all",
                          *ckpt_cmd(), "dump", "-t", str(target.pid), "-D", str(images)],
                         capture_output=True, text=True, timeout=scaled(60),
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert f"process {target.pid}" in res.stderr and "CAP_NET_RAW" in res.stderr, res.stderr
    assert not (images / "inventory.json").exists()
    n = len(target.out.numbers())
    assert_consecutive(target.out.wait_numbers(n + 3))
    status = proc_status(target.pid)
    assert status["TracerPid"] == "0" and status["SigBlk"] == blocked
    assert is_alive(target.pid)
    # The same dump by a ckpt that has it works.
    ckpt_ok("dump", "-t", target.pid, "-D", images, "-R")
    wait_until(lambda: proc_status(target.pid)["TracerPid"] == "0", 5, "the release")
