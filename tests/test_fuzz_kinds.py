"""Every value of every kind of file description made wrong in turn, and every raw
image cut short: each mutant is refused in one line before anything is made, or
restored (then killed), never a traceback, a hang or a process left behind.

tests/test_fuzz_images.py draws 1,200 mutants at random from one process's images;
here, for processes holding one kind of file each (and the kinds that write raw
data: queued datagrams and messages, a memfd's data), each value of its
description in files.json is replaced in turn by a string, null, -1, 2**64, an
empty list and a dict, or dropped; each raw image is cut to nothing, to half and
by one byte (the inventory's sizes and checksums made to match)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import ckpt
from ckpt.images import INVENTORY
from ckpt_helpers import Builder, Procs, my_children, scaled
from test_fuzz_images import Folder, Mutant, _at, _run_mutants, _spots

ODD: list[Any] = ["x", None, -1, 2**64, [], {"k": 1}]
KINDS = ["eventfd", "signalfd", "timerfd", "inotify", "epoll", "memfd", "opath",
         "tcp-listen", "udp", "netlink", "unix-listen", "unix-dgram-bound",
         "unix-unconnected", "posix-timer"]


def _every_value(folder: Folder, name: str) -> list[Mutant]:
    """Each value of image ``name`` replaced by each of ODD, or dropped."""
    doc = folder.load(name)
    out: list[Mutant] = []
    for path in _spots(doc):
        if not path:
            continue
        for value in [*ODD, "drop"]:
            new = copy.deepcopy(doc)
            parent, key = _at(new, path[:-1]), path[-1]
            if value == "drop":
                del parent[key]
            elif parent[key] == value:
                continue
            else:
                parent[key] = copy.deepcopy(value)
            out.append((f"{name}: {value!r} at {'/'.join(map(str, path))}",
                        {name: json.dumps(new).encode()}))
    return out


def _raw_cut(folder: Folder) -> list[Mutant]:
    """Each raw image (not JSON) cut to nothing, to half, and by its last byte."""
    out: list[Mutant] = []
    for name, data in folder.original.items():
        if name.endswith(".json") or not data:
            continue
        for size in sorted({0, len(data) // 2, len(data) - 1}):
            out.append((f"{name}: cut to {size} of {len(data)} bytes", {name: data[:size]}))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_value_wrong(build: Builder, procs: Procs, tmp_path: Path, kind: str) -> None:
    target = procs.start([build("holdfd"), kind])
    target.out.wait_line("^ready", timeout=scaled(10))
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images))
    procs.wait_gone(target)
    folder = Folder(images)
    mutants = _every_value(folder, "files.json") + _raw_cut(folder)
    problems, accepted = _run_mutants(folder, mutants, my_children())
    assert problems == [], "\n".join(problems)
    assert accepted < len(mutants), "every mutant restored: the images were not changed"


def test_every_value_of_the_inventory_wrong(build: Builder, procs: Procs,
                                            tmp_path: Path) -> None:
    target = procs.start([build("holdfd"), "none"])
    target.out.wait_line("^ready", timeout=scaled(10))
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images))
    procs.wait_gone(target)
    folder = Folder(images)
    mutants = _every_value(folder, INVENTORY)
    problems, _ = _run_mutants(folder, mutants, my_children())
    assert problems == [], "\n".join(problems)
