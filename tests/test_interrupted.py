"""ckpt killed or interrupted at random moments: the process lives on unharmed.

A process holding 256 MiB is dumped again and again, and each dump is cut at a
random moment by SIGKILL (as the OOM killer or ``kill -9`` would) or by SIGTERM
(as ``timeout`` or a service manager would). Every time, the process survives
with its memory and its output intact: either the dump rolled back and it runs
on, or the dump was complete, the process killed, and it is restored. Restores
killed at random moments leave either nothing or the complete process, running.
The moments are drawn from a seed printed in every failure.

Fault points give the same at each step (tests/test_faults.py); here, between
them. And ckpt's injected syscalls force no signal on the process: a SIGTRAP
handler or a SIGTRAP ignored survives a dump and a restore.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Output,
    Proc,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    my_children,
    proc_state,
    reap_guards,
    restore_detached,
    scaled,
    wait_until,
)

# notes of killed ckpts kept from other helpers' ckpts (conftest.own_notes)
pytestmark = pytest.mark.usefixtures("own_notes")

MIB = 256
CUTS = 20  # dumps cut at random moments, per signal
RESTORE_CUTS = 12


def start_bigmem(build: Builder, procs: Procs) -> Proc:
    target = procs.start([build("bigmem"), str(MIB)], append=True)
    target.out.wait_line("^ready$", timeout=60)
    target.out.wait_numbers(2)
    return target


def assert_memory_intact(target: Proc) -> None:
    """The process checks every byte of its 256 MiB (on SIGUSR1) and says so."""
    start = len(target.out.lines())
    os.kill(target.pid, signal.SIGUSR1)
    verdict = target.out.wait_line(r"^verify ", timeout=60, start=start)
    assert verdict == f"verify ok {MIB << 20}", verdict


def dump_and_restore_intact(procs: Procs, target: Proc, images: Path) -> Proc:
    """A plain dump and restore into ``images``: the process comes back, its memory
    intact, its numbers going on."""
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert_memory_intact(restored)
    assert_consecutive(target.out.numbers())
    return restored


def maps(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def fd_table(pid: int) -> dict[int, str]:
    return {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}


def timed(*args: str | int | Path) -> float:
    """How long ``ckpt ARGS`` takes here, start-up included (it must succeed)."""
    t0 = time.monotonic()
    ckpt_ok(*args)
    return time.monotonic() - t0


def cut(args: list[str | int | Path], after: float, sig: int) -> tuple[int, str]:
    """Run ``ckpt ARGS``, send it ``sig`` ``after`` seconds in; its exit status, stderr."""
    p = subprocess.Popen(ckpt_cmd() + [str(a) for a in args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(after)  # the random moment itself, not a wait for anything
        p.send_signal(sig)
        _, err = p.communicate(timeout=scaled(60))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, err


@pytest.mark.parametrize(("sig", "folder"), [(signal.SIGKILL, "shm_path"),
                                             (signal.SIGTERM, "shm_path"),
                                             (signal.SIGKILL, "tmpfs_path"),
                                             (signal.SIGTERM, "tmpfs_path")],
                         ids=["SIGKILL", "SIGTERM", "SIGKILL-copy", "SIGTERM-copy"])
def test_dump_cut_at_random_moments(build: Builder, procs: Procs, tmp_path: Path,
                                    request: pytest.FixtureRequest, sig: signal.Signals,
                                    folder: str) -> None:
    """Images on tmpfs: the process moves its own pages (pages/splice.py), or, with the
    splice off (the default), ckpt copies them (a thread reading, one writing behind),
    the mappings' VmFlags read meanwhile (mem.MemoryDump.take_flags)."""
    shm_path: Path = request.getfixturevalue(folder)
    target = start_bigmem(build, procs)
    pid, out = target.pid, target.out
    maps_before, fds_before = maps(pid), fd_table(pid)
    span = timed("dump", "-R", "-t", pid, "-D", shm_path / "timing")
    shutil.rmtree(shm_path / "timing")
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    completed = 0
    for i in range(CUTS):
        images = shm_path / f"cut{i}"
        after = rng.uniform(0, span)
        what = f"cut {i} after {after:.3f} s of {span:.3f} (seed {seed})"
        code, err = cut(["dump", "-t", pid, "-D", images, "-v4", "-o", "dump.log"], after, sig)
        assert "Traceback" not in err, f"{what}: {err}"
        assert code in (0, -sig, 128 + sig), f"{what}: exit status {code}: {err}"
        complete = (images / "inventory.json").exists()
        assert code != 0 or complete, f"{what}: ckpt succeeded without an inventory"
        if complete and is_alive(pid):  # killed by the kernel with ckpt (EXITKILL), or not
            wait_until(lambda: not is_alive(pid) or _counts_on(out), 10, "death or life")
        if not is_alive(pid):  # the dump was complete and killed the process: it comes back
            if not complete:
                status = procs.wait_gone(target)
                raise AssertionError(f"{what}: the process died ({status}); {_tail(images)}")
            completed += 1
            procs.wait_gone(target)
            target = restore_detached(procs, pid, out, images)
            maps_before = maps(pid)  # the kernel may merge the restored mappings otherwise
        shutil.rmtree(images, ignore_errors=True)  # tmpfs is memory
        # Alive, with or without a complete dump (killed between the last fsync and the
        # kill, ckpt leaves a valid dump of a process that runs on).
        assert_consecutive(out.numbers())
    # The next ckpt takes back whatever the killed ones left in the process.
    ckpt_ok("dump", "-R", "-t", pid, "-D", shm_path / "after")
    assert maps(pid) == maps_before, f"mappings changed (seed {seed})"
    assert fd_table(pid) == fds_before, f"fds changed (seed {seed})"
    before = len(out.numbers())
    wait_until(lambda: len(out.numbers()) > before + 3, 10, "the process to count on")
    assert_consecutive(out.numbers())
    assert_memory_intact(target)
    dump_and_restore_intact(procs, target, shm_path / "last")  # a plain dump works
    print(f"{CUTS} dumps cut by {sig.name} (seed {seed}): {completed} were complete")


