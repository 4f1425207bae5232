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
import re
from pathlib import Path
from typing import Any

import pytest

import ckpt
from ckpt.errors import CkptError
from ckpt.images import INVENTORY
from ckpt_helpers import Builder, Procs, my_children, scaled
from test_fuzz_images import Folder, Mutant, _at, _run_mutants, _spots

ODD: list[Any] = ["x", None, -1, 2**64, [], {"k": 1}]
KINDS = ["eventfd", "signalfd", "timerfd", "inotify", "epoll", "memfd", "opath",
         "tcp-listen", "udp", "netlink", "unix-listen", "unix-dgram-bound",
         "unix-unconnected", "posix-timer"]


def _every_value(folder: Folder, name: str, under: tuple[Any, ...] = (),
                 odd: list[Any] = ODD) -> list[Mutant]:
    """Each value of image ``name`` (of its part ``under``) replaced by each of
    ``odd``, or dropped."""
    doc = folder.load(name)
    out: list[Mutant] = []
    for path in _spots(doc):
        if not path or path[:len(under)] != under:
            continue
        for value in [*odd, "drop"]:
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


# ------------------------------------------------------------------ newer kinds of state

ZDTM = Path(__file__).parent / "zdtm"
SIZES: list[Any] = [0, 1, 4095, 4096, 1 << 40, 2**63]


def _mutate(folder: Folder, name: str, what: str, change: Any) -> Mutant:
    doc = folder.load(name)
    change(doc)
    return f"{name}: {what}", {name: json.dumps(doc).encode()}


def test_every_value_of_the_stripes_wrong(build: Builder, procs: Procs, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Page data in stripes (pages-stripes; 1 MiB, then stripes of 64 KiB): each value
    of mm-PID.json's ``stripes`` wrong (sizes and offsets that are no multiple of a
    page, or past the files, too), the files named swapped, twice, or the other
    process's, each file cut short: refused in one line, or restored whole."""
    monkeypatch.setenv("CKPT_PAGE_STRIPES", f"{1 << 20},{64 << 10}")
    target = procs.start([build("bigmem"), "4"])
    target.out.wait_line("^ready$", timeout=scaled(30))
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images))
    procs.wait_gone(target)
    folder = Folder(images)
    mm = f"mm-{target.pid}.json"
    files = folder.load(mm)["stripes"]["files"]
    assert len(files) == 2, files
    mutants = _every_value(folder, mm, ("stripes",), [*ODD, *SIZES])
    for what, names in [("swapped", files[::-1]), ("twice the first", [files[0]] * 2),
                        ("three", [*files, files[1]]), ("one", files[:1]),
                        ("another process's", ["pages-1.img", "pages-1-1.img"])]:
        mutants.append(_mutate(folder, mm, f"stripes' files {what}",
                               lambda d, n=names: d["stripes"].update(files=n)))
    mutants.append(_mutate(folder, mm, "no stripes", lambda d: d.pop("stripes")))
    mutants += _raw_cut(folder)
    problems, accepted = _run_mutants(folder, mutants, my_children())
    assert problems == [], "\n".join(problems)
    assert accepted < len(mutants) // 4, f"{accepted} of {len(mutants)} mutants restored"


def _ldt_bits(raw: int, clear: int = 0, set_: int = 0) -> int:
    return (raw & ~clear) | set_


def test_every_value_of_the_ldt_wrong(build: Builder, procs: Procs, tmp_path: Path) -> None:
    """x86 LDT entries (task.ldt; zdtm thr.c's ldt case: a root and two children): each
    value wrong, and entries no modify_ldt makes (a system or DPL 0 descriptor, a
    64-bit code segment, a present conforming code segment, an index past the
    table): refused in one line, never written into the table."""
    exe = build("thr", where=ZDTM, extra=("-pthread", "-lrt"))
    target = procs.start([exe, "ldt"], cwd=tmp_path)
    first = target.out.wait_line(r"^(ready|SETUP: .*|FAIL: .*)$", timeout=scaled(30))
    assert first == "ready", first
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images))
    folder = Folder(images)
    # its two children too: killed, they come to this process (a subreaper) as zombies,
    # which would be in the snapshot below and reaped before the comparison
    for task in folder.load(INVENTORY)["tasks"]:
        procs.wait_gone(task["pid"])
    children = my_children()
    core = f"core-{target.pid}.json"
    entries = folder.load(core)["task"]["ldt"]
    assert entries, "no LDT saved"
    mutants = _every_value(folder, core, ("task", "ldt"), [*ODD, 0, 8192, 2**64 - 1])
    index, raw = entries[0]
    bad = {"a system descriptor (S clear)": _ldt_bits(raw, clear=1 << 44),
           "DPL 0": _ldt_bits(raw, clear=3 << 45),
           "a 64-bit code segment": _ldt_bits(raw, set_=(1 << 53) | (0b1010 << 40)),
           "a present conforming code segment": _ldt_bits(raw, set_=(1 << 47) | (0b1111 << 40)),
           "a call gate": (raw & ~(0x1F << 40)) | (0x0C << 40)}
    for what, value in bad.items():
        mutants.append(_mutate(folder, core, f"LDT entry {index}: {what}",
                               lambda d, v=value: d["task"]["ldt"][0].__setitem__(1, v)))
    for at in (8192, -1, 1 << 20):
        mutants.append(_mutate(folder, core, f"LDT entry at {at}",
                               lambda d, a=at: d["task"]["ldt"][0].__setitem__(0, a)))
    problems, accepted = _run_mutants(folder, mutants, my_children())
    assert problems == [], "\n".join(problems)
    assert accepted < len(mutants), "every mutant restored: the images were not changed"
    for what, new in mutants[-len(bad) - 3:]:  # refused by name, before anything is made
        folder.apply(new)
        with pytest.raises(CkptError, match=r"ldt|LDT"):
            ckpt.restore(str(images), detach=True)
        folder.reset(new)
        assert my_children() == children, f"{what}: a process left"


