"""Memory of every kind, byte for byte: memfd mappings (private, shared, at offsets,
with holes, past the end of the file in the last page), private file mappings written
partly or grown after mapping, mremap'd and mprotect-split mappings, MAP_POPULATE,
MAP_NORESERVE, the stack."""

from __future__ import annotations

import re
from pathlib import Path

from ckpt_helpers import Builder, Procs, dump_and_check_dead, restore_detached

TICK = re.compile(r"^(-?\d+) (ok|BAD .*)$")


def _ticks(lines: list[str]) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in map(TICK.match, lines) if m]


def test_every_byte_of_many_kinds_of_mappings(build: Builder, procs: Procs, images: Path,
                                              tmp_path: Path) -> None:
    """memkinds checks every page of each region on every tick: none differs after a
    restore (before the fix, the bytes a memfd's mapping wrote past the end of the file
    in its last page came back as zeros, in every mapping of that page)."""
    target = procs.start([build("memkinds"), tmp_path])
    target.out.wait_line(r"^ready$")
    target.out.wait_line(r"^2 ")
    dump_and_check_dead(procs, target, images)
    before = len(_ticks(target.out.lines()))
    restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{before + 5} ")
    ticks = _ticks(target.out.lines())
    assert [t for t in ticks if t[1] != "ok"] == [], "memory differs after the restore"
    assert [n for n, _ in ticks] == list(range(len(ticks)))
