"""A ckpt killed in the middle of a dump: dumps PID into DIR with --tcp-established
in this process and kills itself (SIGKILL), leaving behind what a killed ckpt leaves.

WHEN is ``locked`` (once the tree's connections are locked, before any is read),
``guard-too`` (the same, its guard killed first, as a service manager killing every
process of ckpt's cgroup would) or ``repair`` (while the first socket is read in
repair mode). ckpt's log goes to stderr.

Usage: ckpt_killed.py PID DIR WHEN
"""

import os
import signal
import sys

import ckpt
from ckpt import log
from ckpt.kernel import tcp_repair
from ckpt.resources.filekind import TcpFlags

WHEN = sys.argv[3]


def die() -> None:
    if WHEN == "guard-too":
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                for child in f.read().split():
                    os.kill(int(child), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def notify(action: str, _pid: int) -> None:
    if action == "network-lock" and WHEN in ("locked", "guard-too"):
        die()


def read_queue_then_die(*args: object) -> object:
    die()
    return None


if WHEN == "repair":
    tcp_repair.read_queue = read_queue_then_die  # called with the socket in repair mode
log.setup(2)
ckpt.dump(int(sys.argv[1]), sys.argv[2], tcp=TcpFlags(established=True), notify=notify)
sys.exit("the dump was not killed")
