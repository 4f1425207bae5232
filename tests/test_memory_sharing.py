"""Memory a parent and its forked children share copy-on-write is shared again after a
restore: the same physical pages (pagemap frames, which root sees), the memory of the
tree not multiplied by its number of processes (Pss), each child's own pages its own,
and a write after the restore private to the process that makes it."""

from __future__ import annotations

import json
import os
import signal
import struct
from collections.abc import Callable
from pathlib import Path

from ckpt_helpers import (
    PROGS,
    PYTHON,
    Builder,
    Output,
    Procs,
    ckpt_ok,
    proc_ids,
    restore_detached,
    wait_until,
)

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def frames(pid: int, addr: int, npages: int) -> list[int]:
    """The frame of each page from ``addr`` in ``pid`` (0 where none is present)."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(addr // PAGE * 8)
        raw = f.read(npages * 8)
    return [e & ((1 << 55) - 1) if e >> 63 else 0 for e in struct.unpack(f"<{npages}Q", raw)]


def frames_agree(check: Callable[[], str], what: str) -> None:
    """Poll ``check`` (which reads frames and returns what is wrong, or "") until it finds
    nothing wrong: the kernel may migrate a page (compaction) between two reads of the
    frames of the processes sharing it, which then disagree for a moment."""
    last = [""]

    def fine() -> bool:
        last[0] = check()
        return not last[0]

    try:
        wait_until(fine, 10, what)
    except AssertionError:
        raise AssertionError(f"{what}: {last[0]}") from None


def pss(pids: list[int]) -> int:
    """The proportional set size of the processes together, in bytes."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return total * 1024


def _dump(procs: Procs, pids: list[int], images: Path) -> None:
    ckpt_ok("dump", "-t", pids[0], "-D", images)
    for pid in pids:
        procs.wait_gone(pid)


def _ticking(out: Output, roles: list[str], more: int = 3) -> None:
    counts = {r: sum(1 for ln in out.lines() if ln.startswith(f"{r} ")) for r in roles}
    for r in roles:
        out.wait_line(rf"^{r} {counts[r] + more}$", timeout=20)


def test_forked_workers_share_their_parents_memory_again(build: Builder, procs: Procs,
                                                         images: Path) -> None:
    """A parent fills 64 MiB and forks 3 workers that write 16 pages of it each."""
    target = procs.start([build("cowtree")])
    out = target.out
    pids = [int(x) for x in out.wait_line(r"^pids ").split()[1:]]
    fields = out.wait_line(r"^buf ").split()
    buf, npages, own_base, own = int(fields[1], 16), *map(int, fields[2:])
    fmap = int(out.wait_line(r"^fmap ").split()[1], 16)
    roles = ["P", "W0", "W1", "W2"]
    _ticking(out, roles, 1)
    ids = {pid: proc_ids(pid) for pid in pids[1:]}
    own_pages = [set(range(own_base + i * own, own_base + (i + 1) * own)) for i in range(3)]

    def set_up() -> str:
        parent = frames(pids[0], buf, npages)
        for pid in pids[1:]:
            shared = sum(a == b != 0 for a, b in zip(parent, frames(pid, buf, npages),
                                                     strict=True))
            if shared != npages - own:
                return f"worker {pid} shares {shared} pages with its parent"
        return ""

    frames_agree(set_up, "the set-up as meant")
    before = pss(pids)

    _dump(procs, pids, images)
    for pid in pids[1:]:
        mm = json.loads((images / f"mm-{pid}.json").read_text())
        assert sum(n for _, n in mm["inherited"]) >= npages - own
        assert sum(n for _, n in mm["pagemap"]) < own + 64, "a worker saved its parent's pages"
    restore_detached(procs, pids[0], out, images)
    for pid in pids[1:]:
        procs.adopt(pid, out)
        assert proc_ids(pid) == ids[pid]
    _ticking(out, roles)

    after = pss(pids)
    assert after < before + 8 * MIB, f"the tree's memory grew from {before} to {after} bytes"

    def shared_again() -> str:
        parent = frames(pids[0], buf, npages)
        if not all(parent):
            return "the parent's pages are not all there"
        for w, pid in enumerate(pids[1:]):
            mine = frames(pid, buf, npages)
            for k in range(npages):
                if k in own_pages[w]:
                    if mine[k] in (0, parent[k]):
                        return f"worker {w} lost its own page {k}"
                elif mine[k] != parent[k]:
                    return f"worker {w} page {k} is not its parent's"
            if not frames(pid, fmap, 1) == frames(pids[0], fmap, 1) != [0]:
                return f"worker {w}: the file's copy is not its parent's"
        return ""

    frames_agree(shared_again, "the pages shared as before")

    # Each sees its memory as it was (the pages P wrote after the forks read as zeros in
    # the workers); a write after the restore stays in the process that makes it.
    n = len(out.lines())
    os.kill(pids[2], signal.SIGUSR2)
    os.kill(pids[0], signal.SIGUSR2)
    out.wait_line(r"^W1 wrote$", start=n)
    out.wait_line(r"^P wrote$", start=n)
    dirty = npages - 50
    frames_agree(lambda: "" if len({frames(pid, buf + dirty * PAGE, 1)[0] for pid in pids})
                 == 3 else "not 3 copies", "P, W1 and W0=W2 with their own copies of a page")
    n = len(out.lines())
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    for role in roles:
        assert out.wait_line(rf"^{role} check ", start=n) == f"{role} check ok"


