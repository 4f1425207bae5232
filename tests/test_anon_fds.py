"""Anon-inode fds: eventfd (counter, semaphore mode), signalfd (mask; a signal queued
at dump is read from it after restore), timerfd (periodic, one-shot fired unread,
absolute on CLOCK_REALTIME), an eventfd shared by two processes, and one replaced
with ``--inherit-fd fd[N]:orig-fd[M]``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_cmd,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_ppid,
    restore_detached,
    scaled,
    wait_until,
)

FAST_NS = 20_000_000  # the "fast" timer's interval in anonfds.c
SEC = 1_000_000_000


def _fdinfo(pid: int, fd: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def _ns(pair: str) -> int:
    sec, nsec = pair.strip("()").split(",")
    return int(sec) * SEC + int(nsec)


def _ticks(out: Output) -> list[tuple[int, int]]:
    rx = re.compile(r"^tick (\d+) expirations=(\d+)$")
    return [(int(m[1]), int(m[2])) for m in map(rx.match, out.lines()) if m]


def _wait_ticks(out: Output, count: int, timeout: float) -> list[tuple[int, int]]:
    def enough() -> list[tuple[int, int]] | None:
        ticks = _ticks(out)
        return ticks if len(ticks) >= count else None

    return wait_until(enough, timeout, f"{count} timerfd ticks in {out.path}")


def _start(build: Builder, procs: Procs) -> tuple[int, Output, dict[str, int]]:
    target = procs.start([build("anonfds")])
    target.out.wait_line(r"^ready$")
    fds = {k: int(v) for k, v in (kv.split("=") for kv in
                                  target.out.wait_line(r"^fds ").split()[1:])}
    return target.pid, target.out, fds


def _report(pid: int, out: Output) -> dict[str, str]:
    """SIGUSR2 -> the program's report lines, by their first word."""
    n_lines = len(out.lines())
    os.kill(pid, signal.SIGUSR2)
    out.wait_line(r"^report done$", start=n_lines)
    lines = out.lines()[n_lines:]
    return {ln.split(" ", 1)[0]: ln for ln in lines if not ln.startswith(("tick ", "sig "))}


def test_eventfd_signalfd_timerfd(build: Builder, procs: Procs, images: Path) -> None:
    """Counts, semaphore mode, O_NONBLOCK and close-on-exec of the eventfds; the
    signalfds' masks (a signal queued at dump and one sent after are read from them);
    the periodic timer keeps ticking at its rate with consecutive output, the unread
    expirations of the fast and the one-shot timers are still there (the time the
    process was down not counted), and the absolute CLOCK_REALTIME timer keeps its
    wall-clock deadline."""
    pid, out, fds = _start(build, procs)
    armed = int(out.wait_line(r"^fast armed ").split()[2])
    sec, nsec = map(int, out.wait_line(r"^wall deadline ").split()[2:])
    deadline = sec * SEC + nsec
    wait_until(lambda: _fdinfo(pid, fds["once"])["ticks"] == "1", 2.0,
               "the one-shot timer to fire")
    before = {name: _fdinfo(pid, fd) for name, fd in fds.items()}
    assert before["efd"]["eventfd-count"] == "5"
    assert (before["sem"]["eventfd-count"], before["sem"]["eventfd-semaphore"]) == ("3", "1")
    os.kill(pid, signal.SIGUSR1)
    out.wait_line(rf"^sig signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}$")
    _wait_ticks(out, 5, timeout=5.0)
    # Let the unread fast timer pile up more expirations than a restore takes to run.
    time.sleep(max(0.0, (armed + 2 * SEC - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) / SEC))

    t_dump = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    dump_and_check_dead(procs, procs.tracked[0], images)
    # the dump read the timer in between
    fast_at_dump = (t_dump - armed) // FAST_NS
    fast_max_at_dump = (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - armed) // FAST_NS
    ticks_before = _ticks(out)
    shown = {e["fd"]: e for e in json.loads(ckpt_ok("show", "--fds", images).stdout)}
    kinds = {"efd": "eventfd", "sem": "eventfd", "sfd": "signalfd", "rtfd": "signalfd",
             "tfd": "timerfd", "fast": "timerfd", "once": "timerfd", "wall": "timerfd"}
    assert {n: shown[fd]["kind"] for n, fd in fds.items()} == kinds
    assert all(shown[fd]["key"] is None and f"orig-fd[{fd}]" in shown[fd]["keys"]
               for fd in fds.values())
    time.sleep(1.0)  # down for a second: relative timers do not count it, the wall one does

    t_restore = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    restore_detached(procs, pid, out, images)
    after = {name: _fdinfo(pid, fd) for name, fd in fds.items()}
    now_rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
    for name in fds:
        assert after[name]["flags"] == before[name]["flags"], f"{name}: flags changed"
        for key in ("eventfd-count", "eventfd-semaphore", "sigmask", "clockid",
                    "settime flags", "it_interval"):
            assert after[name].get(key) == before[name].get(key), f"{name}: {key} changed"
    assert after["wall"]["settime flags"] == "03"
    left = _ns(after["wall"]["it_value"])
    assert abs(now_rt + left - deadline) < scaled(0.25) * SEC, \
        f"absolute timer now due {(now_rt + left - deadline) / SEC:+.3f} s off its deadline"

    report = _report(pid, out)
    t_report = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert report["efd"] == "efd plain=5 sem=3 semreads=3 nb=11"
    assert report["rt"] == f"rt signo={int(signal.SIGRTMIN) + 2} value=4242"
    assert report["once"] == "once expirations=1"
    fast = int(report["fast"].split("=")[1])
    assert fast >= fast_at_dump - 1, f"fast timer: {fast} expirations, {fast_at_dump} at dump"
    assert fast <= fast_max_at_dump + (t_report - t_restore) // FAST_NS + 2, \
        f"fast timer: {fast} expirations, {fast_max_at_dump} at dump: the down time counted"

    n_lines = len(out.lines())
    os.kill(pid, signal.SIGUSR1)
    assert out.wait_line(r"^sig ", start=n_lines) == \
        f"sig signo={int(signal.SIGUSR1)} code=0 pid={os.getpid()}"

    # The periodic timer fires on: 5 ticks within a couple of seconds, not too fast.
    _wait_ticks(out, len(ticks_before) + 5, timeout=2.5)
    t5 = time.monotonic()
    _wait_ticks(out, len(ticks_before) + 15, timeout=5.0)
    assert time.monotonic() - t5 >= 0.5, "10 ticks of a 100 ms timer in under 0.5 s"
    ticks = _ticks(out)
    assert_consecutive([n for n, _ in ticks])
    assert all(1 <= e <= 50 for _, e in ticks), ticks
    assert is_alive(pid)


