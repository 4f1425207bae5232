"""File locks (--file-locks): refused without the flag, leaving the tree as it was;
with it, every lock is taken again at restore, before the processes run, and an
outside process still finds them held."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Procs,
    assert_consecutive,
    ckpt_fails,
    dump_and_check_dead,
    is_alive,
    proc_state,
    restore_detached,
    scaled,
    wait_until,
)

LockEntry = tuple[str, str, int, str, str]


def proc_locks(path: Path) -> list[LockEntry]:
    """The locks /proc/locks shows on ``path``'s inode: (kind, type, pid, start, end)."""
    st = os.stat(path)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "->":
                continue  # a request waiting, not a lock
            kind, _, ltype, pid, inode, start, end = fields[1:8]
            if inode == where:
                out.append((kind, ltype, int(pid), start, end))
    return sorted(out)


def probe(*specs: str | Path) -> list[str | int]:
    """What a second process gets trying each lock without waiting (progs/lockprobe.py)."""
    res = subprocess.run([PYTHON, PROGS / "lockprobe.py", *map(str, specs)],
                         capture_output=True, text=True, timeout=scaled(30))
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout))


def _flock_cmd() -> str:
    path = shutil.which("flock")
    if path is None:
        pytest.skip("flock(1) (util-linux) is not installed")
    return path


def test_locks_refused_without_flag(procs: Procs, tmp_path: Path, images: Path) -> None:
    """Without --file-locks the dump refuses, suggesting it; nothing is killed or held."""
    lk = tmp_path / "lk"
    target = procs.start([_flock_cmd(), lk, "sleep", "1000"])
    wait_until(lambda: proc_locks(lk) if lk.exists() else [], 10, "flock(1)'s lock")
    held = proc_locks(lk)
    assert held == [("FLOCK", "WRITE", target.pid, "0", "EOF")]
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert "--file-locks" in err and "flock" in err and str(lk) in err, err
    assert f"process {target.pid}" in err, err
    assert not (images / "inventory.json").exists()
    # let go, it goes back into its wait (running an instant first)
    wait_until(lambda: proc_state(target.pid) == "S", 5, "flock(1) back in its wait")
    assert proc_locks(lk) == held and probe(f"flock:{lk}") == ["EAGAIN"]


def test_flock_command(procs: Procs, tmp_path: Path, images: Path) -> None:
    """``flock LK sleep 1000``: the lock flock(1) shares with its child comes back."""
    lk = tmp_path / "lk"
    target = procs.start([_flock_cmd(), lk, "sleep", "1000"])
    wait_until(lambda: proc_locks(lk) if lk.exists() else [], 10, "flock(1)'s lock")
    sleeper = int(Path(f"/proc/{target.pid}/task/{target.pid}/children").read_text())
    held = proc_locks(lk)
    dump_and_check_dead(procs, target, images, "--file-locks")
    procs.wait_gone(sleeper)
    assert proc_locks(lk) == [] and probe(f"flock:{lk}") == ["got"]  # free while dumped
    restore_detached(procs, target.pid, target.out, images)
    assert is_alive(sleeper)
    assert proc_locks(lk) == held, "the lock was not taken again by flock(1)'s process"
    assert probe(f"flock:{lk}") == ["EAGAIN"]
    os.kill(sleeper, 9)  # flock(1) ends with its command, and the lock goes with it
    procs.wait_gone(target.pid)
    assert proc_locks(lk) == [] and probe(f"flock:{lk}") == ["got"]


