"""ckpt cut at random moments in the modes tests/test_interrupted.py (plain dump and
restore) and tests/test_faults.py (each step) leave out: a dump that leaves the tree
running (-R), a pre-dump, a dump to a page server (the dump or the server cut), and a
restore sent SIGTERM or SIGINT (anywhere, or once the tree runs).

A cut dump of any of these modes leaves the tree running, and once the next ckpt has
taken back what the cut one left, exactly as it was (tracer, masks, mappings, fds,
counters without a gap). A cut restore leaves the complete tree running or nothing,
and the same images restore again. The moments are drawn from a seed printed in
every failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt.images import INVENTORY
from ckpt_helpers import (
    Builder,
    Procs,
    ckpt_cmd,
    ckpt_ok,
    ckpt_stopped_at,
    is_alive,
    my_children,
    proc_state,
    reap_guards,
    run_ckpt,
    scaled,
)
from test_faults import Dumped as FaultsDumped
from test_faults import (
    Tree,
    assert_nothing_left,
    assert_untouched,
    dumped,  # noqa: F401 - the module's fixture, used by name
    fresh_images,
    restore_and_check,
    snapshot,
    start_tree,
)
from test_incremental import page_server
from test_interrupted import cut, timed

# notes of killed ckpts kept from other helpers' ckpts (conftest.own_notes)
pytestmark = pytest.mark.usefixtures("own_notes")

CUTS = 6


def _server_ended(server: subprocess.Popen[str], received: Path, what: str) -> None:
    """The page server ends by itself: with a complete dump, or an error in one line
    and no inventory."""
    _out, err = server.communicate(timeout=scaled(30))
    assert "Traceback" not in err, f"{what}: {err}"
    complete = (received / "inventory.json").exists()
    if server.returncode == 0:
        assert complete, f"{what}: the page server ended well without an inventory"
    else:
        assert server.returncode == 1 and not complete, f"{what}: {server.returncode} {err}"
        assert len(err.strip().splitlines()) == 1, f"{what}: {err}"


def _assert_cut_dump(code: int, err: str, sig: int, what: str) -> None:
    assert "Traceback" not in err, f"{what}: {err}"
    assert code in (0, -sig, 128 + sig), f"{what}: exit status {code}: {err}"


def _cuts_leave_the_tree(build: Builder, procs: Procs, tmp_path: Path, sig: int,
                         one_cut: Callable[[Tree, int, random.Random, str], None]) -> None:
    """``one_cut`` CUTS times; the tree runs on through each, and is as it was once the
    next ckpt took back what the cut ones left."""
    tree = start_tree(build, procs, tmp_path)
    before = {pid: snapshot(pid) for pid in (tree.root, tree.child)}
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    children = my_children()
    for i in range(CUTS):
        one_cut(tree, i, rng, f"cut {i} (seed {seed})")
        reap_guards(children)
        for pid in (tree.root, tree.child):
            assert proc_state(pid) not in (None, "Z", "X"), \
                f"cut {i} (seed {seed}): {pid} did not survive (state {proc_state(pid)})"
    ckpt_ok("dump", "-R", "-t", tree.root, "-D", tmp_path / "again")
    assert_untouched(tree, before)
    ckpt_ok("dump", "-t", tree.root, "-D", tmp_path / "last")
    for pid in (tree.child, tree.root):
        procs.wait_gone(pid)
    restore_and_check(procs, tree, tmp_path / "last")


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM],
                                  ids=["SIGKILL", "SIGTERM"])


@SIGNALS
@pytest.mark.parametrize("command", ["dump -R", "pre-dump", "pre-dump --track-mem"])
def test_running_dump_cut(build: Builder, procs: Procs, tmp_path: Path, sig: int,
                          command: str) -> None:
    """A dump that leaves the tree running, or a pre-dump, cut anywhere."""
    words = command.split()

    def one_cut(tree: Tree, i: int, rng: random.Random, what: str) -> None:
        argv: list[str | int | Path] = [words[0], *words[1:], "-t", tree.root, "-D",
                                        tmp_path / f"cut{i}"]
        span = timed(*argv[:-1], tmp_path / f"timing{i}")
        code, err = cut(argv, rng.uniform(0, span), sig)
        _assert_cut_dump(code, err, sig, what)

    _cuts_leave_the_tree(build, procs, tmp_path, sig, one_cut)


@pytest.mark.parametrize("point", ["dump.unmap", "dump.unmap:2"])
def test_dump_killed_at_its_unmap(build: Builder, procs: Procs, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """A dump -R killed as it unmaps its scratch area from a process (the root, or the
    child): the munmap runs on without ckpt and the thread waits in the parking code,
    the area gone; the next ckpt wakes it all the same (it failed reading the area,
    EIO, and left the thread waiting for good)."""
    tree = start_tree(build, procs, tmp_path)
    before = {pid: snapshot(pid) for pid in (tree.root, tree.child)}
    children = my_children()
    monkeypatch.setenv("CKPT_FAULT", f"{point}:kill")
    res = run_ckpt("dump", "-R", "-t", tree.root, "-D", tmp_path / "cut")
    monkeypatch.delenv("CKPT_FAULT")
    assert res.returncode == -signal.SIGKILL, res.stderr
    reap_guards(children)  # its guard woke the thread, or the next ckpt does
    res = ckpt_ok("dump", "-R", "-t", tree.root, "-D", tmp_path / "again")
    assert "Traceback" not in res.stderr and "Errno" not in res.stderr, res.stderr
    assert_untouched(tree, before)


@SIGNALS
@pytest.mark.parametrize("victim", ["dump", "page-server"])
def test_page_server_dump_cut(build: Builder, procs: Procs, tmp_path: Path, sig: int,
                              victim: str) -> None:
    """A dump -R sending its pages to a page server, the dump or the server cut
    anywhere: the dump fails in one line or completes, the server ends either way."""
    span = 0.0

    def one_cut(tree: Tree, i: int, rng: random.Random, what: str) -> None:
        nonlocal span
        if not span:  # how long a whole dump takes here
            server, port = page_server(procs, tmp_path / "timing")
            span = timed("dump", "-R", "-t", tree.root, "-D", tmp_path / "timing-local",
                         "--page-server", "--address", "127.0.0.1", "--port", port)
            assert server.wait(scaled(30)) == 0
        server, port = page_server(procs, tmp_path / f"received{i}")
        argv: list[str | int | Path] = ["dump", "-R", "-t", tree.root, "-D",
                                        tmp_path / f"cut{i}", "--page-server", "--address",
                                        "127.0.0.1", "--port", port]
        try:
            if victim == "dump":
                code, err = cut(argv, rng.uniform(0, span), sig)
                _assert_cut_dump(code, err, sig, what)
                if code == 0:  # complete: the server wrote it all, and ended
                    _out, serr = server.communicate(timeout=scaled(30))
                    assert server.returncode == 0, f"{what}: {serr}"
                    return
                # Cut before it connected, the server still waits for a dump: the next
                # one goes there. Cut after, the server ends, and the next is refused.
                retry = run_ckpt(*argv[:5], tmp_path / f"retry{i}", *argv[6:])
                assert "Traceback" not in retry.stderr, f"{what}: {retry.stderr}"
                errors = [ln for ln in retry.stderr.splitlines() if " Warn " not in ln]
                assert retry.returncode == 0 or len(errors) == 1, f"{what}: {retry.stderr}"
                _server_ended(server, tmp_path / f"received{i}", what)
            else:
                p = subprocess.Popen(ckpt_cmd() + [str(a) for a in argv],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
                time.sleep(rng.uniform(0, span))
                server.send_signal(sig)
                _, err = p.communicate(timeout=scaled(60))
                assert "Traceback" not in err, f"{what}: {err}"
                assert p.returncode in (0, 1), f"{what}: exit {p.returncode}: {err}"
                if p.returncode == 1:
                    assert len(err.strip().splitlines()) == 1, f"{what}: {err}"
                _out, serr = server.communicate(timeout=scaled(30))
                assert "Traceback" not in serr, f"{what}: {serr}"
                assert server.returncode in (0, -sig, 128 + sig), f"{what}: {serr}"
                assert p.returncode == 1 or (tmp_path / f"received{i}" / INVENTORY).exists()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()

    _cuts_leave_the_tree(build, procs, tmp_path, sig, one_cut)


# ------------------------------------------------------------------ restore


def _adopt_running(procs: Procs, tree: Tree, pidfile: Path, what: str) -> None:
    """The complete tree runs, its pidfile written: checked, then killed."""
    for pid in (tree.root, tree.child):
        assert is_alive(pid), f"{what}: {pid} gone (state {proc_state(pid)})"
        procs.adopt(pid, tree.out)
    assert pidfile.read_text() == f"{tree.root}\n", what
    for pid in (tree.root, tree.child):
        os.kill(pid, signal.SIGKILL)
    for pid in (tree.root, tree.child):
        procs.wait_gone(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_restore_signalled_once_the_tree_runs(dumped: FaultsDumped,  # noqa: F811
                                              procs: Procs, tmp_path: Path,
                                              sig: signal.Signals) -> None:
    """A signal once the tree runs and the pidfile is written: a SIGTERM or SIGINT is
    only noted and the restore ends well (it said 'interrupted', exit 143, the tree
    running); a SIGKILL leaves the tree running too."""
    images = fresh_images(dumped, tmp_path)
    pidfile = tmp_path / "restored.pid"
    before = my_children()
    with ckpt_stopped_at("restore.done", "restore", "-D", images, "-d", "--pidfile",
                         pidfile) as p:
        p.send_signal(sig)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=scaled(60))
    reap_guards(before)
    assert p.returncode == (-sig if sig == signal.SIGKILL else 0), err
    assert "Traceback" not in err and "interrupted" not in err, err
    _adopt_running(procs, dumped.tree, pidfile, sig.name)
    restore_and_check(procs, dumped.tree, fresh_images(dumped, tmp_path / "again"))


def test_restore_cut_by_sigterm(dumped: FaultsDumped, procs: Procs,  # noqa: F811
                                tmp_path: Path) -> None:
    """A restore sent SIGTERM anywhere: the complete tree runs (the restore was done,
    exit 0) or nothing is left (exit 143, or killed by it before its handler was set),
    and the images restore again."""
    tree = dumped.tree
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    images = fresh_images(dumped, tmp_path)
    pidfile = tmp_path / "timing.pid"
    span = timed("restore", "-D", images, "-d", "--pidfile", pidfile)
    _adopt_running(procs, tree, pidfile, "timing")
    for i in range(CUTS):
        images = fresh_images(dumped, tmp_path / f"cut{i}")
        pidfile = tmp_path / f"pid{i}"
        what = f"restore {i} (seed {seed})"
        before = my_children()
        code, err = cut(["restore", "-D", images, "-d", "--pidfile", pidfile],
                             rng.uniform(0, span), signal.SIGTERM)
        assert "Traceback" not in err, f"{what}: {err}"
        reap_guards(before)
        if code == 0:
            _adopt_running(procs, tree, pidfile, what)
            continue
        assert code in (128 + signal.SIGTERM, -signal.SIGTERM), f"{what}: exit {code}: {err}"
        if code > 0:
            assert err.strip().endswith("interrupted by SIGTERM"), f"{what}: {err}"
        assert_nothing_left(procs, tree, pidfile)
    restore_and_check(procs, tree, fresh_images(dumped, tmp_path / "last"))
