"""Namespaces: fds on a process's own namespaces come back on the restored process's
own; an fd on another namespace, and a process in another namespace than ckpt's, are
refused at dump, naming them, the process unharmed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
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
    """A process in a network namespace of its own would come back in ckpt's: refused at
    dump, naming the process and the namespace; it runs on as it was."""
    target = procs.start(["unshare", "--net", PYTHON, NSFDS])
    printed_fds(target.out)
    target.out.wait_numbers(3)
    net = os.stat(f"/proc/{target.pid}/ns/net").st_ino
    before = snapshot(target.pid)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"process {target.pid} is in net namespace net:[{net}], not ckpt's" in err, err
    assert "nsenter" in err
    assert_untouched(target, before)


def _in_ns(pid: int, flag: str, *argv: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), flag, *argv], capture_output=True,
                          text=True, check=True).stdout.strip()


def _ns(pid: int, name: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{name}").st_ino


def test_uts_and_ipc_namespaces_of_the_tree(build: Builder, procs: Procs,
                                            images: Path) -> None:
    """A tree in uts and ipc namespaces of its own (unshare --uts --ipc): its host name,
    an ipc sysctl and its SysV objects (a segment, a semaphore set, a queue; children
    blocked in msgrcv and semop) come back in new namespaces of the restored tree, not
    ckpt's: the children wake up with what the parent sends after the restore."""
    prog = build("sysv_ipc")
    target = procs.start(["unshare", "--uts", "--ipc", "sh", "-c",
                          "hostname ckpt-uts-test && echo 12345 > /proc/sys/kernel/msgmax "
                          f"&& exec {prog}"])
    target.out.wait_line(r"^ready$")
    with open(f"/proc/{target.pid}/task/{target.pid}/children") as f:
        kids = [int(x) for x in f.read().split()]
    assert _ns(target.pid, "uts") != _ns(os.getpid(), "uts")
    queues = _in_ns(target.pid, "-i", "cat", "/proc/sysvipc/msg")

    dump_and_check_dead(procs, target, images)
    for pid in kids:
        procs.wait_gone(pid)
    restored = restore_detached(procs, target.pid, target.out, images)
    for pid in [restored.pid, *kids]:
        for name in ("uts", "ipc"):
            assert _ns(pid, name) != _ns(os.getpid(), name), f"{pid} is in our {name}"
            assert _ns(pid, name) == _ns(restored.pid, name)
    assert _in_ns(restored.pid, "-u", "hostname") == "ckpt-uts-test"
    assert _in_ns(restored.pid, "-i", "cat", "/proc/sys/kernel/msgmax") == "12345"
    assert _in_ns(restored.pid, "-i", "cat", "/proc/sysvipc/msg").split("\n")[1].split()[:4] \
        == queues.split("\n")[1].split()[:4]
    os.kill(restored.pid, signal.SIGUSR1)
    assert restored.out.wait_line(r"^state ") == "state ok"
    restored.out.wait_line(r"^A got wake$")
    restored.out.wait_line(r"^B got it$")


def test_child_in_another_uts_namespace_refused(procs: Procs, images: Path) -> None:
    """A child in a uts namespace other than its parent's: the tree's namespaces are
    saved only when all its processes share them; refused at dump, the tree unharmed."""
    target = procs.start(["sh", "-c", f"unshare --uts {PYTHON} {NSFDS} & wait"])
    kid = wait_until(lambda: next(iter(_children(target.pid)), None), 10, "the child")
    wait_until(lambda: _ns(kid, "uts") != _ns(target.pid, "uts"), 10, "its namespace")
    target.out.wait_numbers(3)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert f"process {kid} is in uts namespace" in err, err
    assert not (images / "inventory.json").exists()
    n = len(target.out.numbers())
    assert_consecutive(target.out.wait_numbers(n + 3))


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


_OFF_LO = ("subprocess.run('ip link set lo up && ip addr add 10.9.9.9/32 dev lo', "
           "shell=True, check=True)\n")


@pytest.mark.parametrize("what,make", [
    ("an inet socket bound to 10.9.9.9 in",
     _OFF_LO + "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
     "s.bind(('10.9.9.9', 0))"),
    ("a netlink socket of", "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)"),
    ("a packet socket of", "s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)"),
])
def test_sockets_of_an_unsaved_network_namespace_refused(procs: Procs, images: Path,
                                                        what: str, make: str) -> None:
    """With --empty-ns net (runc's empty_ns) the tree's network namespace is not saved:
    a socket other than a unix one lives there, and is refused at dump, naming it (an
    inet one unless on lo, which the new namespace has); the process runs on as it
    was."""
    code = (f"import itertools, socket, subprocess, time\n{make}\n"
            "for i in itertools.count():\n print(i, flush=True)\n time.sleep(0.1)")
    target = procs.start(["unshare", "--net", PYTHON, "-c", code])
    target.out.wait_numbers(3)
    before = snapshot(target.pid)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images, "--empty-ns", "net")
    assert (f"is {what} the tree's own network namespace, which is not saved "
            "(--empty-ns net)") in err, err
    assert_untouched(target, before)
