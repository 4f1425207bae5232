"""Memory of every kind: every byte of memfd mappings (private, shared, at offsets,
with holes, past the end of the file in the last page), private file mappings written
partly or grown after mapping, mremap'd and mprotect-split mappings, MAP_POPULATE,
MAP_NORESERVE, the stack; memfds executed and sealed; madvise flags and locks; guard
pages; AIO rings; and what is refused (io_uring, userfaultfd, hugetlb memfds)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from ckpt.kernel import mqueue, sysvipc
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Proc,
    Procs,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
    wait_until,
)
from real_helpers import dumped_pids

PAGE = 4096

TICK = re.compile(r"^(-?\d+) (ok|BAD .*)$")


def _ticks(lines: list[str]) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in map(TICK.match, lines) if m]


def test_every_byte_of_many_kinds_of_mappings(build: Builder, procs: Procs, images: Path,
                                              tmp_path: Path) -> None:
    """memkinds checks every page of each region on every tick: none differs after a
    restore (before the fix, the bytes a memfd's mapping wrote past the end of the file
    in its last page came back as zeros, in every mapping of that page)."""
    target = procs.start([build("memkinds"), tmp_path])
    target.out.wait_line(r"^ready$")
    target.out.wait_line(r"^2 ")
    dump_and_check_dead(procs, target, images)
    before = len(_ticks(target.out.lines()))
    restore_detached(procs, target.pid, target.out, images)
    target.out.wait_line(rf"^{before + 5} ")
    ticks = _ticks(target.out.lines())
    assert [t for t in ticks if t[1] != "ok"] == [], "memory differs after the restore"
    assert [n for n, _ in ticks] == list(range(len(ticks)))


def _cycle(build: Builder, procs: Procs, images: Path, argv: list[str | Path],
           ticks_before: int = 2) -> Proc:
    """Start ``argv``, wait for "ready" and a few ticks, dump it (killed), reap every
    process of its tree (a child it forked, re-parented to pytest, would hold its PID as
    its group), restore it."""
    target = procs.start(argv)
    target.out.wait_line(r"^ready$")
    target.out.wait_line(rf"^{ticks_before} ")
    dump_and_check_dead(procs, target, images)
    for pid in dumped_pids(images):
        procs.wait_gone(pid)
    return restore_detached(procs, target.pid, target.out, images)


def _all_ok_after(target: Proc, more: int = 5) -> None:
    """The ticks go on after the restore, each one "ok", none missing."""
    before = len(_ticks(target.out.lines()))
    target.out.wait_line(rf"^{before + more} ")
    ticks = _ticks(target.out.lines())
    assert [t for t in ticks if t[1] != "ok"] == [], "a check failed after the restore"
    assert [n for n, _ in ticks] == list(range(len(ticks)))


def test_memfds_executed_mapped_executable_and_sealed(build: Builder, procs: Procs,
                                                      images: Path) -> None:
    """memfd_kinds: a memfd still runs with execveat after the restore (no description of
    it was reopened for writing), one mapped PROT_EXEC still runs its code, and the seals
    (F_SEAL_FUTURE_WRITE with a writable mapping made before it, F_SEAL_WRITE with a
    read-only one, F_SEAL_EXEC from MFD_NOEXEC_SEAL and added to an MFD_EXEC memfd) are
    the same and still refuse what they refused."""
    target = _cycle(build, procs, images, [build("memfd_kinds")])
    _all_ok_after(target)


def _vm_flags(pid: int, starts: dict[int, str]) -> dict[str, tuple[str, ...]]:
    """NAME -> (Rss, Locked, VmFlags...) of the mappings of ``pid`` starting at ``starts``."""
    out: dict[str, tuple[str, ...]] = {}
    name = None
    fields: list[str] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", head):
                name = starts.get(int(head.split("-")[0], 16))
                fields = []
            elif name and head in ("Rss:", "Locked:"):
                fields.append(line.split()[1])
            elif name and head == "VmFlags:":
                out[name] = (*fields, *sorted(line.split()[1:]))
    return out


def test_madvise_flags_and_locks(build: Builder, procs: Procs, images: Path) -> None:
    """madv: each mapping's VmFlags (DONTFORK, DONTDUMP, HUGEPAGE, NOHUGEPAGE, MERGEABLE,
    WIPEONFORK; DOFORK, DODUMP, KEEPONFORK back to the defaults; mlock; mlock2 ONFAULT;
    mseal),
    its resident and locked sizes, seen in smaps from outside, are the same after the
    restore (an ONFAULT lock does not bring in the pages never touched)."""
    target = procs.start([build("madv")])
    target.out.wait_line(r"^ready$")
    starts = {int(ln.split()[2], 16): ln.split()[1]
              for ln in target.out.lines() if ln.startswith("map ")}
    assert {"dontfork", "dontdump", "wipeonfork", "locked", "onfault"} <= set(starts.values())
    before = _vm_flags(target.pid, starts)
    assert before["onfault"][:2] == ("8", "8") and "lf" in before["onfault"], before
    assert "dc" in before["dontfork"] and "dc" not in before["dofork"], before
    target.out.wait_line(r"^2 ")
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert _vm_flags(restored.pid, starts) == before
    if "sealed" in before:
        assert "sl" in before["sealed"], before
    _all_ok_after(restored)


def _guard_pages(pid: int, start: int, npages: int) -> list[int]:
    """The pages from ``start`` whose pagemap entry says guard page (bit 58)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        raw = os.pread(f.fileno(), npages * 8, start // PAGE * 8)
    return [i for i in range(npages) if raw[i * 8 + 7] & 0x04]


def test_guard_regions_and_unreadable_mappings(build: Builder, procs: Procs, images: Path,
                                              tmp_path: Path) -> None:
    """guards: guard pages (MADV_GUARD_INSTALL), which pagemap shows as swapped and which
    cannot be read (the dump failed with "process_vm_readv: Bad address"), come back as
    guard pages, in anonymous and file mappings, the data around them intact; PROT_NONE
    mappings with and without pages, and an execute-only one, too."""
    target = procs.start([build("guards"), tmp_path / "file"])
    line = target.out.wait_line(r"^(ready|skip guard regions)$")
    if line.startswith("skip"):
        pytest.skip("this kernel has no guard regions (MADV_GUARD_INSTALL, Linux 6.13)")
    addr = int(next(ln for ln in target.out.lines() if ln.startswith("guard ")).split()[1], 16)
    assert _guard_pages(target.pid, addr, 8) == [3, 4]
    target.out.wait_line(r"^2 ")
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    assert _guard_pages(restored.pid, addr, 8) == [3, 4]
    _all_ok_after(restored)


RESERVATION = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
size = 8 << 40
base = libc.mmap(None, size, 0, 0x22 | 0x4000, -1, 0)  # PROT_NONE, private, NORESERVE
assert base != ctypes.c_void_p(-1).value, ctypes.get_errno()
offsets = [0, 1 << 30, 3 << 40, size - (8 << 12)]
for i, o in enumerate(offsets):  # pages written here and there, read-write again
    assert libc.mprotect(ctypes.c_void_p(base + o), 2 << 12, 3) == 0
    ctypes.memset(base + o, 65 + i, 5000)
guards = libc.madvise(ctypes.c_void_p(base + (6 << 40)), 2 << 12, 102) == 0
print("ready", hex(base), int(guards), flush=True)
n = 0
while True:
    for i, o in enumerate(offsets):
        assert ctypes.string_at(base + o, 8192) == bytes([65 + i]) * 5000 + bytes(3192), i
    print(n, "ok", flush=True)
    n += 1
    time.sleep(0.1)
"""


def test_terabytes_reserved_a_few_pages_used(procs: Procs, images: Path,
                                             tmp_path: Path) -> None:
    """A reservation of 8 TiB (PROT_NONE, as mariadbd makes one) with a few pages made
    read-write and written far apart, and guard pages: its pagemap is read only where
    it holds pages (PAGEMAP_SCAN; read whole, 16 GiB of entries, it took minutes), and
    the pages and guards come back."""
    (tmp_path / "reserve.py").write_text(RESERVATION)
    target = procs.start([PYTHON, tmp_path / "reserve.py"])
    _, base, guards = target.out.wait_line(r"^ready ").split()
    target.out.wait_line(r"^2 ok$")
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    n = len(target.out.lines())
    target.out.wait_line(rf"^{n + 2} ok$")
    if guards == "1":
        assert _guard_pages(restored.pid, int(base, 16) + (6 << 40), 3) == [0, 1]


def test_aio_ring_with_unreaped_events(build: Builder, procs: Procs, images: Path) -> None:
    """aioring: an AIO context whose 7 completed events wait, not reaped, across the end
    of its ring (the dump failed on the ring's mapping), comes back at the same address:
    io_getevents returns those 7 in order, and the context goes on working."""
    target = procs.start([build("aioring")])
    target.out.wait_line(r"^ready$")
    ctx = int(target.out.wait_line(r"^ctx ").split()[1], 16)
    dump_and_check_dead(procs, target, images)
    restored = restore_detached(procs, target.pid, target.out, images)
    with open(f"/proc/{restored.pid}/maps") as f:
        assert any(ln.startswith(f"{ctx:x}-") and "[aio]" in ln for ln in f)
    os.kill(restored.pid, signal.SIGUSR1)
    assert restored.out.wait_line(r"^aio ") == "aio ok"
    restored.out.wait_line(r"^3 tick")


REFUSED = [
    ("uring", r"io_uring"),
    ("uring-nofd", r"io_uring"),
    ("uffd", r"userfaultfd"),
    ("uffd-region", r"userfaultfd"),
    ("hugetlb", r"huge pages|MFD_HUGETLB"),
]


@pytest.mark.parametrize(("kind", "message"), REFUSED, ids=[k for k, _ in REFUSED])
def test_refused_at_dump_process_unharmed(build: Builder, procs: Procs, images: Path,
                                          kind: str, message: str) -> None:
    """io_uring instances (fd and rings, or rings alone), userfaultfds (alone, or with a
    range registered) and memfds of huge pages: refused at dump, naming the process and
    what it holds; the process runs on, untraced."""
    target = procs.start([build("refused_kinds"), kind])
    target.out.wait_line(r"^ready$")
    target.out.wait_line(r"^2 tick")
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert re.search(rf"\b{target.pid}\b", err) and re.search(message, err), err
    assert not (images / "inventory.json").exists()
    n = len(target.out.lines())
    target.out.wait_line(rf"^{n + 2} tick")
    assert proc_status(target.pid)["TracerPid"] == "0"
    assert is_alive(target.pid)


def _ipc(kind: str) -> dict[int, dict[str, int]]:
    """id -> row of /proc/sysvipc/KIND (perms in octal)."""
    out = {}
    with open(f"/proc/sysvipc/{kind}") as f:
        names = f.readline().split()
        for line in f:
            row = dict(zip(names, line.split(), strict=False))
            row["perms"] = str(int(row["perms"], 8))
            out[int(line.split()[1])] = {k: int(v) for k, v in row.items()}
    return out


def test_sysv_ipc_objects_and_blocked_processes(build: Builder, procs: Procs,
                                                images: Path) -> None:
    """sysv_ipc: two SysV segments (one removed while attached), a semaphore set and a
    message queue come back under their ids, keys, modes and owners, with their bytes,
    values and messages; a child blocked in msgrcv and one blocked in semop come back
    blocked in them and are woken by what the parent sends after the restore. A
    segment attached by a process outside the tree refuses the dump; one still
    attached when the restore starts refuses the restore."""
    target = procs.start([build("sysv_ipc")])
    shm1, shm2, sem, msq = map(int, target.out.wait_line(r"^ids ").split()[1:])
    target.out.wait_line(r"^ready$")
    with open(f"/proc/{target.pid}/task/{target.pid}/children") as f:
        kids = [int(x) for x in f.read().split()]
    try:
        before = {k: _ipc(k) for k in ("shm", "sem", "msg")}
        outside = sysvipc.shmat(shm1, sysvipc.SHM_RDONLY)  # this process, outside the tree
        try:
            err = ckpt_fails("dump", "-t", target.pid, "-D", images)
        finally:
            sysvipc.shmdt(outside)
        assert "outside the dumped tree" in err and f"segment {shm1}" in err, err
        assert not (images / "inventory.json").exists()
        target.out.wait_line(rf"^{len(_ticks(target.out.lines())) + 2} ok")

        dump_and_check_dead(procs, target, images)
        for pid in kids:
            procs.wait_gone(pid)
        assert shm2 not in _ipc("shm"), "the removed segment outlived its processes"
        outside = sysvipc.shmat(shm1, 0)
        try:
            err = ckpt_fails("restore", "-D", images, "-d")
            assert f"{shm1}" in err and "still attached" in err, err
        finally:
            sysvipc.shmdt(outside)
        restored = restore_detached(procs, target.pid, target.out, images)
        after = {k: _ipc(k) for k in ("shm", "sem", "msg")}
        fields = ("key", "perms", "uid", "gid")
        for kind, ident in (("shm", shm1), ("shm", shm2), ("sem", sem), ("msg", msq)):
            assert {f: after[kind][ident][f] for f in fields} == \
                {f: before[kind][ident][f] for f in fields}, (kind, ident)
        assert after["msg"][msq]["qnum"] == 3
        assert after["shm"][shm1]["nattch"] == 3 and after["shm"][shm2]["nattch"] == 3
        os.kill(restored.pid, signal.SIGUSR1)
        assert restored.out.wait_line(r"^state ") == "state ok"
        restored.out.wait_line(r"^A got wake$")
        restored.out.wait_line(r"^B got it$")
        n = len(_ticks(restored.out.lines()))
        restored.out.wait_line(rf"^{n + 2} ")
        assert [t for t in _ticks(restored.out.lines()) if t[1] != "ok"] == []
    finally:
        procs.cleanup()
        for kind, ident in (("m", shm1), ("m", shm2), ("s", sem), ("q", msq)):
            subprocess.run(["ipcrm", f"-{kind}", str(ident)], capture_output=True, check=False)


def test_posix_message_queues(build: Builder, procs: Procs, images: Path) -> None:
    """mqueues: a named queue with messages of several priorities (held read-write and
    read-only, non-blocking), an unlinked one with a message, and one a child is blocked
    on in mq_receive: after the restore the messages come in the same order with the
    same priorities, limits and mode are kept, the unlinked queue has no name again,
    and the child wakes up with what the parent sends."""
    target = procs.start([build("mqueues")])
    names = target.out.wait_line(r"^names ").split()[1:]
    target.out.wait_line(r"^ready$")
    try:
        with open(f"/proc/{target.pid}/task/{target.pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        dump_and_check_dead(procs, target, images)
        for pid in kids:
            procs.wait_gone(pid)
        restored = restore_detached(procs, target.pid, target.out, images)
        links = sorted(os.readlink(f"/proc/{restored.pid}/fd/{fd}") for fd in (3, 4, 5, 6))
        assert links == sorted([names[0], names[0], f"{names[1]} (deleted)", names[2]])
        os.kill(restored.pid, signal.SIGUSR1)
        assert restored.out.wait_line(r"^state ") == "state ok"
        restored.out.wait_line(r"^child got wake$")
    finally:
        procs.cleanup()
        for name in (names[0], names[2]):
            try:
                mqueue.mq_unlink(name)
            except OSError:
                pass


def test_node_with_io_uring_refused(procs: Procs, images: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Node with UV_USE_IO_URING=1 (libuv's io_uring for file system calls): the dump is
    refused naming io_uring and the process, which goes on counting."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    monkeypatch.setenv("UV_USE_IO_URING", "1")
    target = procs.start([node, PROGS / "uv_ticks.js"])
    target.out.wait_numbers(3, timeout=30)
    if not any("io_uring" in os.readlink(f"/proc/{target.pid}/fd/{fd}")
               for fd in os.listdir(f"/proc/{target.pid}/fd")):
        pytest.skip("this node's libuv does not use io_uring (libuv before 1.45)")
    err = ckpt_fails("dump", "-t", target.pid, "-D", images)
    assert "io_uring" in err and re.search(rf"\b{target.pid}\b", err), err
    assert not (images / "inventory.json").exists()
    n = len(target.out.numbers())
    target.out.wait_numbers(n + 3)
    assert proc_status(target.pid)["TracerPid"] == "0"


_CHURN = """
from ckpt.kernel import sysvipc
live = []
while True:  # 64 sets at any time, the oldest removed for each new one
    if len(live) >= 64:
        sysvipc.sem_rmid(live.pop(0))
    live.append(sysvipc.semget(0, 4, 0o600 | sysvipc.IPC_CREAT))  # IPC_PRIVATE
"""


def test_semaphore_sets_made_and_removed_meanwhile(procs: Procs, images: Path) -> None:
    """Another process of the tree's IPC namespace (its own: others' dumps are not
    disturbed) makes and removes semaphore sets while ckpt dumps: a set gone between
    the table read and the look at it is not the tree's, and the dump goes on (it
    failed with 'semctl(GETPID): Invalid argument')."""
    target = procs.start(["unshare", "--ipc", "sleep", "1000"])
    wait_until(lambda: os.stat(f"/proc/{target.pid}/ns/ipc").st_ino
               != os.stat("/proc/self/ns/ipc").st_ino, 10, "unshare to make its namespace")
    churn = procs.start(["nsenter", "-t", str(target.pid), "-i", PYTHON, "-c", _CHURN],
                        name="churn")
    wait_until(lambda: len(_in_ipc(target.pid)) > 32, 10, "the sets to come")
    for i in range(10):
        ckpt_ok("dump", "-R", "-t", target.pid, "-D", images / str(i))
    assert churn.popen is not None and churn.popen.poll() is None


def _in_ipc(pid: int) -> list[str]:
    """The semaphore sets of the IPC namespace of ``pid``."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-i", "cat", "/proc/sysvipc/sem"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()[1:]
