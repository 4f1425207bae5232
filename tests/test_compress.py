"""``dump --compress``: the pages files are zstd streams, the restored processes get
every byte back (private pages and a shared anonymous object's, a page of it that no
mapping shows included), and such a folder is refused as the parent of a dump."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ckpt_helpers import (
    Builder,
    Procs,
    assert_consecutive,
    ckpt_ok,
    dump_and_check_dead,
    restore_detached,
    run_ckpt,
)

zstandard = pytest.importorskip("zstandard", reason="--compress needs the zstandard package")

MIB = 1 << 20


def test_private_pages_compressed(build: Builder, procs: Procs, images: Path) -> None:
    """64 MiB of patterned memory (incompressible): one zstd stream, every byte verified
    after the restore."""
    target = procs.start([build("bigmem"), "64"])
    target.out.wait_line(r"^ready$", timeout=30)
    target.out.wait_numbers(2)
    before = dump_and_check_dead(procs, target, images, "--compress")
    pid = target.pid
    mm = json.loads((images / f"mm-{pid}.json").read_text())
    assert mm["pages_compression"] == "zstd"
    inventory = json.loads((images / "inventory.json").read_text())
    assert "compressed-pages" in inventory["needs"]
    with open(images / f"pages-{pid}.img", "rb") as f:  # one zstd stream of every run
        data = zstandard.ZstdDecompressor().stream_reader(f).read()
    assert len(data) == sum(n for _, n in mm["pagemap"]) * os.sysconf("SC_PAGESIZE")
    restored = restore_detached(procs, pid, target.out, images)
    target.out.wait_numbers(len(before) + 1)
    n_lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^verify ", timeout=30, start=n_lines) == f"verify ok {64 * MIB}"
    target.out.wait_line(r"^\d+$", start=len(target.out.lines()))
    assert_consecutive(target.out.numbers())


def test_shared_object_compressed(build: Builder, procs: Procs, images: Path) -> None:
    """A shared anonymous object split over two processes, one of its pages mapped by
    none: its data comes back from the compressed stream after the private pages."""
    target = procs.start([build("splitshm")])
    out = target.out
    p, c = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^C 5 ")
    ckpt_ok("dump", "-t", p, "-D", images, "--compress")
    for pid in (p, c):
        procs.wait_gone(pid)
    assert json.loads((images / f"mm-{p}.json").read_text())["shmem"]
    restore_detached(procs, p, out, images)
    n_p = len([line for line in out.lines() if line.startswith("P ")])
    out.wait_line(rf"^P {n_p + 5} ")
    n_lines = len(out.lines())
    os.kill(p, signal.SIGUSR1)  # P's mapping grows onto the page no mapping showed
    assert out.wait_line(r"^grow ", start=n_lines) == "grow 5eedc0ffee"


def test_compressed_folder_is_no_parent(build: Builder, procs: Procs, images: Path,
                                        tmp_path: Path) -> None:
    target = procs.start([build("bigmem"), "4"])
    target.out.wait_line(r"^ready$", timeout=30)
    ckpt_ok("dump", "-R", "-t", target.pid, "-D", images, "--compress")
    res = run_ckpt("dump", "-R", "-t", target.pid, "-D", tmp_path / "next",
                   "--prev-images-dir", images)
    assert res.returncode == 1 and "compressed page data" in res.stderr, res.stderr
    res = run_ckpt("dump", "-R", "-t", target.pid, "-D", tmp_path / "both", "--compress",
                   "--track-mem")
    assert res.returncode == 1 and "--compress goes with neither" in res.stderr, res.stderr
    target.out.wait_numbers(3)
