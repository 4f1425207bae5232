"""Signals sent to a restored PID while its restore still runs: none is fatal before
the process is restored, none is lost. Each comes once the restore lets the process
go, as if it had been sent right after (progs/sigstorm.c counts them)."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Output,
    Procs,
    ckpt_cmd,
    ckpt_stopped_at,
    dump_and_check_dead,
    is_alive,
    proc_state,
    scaled,
    wait_until,
)

_libc = ctypes.CDLL(None, use_errno=True)
VALUE = signal.SIGRTMIN + 1  # sigqueue'd with a value: each one must come exactly once
PER_THREAD = signal.SIGRTMIN + 2  # tgkill'd at a thread: counted by the thread


@dataclass
class Target:
    """One process of sigstorm, the signals sent to it that the kernel took."""

    tag: str
    pid: int
    tid: int
    usr1: int = 0
    values: list[int] = field(default_factory=list)
    main: int = 0
    thread: int = 0


def _tgkill(pid: int, tid: int, sig: int) -> bool:
    return _libc.syscall(234, pid, tid, sig) == 0


def _sigqueue(pid: int, sig: int, value: int) -> bool:
    return _libc.sigqueue(pid, sig, ctypes.c_void_p(value)) == 0


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Sender(threading.Thread):
    """Sends every target its signals, over and over, until stopped; counts those the
    kernel took. A PID is sent nothing until it is the restore's (the machine is shared:
    another process may hold it for a while before): the root a child of ckpt (or of
    ours, once ckpt left), the child of the root. The restored processes never end, so
    a PID once theirs stays theirs."""

    def __init__(self, targets: list[Target], extra: int = 0):
        super().__init__(daemon=True)
        self.targets = targets
        self.extra = extra  # another signal sent with each round (SIGTERM), or 0
        self.extra_sent = 0
        self.stop = threading.Event()
        self.next_value = 1
        self.ckpt = 0  # the PID of the ckpt restoring them
        self.ours: set[int] = set()

    def restored(self, t: Target) -> bool:
        if t.pid not in self.ours:
            root = next(r.pid for r in self.targets if r.tag == "p")
            parents = ((self.ckpt, os.getpid()) if t.pid == root
                       else (root,) if root in self.ours else ())
            if _ppid(t.pid) not in parents:
                return False
            self.ours.add(t.pid)
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            for t in self.targets:
                self.send(t)
            time.sleep(0.0005)

    def send(self, t: Target) -> None:
        if not self.restored(t):
            return
        try:
            os.kill(t.pid, signal.SIGUSR1)
            t.usr1 += 1
        except ProcessLookupError:
            pass
        value, self.next_value = self.next_value, self.next_value + 1
        if _sigqueue(t.pid, VALUE, value):
            t.values.append(value)
        if _tgkill(t.pid, t.pid, PER_THREAD):
            t.main += 1
        if _tgkill(t.pid, t.tid, PER_THREAD):
            t.thread += 1
        if self.extra:
            try:
                os.kill(t.pid, self.extra)
                self.extra_sent += 1
            except ProcessLookupError:
                pass

    def sent(self) -> int:
        return sum(len(t.values) for t in self.targets)

    def finish(self) -> None:
        self.stop.set()
        self.join(10)


def _targets(out: Output, count: int) -> list[Target]:
    def started() -> list[str] | None:
        heads = [ln for ln in out.lines() if re.match(r"^[pc] pid=", ln)]
        return heads if len(heads) >= count else None

    heads = wait_until(started, 10, f"{count} processes of sigstorm to start")
    return [Target(m[1], int(m[2]), int(m[3]))
            for m in (re.match(r"^(\w) pid=(\d+) tid=(\d+)$", ln) for ln in heads)]


def _counts(out: Output, tag: str) -> dict[str, int]:
    """The last report line of process ``tag``."""
    line = [ln for ln in out.lines() if re.match(rf"^{tag} \d+ usr1=", ln)][-1]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


@pytest.mark.parametrize("tree", ["one", "fork"])
def test_caught_signals_come_after_the_restore(tree: str, build: Builder, procs: Procs,
                                               images: Path) -> None:
    """A sender hammers every process of the tree (both threads of each) from before the
    restore creates it until after it returned: SIGUSR1, SIGRTMIN+1 with a value each
    time, SIGRTMIN+2 at each thread. The restore succeeds, the processes live, and each
    queued signal the kernel took was handled once: none killed a process half made
    (its action is the default until its own is back), none was dropped by the restore."""
    out, targets, before = _dumped(build, procs, images, fork=tree == "fork")
    sender = Sender(targets)
    try:
        res = _restore_hammered(images, sender)
        during = sender.sent()
        time.sleep(0.05)
    finally:
        sender.finish()
    assert res.returncode == 0, res.stderr
    print(f"{during} queued signals sent before the restore returned")
    _check_handled(procs, out, targets, before)


def _check_handled(procs: Procs, out: Output, targets: list[Target],
                   before: dict[str, dict[str, int]]) -> None:
    """Every process lives on; each signal the kernel took for it was handled, once."""
    for t in targets:
        assert is_alive(t.pid), f"process {t.pid} died after its restore"
        procs.adopt(t.pid, out)

    def all_handled() -> bool:
        return all(_counts(out, t.tag)["rt"] - before[t.tag]["rt"] == len(t.values)
                   and _counts(out, t.tag)["thread"] - before[t.tag]["thread"] == t.thread
                   and _counts(out, t.tag)["usr1"] > before[t.tag]["usr1"] for t in targets)

    try:
        wait_until(all_handled, 10, "every signal sent to be handled")
    except AssertionError:
        pass  # the checks below say which
    for t in targets:
        got, was = _counts(out, t.tag), before[t.tag]
        assert got["rt"] - was["rt"] == len(t.values), (t.tag, got, was, len(t.values))
        assert got["dups"] == was["dups"], f"{t.tag}: a signal was handled twice"
        assert got["sum"] - was["sum"] == sum(t.values), f"{t.tag}: other values came"
        assert got["main"] - was["main"] == t.main, (t.tag, got, was, t.main)
        assert got["thread"] - was["thread"] == t.thread, (t.tag, got, was, t.thread)
        assert got["usr1"] > was["usr1"], f"{t.tag}: SIGUSR1 never handled"


def _dumped(build: Builder, procs: Procs, images: Path, fork: bool = False
            ) -> tuple[Output, list[Target], dict[str, dict[str, int]]]:
    """sigstorm started (forked once with ``fork``) and dumped: its output, its processes
    and what each had counted."""
    target = procs.start([build("sigstorm", extra=["-pthread"])] + (["fork"] if fork else []))
    targets = _targets(target.out, 2 if fork else 1)
    for t in targets:
        target.out.wait_line(rf"^{t.tag} 2 ")
    dump_and_check_dead(procs, target, images)
    for t in targets:  # the child, reparented to us (a child subreaper), reaped
        if t.tag == "c":
            procs.wait_gone(t.pid)
    return target.out, targets, {t.tag: _counts(target.out, t.tag) for t in targets}


def _restore_held_at(point: str, images: Path, send: Callable[[int], object]) -> None:
    """``ckpt restore -d`` held at ``point`` (CKPT_FAULT=POINT:stop) while ``send(its
    PID)`` sends signals; it must succeed once let go on."""
    with ckpt_stopped_at(point, "restore", "-D", images, "-d") as p:
        send(p.pid)
        p.send_signal(signal.SIGCONT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


def _kill_restored(pid: int, ckpt: int, sig: int) -> None:
    """Send ``sig`` to the restored root ``pid``, which ckpt (held) created already."""
    assert _ppid(pid) == ckpt, f"PID {pid} is not the process ckpt restores"
    os.kill(pid, sig)


def _restore_hammered(images: Path, sender: Sender) -> subprocess.CompletedProcess[str]:
    """``ckpt restore -d`` run while ``sender`` sends its signals, started before it."""
    p = subprocess.Popen([*ckpt_cmd(), "restore", "-D", str(images), "-d"], text=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    sender.ckpt = p.pid
    sender.start()
    try:
        _, err = p.communicate(timeout=scaled(60))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(p.args, p.returncode, "", err)


# Where the restore is held while the signals are sent: the root cloned and not yet
# seized; its memory restored; its threads made; its signals back; its credentials
# last; every process complete, before it is let go.
STOPS = ["restore.forked", "restore.task.memory", "restore.task.threads",
         "restore.task.signals", "restore.task.final", "restore.before_detach"]


@pytest.mark.parametrize("point", STOPS)
def test_signals_sent_at_each_step(point: str, build: Builder, procs: Procs,
                                   images: Path) -> None:
    """ckpt stopped at ``point`` of the restore (CKPT_FAULT=POINT:stop), each process is
    sent SIGUSR1, SIGRTMIN+1 with a value, SIGRTMIN+2 at each thread that exists: once
    ckpt goes on, the restore succeeds and every one is handled, once."""
    out, targets, before = _dumped(build, procs, images, fork=True)
    sender = Sender(targets)

    def send(ckpt: int) -> None:
        sender.ckpt = ckpt
        for t in targets:
            sender.send(t)

    _restore_held_at(point, images, send)
    assert targets[0].values or targets[1].values, "no process existed to signal"
    _check_handled(procs, out, [t for t in targets if t.values], before)


@pytest.mark.parametrize("point", ["restore.forked", "restore.task.final"])
def test_sigterm_at_a_step_kills_after_the_restore(point: str, build: Builder,
                                                   procs: Procs, images: Path) -> None:
    """SIGTERM (its default action: end the process) sent to the restored PID while
    ckpt is held at ``point``: the restore succeeds, then the process ends by it."""
    _, (t,), _ = _dumped(build, procs, images)
    _restore_held_at(point, images, lambda ckpt: _kill_restored(t.pid, ckpt, signal.SIGTERM))
    assert procs.wait_gone(t.pid) == -signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_deadly_signal_during_restore(sig: int, build: Builder, procs: Procs,
                                      images: Path) -> None:
    """A signal whose action kills, sent over and over while the restore runs: SIGTERM
    (blockable) waits for the restore to end, which succeeds, then kills the restored
    process. SIGKILL, which nothing holds back, kills it at once: the restore, if it
    was not done, fails saying so, and leaves nothing behind."""
    _, (t,), _ = _dumped(build, procs, images)
    sender = Sender([t], extra=sig)
    try:
        res = _restore_hammered(images, sender)
    finally:
        sender.finish()
    assert "Traceback" not in res.stderr, res.stderr
    if sig == signal.SIGKILL and res.returncode != 0:
        assert res.returncode == 1, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert re.search(rf"\b{t.pid}\b.*(SIGKILL|died)", res.stderr), res.stderr
        assert not os.path.exists(f"/proc/{t.pid}"), "a killed restore left its process"
        return
    assert res.returncode == 0, res.stderr
    if not sender.extra_sent:  # the sender never ran while the process existed
        return
    code = procs.wait_gone(t.pid)
    if code is not None:
        assert code == -sig, f"the restored process ended with {code}"
    with pytest.raises(OSError) as e:
        os.kill(t.pid, 0)
    assert e.value.errno == errno.ESRCH


@pytest.mark.parametrize("point", ["restore.forked", "restore.seized", "restore.task.memory",
                                   "restore.task.final", "restore.before_detach"])
def test_sigstop_at_a_step_stops_after_the_restore(point: str, build: Builder,
                                                   procs: Procs, images: Path) -> None:
    """SIGSTOP sent to the restored PID while ckpt is held at ``point``: the restore
    succeeds and leaves the process stopped, as if stopped right after; SIGCONT lets it
    go on."""
    out, (t,), before = _dumped(build, procs, images)
    _restore_held_at(point, images, lambda ckpt: _kill_restored(t.pid, ckpt, signal.SIGSTOP))
    procs.adopt(t.pid, out)
    wait_until(lambda: proc_state(t.pid) == "T", 10, "the process to be stopped")
    assert _counts(out, "p") == before["p"], "it ran before it was stopped"
    os.kill(t.pid, signal.SIGCONT)
    out.wait_line(r"^p \d+ ", start=len(out.lines()))
    assert is_alive(t.pid)
