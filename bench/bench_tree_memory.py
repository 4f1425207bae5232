"""The memory of a pre-forked tree before its dump and after its restore.

Run as root, from the repository:

    .venv/bin/python bench/bench_tree_memory.py

Two trees: tests/progs/cowtree.c (a C parent fills 64 MiB and forks 3 workers that
write 16 pages each) and tests/progs/prefork.py (a CPython parent builds a dict of
300,000 entries, gc.freeze()s it and forks 3 workers). For each, the bench prints the
tree's memory (the sum of each process's Pss, /proc/PID/smaps_rollup) before the dump
and after ``ckpt restore -d``, the size of the images, and the times of both commands.
Shared copy-on-write memory that stays shared keeps the tree's Pss as it was; restored
as copies, it would be multiplied by the number of processes. It asserts nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import MIB, ckpt_command, kill_and_reap, ready, run, wait_for

REPO = Path(__file__).resolve().parent.parent


def pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return total * 1024


def size_of(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def bench(name: str, argv: list[str], work: Path) -> str:
    images = work / f"images-{name}"
    out = work / f"{name}.out"
    with open(out, "wb") as f:
        target = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    pids = [target.pid]
    try:
        pids = [int(x) for x in wait_for(out, r"^pids (.*)$", 0, 120)[1].split()]
        for role in ("W0", "W1", "W2"):
            wait_for(out, rf"^{role} 3$", 0, 60)
        before = pss(pids)
        t0 = time.monotonic()
        run([*ckpt_command(), "dump", "-t", str(pids[0]), "-D", str(images)])
        dump = time.monotonic() - t0
        target.wait()
        for pid in pids[1:]:
            kill_and_reap(pid)
        size = out.stat().st_size
        t0 = time.monotonic()
        run([*ckpt_command(), "restore", "-d", "-D", str(images)])
        restore = time.monotonic() - t0
        for role in ("P", "W0", "W1", "W2"):
            count = len(re.findall(rf"^{role} \d+$", out.read_text()[:size], re.M))
            wait_for(out, rf"^{role} {count + 3}$", 0, 60)
        after = pss(pids)
        return (f"{name:<10}{before / MIB:>10.1f}{after / MIB:>10.1f}"
                f"{size_of(images) / MIB:>10.1f}{dump:>9.2f}{restore:>11.2f}")
    finally:
        for pid in pids:
            kill_and_reap(pid)
        shutil.rmtree(images, ignore_errors=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-tree-"))
    try:
        if not ready("bench_tree_memory", str(work), 512 * MIB):
            return 1
        cowtree = work / "cowtree"
        run(["gcc", "-O2", "-o", str(cowtree), str(REPO / "tests" / "progs" / "cowtree.c")])
        print(f"{'tree':<10}{'Pss MiB':>10}{'after':>10}{'images':>10}{'dump s':>9}"
              f"{'restore s':>11}")
        print(bench("C 64 MiB", [str(cowtree)], work), flush=True)
        print(bench("CPython", [sys.executable, str(REPO / "tests" / "progs" / "prefork.py")],
                    work), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
