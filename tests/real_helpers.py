"""What the tests of real programs share: a dump-and-restore cycle of a whole tree that
says how long each half took, the tree of a process, a free loopback port, an HTTP GET,
and a skip naming the Debian package a missing program comes from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt_helpers import (
    Output,
    Proc,
    Procs,
    ckpt_ok,
    is_alive,
    proc_state,
    scaled,
    wait_until,
)

TIMEOUT = 30.0  # seconds (scaled) for a program to answer or print what it should


def need(program: str, package: str) -> str:
    """The path of ``program``; skip, saying which Debian package brings it, without it."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian package {package}; "
                    "scripts/bootstrap.sh installs it as root)")
    return path


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents first (one that exits meanwhile left out)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        out.append(p)
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(x) for x in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):  # ESRCH: the thread is exiting
                continue
    return out


def threads(pid: int) -> set[int]:
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def cycle(procs: Procs, root: Proc | int, images: Path, *flags: str,
          out: Output | None = None, timeout: float = 120.0,
          leave_running: bool = False) -> list[int]:
    """Dump the tree of ``root`` (killed; with ``leave_running``, dumped with -R and then
    killed, every process of it at once, as a crash would), wait until every process of
    it is gone, and restore it with ``-d``: the root runs again under its PID. Returns
    the PIDs the dump saved (short-lived ones, a loop's ``sleep``, may have ended
    since). The seconds each half took are printed (``pytest -s`` shows them; never
    asserted)."""
    pid = root.pid if isinstance(root, Proc) else root
    t0 = time.monotonic()
    ckpt_ok("dump", "-t", pid, "-D", images, *flags, *(["-R"] if leave_running else []),
            timeout=timeout)
    t1 = time.monotonic()
    pids = dumped_pids(images)
    if leave_running:
        assert is_alive(pid), f"dump -R did not leave {pid} running"
        crash(procs, pids)
    for p in pids:
        procs.wait_gone(p)
    t2 = time.monotonic()
    ckpt_ok("restore", "-D", images, "-d", *flags, timeout=timeout)
    t3 = time.monotonic()
    print(f"\n{pid}: dump {t1 - t0:.2f} s, restore {t3 - t2:.2f} s, "
          f"{sum(f.stat().st_size for f in images.iterdir()) >> 20} MiB of images")
    assert is_alive(pid), f"process {pid} was not restored (state {proc_state(pid)})"
    if out is None and isinstance(root, Proc):
        out = root.out
    assert out is not None
    procs.adopt(pid, out)
    return pids


ROUNDS = (False, True, False)  # leave_running: killed, -R, killed


def three_rounds(procs: Procs, root: Proc, tmp_path: Path, *flags: str,
                 out: Output | None = None, after: Callable[[int], None] | None = None,
                 crash: bool = False) -> None:
    """Dump ``root``'s tree and restore it three times (ROUNDS); ``after(i)`` checks
    the work goes on after the i-th round. The second dump leaves the tree running
    (-R); with ``crash`` it is then killed, as a crash would, and restored from that
    dump. Without, it runs on unharmed: a tree whose work reaches outside it (lines
    appended to a file, a client's connection) would be restored behind what it did
    since, which it would do again (with criu too), and killing it closes its
    connections."""
    for i, leave_running in enumerate(ROUNDS):
        images = tmp_path / f"images{i}"
        if leave_running and not crash:
            ckpt_ok("dump", "-t", root.pid, "-D", images, *flags, "-R")
            assert is_alive(root.pid), "dump -R did not leave the tree running"
        else:
            cycle(procs, root, images, *flags, out=out, leave_running=leave_running)
        if after is not None:
            after(i)


def crash(procs: Procs, pids: list[int]) -> None:
    """Kill ``pids`` and every process of their process groups, and of the sessions
    one of them leads, at once (what a tree dumped with -R started since, a make's new
    job, a job control shell's new job in a group of its own, would otherwise live on
    and keep its group's or session's number, the PID of its leader), and reap those
    that became ours."""
    groups, sessions = set(), set()
    for p in pids:
        try:
            groups.add(os.getpgid(p))
            sessions.add(os.getsid(p))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())
    sessions &= set(pids)  # those the tree leads: not a terminal's shell outside it
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def members() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and (os.getpgid(int(entry)) in groups
                                        or os.getsid(int(entry)) in sessions):
                    found.append(int(entry))
            except ProcessLookupError:
                pass
        return found

    for p in [*pids, *members()]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def emptied() -> bool:
        for p in members():
            if p not in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, os.WNOHANG)
                except (ChildProcessError, ProcessLookupError):
                    pass
        return not [p for p in members() if p not in pids]

    wait_until(emptied, 30, "the killed tree's process groups and sessions to empty")


def dumped_pids(images: Path) -> list[int]:
    """The PIDs of every process the dump in ``images`` saved, parents first."""
    return [t["pid"] for t in json.loads((images / "inventory.json").read_text())["tasks"]]


def http_get(port: int, path: str = "/") -> str | None:
    """The body of GET ``path`` on loopback ``port``, or None when nobody answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                    timeout=scaled(10)) as r:
            return r.read().decode()
    except OSError:
        return None
