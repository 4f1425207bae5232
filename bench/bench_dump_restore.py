"""Dump and restore of a process holding N MiB of memory, next to ``dd`` in the same folder.

Run as root, from the repository:

    .venv/bin/python bench/bench_dump_restore.py [--size-mib N]     # default 1024

A small C program fills N MiB with a pattern and prints a counter every 100 ms.
The bench times ``ckpt dump`` and ``ckpt restore -d`` (the CLI, as a user runs
them), then ``ckpt.dump`` and ``ckpt.restore`` in-process (no interpreter
start-up; this restore reads pages that were evicted from the page cache),
checks after each restore that the counter goes on and that the whole pattern
is intact, and compares with ``dd`` writing (``conv=fsync``, as a dump fsyncs
its images) and reading the same amount in the same folder. It prints a table;
it asserts nothing about speed. Everything it creates is removed.
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
from collections.abc import Callable
from pathlib import Path

from benchlib import MIB, ckpt_command, kill_and_reap, ready, run, wait_for

PROGRAM = r"""
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static volatile sig_atomic_t full_check;
static void on_usr1(int sig) { (void)sig; full_check = 1; }
static uint64_t pattern(uint64_t i) { return i * 0x9E3779B97F4A7C15ull ^ 0xC0FFEEull; }

int main(int argc, char **argv)
{
    size_t words = (size_t)atol(argv[1]) * (1u << 20) / 8;
    uint64_t *mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < words; i++) mem[i] = pattern(i);
    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    fflush(stdout);
    struct timespec tick = {0, 100 * 1000 * 1000};
    for (long n = 0;; n++) {
        size_t step = full_check ? 1 : 512;  /* one word per page, or every word */
        for (size_t i = 0; i < words; i += step)
            if (mem[i] != pattern(i)) {
                printf("CORRUPT word %zu\n", i);
                fflush(stdout);
                return 3;
            }
        if (full_check) { full_check = 0; printf("FULL OK\n"); }
        printf("tick %ld\n", n);
        fflush(stdout);
        nanosleep(&tick, NULL);
    }
}
"""


# ---------------------------------------------------------------- helpers

def mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, fs type, device) of the file system holding ``path``."""
    path = os.path.realpath(path)
    best = ("/", "?", "?")
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return best


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def last_tick(log: Path) -> int:
    ticks = re.findall(r"^tick (\d+)$", log.read_text(), re.M)
    return int(ticks[-1]) if ticks else -1


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def check_restored(pid: int, log: Path, before: int, timeout: float) -> None:
    """The restored process runs on: its counter goes past ``before`` and its memory is intact."""
    if not alive(pid):
        raise RuntimeError(f"restored process {pid} is not running")
    size = log.stat().st_size
    wait_for(log, r"^tick \d+$", size, timeout)
    if last_tick(log) <= before:
        raise RuntimeError(f"counter did not go on after the restore (at {last_tick(log)})")
    size = log.stat().st_size
    os.kill(pid, signal.SIGUSR1)
    wait_for(log, r"^FULL OK$", size, timeout)


def drop_cache(path: Path) -> None:
    """Evict ``path`` from the page cache (it is fsynced, so its pages are clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the bench

def bench(size_mib: int, root: Path) -> list[tuple[str, float, float]]:
    """Run every step; return (operation, seconds, MiB moved)."""
    import ckpt

    exe = root / "bigmem"
    src = root / "bigmem.c"
    src.write_text(PROGRAM)
    run(["gcc", "-O2", "-o", str(exe), str(src)])
    log = root / "out.log"
    cli_dir, api_dir = root / "images-cli", root / "images-api"
    rows: list[tuple[str, float, float]] = []
    live: set[int] = set()
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(exe), str(size_mib)], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, start_new_session=True)
        pid = proc.pid
        live.add(pid)
        wait_for(log, r"^tick 2$", 0, 60 + size_mib / 100)

        # The CLI, as a user runs it.
        before = last_tick(log)
        t = timed(lambda: run(ckpt_command() + ["dump", "-t", str(pid), "-D", str(cli_dir)]))
        proc.wait()  # reap it, so that its PID is free again
        pages = cli_dir / f"pages-{pid}.img"
        mib = pages.stat().st_size / MIB
        rows.append(("ckpt dump (CLI)", t, mib))
        t = timed(lambda: run(ckpt_command() + ["restore", "-D", str(cli_dir), "-d"]))
        rows.append(("ckpt restore -d (CLI, pages cached)", t, mib))
        check_restored(pid, log, before, 30 + size_mib / 50)

        # The API, in-process; this restore reads pages evicted from the cache.
        before = last_tick(log)
        t = timed(lambda: ckpt.dump(pid, str(api_dir)))
        kill_and_reap(pid)  # a zombie now: it was our child (we are its subreaper)
        rows.append(("ckpt.dump (API)", t, (api_dir / f"pages-{pid}.img").stat().st_size / MIB))
        drop_cache(api_dir / f"pages-{pid}.img")
        t = timed(lambda: ckpt.restore(str(api_dir), detach=True))
        rows.append(("ckpt.restore (API, pages not cached)", t, rows[-1][2]))
        check_restored(pid, log, before, 30 + size_mib / 50)
        kill_and_reap(pid)
        live.discard(pid)
        if alive(pid):
            raise RuntimeError(f"process {pid} survived SIGKILL")
        shutil.rmtree(api_dir)

        # dd in the same folder.
        dd = cli_dir / "ddfile"
        t = timed(lambda: run(["dd", "if=/dev/zero", f"of={dd}", "bs=1M", f"count={size_mib}",
                               "conv=fsync", "status=none"]))
        rows.append(("dd write (conv=fsync)", t, size_mib))
        dd.unlink()
        read = ["dd", f"if={pages}", "of=/dev/null", "bs=1M", "status=none"]
        rows.append(("dd read pages file (cached)", timed(lambda: run(read)), mib))
        drop_cache(pages)
        rows.append(("dd read pages file (not cached)", timed(lambda: run(read)), mib))
    finally:
        for p in live:
            kill_and_reap(p)
    return rows


def print_table(rows: list[tuple[str, float, float]]) -> None:
    dd_write = next(m / s for name, s, m in rows if name.startswith("dd write"))
    print(f"{'operation':40} {'seconds':>8} {'MiB/s':>8} {'x dd write':>11}")
    for name, secs, mib in rows:
        rate = mib / secs if secs > 0 else float("inf")
        print(f"{name:40} {secs:8.3f} {rate:8.0f} {rate / dd_write:11.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, metavar="N",
                    help="memory of the target process, MiB (default 1024)")
    args = ap.parse_args()
    base = "/var/tmp"
    if not ready("bench_dump_restore", base, 2 * args.size_mib * MIB + 64 * MIB):
        return 2
    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=base))
    try:
        mnt, fstype, dev = mount_of(str(root))
        tmp_fs = mount_of("/tmp")[1]
        print(f"size {args.size_mib} MiB; images in {root} on {fstype} ({dev} at {mnt}); "
              f"/tmp is {tmp_fs}; kernel {os.uname().release}")
        rows = bench(args.size_mib, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(rows)
    print("MiB: page data moved (pages-PID.img) or dd's count; "
          "x dd write: throughput relative to dd write.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
