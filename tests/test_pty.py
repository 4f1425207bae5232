"""A tree with its own pseudo-terminal pair comes back with a new pair: the same
settings, the same controlling terminal for its session, the same foreground group."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    ckpt_ok,
    is_alive,
    proc_ids,
    proc_stat_fields,
    restore_detached,
)


def _state(lines: list[str], role: str) -> list[tuple[int, str]]:
    rx = re.compile(rf"^{role} (\d+) (.*)$")
    return [(int(m[1]), m[2]) for m in map(rx.match, lines) if m]


def _ctty(pid: int) -> tuple[int, int]:
    """(device number of the controlling terminal, its foreground group) of ``pid``."""
    fields = proc_stat_fields(pid)
    return int(fields[4]), int(fields[5])


def test_own_pty_pair(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("ptypair")])
    out = target.out
    parent, child, grandchild = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^C 5 ")
    out.wait_line(r"^G 5 ")
    ids = {pid: proc_ids(pid) for pid in (child, grandchild)}
    before = _state(out.lines(), "C")[-1][1]
    old_tty = re.search(r"tty=(\S+)", before)[1]  # type: ignore[index]
    assert f"fg={grandchild}" in before and "rows=33 cols=101" in before and "ok" in before
    for pid in (child, grandchild):
        assert _ctty(pid) == (os.stat(old_tty).st_rdev, grandchild)

    ckpt_ok("dump", "-t", parent, "-D", images)
    for pid in (parent, child, grandchild):
        procs.wait_gone(pid)
    counts = {r: len(_state(out.lines(), r)) for r in "CG"}
    restore_detached(procs, parent, out, images)
    for pid, want in ids.items():
        assert is_alive(pid) and proc_ids(pid) == want
    out.wait_line(rf"^C {counts['C'] + 3} ")
    out.wait_line(rf"^G {counts['G'] + 3} ")
    for role in "CG":
        states = _state(out.lines(), role)
        assert_consecutive([n for n, _ in states])
        after = states[-1][1]
        # Same settings and foreground group, on the new pair's slave.
        assert re.sub(r"tty=\S+", "", after) == re.sub(r"tty=\S+", "", states[0][1])
        new_tty = re.search(r"tty=(\S+)", after)[1]  # type: ignore[index]
        assert os.readlink(f"/proc/{child}/fd/0") == new_tty
        assert after.endswith(" ok")
    # The new slave is the session's controlling terminal, the grandchild in its
    # foreground. (The new pair may or may not reuse the old one's number.)
    for pid in (child, grandchild):
        assert _ctty(pid) == (os.stat(new_tty).st_rdev, grandchild)