def test_every_lock_kind(build: Builder, procs: Procs, tmp_path: Path, images: Path) -> None:
    """POSIX ranges (read and write), OFD locks shared by parent and child, a shared flock
    lock, the child's own POSIX lock and a lease with its signal: /proc/locks shows the
    same before and after, a second process is still kept out, and breaking the lease
    signals the restored process as before."""
    work = tmp_path / "files"
    work.mkdir()
    target = procs.start([build("locks"), work])
    parent, child = map(int, target.out.wait_line(r"^pids ").split()[1:])
    target.out.wait_line(r"^child locked$")
    target.out.wait_numbers(3)
    names = ("ranges", "whole", "child", "lease")
    before = {n: proc_locks(work / n) for n in names}
    assert before == {
        "ranges": sorted([("POSIX", "WRITE", parent, "0", "9"),
                          ("POSIX", "READ", parent, "100", "199"),
                          ("OFDLCK", "WRITE", -1, "300", "399"),
                          ("OFDLCK", "READ", -1, "500", "EOF")]),
        "whole": [("FLOCK", "WRITE", parent, "0", "EOF")],
        "child": [("POSIX", "WRITE", child, "0", "EOF")],
        "lease": [("LEASE", "READ", parent, "0", "EOF")],
    }
    r, c = work / "ranges", work / "child"
    specs = [f"posix:{r}:write:0:10", f"posix:{r}:read:100:100", f"posix:{r}:write:100:100",
             f"ofd:{r}:write:300:100", f"ofd:{r}:read:500:10", f"ofd:{r}:write:600:10",
             f"posix:{r}:write:200:100", f"getlk:{r}:write:0:1", f"getlk:{c}:write:0:0",
             f"flock:{work / 'whole'}", f"posix:{c}"]
    kept_out = ["EAGAIN", "got", "EAGAIN", "EAGAIN", "got", "EAGAIN", "got", parent, child,
                "EAGAIN", "EAGAIN"]
    assert probe(*specs) == kept_out

    nums = dump_and_check_dead(procs, target, images, "--file-locks")
    procs.wait_gone(child)
    assert all(proc_locks(work / n) == [] for n in names)
    assert probe(*specs) == ["got"] * 7 + [0, 0, "got", "got"]  # all free while dumped
    restore_detached(procs, parent, target.out, images)
    assert is_alive(child)
    assert {n: proc_locks(work / n) for n in names} == before
    assert probe(*specs) == kept_out

    start = len(target.out.lines())
    assert probe(f"open-write:{work / 'lease'}") == ["EAGAIN"]  # breaks the lease
    lease_fd = next(int(fd) for fd in os.listdir(f"/proc/{parent}/fd")
                    if os.readlink(f"/proc/{parent}/fd/{fd}") == str(work / "lease"))
    target.out.wait_line(rf"^lease broken fd={lease_fd} sig=10$", start=start)
    wait_until(lambda: proc_locks(work / "lease") == [], 10, "the lease given up")
    assert probe(f"open-write:{work / 'lease'}") == ["got"]
    target.out.wait_numbers(len(nums) + 5)
    assert_consecutive(target.out.numbers())


TXN = """
import os, sqlite3, sys, time
db, go = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, isolation_level=None, timeout=0)
con.execute("BEGIN")
con.execute("INSERT INTO t VALUES ('in the transaction')")
print("in transaction", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
con.execute("COMMIT")
print("committed", flush=True)
while True:
    time.sleep(1)
"""

OUTSIDER = """
import sqlite3, sys
try:
    con = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
    con.execute("INSERT INTO t VALUES ('outsider')")
except sqlite3.OperationalError as e:
    print(e)
else:
    print("written")
"""


def _outsider(db: Path) -> str:
    res = subprocess.run([PYTHON, "-c", OUTSIDER, str(db)], capture_output=True, text=True,
                         timeout=scaled(30))
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _rows(db: Path) -> list[str]:
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        con.close()


def test_sqlite_write_transaction(procs: Procs, tmp_path: Path, images: Path) -> None:
    """A process in the middle of ``BEGIN; INSERT``: an outside writer is told "database
    is locked" before the dump and after the restore; after the restored process
    commits, both writes are there."""
    import sqlite3
    db, go = tmp_path / "t.db", tmp_path / "go"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (v TEXT)")
    con.execute("INSERT INTO t VALUES ('before')")
    con.commit()
    con.close()
    script = tmp_path / "txn.py"
    script.write_text(TXN)
    target = procs.start([PYTHON, script, db, go])
    target.out.wait_line("^in transaction$")
    assert _outsider(db) == "database is locked"
    assert _rows(db) == ["before"]

    dump_and_check_dead(procs, target, images, "--file-locks")
    restore_detached(procs, target.pid, target.out, images)
    assert _outsider(db) == "database is locked", "the restored transaction lost its lock"
    assert _rows(db) == ["before"]
    go.touch()
    target.out.wait_line("^committed$")
    assert _rows(db) == ["before", "in the transaction"]
    assert _outsider(db) == "written"
    assert _rows(db) == ["before", "in the transaction", "outsider"]
    assert is_alive(target.pid)


