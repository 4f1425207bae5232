"""Lazy restore (criu's --lazy-pages): ``ckpt lazy-pages`` serves the pages of a
``ckpt restore --lazy-pages`` through userfaultfd while the processes already run.

The targets (tests/progs/lazyheap.c, cowtree.c) check their own memory: every tick a
slice of their heap, on SIGUSR1 all of it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt.kernel import uffd
from ckpt.lazy_pages import CHUNK
from ckpt_helpers import (
    Builder,
    Output,
    Proc,
    Procs,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    ckpt_stopped_at,
    dump_and_check_dead,
    is_alive,
    my_children,
    proc_ppid,
    proc_state,
    reap_guards,
    restore_detached,
    scaled,
    ticks_go_on,
    wait_until,
)

pytestmark = pytest.mark.skipif(not uffd.available(), reason="no userfaultfd here")


class Daemon:
    """A ``ckpt lazy-pages`` run in the background, on the same images."""

    def __init__(self, images: Path, log: Path, background: bool = True):
        env = dict(os.environ)
        if not background:
            env["CKPT_LAZY_BACKGROUND"] = "0"
        self.log = log
        self.popen = subprocess.Popen(
            [*ckpt_cmd(), "lazy-pages", "-D", str(images), "-v4", "-o", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        assert line.startswith("ckpt lazy-pages: listening on "), (
            line, self.popen.stderr.read() if self.popen.poll() is not None else "")

    def wait(self, timeout: float = 60.0) -> int:
        """Its exit status, once it ended by itself (every page in place or every
        process gone)."""
        return self.popen.wait(scaled(timeout))

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.stop()


def _dumped(build: Builder, procs: Procs, images: Path, mib: int) -> Proc:
    """lazyheap with ``mib`` MiB of heap, ticking, then dumped (killed)."""
    target = procs.start([build("lazyheap"), str(mib)])
    target.out.wait_line(r"^ready$", timeout=30)
    ticks_go_on(target.out, more=2)
    dump_and_check_dead(procs, target, images)
    return target


def _lazy_restore(procs: Procs, pid: int, out: Output, images: Path) -> None:
    restore_detached(procs, pid, out, images, "--lazy-pages", timeout=120)


def _served_on_touch(build: Builder, procs: Procs, images: Path, daemons: list[Daemon],
                     tmp_path: Path, mib: int) -> tuple[Proc, Daemon, Proc]:
    """lazyheap of ``mib`` MiB dumped and restored lazily, by a daemon that serves pages
    on touch only: the dumped target, the daemon, the restored process."""
    target = _dumped(build, procs, images, mib)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    _lazy_restore(procs, target.pid, target.out, images)
    return target, daemon, procs.tracked[-1]


def test_counter_with_large_heap_runs_at_once(build: Builder, procs: Procs, images: Path,
                                              daemons: list[Daemon], tmp_path: Path) -> None:
    """256 MiB of checked heap: the counter goes on from where it stopped while its pages
    come, every slice it checks right; all of it checked once the daemon is done, which
    exits by itself, the process running on."""
    target = procs.start([build("lazyheap"), "256"])
    target.out.wait_line(r"^ready$", timeout=60)
    ticks_go_on(target.out, more=3)
    dump_and_check_dead(procs, target, images, timeout=120)
    daemon = Daemon(images, tmp_path / "lazy.log")
    daemons.append(daemon)
    restored_at = len(target.out.lines())
    _lazy_restore(procs, target.pid, target.out, images)
    ticks_go_on(target.out, more=5)
    assert daemon.wait() == 0, daemon.popen.stderr.read()  # type: ignore[union-attr]
    log = daemon.log_text()
    served = int(re.search(r"process \d+: (\d+) pages to serve", log)[1])  # type: ignore[index]
    assert served >= (256 << 20) // 4096, log
    assert "every page in place" in log
    signal.pidfd_send_signal(procs.tracked[-1].pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^verify ", start=restored_at, timeout=30) == \
        f"verify ok {256 << 20}"
    ticks_go_on(target.out, more=3)


def test_tree_of_counters_each_with_its_heap(build: Builder, procs: Procs, images: Path,
                                             daemons: list[Daemon], tmp_path: Path) -> None:
    """A parent and 2 children, each with 64 MiB of heap of its own: each gets its own
    userfaultfd and goes on, every byte right."""
    target = procs.start([build("lazyheap"), "64", "2"])
    pids = [int(x) for x in target.out.wait_line(r"^pids ", timeout=30).split()[1:]]
    roles = ["P ", "K0 ", "K1 "]
    for role in roles:
        target.out.wait_line(rf"^{role}ready$", timeout=60)
        ticks_go_on(target.out, role, more=2)
    ckpt_ok("dump", "-t", pids[0], "-D", images, timeout=120)
    for pid in pids:
        procs.wait_gone(pid)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    _lazy_restore(procs, pids[0], target.out, images)
    adopted = [procs.tracked[-1]] + [procs.adopt(pid, target.out) for pid in pids[1:]]
    assert len(re.findall(r"pages to serve", daemon.log_text())) == 3
    for role, proc in zip(roles, adopted, strict=True):
        ticks_go_on(target.out, role, more=3)
        n = len(target.out.lines())
        signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
        assert target.out.wait_line(rf"^{role}verify ", start=n, timeout=30) == \
            f"{role}verify ok {64 << 20}"
    for proc in adopted:  # pages never touched stay pending: the daemon waits for them
        assert daemon.popen.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        procs.wait_gone(proc)
    assert daemon.wait() == 0
    assert len(re.findall(r"process \d+ exited", daemon.log_text())) == 3


def test_forked_tree_sharing_memory(build: Builder, procs: Procs, images: Path,
                                    daemons: list[Daemon], tmp_path: Path) -> None:
    """cowtree: workers share most of their parent's 64 MiB copy-on-write; the pages they
    inherit are written at once, the others come lazily; every process checks them all."""
    target = procs.start([build("cowtree")])
    out = target.out
    pids = [int(x) for x in out.wait_line(r"^pids ").split()[1:]]
    roles = ["P", "W0", "W1", "W2"]
    for r in roles:
        out.wait_line(rf"^{r} 2$", timeout=30)
    ckpt_ok("dump", "-t", pids[0], "-D", images, timeout=120)
    for pid in pids:
        procs.wait_gone(pid)
    daemon = Daemon(images, tmp_path / "lazy.log")
    daemons.append(daemon)
    _lazy_restore(procs, pids[0], out, images)
    adopted = [procs.tracked[-1]] + [procs.adopt(pid, out) for pid in pids[1:]]
    for role, proc in zip(roles, adopted, strict=True):
        n = len(out.lines())
        signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
        assert out.wait_line(rf"^{role} check ", start=n, timeout=30) == f"{role} check ok"
    assert daemon.wait() == 0
    for role in roles:
        count = sum(1 for ln in out.lines() if re.match(rf"^{role} \d+$", ln))
        out.wait_line(rf"^{role} {count + 2}$", timeout=20)


def test_moved_and_dropped_while_pending(build: Builder, procs: Procs, images: Path,
                                         daemons: list[Daemon], tmp_path: Path) -> None:
    """Pages not yet served when the process mremaps, munmaps and MADV_DONTNEEDs them:
    the moved ones come at their new place, the others are forgotten (the dropped MiB
    reads zeros); the daemon ends when the process exits."""
    target = _dumped(build, procs, images, 32)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    _lazy_restore(procs, target.pid, target.out, images)
    proc = procs.tracked[-1]
    n = len(target.out.lines())
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR2)
    assert target.out.wait_line(r"^moved", start=n, timeout=30) == "moved"
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^verify ", start=n, timeout=30) == f"verify ok {32 << 20}"
    ticks_go_on(target.out, more=3)
    os.kill(target.pid, signal.SIGKILL)
    procs.wait_gone(proc)
    assert daemon.wait() == 0
    log = daemon.log_text()
    assert all(f"process {target.pid}: {what}" in log for what in ("mremap", "munmap",
                                                                   "madvise")), log


def test_no_daemon_is_a_clear_error_and_loses_nothing(build: Builder, procs: Procs,
                                                      images: Path) -> None:
    """Without a daemon the restore fails before it creates anything; the images then
    restore without --lazy-pages."""
    target = _dumped(build, procs, images, 8)
    err = ckpt_fails("restore", "-D", images, "-d", "--lazy-pages")
    assert "no lazy-pages daemon" in err and "lazy-pages.socket" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not is_alive(target.pid)
    restore_detached(procs, target.pid, target.out, images)
    ticks_go_on(target.out, more=3)


def test_daemon_killed_kills_what_waits_on_it(build: Builder, procs: Procs, images: Path,
                                              daemons: list[Daemon], tmp_path: Path) -> None:
    """The daemon killed with pages still to serve: its keeper kills the process, which
    never reads zeros where its pages were to come; nothing is left behind."""
    before = my_children()
    target, daemon, proc = _served_on_touch(build, procs, images, daemons, tmp_path, 32)
    daemon.popen.kill()
    daemon.popen.wait()
    assert procs.wait_gone(proc, timeout=30) == -signal.SIGKILL
    assert not [ln for ln in target.out.lines() if "BAD" in ln]
    err = daemon.popen.stderr.read()  # type: ignore[union-attr]
    assert f"process {target.pid} killed" in err, err
    wait_until(lambda: all(proc_state(p) in ("Z", None) for p in my_children() - before
                           if _comm(p) == "ckpt"), 30, "the keeper to exit")
    reap_guards(before)  # it is ours (we are a subreaper): reaped


def test_dump_lazy_pages_is_refused(build: Builder, procs: Procs, images: Path) -> None:
    """criu's remote post-copy (dump --lazy-pages) is refused, the tree left running."""
    target = procs.start([build("lazyheap"), "8"])
    target.out.wait_line(r"^ready$", timeout=30)
    err = ckpt_fails("dump", "-t", target.pid, "-D", images, "--lazy-pages")
    assert "--lazy-pages" in err and "post-copy" in err, err
    ticks_go_on(target.out, more=3)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_page_data_changed_after_the_check_kills(build: Builder, procs: Procs, images: Path,
                                                 daemons: list[Daemon], tmp_path: Path) -> None:
    """A pages file changed after the daemon checked it: the process touching the changed
    chunk is killed, never run on those bytes, and the daemon says why and exits 1."""
    target = _dumped(build, procs, images, 32)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    pages = images / f"pages-{target.pid}.img"
    with open(pages, "r+b") as f:  # a byte in the middle of the heap
        f.seek(pages.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    # The process may touch the changed chunk by itself (each tick checks a slice of its
    # heap) and be killed before the restore's exit is seen here: a zombie is fine.
    ckpt_ok("restore", "-D", images, "-d", "--lazy-pages", timeout=120)
    assert proc_state(target.pid) is not None, "the restored process is not there at all"
    proc = procs.adopt(target.pid, target.out)
    assert proc_ppid(target.pid) == os.getpid(), "restored process was not re-parented to us"
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)  # touches every page
    assert procs.wait_gone(proc, timeout=30) == -signal.SIGKILL
    assert not [ln for ln in target.out.lines() if "BAD" in ln or "verify" in ln]
    assert daemon.wait() == 1
    log = daemon.log_text()
    assert "changed since the daemon checked it" in log and \
        f"process {target.pid} killed" in log, log