def test_every_value_of_a_fanotify_mark_on_a_deleted_file_wrong(
        build: Builder, procs: Procs, tmp_path: Path) -> None:
    """A fanotify inode mark on a deleted file the process holds (fanotify-deleted): each
    value of its description wrong, its ``file`` naming itself, a missing description,
    or the process's output: refused in one line, or restored."""
    base = tmp_path / "w"
    base.mkdir()
    log = base / "log"
    log.write_text("first\n")
    target = procs.start([build("inotify_fanotify"), f"{base}/", f"held:2:{log}"])
    target.out.wait_line(r"^held ", timeout=scaled(10))
    log.unlink()
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images))
    procs.wait_gone(target)
    folder = Folder(images)
    files = folder.load("files.json")
    key = next(k for k, d in files.items() if d["kind"] == "fanotify")
    held = files[key]["marks"][0]["file"]
    assert "ghost" in files[held], files[held]
    mutants = _every_value(folder, "files.json", (key,))
    others = [k for k in files if k not in (key, held)]
    for what, ref in [("itself", key), ("nothing", "99999"), ("another file", others[0])]:
        mutants.append(_mutate(folder, "files.json", f"the mark's file: {what}",
                               lambda d, r=ref: d[key]["marks"][0].update(file=r)))
    mutants += _every_value(folder, "files.json", (held, "ghost"))
    problems, accepted = _run_mutants(folder, mutants, my_children())
    assert problems == [], "\n".join(problems)
    assert accepted < len(mutants), "every mutant restored: the images were not changed"


def test_every_value_of_a_tcp_connection_wrong(procs: Procs, tmp_path: Path) -> None:
    """An established TCP connection (--tcp-established; both ends in the tree, both
    queues holding bytes): each value of one end's description wrong (its ``tcp``:
    sequence numbers, queues' offsets and lengths, MSS, window scales, the window;
    its state, addresses), and the queues' file cut: refused in one line, or restored
    (then killed), never a traceback, a hang or a process left behind."""
    from ckpt.resources.filekind import TcpFlags
    from ckpt_helpers import PROGS, PYTHON, only_child

    pair = procs.start([PYTHON, PROGS / "tcp_echo.py", "pair"])
    pair.out.wait_line("^client got ", timeout=scaled(20))
    child = only_child(pair.pid)
    tcp = TcpFlags(established=True)
    images = tmp_path / "images"
    ckpt.dump(pair.pid, str(images), tcp=tcp)
    procs.wait_gone(pair)
    procs.wait_gone(child)
    folder = Folder(images)
    files = folder.load("files.json")
    key = next(k for k, d in files.items() if "tcp" in d)
    mutants = _every_value(folder, "files.json", (key, "tcp"), [*ODD, 0, 2**32])
    for field in ("state", "addr", "peer"):
        mutants += _every_value(folder, "files.json", (key, field))
    for field in ("addr", "peer"):
        for what, change in [("IPv6-shaped", lambda a: [*a, 0, 0]),
                             ("an IPv6 host", lambda a: ["::1", a[1]]),
                             ("another host", lambda a: ["192.0.2.1", a[1]])]:
            mutants.append(_mutate(folder, "files.json", f"{key}/{field}: {what}",
                                   lambda d, f=field, c=change: d[key].update(
                                       {f: c(d[key][f])})))
    mutants += _raw_cut(folder)
    problems, accepted = _run_mutants(folder, mutants, my_children(), tcp=tcp)
    assert problems == [], "\n".join(problems)
    assert accepted < len(mutants) // 2, f"{accepted} of {len(mutants)} mutants restored"


# A program holding some kind of state, the line it prints once it holds it, and what
# of its images to make wrong: a JSON image whole, or its descriptions of some kinds.
PROGRAMS = {
    "locks": (["locks", "{tmp}"], r"^child locked$", "locks.json", ()),
    "pidfds": (["pidfds"], r"^2 ", "files.json", ("pidfd",)),
    "pty": (["ptypair"], r"^G 5 ", "files.json", ("tty",)),
}
DUMP_OPTIONS = {"locks": {"file_locks": True}}


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_every_value_of_a_program_wrong(build: Builder, procs: Procs, tmp_path: Path,
                                        program: str) -> None:
    """File locks (locks.json), pidfds and a terminal pair's descriptions: each value
    wrong in turn, refused in one line or restored (then killed)."""
    argv, ready, name, kinds = PROGRAMS[program]
    target = procs.start([str(build(argv[0])),
                          *(a.format(tmp=tmp_path) for a in argv[1:])])
    target.out.wait_line(ready, timeout=scaled(20))
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images), **DUMP_OPTIONS.get(program, {}))
    procs.wait_gone(target)
    folder = Folder(images)
    doc = folder.load(name)
    if kinds:
        keys = [k for k, d in doc.items() if d["kind"] in kinds]
        assert keys, f"no description of kind {kinds}"
        mutants = [m for k in keys for m in _every_value(folder, name, (k,))
                   if not re.search(r"/termios/6/([2-9]|\d\d)$", m[0].split(" at ")[-1])]
        # (the control characters alike: the first two of 32 stand for all)
    else:
        mutants = _every_value(folder, name)
    problems, accepted = _run_mutants(folder, mutants, my_children())
    assert problems == [], "\n".join(problems)
    assert accepted < len(mutants), "every mutant restored: the images were not changed"
