"""Namespaces: fds on a process's own namespaces come back on the restored process's
own; an fd on another namespace, and a process in another namespace than ckpt's, are
refused at dump, naming them, the process unharmed."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Procs,
    assert_consecutive,
    ckpt_fails,
    dump_and_check_dead,
    fd_pos_flags,
    printed_fds,
    restore_detached,
    wait_until,
)
from test_failures import assert_untouched, snapshot

NSFDS = PROGS / "nsfds.py"


def _report(pid: int, out_lines: list[str], start: int) -> list[str]:
    """The "ns"/"same"/"setns" lines of one SIGUSR1 report printed after line ``start``."""
    os.kill(pid, signal.SIGUSR1)

    def done() -> list[str] | None:
        lines = out_lines()[start:]
        return lines if any(ln.startswith("setns ") for ln in lines) else None

    lines = wait_until(done, 10, "the namespace report")
    return [ln for ln in lines if ln.split()[0] in ("ns", "same", "setns")]


def test_fds_on_own_namespaces(procs: Procs, images: Path) -> None:
    """An fd on each of /proc/self/ns/* (pid_for_children, time_for_children too) and an
    O_PATH one: after the restore each names the same namespace, the process's own, and
    setns(2) on the uts one works."""
    target = procs.start([PYTHON, NSFDS])
    fds = printed_fds(target.out)
    assert {"net", "pid", "pid_for_children", "uts", "user", "mnt", "ipc"} <= set(fds)
    out = target.out
    target.out.wait_numbers(2)
    before = _report(target.pid, out.lines, 0)
    assert "setns ok" in before and not [ln for ln in before if ln.endswith(" no")], before
    links = {name: os.readlink(f"/proc/{target.pid}/fd/{fd}") for name, fd in fds.items()}
    flags = {name: fd_pos_flags(target.pid, fd)[1] for name, fd in fds.items()}
    assert flags["net_path"] & os.O_PATH

    dump_and_check_dead(procs, target, images)
    cut = len(out.lines())
    restored = restore_detached(procs, target.pid, out, images)
    assert {name: os.readlink(f"/proc/{restored.pid}/fd/{fd}")
            for name, fd in fds.items()} == links
    assert {name: fd_pos_flags(restored.pid, fd)[1] for name, fd in fds.items()} == flags
    assert _report(restored.pid, out.lines, cut) == before
    assert_consecutive(out.wait_numbers(len(out.numbers()) + 3))


def test_fd_on_another_namespace_refused(procs: Procs, images: Path) -> None:
    """An fd on another process's network namespace: refused at dump, naming the fd and
    the namespace; the process runs on as it was."""
    other = procs.start(["unshare", "--net", "sleep", "600"], name="other")
    wait_until(lambda: os.stat(f"/proc/{other.pid}/ns/net").st_ino
               != os.stat("/proc/self/ns/net").st_ino, 10, "unshare to make its namespace")
    netns = os.stat(f"/proc/{other.pid}/ns/net").st_ino
    target = procs.start([PYTHON, NSFDS, f"/proc/{other.pid}/ns/net"])
    fd = printed_fds(target.out)["other"]
    target.out.wait_numbers(3)
    before = snapshot(target.pid)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert re.search(rf"process {target.pid} fd {fd}: net:\[{netns}\] is a net namespace "
                     r"other than the process's own", err), err
    assert not (images / "inventory.json").exists()
    assert_untouched(target, before)


def test_process_in_another_namespace_refused(procs: Procs, images: Path) -> None:
    """A process in a UTS namespace of its own would come back in ckpt's: refused at
    dump, naming the process and the namespace; it runs on as it was."""
    target = procs.start(["unshare", "--uts", PYTHON, NSFDS])
    printed_fds(target.out)
    target.out.wait_numbers(3)
    uts = os.stat(f"/proc/{target.pid}/ns/uts").st_ino
    before = snapshot(target.pid)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"process {target.pid} is in uts namespace uts:[{uts}], not ckpt's" in err, err
    assert "nsenter" in err
    assert_untouched(target, before)