def test_restore_killed_at_random_moments(build: Builder, procs: Procs, tmp_path: Path
                                          ) -> None:
    target = start_bigmem(build, procs)
    pid, out = target.pid, target.out
    images = tmp_path / "images"
    dump_and_check_dead(procs, target, images)
    span = timed("restore", "-D", images, "-d")
    procs.adopt(pid, out)
    os.kill(pid, signal.SIGKILL)
    procs.wait_gone(pid)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    running = 0
    for i in range(RESTORE_CUTS):
        pidfile = tmp_path / f"pid{i}"
        after = rng.uniform(0, span)
        what = f"restore {i} killed after {after:.3f} s of {span:.3f} (seed {seed})"
        code, err = cut(["restore", "-D", images, "-d", "--pidfile", pidfile], after,
                        signal.SIGKILL)
        assert "Traceback" not in err, f"{what}: {err}"
        if proc_state(pid) is not None:
            target = procs.adopt(pid, out)  # ours now: ckpt, its parent, is gone
        if is_alive(pid) and _counts_on(out):
            running += 1  # the complete process, running
            assert code == 0 or not pidfile.exists() or pidfile.read_text() == f"{pid}\n"
            assert_memory_intact(target)
            os.kill(pid, signal.SIGKILL)
        else:
            assert code != 0, f"{what}: ckpt succeeded but the process does not run"
            assert not pidfile.exists(), f"{what}: a killed restore left its pidfile"
        if proc_state(pid) is not None:
            procs.wait_gone(pid)
    print(f"{RESTORE_CUTS} restores killed (seed {seed}): {running} left the process running")


def test_dump_killed_while_the_process_moves_its_pages(build: Builder, procs: Procs,
                                                       shm_path: Path) -> None:
    """ckpt killed while the process vmsplices its own pages into a pipe of its own
    (pages/splice.py): the process lives on, and the dump's guard gives it back its fd
    table (the pipe's two fds closed), its mappings and its registers at once."""
    target = start_bigmem(build, procs)
    pid, out = target.pid, target.out
    fds_before, maps_before = fd_table(pid), maps(pid)
    children = my_children()
    p = subprocess.Popen(ckpt_cmd() + ["dump", "-t", str(pid), "-D", str(shm_path / "cut")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        pipes = wait_until(lambda: [fd for fd, what in fd_table(pid).items()
                                    if fd not in fds_before and what.startswith("pipe:")],
                           60, "the process to make its pipe")
        p.kill()
    finally:
        p.wait()
    assert len(pipes) >= 1
    reap_guards(children)  # once it is reaped, it has put the process right
    assert fd_table(pid) == fds_before
    assert maps(pid) == maps_before
    assert _counts_on(out)
    assert_consecutive(out.numbers())
    assert_memory_intact(target)
    dump_and_restore_intact(procs, target, shm_path / "last")


def test_process_stopped_while_it_moves_its_pages(build: Builder, procs: Procs,
                                                  shm_path: Path) -> None:
    """A SIGSTOP that comes while the process vmsplices its pages (pages/splice.py) does
    not hold the dump up: it completes, and the process, continued, counts on with
    its memory and its fds as they were."""
    target = start_bigmem(build, procs)
    pid, out = target.pid, target.out
    fds_before = fd_table(pid)
    p = subprocess.Popen(ckpt_cmd() + ["dump", "-R", "-t", str(pid), "-D",
                                       str(shm_path / "images")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(fd_table(pid)) > len(fds_before), 60,
                   "the process to make its pipe")
        os.kill(pid, signal.SIGSTOP)
        _, err = p.communicate(timeout=scaled(60))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    os.kill(pid, signal.SIGCONT)
    assert fd_table(pid) == fds_before
    assert _counts_on(out)
    assert_consecutive(out.numbers())
    assert_memory_intact(target)


def _tail(images: Path) -> str:
    """The end of ckpt's log, for failure messages."""
    try:
        return "log:\n" + "\n".join((images / "dump.log").read_text().splitlines()[-15:])
    except OSError as e:
        return f"no log ({e})"


def _counts_on(out: Output) -> bool:
    """True if the restored process prints new numbers (a dying one never does)."""
    before = len(out.numbers())
    deadline = time.monotonic() + scaled(3)
    while time.monotonic() < deadline:
        if len(out.numbers()) > before + 1:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("mode", ["handle", "ignore"])
def test_sigtrap_disposition_survives(build: Builder, procs: Procs, tmp_path: Path,
                                      mode: str) -> None:
    """Syscalls injected by a dump and a restore force no SIGTRAP: a handler or an
    ignored SIGTRAP is left as it was (a forced one resets it, and the next SIGTRAP
    kills the process)."""
    target = procs.start([build("trapstate"), mode])
    target.out.wait_numbers(2)
    expected = "trap=handler blocked=0 hits=1" if mode == "handle" else \
        "trap=ignored blocked=0 hits=0"

    def report() -> str:
        start = len(target.out.lines())
        os.kill(target.pid, signal.SIGUSR1)
        return target.out.wait_line(r"^trap=", start=start)

    ckpt_ok("dump", "-R", "-t", target.pid, "-D", tmp_path / "running")
    assert report() == expected
    dump_and_check_dead(procs, target, tmp_path / "images")
    target = restore_detached(procs, target.pid, target.out, tmp_path / "images")
    assert report() == expected.replace("hits=1", "hits=2")
    assert is_alive(target.pid)