def test_restore_killed_after_the_handover(build: Builder, procs: Procs, images: Path,
                                           daemons: list[Daemon], tmp_path: Path) -> None:
    """ckpt killed once it handed the process over, before it let it run: the process
    goes with it, the daemon forgets it, says the restore ended early and exits 1; the
    images restore again, lazily, with a new daemon."""
    target = _dumped(build, procs, images, 32)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    res = subprocess.run([*ckpt_cmd(), "restore", "-D", str(images), "-d", "--lazy-pages"],
                         env=dict(os.environ, CKPT_FAULT="restore.created:kill"),
                         stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=scaled(120))
    assert res.returncode == -signal.SIGKILL
    procs.wait_gone(target.pid, timeout=30)  # the half-restored process, reaped
    assert daemon.wait() == 1
    log = daemon.log_text()
    assert "the restore ended before its processes ran" in log and "exited" in log, log
    again = Daemon(images, tmp_path / "lazy2.log")
    daemons.append(again)
    _lazy_restore(procs, target.pid, target.out, images)
    ticks_go_on(target.out, more=3)
    assert again.wait() == 0


def test_fork_while_pages_are_pending(build: Builder, procs: Procs, images: Path,
                                      daemons: list[Daemon], tmp_path: Path) -> None:
    """The restored process forks before its pages came: the child (served through the
    userfaultfd the fork gives the daemon) finds every byte, as its parent then does."""
    target = _dumped(build, procs, images, 32)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    _lazy_restore(procs, target.pid, target.out, images)
    proc = procs.tracked[-1]
    n = len(target.out.lines())
    signal.pidfd_send_signal(proc.pidfd, signal.SIGHUP)
    assert target.out.wait_line(r"^child verify ", start=n, timeout=30) == \
        f"child verify ok {32 << 20}"
    target.out.wait_line(r"^forked$", start=n, timeout=30)
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^verify ", start=n, timeout=30) == f"verify ok {32 << 20}"
    assert re.search(r"forked \d+: its child is served too", daemon.log_text())
    ticks_go_on(target.out, more=2)


