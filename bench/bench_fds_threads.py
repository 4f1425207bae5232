"""Dump and restore of processes with many fds or many threads: how the time grows.

Run as root, from the repository:

    .venv/bin/python bench/bench_fds_threads.py [--quick]

Targets: tests/progs/manyfds.c holding N fds (``distinct``: N opens of one file, each
its own open file description; ``shared``: N dups of one; ``sparse``: N fds with holes
between their numbers), and a C program with N threads. For each, the bench times
``ckpt dump`` and ``ckpt restore -d`` (the CLI, interpreter start-up included), and
the restore as ckpt itself reports it (``-v4`` log: from its first line to "restored
in"), then checks the restored process (every fd at its number on the right
description; every thread back). It prints a table; it asserts nothing about speed.
``--quick`` runs the small cases only. Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import MIB, ckpt_command, kill_and_reap, ready, run, wait_for

REPO = Path(__file__).resolve().parent.parent
THREADS = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *idle(void *arg) { (void)arg; for (;;) pause(); return NULL; }

int main(int argc, char **argv)
{
    int n = atoi(argv[1]);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, idle, NULL)) { perror("pthread_create"); return 1; }
    }
    dprintf(1, "ready %d\n", n);
    struct timespec tick = {0, 50 * 1000 * 1000};
    for (long k = 0;; k++) { dprintf(1, "%ld\n", k); nanosleep(&tick, NULL); }
}
"""


@dataclass
class Case:
    name: str
    argv: list[str]
    count: int
    kind: str  # "fds" or "threads"


def _compile(src: Path, out: Path, *libs: str) -> str:
    run(["gcc", "-O2", "-o", str(out), str(src), *libs])
    return str(out)


def _restore_seconds(log: Path) -> float:
    """What ckpt's own log says the restore took (its start-up and imports left out)."""
    m = re.search(r"restored in ([0-9.]+) s", log.read_text())
    return float(m[1]) if m else float("nan")


def _check(case: Case, pid: int, out: Path, after: int) -> str:
    if case.kind == "threads":
        got = len(os.listdir(f"/proc/{pid}/task")) - 1
        return "ok" if got == case.count else f"{got} threads"
    os.kill(pid, signal.SIGUSR1)
    m = wait_for(out, r"^fds (.*)$", after, 60)
    return "ok" if m[1] == f"ok {case.count}" else m[1]


def bench(case: Case, work: Path) -> tuple[float, float, float, str]:
    images = work / f"images-{case.name}"
    out = work / f"{case.name}.out"
    with open(out, "wb") as f:
        target = subprocess.Popen(case.argv, stdout=f, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for(out, r"^ready ", 0, 120)
        t0 = time.monotonic()
        run([*ckpt_command(), "dump", "-t", str(target.pid), "-D", str(images)])
        dump = time.monotonic() - t0
        target.wait()
        size = out.stat().st_size
        t0 = time.monotonic()
        run([*ckpt_command(), "restore", "-d", "-D", str(images), "-o", "restore.log", "-v4"])
        restore = time.monotonic() - t0
        verdict = _check(case, target.pid, out, size)
        return dump, restore, _restore_seconds(images / "restore.log"), verdict
    finally:
        kill_and_reap(target.pid)
        shutil.rmtree(images, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small cases only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-fds-"))
    try:
        if not ready("bench_fds_threads", str(work), 64 * MIB):
            return 1
        src = work / "threads.c"
        src.write_text(THREADS)
        manyfds = _compile(REPO / "tests" / "progs" / "manyfds.c", work / "manyfds")
        threads = _compile(src, work / "threads", "-lpthread")
        sizes = [1_000] if args.quick else [1_000, 4_000, 10_000]
        cases = [Case(f"{n}-{mode}-fds", [manyfds, str(n), mode], n, "fds")
                 for n in sizes for mode in ("distinct", "shared")]
        cases.append(Case("1000-sparse-fds", [manyfds, "1000", "sparse"], 1000, "fds"))
        cases += [Case(f"{n}-threads", [threads, str(n)], n, "threads")
                  for n in ([100] if args.quick else [100, 1_000])]
        print(f"{'case':<22}{'dump s':>9}{'restore s':>11}{'(in ckpt)':>11}  restored")
        for case in cases:
            dump, restore, inside, verdict = bench(case, work)
            print(f"{case.name:<22}{dump:>9.2f}{restore:>11.2f}{inside:>11.2f}  {verdict}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
