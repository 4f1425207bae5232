"""The CLI dump returns once its processes are killed, not once they have exited
(dumper._kill): a restore started right after waits for a dumped process still
exiting (tree.wait_dumped_exits), which holds its PID, its memory, its port and its
lock until its exit is over.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from ckpt_helpers import PYTHON, Procs, ckpt_ok, free_port, is_alive, scaled

# The target: 256 MiB of its own, a listening port, an flock on a file; prints a
# counter. Its parent ignores SIGCHLD, so that nothing but its exit frees its PID (no
# zombie for the restore to wait for: the wait under test is the one for the exit).
TARGET = r"""
import fcntl, os, socket, sys, time
port, lock = int(sys.argv[1]), sys.argv[2]
mem = bytearray(256 << 20)
for i in range(0, len(mem), 4096):
    mem[i] = i // 4096 % 251
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(4)
f = open(lock, "w")
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
n = 0
while True:
    bad = sum(1 for i in range(0, len(mem), 1 << 20) if mem[i] != i // 4096 % 251)
    os.write(1, f"{n} {'ok' if not bad else 'BAD'}\n".encode())
    n += 1
    time.sleep(0.05)
"""

LAUNCHER = r"""
import os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
os.write(1, f"child {pid}\n".encode())
signal.pause()
"""


def test_restore_right_after_dump_waits_for_the_exit(procs: Procs, images: Path,
                                                    tmp_path: Path) -> None:
    """Dump, then restore at once (nobody reaps in between): the restored process has
    its PID, port and lock back, its memory intact, and counts on."""
    port, lock = free_port(), tmp_path / "lock"
    launcher = procs.start([PYTHON, "-c", LAUNCHER, TARGET, str(port), str(lock)])
    out = launcher.out
    pid = int(out.wait_line(r"^child \d+$").split()[1])
    out.wait_line(r"^3 ok$", timeout=scaled(30))
    ckpt_ok("dump", "-t", pid, "-D", images, "--file-locks")
    ckpt_ok("restore", "-D", images, "-d", "--file-locks")
    procs.adopt(pid, out)
    assert is_alive(pid), "the restored process is not running"
    ticks = [ln for ln in out.lines() if re.match(r"^\d+ ", ln)]
    out.wait_line(rf"^{len(ticks) + 2} ", timeout=scaled(30))
    ticks = [ln for ln in out.lines() if re.match(r"^\d+ ", ln)]
    assert ticks == [f"{i} ok" for i in range(len(ticks))], ticks[-5:]
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(10)):
        pass  # its listener is back
    with open(lock, "w") as f:  # its lock is back: held by it, not by us
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT = 0x40, 6


def test_restore_waits_for_a_dumped_process_held_in_its_exit(procs: Procs) -> None:
    """A process killed, held in its exit (a tracer's exit stop): wait_dumped_exits
    waits for it while it is held and returns once its exit is over; a process of the
    same PID started at another time, or alive and not dying, is not waited for."""
    from ckpt import tree
    from ckpt.kernel import procfs, ptrace

    target = procs.start(["sleep", "1000"])
    start = procfs.stat(target.pid).start_time
    t0 = time.monotonic()
    tree.wait_dumped_exits({target.pid: start}, timeout=scaled(5))  # alive: no wait
    tree.wait_dumped_exits({target.pid: start + 1}, timeout=scaled(5))  # another one
    assert time.monotonic() - t0 < scaled(4)
    ptrace.seize(target.pid, PTRACE_O_TRACEEXIT)
    os.kill(target.pid, signal.SIGKILL)
    stop = ptrace.wait_stop(target.pid)
    assert not stop.exited and stop.event == PTRACE_EVENT_EXIT, stop.describe()
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (
        tree.wait_dumped_exits({target.pid: start}, timeout=scaled(60)), done.set()))
    waiter.start()
    try:
        assert not done.wait(1.0), "returned while the process was held in its exit"
    finally:
        ptrace.detach(target.pid)  # its exit goes on
    assert done.wait(scaled(30)), "still waiting once the process has exited"
    waiter.join()
    assert procs.wait_gone(target) == -signal.SIGKILL