def test_python_prefork_pool_keeps_its_memory_shared(procs: Procs, images: Path) -> None:
    """A CPython parent with a big dict (gc.freeze()d) and 3 forked workers: restored, the
    tree takes about the memory it took before, not four times its parent's."""
    target = procs.start([PYTHON, PROGS / "prefork.py"])
    out = target.out
    pids = [int(x) for x in out.wait_line(r"^pids ", timeout=60).split()[1:]]
    roles = ["P", "W0", "W1", "W2"]
    _ticking(out, roles, 2)
    before = pss(pids)
    with open(f"/proc/{pids[0]}/smaps_rollup") as f:
        parent_rss = next(int(ln.split()[1]) for ln in f if ln.startswith("Rss:")) * 1024

    _dump(procs, pids, images)
    restore_detached(procs, pids[0], out, images, timeout=120)
    for pid in pids[1:]:
        procs.adopt(pid, out)
    _ticking(out, roles)
    after = pss(pids)
    assert after < before * 1.2 + 8 * MIB, (
        f"the tree took {before // MIB} MiB before, {after // MIB} MiB after (its parent "
        f"alone {parent_rss // MIB} MiB)")

    n = len(out.lines())
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    want = f"sum {sum(range(300_000))}"
    for role in roles:
        assert out.wait_line(rf"^{role} sum ", start=n, timeout=30) == f"{role} {want}"


def test_exec_d_child_shares_nothing_and_comes_back(build: Builder, procs: Procs,
                                                    images: Path) -> None:
    """A child that exec'd another program has nothing of its parent's: it is restored
    from its own pages alone, cloned from its parent all the same."""
    script = ("import os, sys, time\n"
              "pid = os.fork()\n"
              f"if pid == 0: os.execv({str(build('counter'))!r}, ['counter'])\n"
              "print('child', pid, flush=True)\n"
              "n = 0\n"
              "while True:\n"
              "    print('P', n, flush=True); n += 1; time.sleep(0.05)\n")
    target = procs.start([PYTHON, "-c", script])
    out = target.out
    child = int(out.wait_line(r"^child ").split()[1])
    wait_until(lambda: len(out.numbers()) >= 3, 10, "the counter")
    _dump(procs, [target.pid, child], images)
    mm = json.loads((images / f"mm-{child}.json").read_text())
    assert not mm["inherited"]
    numbers = len(out.numbers())
    restore_detached(procs, target.pid, out, images)
    procs.adopt(child, out)
    wait_until(lambda: len(out.numbers()) >= numbers + 3, 10, "the counter going on")
    _ticking(out, ["P"])
