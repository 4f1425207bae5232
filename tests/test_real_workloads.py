"""Real workloads a CRIU user would checkpoint, each dumped and restored with -d
several times in a row (killed, dumped with -R and then killed with its whole tree as
a crash would, killed again), checked for what they carry on doing: a redis client
pipelining into a redis-server writing its append-only file.

Clients live in the dumped tree (both ends of their loopback connections are dumped),
so a dump with -R leaves nothing outside that sees the tree die."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from ckpt_helpers import PROGS, PYTHON, Procs, free_port, is_alive, scaled, wait_until
from real_helpers import TIMEOUT, cycle, need, tree
from tcp_helpers import RespReader, resp

ROUNDS = (False, True, False)  # leave_running of each dump


# ------------------------------------------------------------------ redis, AOF


def _batches(lines: list[str]) -> list[tuple[int, int]]:
    """(batch, n) of each "batch B n N" line; fails on an "ERROR" line."""
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    assert not errors, errors
    return [(int(m[1]), int(m[2])) for ln in lines
            if (m := re.match(r"^batch (\d+) n (\d+)$", ln))]


def test_redis_aof_with_a_pipelining_client(procs: Procs, tmp_path: Path) -> None:
    """redis-server writing an append-only file (fsync at each write: its background
    I/O threads busy) and a client of it in the same tree pipelining 400 commands at a
    time on one loopback connection: after each restore the batches go on, each reply
    in order; in the end a new redis-server loads the append-only file, whole, with
    every count the client saw."""
    need("redis-server", "redis-server")
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    client = procs.start([PYTHON, PROGS / "redis_pipeliner.py", str(port), str(data),
                          "--aof-load-truncated", "no"], name="client")
    wait_until(lambda: len(_batches(client.out.lines())) >= 5, TIMEOUT, "batches")
    server = tree(client.pid)[1]
    for i, leave_running in enumerate(ROUNDS):
        cycle(procs, client, tmp_path / f"images{i}", "--tcp-established",
              leave_running=leave_running)
        assert tree(client.pid)[1:] == [server]
        done = len(_batches(client.out.lines()))
        wait_until(lambda done=done: len(_batches(client.out.lines())) >= done + 5,
                   TIMEOUT, "batches after the restore")
        got = _batches(client.out.lines())
        assert [b for b, _ in got] == list(range(len(got))), "a batch lost or repeated"
        assert [n for _, n in got] == [200 * (b + 1) for b, _ in got]
    last = _batches(client.out.lines())[-1][1]
    subprocess.run(["kill", "-9", *map(str, tree(client.pid))], check=True)  # a crash
    procs.wait_gone(client.pid)
    wait_until(lambda: not is_alive(server), TIMEOUT, "redis-server to be gone")
    port = free_port()
    check = procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                         "--dir", data, "--save", "", "--appendonly", "yes",
                         "--aof-load-truncated", "no", "--protected-mode", "no"],
                        name="check")
    wait_until(lambda: any("Ready to accept" in ln for ln in check.out.lines())
               or check.popen.poll() is not None, TIMEOUT, "redis to load the file")
    assert check.popen.poll() is None, "\n".join(check.out.lines()[-5:])
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(TIMEOUT)) as c:
        rd = RespReader(c)
        c.sendall(resp("GET", "n"))
        n = int(rd.reply())
        c.sendall(resp("LLEN", "l"))
        assert rd.reply() == n
        c.sendall(resp("LINDEX", "l", "-1"))
        assert rd.reply() == str(n)
    assert last <= n <= last + 200, f"the file holds {n}, the client saw {last}"


# ------------------------------------------------------------------ make -j


MAKEFILE = """\
PARTS := $(foreach i,$(shell seq 1 {parts}),part$(i))
all: total
total: $(PARTS) sub
\tcat $(PARTS) sub/out > $@.tmp && mv $@.tmp $@
part%:
\tsleep 0.2; echo $@ $$(( $* * 6 )) > $@
sub:
\t$(MAKE) -C sub
.PHONY: all sub
"""

SUB = """\
PIECES := $(foreach i,$(shell seq 1 {parts}),piece$(i))
out: $(PIECES)
\tcat $^ > $@
piece%:
\tsleep 0.2; echo $@ > $@
"""


def test_make_parallel_build(procs: Procs, tmp_path: Path) -> None:
    """``make -j4`` building 40 parts and a sub-make of 20 more (the jobserver's pipe
    shared by both makes and their shells): dumped in the middle while jobs run,
    the build goes on after each restore and ends with every part made once, and
    make exits 0."""
    need("make", "make")
    build = tmp_path / "build"
    (build / "sub").mkdir(parents=True)
    (build / "Makefile").write_text(MAKEFILE.format(parts=40))
    (build / "sub" / "Makefile").write_text(SUB.format(parts=20))
    make = procs.start(["make", "-j4", "-C", build], name="make")

    def made() -> int:
        return len(list(build.glob("part*"))) + len(list(build.glob("sub/piece*")))

    for i, leave_running in enumerate(ROUNDS):
        wait_until(lambda i=i: made() >= 8 * (i + 1), TIMEOUT, "parts made")
        wait_until(lambda: len(tree(make.pid)) >= 3, TIMEOUT, "jobs running")
        cycle(procs, make, tmp_path / f"images{i}", leave_running=leave_running)
    code = procs.wait_gone(make.pid, timeout=120)
    assert code == 0, "\n".join(make.out.lines()[-10:])
    total = (build / "total").read_text().splitlines()
    assert total == [f"part{i} {6 * i}" for i in range(1, 41)] + \
        [f"piece{i}" for i in range(1, 21)]
    assert not any("Error" in ln or "jobserver" in ln for ln in make.out.lines()), \
        make.out.lines()
