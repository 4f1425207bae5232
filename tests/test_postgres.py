"""PostgreSQL 15 from Debian, dumped and restored: its postmaster tree holds a SysV
shared memory segment (its interlock, 56 bytes), which comes back under the same id
with its key, owner and contents, attached where it was in every process; and
pgbench's clients with their backends mid-run, dumped three times."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from ckpt_helpers import (
    Procs,
    ckpt_ok,
    dump_and_check_dead,
    restore_detached,
    scaled,
    wait_until,
)
from real_helpers import cycle, tree


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (scripts/bootstrap.sh installs "
                    "postgresql-15 as root)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user (the Debian package makes it)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing")
    return Path(found[-1]).parent


def _as_postgres(argv: list[str | Path], timeout: float = 60.0) -> str:
    res = subprocess.run([str(a) for a in argv], user="postgres", group="postgres",
                         capture_output=True, text=True, timeout=scaled(timeout),
                         stdin=subprocess.DEVNULL, cwd="/")
    assert res.returncode == 0, f"{argv[0]} failed: {res.stdout}{res.stderr}"
    return res.stdout


def _segments() -> dict[int, dict[str, int]]:
    """shmid -> {key, size, nattch, uid} of /proc/sysvipc/shm."""
    out = {}
    with open("/proc/sysvipc/shm") as f:
        names = f.readline().split()
        for line in f:
            row = dict(zip(names, map(int, line.split()), strict=False))
            out[row["shmid"]] = {k: row[k] for k in ("key", "size", "nattch", "uid", "cpid")}
    return out


def _maps_segment(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any("/SYSV" in line for line in f)
    except OSError:  # gone: a backend that was ending, restored as a zombie
        return False


def test_postgres_serves_its_rows_after_restore(procs: Procs, images: Path) -> None:
    """A postmaster as user postgres on a unix socket only (listen_addresses=''), a
    table of 3 rows; the whole tree is dumped (killed) and restored: psql reads the 3
    rows over the socket, writes a 4th, and the server shuts down cleanly, removing
    its segment, as it would have."""
    bindir = _bin()
    # postgres must reach it: not under pytest's folders, which only root may enter
    base = Path(tempfile.mkdtemp(prefix="ckpt-pg-"))
    sock = base / "sock"
    sock.mkdir()
    pg = pwd.getpwnam("postgres")
    for p in (base, sock):
        os.chown(p, pg.pw_uid, pg.pw_gid)
    os.chmod(base, 0o755)
    data = base / "data"
    _as_postgres([bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres"], 120)
    server = procs.start(["setpriv", f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}",
                          "--init-groups", bindir / "postgres", "-D", data,
                          "-c", "listen_addresses=", "-c", f"unix_socket_directories={sock}",
                          "-c", "dynamic_shared_memory_type=posix"], name="postgres")
    segment: int | None = None
    try:
        server.out.wait_line(r"ready to accept connections", timeout=60)
        psql = [bindir / "psql", "-h", sock, "-U", "postgres", "-At", "-c"]
        _as_postgres([*psql, "create table t (x int, s text); "
                      "insert into t values (1, 'one'), (2, 'two'), (3, 'three')", "postgres"])
        mine = {i: s for i, s in _segments().items() if s["cpid"] == server.pid}
        assert len(mine) == 1, mine
        segment, before = next(iter(mine.items()))
        assert before["uid"] == pg.pw_uid and before["nattch"] >= 5, before

        with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
            workers = [int(x) for x in f.read().split()]
        assert len(workers) >= 4, workers  # checkpointer, writers, launchers
        dump_and_check_dead(procs, server, images)
        for pid in workers:  # re-parented to pytest, a child subreaper: reaped here
            procs.wait_gone(pid)
        wait_until(lambda: _segments().get(segment, {}).get("nattch") == 0, 10,
                   "the dumped tree to let go of its segment")
        restored = restore_detached(procs, server.pid, server.out, images)
        after = _segments()[segment]
        assert (after["key"], after["size"], after["uid"]) == \
            (before["key"], before["size"], before["uid"])
        attached = [p for p in [server.pid, *workers] if _maps_segment(p)]
        assert len(attached) >= 5 and after["nattch"] == len(attached)  # attached again

        rows = _as_postgres([*psql, "select x, s from t order by x", "postgres"])
        assert rows.split() == ["1|one", "2|two", "3|three"]
        _as_postgres([*psql, "insert into t values (4, 'four')", "postgres"])
        assert _as_postgres([*psql, "select count(*) from t", "postgres"]).strip() == "4"

        os.kill(restored.pid, signal.SIGINT)  # a fast shutdown
        procs.wait_gone(restored, timeout=60)
        assert "database system is shut down" in "\n".join(server.out.lines()[-5:])
        assert segment not in _segments(), "the restored server left its segment behind"
    finally:
        procs.cleanup()
        if segment is not None and segment in _segments():
            subprocess.run(["ipcrm", "-m", str(segment)], check=False)
        shutil.rmtree(base, ignore_errors=True)


PGBENCH = """\
cd {base}
{bin}/postgres -D data -c listen_addresses= -c unix_socket_directories={base}/sock \\
  -c dynamic_shared_memory_type=posix > pg.log 2>&1 &