def test_daemon_killed_while_a_forked_child_waits(build: Builder, procs: Procs,
                                                  images: Path, daemons: list[Daemon],
                                                  tmp_path: Path) -> None:
    """The restored process forks while its pages are pending, and the daemon is
    stopped, then killed, while the child checks its memory: the keeper kills the child
    too (the daemon found its PID at the fork), which otherwise waited on its fault for
    good; nothing of the tree is left."""
    before = my_children()
    target, daemon, proc = _served_on_touch(build, procs, images, daemons, tmp_path, 256)
    signal.pidfd_send_signal(proc.pidfd, signal.SIGHUP)
    wait_until(lambda: re.search(r"forked (\d+): its child", daemon.log_text()), 30,
               "the fork's event")
    daemon.popen.send_signal(signal.SIGSTOP)
    child = int(re.search(r"forked (\d+)", daemon.log_text())[1])  # type: ignore[index]
    daemon.popen.kill()
    daemon.popen.wait()
    err = daemon.popen.stderr.read()  # type: ignore[union-attr]
    procs.wait_gone(proc, timeout=30)
    wait_until(lambda: proc_state(child) in ("Z", None), 30, f"the child {child} to go")
    if f"process {child} killed" not in err:  # else it was done before the daemon stopped
        assert any(ln.startswith("child verify ok") for ln in target.out.lines()), err
    wait_until(lambda: all(proc_state(p) in ("Z", None) for p in my_children() - before
                           if _comm(p) == "ckpt"), 30, "the keeper to exit")
    reap_guards(before)


