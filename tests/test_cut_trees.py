"""ckpt cut at random moments while it dumps or restores a tree of four processes
talking over a pipe, a unix socket pair and a TCP connection (--tcp-established;
progs/mixed_tree.py checks each stream at both ends).

A cut dump (SIGKILL or SIGTERM) leaves the whole tree running, every stream going on
with nothing lost or repeated, no network lock left; or the dump was complete and
the tree is gone, and it restores whole. A restore cut at a random moment leaves
the whole tree running or nothing, and the same images restore again. The moments
are drawn from a seed printed in every failure.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Output,
    Procs,
    ckpt_ok,
    is_alive,
    left_behind,
    my_children,
    proc_stat_fields,
    proc_state,
    reap_guards,
    wait_until,
)
from tcp_helpers import ckpt_tables, need
from test_interrupted import cut, timed

# notes of killed ckpts kept from other helpers' ckpts (conftest.own_notes)
pytestmark = pytest.mark.usefixtures("own_notes")

TREE = PROGS / "mixed_tree.py"
CUTS = 6
TIMEOUT = 20.0
TICK = re.compile(r"^tick \d+ pipe=(\d+) unix=(\d+) tcp=(\d+)$")


def _ticks(out: Output, since: int = 0) -> list[tuple[int, int, int]]:
    """What the root had received on the pipe, the unix socket and the TCP connection
    at each tick printed from line ``since`` on; fails on an error any process
    reported."""
    lines = out.lines()
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    assert not errors, errors
    return [(int(m[1]), int(m[2]), int(m[3])) for m in map(TICK.match, lines[since:]) if m]


def _streams_go_on(out: Output, what: str, more: int = 100) -> None:
    """Each of the three streams carries ``more`` numbers from now on (ticks printed
    from now: a restored tree counts on from where its dump saw it)."""
    since = len(out.lines())

    def enough() -> bool:
        ticks = _ticks(out, since)
        return len(ticks) >= 2 and all(b - a >= more
                                       for a, b in zip(ticks[0], ticks[-1], strict=True))

    wait_until(enough, TIMEOUT, f"{what}: the three streams to go on")


def _tree(root: int) -> list[int]:
    """The root and its children (the three of mixed_tree.py)."""
    with open(f"/proc/{root}/task/{root}/children") as f:
        return [root, *map(int, f.read().split())]


def _start(procs: Procs) -> tuple[list[int], Output]:
    root = procs.start([PYTHON, TREE], append=True)
    wait_until(lambda: len(_tree(root.pid)) == 4, TIMEOUT, "the tree")
    pids = _tree(root.pid)
    for pid in pids[1:]:
        procs.adopt(pid, root.out)
    _streams_go_on(root.out, "start")
    return pids, root.out


def _all_alive(pids: list[int], what: str) -> None:
    for pid in pids:
        assert is_alive(pid), f"{what}: process {pid} did not survive ({proc_state(pid)})"


def _restore(procs: Procs, pids: list[int], out: Output, images: Path, what: str) -> None:
    ckpt_ok("restore", "-D", images, "-d", "--tcp-established")
    _all_alive(pids, what)
    for pid in pids:
        procs.adopt(pid, out)
    _streams_go_on(out, what)


def _ours(pid: int) -> bool:
    """Whether ``pid`` is a child of this process (restored processes are: it is a
    subreaper), a zombie too."""
    try:
        return int(proc_stat_fields(pid)[1]) == os.getpid()
    except (FileNotFoundError, ProcessLookupError):
        return False


def _kill_tree(procs: Procs, pids: list[int]) -> None:
    """Kill and reap what runs under the tree's PIDs (and forget it: the next restore
    brings the same PIDs back)."""
    for t in [t for t in procs.tracked if t.pid in pids]:
        procs.tracked.remove(t)
        if t.pidfd >= 0:
            os.close(t.pidfd)
    for sig in (signal.SIGSTOP, signal.SIGKILL):  # stopped first: none sees another die
        for pid in pids:
            if _ours(pid):
                os.kill(pid, sig)
    for pid in pids:
        if _ours(pid):
            os.waitpid(pid, 0)


def _dead_or_going_on(pids: list[int], out: Output, what: str) -> None:
    """A complete dump whose ckpt was cut: the kernel kills the tree with it (it was
    traced with PTRACE_O_EXITKILL), or it was let go before: wait to see which."""
    since = len(out.lines())
    wait_until(lambda: not any(is_alive(p) for p in pids) or len(_ticks(out, since)) >= 2,
               TIMEOUT, f"{what}: the tree to die or go on")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("mode", ["kill", "leave-running"])
def test_dump_of_a_talking_tree_cut(procs: Procs, tmp_path: Path, sig: int, mode: str
                                    ) -> None:
    """``mode``: the dump kills the tree, or leaves it running (-R: a complete dump
    too leaves the tree streaming on, its lock released)."""
    need("nft")
    extra = ["-R"] if mode == "leave-running" else []
    pids, out = _start(procs)
    root = pids[0]
    span = timed("dump", "-R", "-t", root, "-D", tmp_path / "timing", "--tcp-established")
    # A lock some earlier dump left held (its images never restored) under a root PID
    # that this tree's has since become (PIDs wrap at 32768 here) is not the cuts' doing.
    stale = ckpt_tables(root)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    children = my_children()
    completed = 0
    for i in range(CUTS):
        images = tmp_path / f"cut{i}"
        after = rng.uniform(0, span)
        what = f"cut {i} after {after:.3f} s of {span:.3f} (seed {seed})"
        code, err = cut(["dump", "-t", root, "-D", images, "--tcp-established", "-v4",
                          "-o", "dump.log", *extra], after, sig)
        reap_guards(children)
        assert "Traceback" not in err, f"{what}: {err}"
        assert code in (0, -sig, 128 + sig), f"{what}: exit status {code}: {err}"
        complete = (images / "inventory.json").exists()
        assert code != 0 or complete, f"{what}: ckpt succeeded without an inventory"
        if complete and any(is_alive(p) for p in pids):
            _dead_or_going_on(pids, out, what)
        completed += complete
        if complete and not extra and not any(is_alive(p) for p in pids):
            _kill_tree(procs, pids)  # reaped
            _restore(procs, pids, out, images, what)
        else:
            _all_alive(pids, what)
            assert ckpt_tables(root) <= stale, \
                f"{what}: a network lock is left (complete {complete}, exit {code}): {err}"
            _streams_go_on(out, what)
        shutil.rmtree(images, ignore_errors=True)
    ckpt_ok("dump", "-t", root, "-D", tmp_path / "last", "--tcp-established")
    _kill_tree(procs, pids)
    _restore(procs, pids, out, tmp_path / "last", f"the last dump (seed {seed})")
    print(f"{CUTS} dumps ({mode}) cut by {signal.Signals(sig).name} (seed {seed}): "
          f"{completed} were complete")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_restore_of_a_talking_tree_cut(procs: Procs, tmp_path: Path, sig: int) -> None:
    need("nft")
    pids, out = _start(procs)
    images = tmp_path / "images"
    ckpt_ok("dump", "-t", pids[0], "-D", images, "--tcp-established")
    _kill_tree(procs, pids)
    span = timed("restore", "-D", images, "-d", "--tcp-established")
    _all_alive(pids, "the timing restore")
    _kill_tree(procs, pids)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    running = 0
    for i in range(CUTS):
        after = rng.uniform(0, span)
        what = f"restore {i} cut after {after:.3f} s of {span:.3f} (seed {seed})"
        code, err = cut(["restore", "-D", images, "-d", "--tcp-established"], after, sig)
        assert "Traceback" not in err, f"{what}: {err}"
        assert code in (0, -sig, 128 + sig), f"{what}: exit status {code}: {err}"
        if any(is_alive(p) for p in pids):  # dying with ckpt (EXITKILL), or let go
            _dead_or_going_on(pids, out, what)
        states = {p: proc_state(p) for p in pids}
        if any(is_alive(p) for p in pids):  # the whole tree, running on
            assert all(map(is_alive, pids)), f"{what}: part of the tree runs: {states}"
            running += 1
            for pid in pids:
                procs.adopt(pid, out)
            _streams_go_on(out, what)
        else:
            assert code != 0, f"{what}: ckpt succeeded but the tree does not run"
            assert not any(left_behind(p) for p in pids), f"{what}: a process is left"
        _kill_tree(procs, pids)
    _restore(procs, pids, out, images, f"the last restore (seed {seed})")
    print(f"{CUTS} restores cut by {signal.Signals(sig).name} (seed {seed}): {running} left "
          "the tree running")
