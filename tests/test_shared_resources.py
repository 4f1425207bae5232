"""Shared state inside one object: a shared anonymous memory object split into
mappings at non-zero offsets and mapped by two processes, and the messages
queued in unix socket pairs (datagram, seqpacket, stream)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from ckpt_helpers import (
    Builder,
    Output,
    Procs,
    assert_consecutive,
    ckpt_ok,
    dump_and_check_dead,
    restore_detached,
)

PAGE = os.sysconf("SC_PAGESIZE")


def _role(out: Output, role: str) -> list[tuple[int, int]]:
    """(tick, value) of the lines "ROLE N x=V"."""
    rx = re.compile(rf"^{role} (\d+) \w=(-?\d+)$")
    return [(int(m[1]), int(m[2])) for m in map(rx.match, out.lines()) if m]


def _shmem_maps(pid: int) -> list[tuple[int, str, int, int]]:
    """(size, perms, offset, inode) of each shared anonymous mapping of ``pid``."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == "/dev/zero (deleted)":
                start, end = (int(x, 16) for x in fields[0].split("-"))
                out.append((end - start, fields[1], int(fields[2], 16), int(fields[4])))
    return out


def test_split_shared_anonymous_object_across_processes(
        build: Builder, procs: Procs, images: Path) -> None:
    """Both processes map the object at offsets 0 and 4096 with other protections;
    its third page is mapped nowhere. After the restore each still sees the other's
    stores, and the unmapped page is still in the object."""
    target = procs.start([build("splitshm")])
    out = target.out
    p, c = map(int, out.wait_line(r"^pids ").split()[1:])
    out.wait_line(r"^P 5 ")
    out.wait_line(r"^C 5 ")
    want_p = [(PAGE, "rw-s", 0), (PAGE, "r--s", PAGE)]
    want_c = [(PAGE, "r--s", 0), (PAGE, "rw-s", PAGE)]
    assert [m[:3] for m in _shmem_maps(p)] == want_p
    assert [m[:3] for m in _shmem_maps(c)] == want_c

    ckpt_ok("dump", "-t", p, "-D", images)
    for pid in (p, c):
        procs.wait_gone(pid)
    p_before, c_before = _role(out, "P"), _role(out, "C")

    restore_detached(procs, p, out, images)
    out.wait_line(rf"^P {len(p_before) + 10} ")
    out.wait_line(rf"^C {len(c_before) + 10} ")
    p_after, c_after = _role(out, "P"), _role(out, "C")
    assert_consecutive([n for n, _ in p_after])
    assert_consecutive([n for n, _ in c_after])
    # Still one object: P reads C's latest ticks from page 1, C reads P's from page 0.
    assert p_after[-1][1] > c_before[-1][0] + 5, "P no longer sees C's stores"
    assert c_after[-1][1] > p_before[-1][0] + 5, "C no longer sees P's stores"
    maps_p, maps_c = _shmem_maps(p), _shmem_maps(c)
    assert [m[:3] for m in maps_p] == want_p
    assert [m[:3] for m in maps_c] == want_c
    assert len({m[3] for m in maps_p + maps_c}) == 1, "the processes map different objects"

    n_lines = len(out.lines())
    os.kill(p, signal.SIGUSR1)  # P's page-1 mapping grows onto page 2 again
    assert out.wait_line(r"^grow ", start=n_lines) == "grow 5eedc0ffee"
    out.wait_line(rf"^P {len(_role(out, 'P')) + 3} ")
    assert [n for n, _ in _role(out, "P")] == list(range(len(_role(out, "P"))))
    assert [m[:3] for m in _shmem_maps(p)] == [(PAGE, "rw-s", 0), (2 * PAGE, "r--s", PAGE)]
    # The object was saved once, whole (3 pages, by offset), by P, the first to map it.
    mm = json.loads((images / f"mm-{p}.json").read_text())
    assert [(o["size"], o["runs"]) for o in mm["shmem"]] == [(3 * PAGE, [[0, 3]])]
    assert json.loads((images / f"mm-{c}.json").read_text())["shmem"] == []


def test_unix_socket_queues_keep_every_message(
        build: Builder, procs: Procs, images: Path) -> None:
    """Datagrams (one empty, one of 100000 bytes) and seqpacket records come back
    one by one with their boundaries, stream bytes in one piece, nothing lost."""
    target = procs.start([build("sockq")])
    target.out.wait_line(r"^ready$")
    target.out.wait_numbers(2)
    before = dump_and_check_dead(procs, target, images)


    restored = restore_detached(procs, target.pid, target.out, images)
    target.out.wait_numbers(len(before) + 2)
    n_lines = len(target.out.lines())
    signal.pidfd_send_signal(restored.pidfd, signal.SIGUSR1)
    target.out.wait_line(r"^stream ", start=n_lines)
    verdicts = [ln for ln in target.out.lines()[n_lines:] if not ln.isdigit()]
    assert verdicts == ["dgram ok 5", "dgram-back ok 2", "seqpacket ok 4",
                        "stream ok 12345"]
    target.out.wait_numbers(len(target.out.numbers()) + 2)
    assert_consecutive(target.out.numbers())
    # Each end's queue is in the image message by message (lengths; 1 stream,
    # 2 dgram, 5 seqpacket).
    descs = json.loads((images / "files.json").read_text()).values()
    queues = sorted((d["type"], [n for _, n in d["queue"]]) for d in descs
                    if d["kind"] == "unix")
    assert queues == [(1, []), (1, [12345]), (2, [0, 9]), (2, [1, 0, 100000, 3, 77]),
                      (5, []), (5, [10, 0, 5000, 1])]