def test_lock_taken_meanwhile(procs: Procs, tmp_path: Path, images: Path) -> None:
    """A lock another process took while the tree was dumped fails the restore, naming
    that process; nothing restored is left running."""
    import fcntl
    lk = tmp_path / "lk"
    target = procs.start([_flock_cmd(), lk, "sleep", "1000"])
    wait_until(lambda: proc_locks(lk) if lk.exists() else [], 10, "flock(1)'s lock")
    sleeper = int(Path(f"/proc/{target.pid}/task/{target.pid}/children").read_text())
    dump_and_check_dead(procs, target, images, "--file-locks")
    procs.wait_gone(sleeper)
    with open(lk) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = ckpt_fails("restore", "-D", images, "-d")
    assert f"process {target.pid}" in err and "flock lock" in err and str(lk) in err, err
    assert f"locked by process {os.getpid()}" in err, err
    assert proc_state(target.pid) is None and proc_state(sleeper) is None


MAPPED = """
import ctypes, fcntl, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]

def mapped(path, lock):
    # Map the file, lock it, close the fd: the mapping alone keeps the lock (the JVM).
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, 4096)
    addr = libc.mmap(None, 4096, 3, 1, fd, 0)  # PROT_READ|PROT_WRITE, MAP_SHARED
    lock(fd)
    os.close(fd)
    return (ctypes.c_char * 4096).from_address(addr)

perf = mapped(sys.argv[1] + "/perf", lambda fd: fcntl.flock(fd, fcntl.LOCK_EX))
ofd = mapped(sys.argv[1] + "/ofd", lambda fd: fcntl.fcntl(
    fd, 37, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 100, 0)))
child = os.fork()
if child == 0:
    while True:
        time.sleep(1)
os.write(1, f"pids {os.getpid()} {child}\\n".encode())
n = 0
while True:
    perf[0:8] = n.to_bytes(8, "little")
    os.write(1, f"{n}\\n".encode())
    n += 1
    time.sleep(0.05)
"""


NON_UTF8_MAPPER = r"""
import mmap, os, sys, time
fd = os.open(os.fsencode(sys.argv[1]) + b"/\xff-mapped", os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096)
print("mapped", flush=True)
time.sleep(1000)
"""


def test_locks_held_through_a_mapping(procs: Procs, tmp_path: Path, images: Path) -> None:
    """A flock and an OFD lock on files the process mapped shared and closed (as the
    JVM does with its hsperfdata), its child mapping them too: refused without
    --file-locks (the tree unharmed); with it both locks are held again by the same
    open files as the mappings, a second process is kept out, and what the process
    writes into the mapping still reaches the file."""
    work = tmp_path / "files"
    work.mkdir()
    target = procs.start([PYTHON, "-c", MAPPED, work])
    parent, child = map(int, target.out.wait_line(r"^pids ").split()[1:])
    target.out.wait_numbers(3)
    before = {"perf": [("FLOCK", "WRITE", parent, "0", "EOF")],
              "ofd": [("OFDLCK", "READ", -1, "0", "99")]}
    assert {n: proc_locks(work / n) for n in before} == before
    specs = [f"flock:{work / 'perf'}", f"ofd:{work / 'ofd'}:write:0:100",
             f"ofd:{work / 'ofd'}:read:0:100"]
    kept_out = ["EAGAIN", "EAGAIN", "got"]
    assert probe(*specs) == kept_out

    said = ckpt_fails("dump", "-t", parent, "-D", tmp_path / "refused")
    assert "--file-locks" in said, said
    assert is_alive(parent) and is_alive(child)

    # a process outside the tree mapping a file whose name is no UTF-8 (every process's
    # mappings are read for the lock's other holders: that one stopped the dump once)
    bystander = procs.start([PYTHON, "-c", NON_UTF8_MAPPER, tmp_path], name="bystander")
    bystander.out.wait_line(r"^mapped$")
    nums = dump_and_check_dead(procs, target, images, "--file-locks")
    procs.wait_gone(child)
    assert probe(*specs) == ["got"] * 3
    restore_detached(procs, parent, target.out, images)
    assert is_alive(child)
    assert {n: proc_locks(work / n) for n in before} == before
    assert probe(*specs) == kept_out
    target.out.wait_numbers(len(nums) + 5)
    assert_consecutive(target.out.numbers())
    last = target.out.numbers()[-1]
    wait_until(lambda: int.from_bytes((work / "perf").read_bytes()[:8], "little") >= last,
               scaled(10), "the mapping's writes in the file")
