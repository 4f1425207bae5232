"""Files and pipes: an O_APPEND file keeps appending, a pipe keeps its unread bytes, an
O_ASYNC pipe keeps signalling its owner, an O_PATH fd stays one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    ckpt_ok,
    dump_and_check_dead,
    restore_detached,
)


def inventory_needs(images: Path) -> list[str]:
    return list(json.loads((images / "inventory.json").read_text()).get("needs", []))


def _file_numbers(lines: list[str]) -> list[int]:
    return [int(ln.split()[1]) for ln in lines]


def test_append_file_and_pipe(build: Builder, procs: Procs, images: Path,
                              tmp_path: Path) -> None:
    """Unread pipe data (100000 bytes, 128 KiB pipe) is read back intact after restore;
    appends go on at the end of the file, after what others appended meanwhile."""
    log = tmp_path / "append.log"
    target = procs.start([build("pipefile"), log])
    target.out.wait_numbers(4)
    before = dump_and_check_dead(procs, target, images)
    dumped_lines = log.read_text().splitlines()
    assert _file_numbers(dumped_lines) == list(range(len(dumped_lines)))
    with open(log, "a") as f:  # the file grows between dump and restore
        f.write("external\n")

    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(before) + 2)
    n_lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    assert target.out.wait_line(r"^pipe ", start=n_lines) == "pipe ok 100000 cap 131072"
    assert target.out.wait_line(r"^pipe again", start=n_lines) == "pipe again ok"
    target.out.wait_numbers(len(target.out.numbers()) + 2)
    assert_consecutive(target.out.numbers())

    lines = log.read_text().splitlines()
    assert lines.count("external") == 1
    cut = lines.index("external")
    assert lines[:cut] == dumped_lines, "lines written before the dump changed"
    after = _file_numbers(lines[cut + 1:])
    assert after, "no appends after the restore"
    assert_consecutive(_file_numbers(lines[:cut]) + after)


def test_sigio_owner_and_signal(build: Builder, procs: Procs, images: Path) -> None:
    """A pipe whose read end is O_ASYNC, owned by its process (F_SETOWN_EX) with
    F_SETSIG SIGRTMIN+1: after the restore a write into it still signals the process
    with SIGRTMIN+1 (never SIGIO), with the same owner, signal and flags."""
    target = procs.start([build("sigio")])
    target.out.wait_numbers(2)
    os.kill(target.pid, signal.SIGUSR1)
    before = target.out.wait_line(r"^sigio 1 ")
    assert f"owner=1:{target.pid} sig=1 " in before and "bad=0" in before, before
    assert "signo=1 " in before, before
    dump_and_check_dead(procs, target, images)
    assert "fown" in inventory_needs(images)  # the owner is in the images
    restored = restore_detached(procs, target.pid, target.out, images)
    n_lines = len(target.out.lines())
    target.out.wait_numbers(len(target.out.numbers()) + 2)
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    after = target.out.wait_line(r"^sigio 2 ", start=n_lines)
    assert after.split(" ", 2)[2] == before.split(" ", 2)[2], (before, after)
    assert_consecutive(target.out.numbers())


def test_o_path_fd(build: Builder, procs: Procs, images: Path) -> None:
    """An O_PATH fd (no offset, no status flags) comes back on the same file, O_PATH."""
    target = procs.start([build("holdfd"), "opath"])
    fd = int(target.out.wait_line(r"^ready ").split()[1])
    target.out.wait_numbers(2)
    before = dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert os.readlink(f"/proc/{restored.pid}/fd/{fd}") == "/etc/hostname"
    with open(f"/proc/{restored.pid}/fdinfo/{fd}") as f:
        flags = int(next(ln.split()[1] for ln in f if ln.startswith("flags:")), 8)
    assert flags & os.O_PATH
    assert_consecutive(target.out.wait_numbers(len(before) + 2))


def test_proc_file_of_another_process_open_for_an_instant(procs: Procs,
                                                          images: Path) -> None:
    """A /proc file of a process outside the tree, open for an instant (top reading a
    process's stat): the refused dump leaves the process running and is tried again a
    moment later, once the file is closed; the dump then succeeds."""
    other = procs.start(["sleep", "1000"], name="other")
    target = procs.start([PYTHON, PROGS / "proc_peeker.py", str(other.pid)])
    target.out.wait_line("^open$")
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    restore_detached(procs, target.pid, target.out, images)
    assert_consecutive(target.out.wait_numbers(len(target.out.numbers()) + 3))