def test_shared_eventfd(build: Builder, procs: Procs, images: Path) -> None:
    """An eventfd inherited over fork: the child adds, the parent (dumped while blocked
    reading it) reads; after the restore both hold one eventfd again."""
    target = procs.start([build("anonfds_shared")])
    out = target.out
    p, c = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^C 5$")
    assert _fdinfo(p, 3)["eventfd-id"] == _fdinfo(c, 3)["eventfd-id"]

    ckpt_ok("dump", "-t", p, "-D", images)
    for pid in (p, c):
        procs.wait_gone(pid)
    c_before = [int(ln.split()[1]) for ln in out.lines() if ln.startswith("C ")]

    restore_detached(procs, p, out, images)
    procs.adopt(c, out)
    assert _fdinfo(p, 3)["eventfd-id"] == _fdinfo(c, 3)["eventfd-id"], "two eventfds"
    goal = c_before[-1] + 10
    out.wait_line(rf"^C {goal}$", timeout=5.0)
    # The parent catches up with everything the child added, before and after.
    rx = re.compile(r"^P (\d+) total=(\d+)$")
    wait_until(lambda: any(m and int(m[2]) >= goal for m in map(rx.match, out.lines())),
               5.0, f"the parent to read a total of {goal}")
    assert_consecutive([int(ln.split()[1]) for ln in out.lines() if ln.startswith("C ")], 1)
    ps = [(int(m[1]), int(m[2])) for m in map(rx.match, out.lines()) if m]
    assert_consecutive([n for n, _ in ps])
    totals = [t for _, t in ps]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


def test_eventfd_inherited_by_original_fd(build: Builder, procs: Procs, images: Path) -> None:
    """An eventfd has no key of its own; ``orig-fd[N]`` gives it one of the caller's."""
    pid, out, fds = _start(build, procs)
    dump_and_check_dead(procs, procs.tracked[0], images)
    mine = os.eventfd(77, os.EFD_NONBLOCK)
    try:
        res = subprocess.run(ckpt_cmd() + ["restore", "-D", str(images), "-d", "--inherit-fd",
                                           f"fd[{mine}]:orig-fd[{fds['efd']}]"],
                             capture_output=True, text=True, timeout=scaled(60), pass_fds=(mine,),
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        procs.adopt(pid, out)
        assert proc_ppid(pid) == os.getpid()
        assert _fdinfo(pid, fds["efd"])["eventfd-id"] == _fdinfo(os.getpid(), mine)["eventfd-id"]
        assert _report(pid, out)["efd"] == "efd plain=77 sem=3 semreads=3 nb=11"
        assert os.eventfd_read(mine) == 77  # the program wrote back what it read
    finally:
        os.close(mine)