pg=$!
until {bin}/pg_isready -q -h {base}/sock; do sleep 0.2; done
{bin}/pgbench -q -i -s 1 -h {base}/sock -U postgres postgres > init.log 2>&1 \\
  && echo initialized
{bin}/pgbench -c 2 -j 2 -t {tx} -R 100 -P 1 -h {base}/sock -U postgres postgres 2>&1
echo pgbench-exit $?
kill -INT $pg
wait $pg
echo postgres-exit $?
"""


def test_pgbench_through_dumps(procs: Procs, tmp_path: Path) -> None:
    """pgbench with 2 clients (2 threads, each on its backend over the unix socket)
    running TPC-B-like transactions (100 a second in all, so that the run lasts some 30 s
    however fast the machine: the three dumps land mid-run) against the postmaster tree,
    all as user postgres
    in one tree under a shell: dumped and restored mid-run, dumped with -R (running
    on), and again: pgbench ends with every transaction done and none failed, and the
    server shuts down cleanly, its segment removed."""
    bindir = _bin()
    base = Path(tempfile.mkdtemp(prefix="ckpt-pgbench-"))
    try:
        (base / "sock").mkdir()
        (base / "run.sh").write_text(PGBENCH.format(base=base, bin=bindir, tx=1500))
        pg = pwd.getpwnam("postgres")
        for p in (base, base / "sock", base / "run.sh"):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        os.chmod(base, 0o755)
        _as_postgres([bindir / "initdb", "-D", base / "data", "-A", "trust", "-U",
                      "postgres"], 120)
        shell = procs.start(["setpriv", f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}",
                             "--init-groups", "sh", base / "run.sh"], name="pgbench")

        def progress() -> int:
            return sum(ln.startswith("progress:") for ln in shell.out.lines())

        shell.out.wait_line("^initialized$", timeout=120)
        mine = [i for i, s in _segments().items() if s["cpid"] in tree(shell.pid)]
        assert len(mine) == 1, mine  # the postmaster's interlock
        for i, leave_running in enumerate((False, True, False)):
            seen = progress()
            wait_until(lambda seen=seen: progress() >= seen + 2, 60, "pgbench's progress")
            if leave_running:
                ckpt_ok("dump", "-t", shell.pid, "-D", tmp_path / f"images{i}", "-R")
            else:
                cycle(procs, shell, tmp_path / f"images{i}")
        shell.out.wait_line("^postgres-exit", timeout=300)
        text = "\n".join(shell.out.lines())
        assert "pgbench-exit 0" in text and "postgres-exit 0" in text, text[-2000:]
        assert "number of transactions actually processed: 3000/3000" in text, text[-2000:]
        assert "number of failed transactions: 0 " in text, text[-2000:]
        assert "database system is shut down" in (base / "pg.log").read_text()
        assert mine[0] not in _segments(), "the restored server left its segment behind"
    finally:
        procs.cleanup()
        shutil.rmtree(base, ignore_errors=True)
