"""What the installed ``ckpt dump`` of a plain process imports, run to its end: what such a
dump never runs stays out (start-up cost, issue 12)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ckpt_helpers import PYTHON, Procs


def test_a_dump_of_sleep_imports_only_what_it_runs(procs: Procs, images: Path,
                                                   tmp_path: Path) -> None:
    """No fd-table groups to sort (functools, collections), no criu message table for the
    stats file (rpc/wire.py), no bisect, no mmap (ghost files), no regular expression, no
    zlib (binascii's crc32), no resource (libc.prlimit), no page reading of a restore."""
    target = procs.start(["sleep", "1000"])
    script = os.path.join(os.path.dirname(PYTHON), "ckpt")
    # no network lock notes to recover (others' TCP dumps may have left some: netlock)
    env = {**os.environ, "CKPT_NETLOCK_DIR": str(tmp_path / "netlock")}
    res = subprocess.run([PYTHON, "-X", "importtime", script, "dump", "-t", str(target.pid),
                          "-D", str(images)], capture_output=True, text=True, timeout=60,
                         env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    procs.wait_gone(target)
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"ckpt.dumper", "ckpt.rpc.stats"} <= imported
    assert sorted(imported & {"functools", "collections", "ckpt.rpc.wire", "ckpt.rpc.schema",
                              "bisect", "_bisect", "mmap", "re", "json", "enum", "zlib",
                              "resource", "ckpt.pages.fill", "ckpt.pages.chain"}) == []
    assert (images / "stats-dump").is_file()
