"""Fault injection: make a dump or restore fail at a chosen step, for tests.

``CKPT_FAULT=NAME`` (or ``NAME,NAME2,...``) in the environment makes
``point(NAME)`` raise ``InjectedFault`` the first time it is reached;
``NAME:N`` fails at its N-th time instead (e.g. the second process of a tree).
``NAME:kill`` or ``NAME:N:kill`` makes ckpt SIGKILL itself there instead, as
the OOM killer or ``kill -9`` would; ``NAME:stop`` makes it SIGSTOP itself
there and go on once continued (a test sends it a signal meanwhile). The
environment is read once, at import; unset, ``point`` is a dict lookup.

Every point is listed in ``POINTS`` below and named by a plain string at its
call site (``faults.point("dump.frozen")``); ``point`` refuses a name not
listed; tests/unit/test_fault_points.py checks that the call sites and the list
agree, and tests/test_faults.py that every point is reached.
"""

from __future__ import annotations

import _signal
import os

from .errors import CkptError

POINTS: dict[str, str] = {
    # dump (dumper.dump): the tree stays frozen until the failure is handled
    "dump.frozen": "every task and thread of the tree seized and stopped",
    "dump.network_locked": "the tree's TCP connections locked (--tcp-established), none read",
    "dump.inject": "at the entry of an injected syscall, the task holding ckpt's registers",
    "dump.unmap": "at the entry of the munmap of a task's scratch area, as it is let go",
    "dump.task.core": "a task's registers, signals, task state and threads saved",
    "dump.task.fds": "a task's fds saved",
    "dump.task.pages": "a task's pages written, its state and fds read",
    "dump.task.done": "a task's core, mm and fds images written",
    "dump.files": "files.json written",
    "dump.inventory": "right before images.finish writes the inventory",
    "dump.before_kill": "images finished and synced, the tree not yet killed or released",
    # pre-dump (dumper.pre_dump)
    "predump.frozen": "the tree frozen",
    "predump.planned": "the pages to copy chosen, the tree still frozen",
    "predump.released": "the tree running again, no page copied yet",
    "predump.inventory": "pages copied, right before the inventory",
    # restore (restorer.restore)
    "restore.verified": "every image file verified, nothing created",
    "restore.fds_opened": "the files of every task opened in ckpt",
    "restore.cgroups": "the cgroups the tree goes back into made (--manage-cgroups)",
    "restore.forked": "the root forked by ckpt, not yet seized",
    "restore.seized": "the root seized and stopped",
    "restore.task.fds": "a process holds its fds",
    "restore.task.memory": "a task's memory restored",
    "restore.task.children": "a process's children cloned from it (zombies exited)",
    "restore.created": "every process created with its fds and memory, ckpt's copies closed",
    "restore.task.threads": "a task's other threads created",
    "restore.task.signals": "a task's signals and timers restored",
    "restore.task.final": "a task's credentials and seccomp set (restore_final)",
    "restore.before_detach": "every task restored, right before detaching",
    "restore.network_unlocked": "the network unlocked, the TCP connections still in repair "
                                "mode, the tree not yet running",
    "restore.task.let_go": "a process let go should ckpt die (no EXITKILL), the next not",
    "restore.let_live": "every thread let go should ckpt die (no EXITKILL), no pidfile yet",
    "restore.done": "the tree runs, the pidfile written, the command about to end",
}


class InjectedFault(CkptError):
    """A failure injected with CKPT_FAULT."""


_ACTIONS = ("fail", "kill", "stop")


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    """{name: (the hit that acts, what it does: one of _ACTIONS)}"""
    armed: dict[str, tuple[int, str]] = {}
    for item in spec.split(","):
        name, *rest = item.strip().split(":")
        if not name:
            continue
        action = next((r for r in rest if r in _ACTIONS), "fail")
        nth = next((int(r) for r in rest if r.isdigit() and int(r) > 0), 1)
        armed[name] = (nth, action)
    return armed


_armed: dict[str, tuple[int, str]] = _parse(os.environ.get("CKPT_FAULT", ""))
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Fail here if CKPT_FAULT names this point (at this hit)."""
    if not _armed:
        return
    if name not in POINTS:
        raise AssertionError(f"undeclared fault point {name!r}")
    armed = _armed.get(name)
    if armed is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    nth, action = armed
    if _hits[name] != nth:
        return
    if action == "stop":
        os.kill(os.getpid(), _signal.SIGSTOP)
        return
    if action == "kill":
        os.kill(os.getpid(), _signal.SIGKILL)
    raise InjectedFault(f"injected fault at {name}")


def arm(spec: str) -> None:
    """Arm points as CKPT_FAULT would (for in-process use); "" disarms."""
    _armed.clear()
    _armed.update(_parse(spec))
    _hits.clear()


def names() -> list[str]:
    """Every fault point, in the order of the steps."""
    return list(POINTS)
