"""Names that are not valid UTF-8: a process name (comm) holding ``\\xff`` and ``") ("``,
a mapped file and an open file whose names are not UTF-8. Each is dumped and restored
under the same bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    ckpt_ok,
    dump_and_check_dead,
    restore_detached,
)

COMM = b"a\xffb) (x"
MAPPED = "map\udcff\udcfe.bin"  # as os.fsdecode gives b"map\xff\xfe.bin"
LOG = "log\udce9\udc80.txt"


def _fd_of(pid: int, target: bytes) -> int:
    for name in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(os.fsencode(f"/proc/{pid}/fd/{name}")) == target:
            return int(name)
    raise AssertionError(f"process {pid} has no fd on {target!r}")


def _mapped(pid: int, target: bytes) -> list[bytes]:
    with open(f"/proc/{pid}/maps", "rb") as f:
        return [ln.split(None, 5)[1:5] for ln in f if ln.rstrip(b"\n").endswith(b" " + target)]


def test_names_not_utf8(build: Builder, procs: Procs, images: Path, tmp_path: Path) -> None:
    """The name, the mapping and the fd come back on the same bytes, and keep working: the
    mapping still writes to its file, the fd still appends to its file."""
    mapped = os.fsencode(str(tmp_path / MAPPED))
    log = os.fsencode(str(tmp_path / LOG))
    target = procs.start([build("oddnames"), tmp_path])
    target.out.wait_line(r"^3 map=ok$")
    with open(f"/proc/{target.pid}/comm", "rb") as f:
        assert f.read() == COMM + b"\n"
    fd = _fd_of(target.pid, log)
    maps_before = _mapped(target.pid, mapped)
    assert len(maps_before) == 1

    dump_and_check_dead(procs, target, images, "-v4", "-o", "dump.log")
    # The log escapes what is not UTF-8; show --fds names the fd by its path.
    assert "(a\\udcffb) (x)" in (images / "dump.log").read_text()
    shown = json.loads(ckpt_ok("show", "--fds", images).stdout)
    assert [e["fd"] for e in shown if os.fsencode(e["path"]) == log] == [fd]
    # The images are JSON: the odd bytes are there as surrogate escapes (\udcXX).
    core = json.loads((images / f"core-{target.pid}.json").read_text())
    assert os.fsencode(core["task"]["comm"]) == COMM
    count = len(target.out.lines())
    logged = open(log, "rb").read().split()

    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{count + 3} map=ok$")
    with open(f"/proc/{restored.pid}/comm", "rb") as f:
        assert f.read() == COMM + b"\n"
    with open(f"/proc/{restored.pid}/stat", "rb") as f:
        assert f.read().split(b" (", 1)[1].rsplit(b") ", 1)[0] == COMM
    assert _fd_of(restored.pid, log) == fd
    assert _mapped(restored.pid, mapped) == maps_before
    lines = target.out.lines()
    assert all(ln.endswith(" map=ok") for ln in lines)
    assert_consecutive([int(ln.split()[0]) for ln in lines])
    # The fd appends where it left off; the shared mapping writes to its file.
    after = open(log, "rb").read().split()
    assert after[:len(logged)] == logged and len(after) > len(logged)
    assert_consecutive([int(x) for x in after])
    tick = int.from_bytes(open(mapped, "rb").read()[8:16], "little")
    assert tick >= count