def test_threads_fault_side_by_side(build: Builder, procs: Procs, images: Path,
                                    daemons: list[Daemon], tmp_path: Path) -> None:
    """4 threads and the main one check the heap while its pages come on touch only:
    faults from several threads at once, every byte right, every thread back."""
    target = procs.start([build("lazyheap"), "64", "0", "4"])
    target.out.wait_line(r"^ready$", timeout=30)
    ticks_go_on(target.out, more=3)
    dump_and_check_dead(procs, target, images)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    _lazy_restore(procs, target.pid, target.out, images)
    assert len(os.listdir(f"/proc/{target.pid}/task")) == 5
    ticks_go_on(target.out, more=20)  # each slice checked by every thread meanwhile
    n = len(target.out.lines())
    signal.pidfd_send_signal(procs.tracked[-1].pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^verify ", start=n, timeout=30) == f"verify ok {64 << 20}"
    os.kill(target.pid, signal.SIGKILL)
    procs.wait_gone(procs.tracked[-1])
    assert daemon.wait() == 0
    faults = re.search(r"done: (\d+) faults served", daemon.log_text())
    assert faults is not None and int(faults[1]) >= (64 << 20) // CHUNK, \
        daemon.log_text()  # at least a fault a chunk: nothing was copied but on touch


def test_lazy_restore_through_rpc(build: Builder, procs: Procs, images: Path,
                                  daemons: list[Daemon], tmp_path: Path) -> None:
    """criu's RPC: a RESTORE with lazy_pages connects to the daemon in the work folder;
    the counter runs at once and finds every byte."""
    from ckpt.rpc import schema
    from criu_rpc import Client, open_dir
    target = _dumped(build, procs, images, 32)
    daemon = Daemon(images, tmp_path / "lazy.log")
    daemons.append(daemon)
    images_fd = open_dir(images)
    try:
        with Client() as c:
            resp = c.call({"type": schema.RESTORE, "opts": {
                "images_dir_fd": images_fd, "log_level": 4, "log_file": "restore.log",
                "lazy_pages": True, "rst_sibling": True}})
            assert resp.get("success"), resp
    finally:
        os.close(images_fd)
    proc = procs.adopt(target.pid, target.out)
    ticks_go_on(target.out, more=3)
    assert daemon.wait() == 0
    n = len(target.out.lines())
    signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^verify ", start=n, timeout=30) == f"verify ok {32 << 20}"


def test_many_kinds_of_mappings(build: Builder, procs: Procs, images: Path,
                                daemons: list[Daemon], tmp_path: Path) -> None:
    """memkinds (memfds private and shared, file mappings, mremap'd, split by mprotect,
    PROT_NONE, MAP_POPULATE, MAP_NORESERVE, the stack) checks every byte on every tick:
    the shared objects' data written at once (checked against the daemon's CRC-32s),
    the private anonymous pages lazily, none differs."""
    target = procs.start([build("memkinds"), tmp_path])
    target.out.wait_line(r"^ready$")
    target.out.wait_line(r"^2 ")
    dump_and_check_dead(procs, target, images)
    daemon = Daemon(images, tmp_path / "lazy.log")
    daemons.append(daemon)
    _lazy_restore(procs, target.pid, target.out, images)
    ticks_go_on(target.out, more=5)
    assert daemon.wait() == 0
    assert "pages to serve" in daemon.log_text()


def test_shared_data_changed_after_the_check_fails_the_restore(
        build: Builder, procs: Procs, images: Path, daemons: list[Daemon],
        tmp_path: Path) -> None:
    """Shared anonymous memory's saved data changed after the daemon checked the pages
    file: the restore (which writes it itself) finds it against the daemon's CRC-32s and
    fails before the process runs; nothing is left, and the daemon says the restore
    failed."""
    target = _dumped(build, procs, images, 8)
    daemon = Daemon(images, tmp_path / "lazy.log")
    daemons.append(daemon)
    mm = json.loads((images / f"mm-{target.pid}.json").read_text())
    obj = next(o for o in mm["shmem"] if o["runs"])
    with open(images / mm["pages_file"], "r+b") as f:
        f.seek(obj["pages_off"] + 8)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    err = ckpt_fails("restore", "-D", images, "-d", "--lazy-pages")
    assert "not what the lazy-pages daemon checked" in err, err
    procs.wait_gone(target.pid, timeout=30)
    assert daemon.wait() == 1



@pytest.mark.parametrize("victim", ["daemon", "restore", "restore-SIGTERM"])
def test_killed_at_random_moments(build: Builder, procs: Procs, images: Path,
                                  daemons: list[Daemon], tmp_path: Path, victim: str) -> None:
    """The daemon, or the restore, SIGKILLed (the restore SIGTERMed too) at a random
    moment of a lazy restore, round after round on the same images: the restore fails in
    one line before the process runs, or the process is killed (by the keeper, or with
    the restore), or it runs with
    every page (it verifies); it never waits for good on a page that will not come, nor
    reads a wrong byte. The target's output is opened with O_APPEND: each round's
    restore writes after the last round's lines, not over them from where the dump
    found it."""
    import random
    import time
    target = procs.start([build("lazyheap"), "128"], append=True)
    target.out.wait_line(r"^ready$", timeout=30)
    ticks_go_on(target.out, more=2)
    dump_and_check_dead(procs, target, images)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    for i in range(int(os.environ.get("CKPT_LAZY_ROUNDS", "6"))):
        what = f"round {i} (seed {seed})"
        daemon = Daemon(images, tmp_path / f"lazy{i}.log")
        daemons.append(daemon)
        start = len(target.out.lines())
        restore = subprocess.Popen(
            [*ckpt_cmd(), "restore", "-D", str(images), "-d", "--lazy-pages"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        time.sleep(rng.uniform(0, 0.4))
        if victim == "daemon":
            daemon.stop()
        elif victim == "restore":
            restore.kill()
        else:
            restore.terminate()
        _, err = restore.communicate(timeout=scaled(120))
        # -SIGTERM: it came before ckpt's handler (interpreter start-up): nothing done
        assert restore.returncode in (0, -signal.SIGKILL, -signal.SIGTERM) or (
            restore.returncode in (1, 128 + signal.SIGTERM)
            and len(err.strip().splitlines()) == 1 and "Traceback" not in err), (what, err)
        if proc_state(target.pid) in ("Z", None):
            procs.wait_gone(target.pid, timeout=30)
            daemon.stop()
            continue
        proc = procs.adopt(target.pid, target.out)
        try:
            signal.pidfd_send_signal(proc.pidfd, signal.SIGUSR1)
        except ProcessLookupError:
            pass
        wait_until(lambda start=start: proc_state(target.pid) in ("Z", None) or any(
            ln.startswith("verify ") for ln in target.out.lines()[start:]), 30,
            f"{what}: process {target.pid} killed or verified")
        assert not [ln for ln in target.out.lines()[start:] if "BAD" in ln], what
        if proc_state(target.pid) not in ("Z", None):
            os.kill(target.pid, signal.SIGKILL)
        procs.wait_gone(proc, timeout=30)
        daemon.stop()


def test_daemon_killed_while_the_restore_goes_on(build: Builder, procs: Procs, images: Path,
                                                 daemons: list[Daemon], tmp_path: Path) -> None:
    """The daemon killed once it holds the process, the restore stopped before it lets
    the process run: the keeper kills the process, and the restore, let go on, says in
    one line that the process was killed while it was being restored (it said a bare
    "ptrace(0xc, PID): No such process"); nothing is left."""
    target = _dumped(build, procs, images, 32)
    daemon = Daemon(images, tmp_path / "lazy.log", background=False)
    daemons.append(daemon)
    with ckpt_stopped_at("restore.created", "restore", "-D", images, "-d",
                         "--lazy-pages") as restore:
        daemon.stop()
        wait_until(lambda: proc_state(target.pid) in ("Z", None), 30,
                   "the keeper to kill the process")  # a zombie: ckpt is its parent
        restore.send_signal(signal.SIGCONT)
        _, err = restore.communicate(timeout=scaled(60))
    assert restore.returncode == 1, err
    assert err.strip().startswith(f"ckpt restore: error: process {target.pid} was killed by "
                                  "SIGKILL while it was being restored (with --lazy-pages: "
                                  "the daemon's keeper kills"), err
    procs.wait_gone(target.pid, timeout=30)


def test_remote_migration_through_rpc(build: Builder, procs: Procs, images: Path,
                                      tmp_path: Path) -> None:
    """criu's remote lazy migration as runc drives it: a DUMP with lazy_pages and ps
    writes the images whole, says status-ready, and hands them over to the daemon of
    `lazy-pages --page-server --address --port -D OTHER`, which takes them into OTHER
    and serves the restore from there: the counter finds every byte."""
    import socket

    from ckpt.rpc import schema
    from criu_rpc import Client, open_dir
    target = procs.start([build("lazyheap"), "16"])
    target.out.wait_line(r"^ready$", timeout=30)
    ticks_go_on(target.out, more=2)
    other = tmp_path / "other"
    other.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        [*ckpt_cmd(), "lazy-pages", "--page-server", "--address", "127.0.0.1", "--port",
         str(port), "-D", str(other), "-v4", "-o", str(tmp_path / "lazy.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        images_fd = open_dir(images)
        try:
            with Client() as c:
                resp = c.call({"type": schema.DUMP, "opts": {
                    "images_dir_fd": images_fd, "pid": target.pid, "log_level": 4,
                    "log_file": "dump.log", "lazy_pages": True, "notify_scripts": True,
                    "ps": {"address": "127.0.0.1", "port": port}}})
                assert resp.get("success"), resp
                assert ("status-ready", 0) in c.notes, c.notes
        finally:
            os.close(images_fd)
        procs.wait_gone(target)
        assert daemon.stdout is not None
        assert daemon.stdout.readline().startswith("ckpt lazy-pages: listening on ")
        assert sorted(p.name for p in other.iterdir() if p.name.startswith("pages-")) == \
            sorted(p.name for p in images.iterdir() if p.name.startswith("pages-"))
        restore_detached(procs, target.pid, target.out, other, "--lazy-pages", timeout=120)
        ticks_go_on(target.out, more=3)
        assert daemon.wait(scaled(60)) == 0, daemon.stderr.read()  # type: ignore[union-attr]
        n = len(target.out.lines())
        signal.pidfd_send_signal(procs.tracked[-1].pidfd, signal.SIGUSR1)
        assert target.out.wait_line(r"^verify ", start=n, timeout=30) == f"verify ok {16 << 20}"
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
