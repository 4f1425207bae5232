"""POSIX timers come back under their IDs, armed as they were."""

from __future__ import annotations

import re
from pathlib import Path

from ckpt_helpers import Builder, Procs, assert_consecutive, dump_and_check_dead, restore_detached

LINE = re.compile(r"^(\d+) fired=(\d+) idle=(\w+) late=(\w+) value=(\w+)$")


def test_posix_timers(build: Builder, procs: Procs, images: Path) -> None:
    target = procs.start([build("ptimers")])
    out = target.out
    ids = out.wait_line(r"^ids ").split()[1:]
    assert ids == ["0", "2", "3"], ids  # a gap where the deleted timer was
    out.wait_line(r"^10 ")
    dump_and_check_dead(procs, target, images)
    fired_before = int(LINE.match(out.lines()[-1])[2])  # type: ignore[index]
    count = len(out.lines())
    restore_detached(procs, target.pid, out, images)
    out.wait_line(rf"^{count + 10} ")
    rows = [LINE.match(ln) for ln in out.lines()[1:]]
    assert all(rows), out.lines()
    assert_consecutive([int(r[1]) for r in rows])  # type: ignore[index]
    assert all(r[3] == r[4] == r[5] == "ok" for r in rows), out.lines()[-3:]  # type: ignore[index]
    fired_after = int(rows[-1][2])  # type: ignore[index]
    # 10 lines of 50 ms at one tick per 20 ms: the timer fires again, about as often.
    assert fired_after - fired_before >= 10, (fired_before, fired_after)
