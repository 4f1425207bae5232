"""A ckpt killed in the middle of a dump: dumps PID into DIR with --tcp-established
in this process and kills itself (SIGKILL) once the tree's connections are locked,
before any is read, leaving behind what a killed ckpt leaves.

Usage: ckpt_killed.py PID DIR
"""

import os
import signal
import sys

import ckpt
from ckpt.resources.filekind import TcpFlags


def notify(action: str, _pid: int) -> None:
    if action == "network-lock":
        os.kill(os.getpid(), signal.SIGKILL)


ckpt.dump(int(sys.argv[1]), sys.argv[2], tcp=TcpFlags(established=True), notify=notify)
sys.exit("the dump was not killed")
