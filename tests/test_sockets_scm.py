"""Files passed in unix socket messages not read yet (SCM_RIGHTS) come back with their
messages: a pipe end and a file no process holds any more (the pipe's bytes and the
file's offset with them), on a stream socket where each read ends with the chunk
that carries them; a socket in its own queue; an eventfd on a datagram."""

from __future__ import annotations

from pathlib import Path

from ckpt_helpers import PROGS, PYTHON, Procs, ckpt_ok, restore_detached, signal_report

EXPECTED = [
    "GOT stream hellopipe files 1",
    "GOT pipe pipe-data then more",
    "GOT stream file files 1",
    "GOT file passed.txt 3456789",
    "GOT stream tail files 0",
    "GOT seqpacket self same True reads ping",
    "GOT dgram event eventfd 7",
]


def test_files_in_queued_messages(procs: Procs, images: Path, tmp_path: Path) -> None:
    target = procs.start([PYTHON, PROGS / "scmrights.py", tmp_path])
    target.out.wait_line(r"^ready")
    ckpt_ok("dump", "-t", target.pid, "-D", images)
    procs.wait_gone(target)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert signal_report(restored) == EXPECTED
