"""Incremental dumps and the page server: how long a process is frozen, how many bytes move.

Run as root, from the repository:

    .venv/bin/python bench/bench_migration.py [--size-mib N] [--hot-mib H]   # 1024, 4

A small C program maps N MiB filled with a pattern and keeps rewriting H MiB of
it (its working set), printing a tick every 100 ms. The bench runs, through the
API (``ckpt.dumper.dump``/``pre_dump``, ``ckpt.restore``), with images in
/var/tmp:

* a plain dump (``-R``), then pre-dump -> pre-dump -> dump with
  ``--prev-images-dir``/``--track-mem``, and a restore from the last folder;
* the same over TCP to a ``ckpt page-server`` (the CLI, in the background, on
  127.0.0.1): a plain dump with the server splicing, one with it copying through
  a buffer (``CKPT_PAGE_SERVER_COPY=1``), then live migration (pre-dump, dump
  with ``--prev-images-dir``, restore on the receiving side).

Then the transport alone: N MiB sent from one buffer through the page-server
client to a server in a fork of the bench, the server splicing or copying
(median of 3 each, wall time and the server's CPU time).

After each restore the process must go on counting and find every byte of its
memory intact. It prints a table: the time the processes were frozen, the
whole step, the page data written or sent, everything written or sent, and,
for page-server steps, the server's own receive time. It asserts nothing about
speed. Everything it creates is removed.
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
static uint64_t pattern(uint64_t i, uint64_t g)
{
    return (i * 0x9E3779B97F4A7C15ull) ^ (g << 32) ^ 0xC0FFEEull;
}

int main(int argc, char **argv)
{
    size_t words = (size_t)atol(argv[1]) * (1u << 20) / 8;
    size_t hot = (size_t)atol(argv[2]) * (1u << 20) / 8;
    uint64_t *mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < words; i++) mem[i] = pattern(i, 0);
    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    fflush(stdout);
    uint64_t gen = 0;
    struct timespec pause = {0, 10 * 1000 * 1000};
    for (long n = 0;; n++) {
        if (full_check) {
            full_check = 0;
            for (size_t i = 0; i < words; i++)
                if (mem[i] != pattern(i, i < hot ? gen : 0)) {
                    printf("CORRUPT word %zu\n", i);
                    fflush(stdout);
                    return 3;
                }
            printf("FULL OK\n");
        }
        for (int k = 0; k < 10; k++) {  /* the working set, rewritten every 10 ms */
            gen++;
            for (size_t i = 0; i < hot; i++) mem[i] = pattern(i, gen);
            nanosleep(&pause, NULL);
        }
        printf("tick %ld\n", n);
        fflush(stdout);
    }
}
"""


def check_restored(pid: int, log: Path, timeout: float) -> None:
    """The restored process counts on, and its whole memory is intact."""
    size = log.stat().st_size
    wait_for(log, r"^tick \d+$", size, timeout)
    size = log.stat().st_size
    os.kill(pid, signal.SIGUSR1)
    wait_for(log, r"^FULL OK$", size, timeout)


class PageServer:
    """``ckpt page-server`` in the background; ``received`` is its own receive time."""

    def __init__(self, directory: Path, copy: bool = False):
        env = dict(os.environ, CKPT_PAGE_SERVER_COPY="1" if copy else "0")
        self.dir = directory
        self.proc = subprocess.Popen(
            ckpt_command() + ["page-server", "-D", str(directory), "--port", "0",
                              "--address", "127.0.0.1", "-v3", "-o", "server.log"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r":(\d+)$", line.strip())
        if m is None:
            raise RuntimeError(f"page server did not start: {line}{self.proc.stderr.read()}")
        self.port = int(m[1])

    def done(self) -> float:
        _out, err = self.proc.communicate(timeout=300)
        if self.proc.returncode != 0:
            raise RuntimeError(f"page server failed: {err}")
        text = (self.dir / "server.log").read_text()
        m = re.search(r"received \d+ bytes in ([\d.]+) s \((\w+)\)", text)
        return float(m[1]) if m else float("nan")


Row = tuple[str, float, float, float, float, float]  # step, frozen, total, pages, all, server


def bench(size_mib: int, hot_mib: int, root: Path) -> list[Row]:
    import ckpt
    from ckpt.dumper import dump, pre_dump

    exe = root / "workset"
    (root / "workset.c").write_text(PROGRAM)
    run(["gcc", "-O2", "-o", str(exe), str(root / "workset.c")])
    log = root / "out.log"
    rows: list[Row] = []
    nan = float("nan")
    live: set[int] = set()

    def start() -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(exe), str(size_mib), str(hot_mib)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        live.add(proc.pid)
        wait_for(log, r"^ready$", log.stat().st_size - 200 if log.stat().st_size > 200 else 0,
                 60 + size_mib / 100)
        time.sleep(0.5)
        return proc.pid

    def add(name: str, res: object, server: float = nan) -> None:
        rows.append((name, res.frozen_seconds, res.seconds,  # type: ignore[attr-defined]
                     res.pages_bytes / MIB, res.image_bytes / MIB, server))  # type: ignore

    def restore(name: str, directory: Path, pid: int) -> None:
        t0 = time.monotonic()
        ckpt.restore(str(directory), detach=True)
        dt = time.monotonic() - t0
        live.add(pid)
        check_restored(pid, log, 30 + size_mib / 50)
        rows.append((name, nan, dt, nan, nan, nan))
        kill_and_reap(pid)
        live.discard(pid)

    try:
        # Local images.
        pid = start()
        local = root / "local"
        add("plain dump -R", dump(pid, str(local / "plain"), leave_running=True))
        add("pre-dump 1 --track-mem", pre_dump(pid, str(local / "1"), track_mem=True))
        add("pre-dump 2 --prev-images-dir", pre_dump(pid, str(local / "2"), track_mem=True,
                                                     prev_images_dir="../1"))
        add("dump --prev-images-dir", dump(pid, str(local / "3"), prev_images_dir="../2"))
        kill_and_reap(pid)
        live.discard(pid)
        restore("restore (chain of 3)", local / "3", pid)

        # Over TCP to a page server on this machine.
        pid = start()
        remote, sent = root / "remote", root / "sent"
        for copy in (False, True):
            srv = PageServer(remote / ("plain-copy" if copy else "plain"), copy=copy)
            res = dump(pid, str(sent / ("plain-copy" if copy else "plain")), leave_running=True,
                       page_server=("127.0.0.1", srv.port))
            add(f"page server: plain dump -R ({'copy' if copy else 'splice'})", res, srv.done())
        srv = PageServer(remote / "1")
        res = pre_dump(pid, str(sent / "1"), track_mem=True, page_server=("127.0.0.1", srv.port))
        add("page server: pre-dump --track-mem", res, srv.done())
        srv = PageServer(remote / "2")
        res = dump(pid, str(sent / "2"), prev_images_dir="../1",
                   page_server=("127.0.0.1", srv.port))
        add("page server: dump --prev-images-dir", res, srv.done())
        kill_and_reap(pid)
        live.discard(pid)
        restore("restore on the receiving side", remote / "2", pid)
    finally:
        for p in live:
            kill_and_reap(p)
    return rows


def transport(size_mib: int, root: Path, rounds: int = 3) -> list[tuple[str, float, float]]:
    """(server mode, median seconds, median server CPU seconds) to send ``size_mib``."""
    from ckpt import page_server
    from ckpt.images import ctypes_view
    from ckpt.kernel import libc

    buf = libc.anon_buffer(4 * MIB)
    view = ctypes_view(buf, 4 * MIB)
    local = root / "transport-local"
    local.mkdir()
    (local / "inventory.json").write_text("{}\n")
    times: dict[str, list[tuple[float, float]]] = {"splice": [], "copy": []}
    for mode in ["splice", "copy"] * rounds:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the server
            code = 1
            try:
                os.close(r)
                os.environ["CKPT_PAGE_SERVER_COPY"] = "1" if mode == "copy" else "0"
                page_server.serve(str(root / f"transport-{mode}"), 0, "127.0.0.1",
                                  ready=lambda _a, port, w=w: os.write(w, str(port).encode()))
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        port = int(os.read(r, 32))
        os.close(r)
        t0 = time.monotonic()
        client = page_server.Client("127.0.0.1", port, str(local))
        f = client.raw("pages-1.img")
        for _ in range(size_mib // 4):
            f.write(view)
        f.close()
        client.send_file("inventory.json", str(local / "inventory.json"))
        client.finish()
        dt = time.monotonic() - t0
        _pid, status, usage = os.wait4(pid, 0)
        if status != 0:
            raise RuntimeError(f"page server ({mode}) failed")
        times[mode].append((dt, usage.ru_utime + usage.ru_stime))
        shutil.rmtree(root / f"transport-{mode}")
    out = []
    for mode, got in times.items():
        got.sort()
        cpu = sorted(c for _, c in got)
        out.append((mode, got[len(got) // 2][0], cpu[len(cpu) // 2]))
    return out


def print_table(rows: list[Row]) -> None:
    def f(x: float, fmt: str) -> str:
        return "-" if x != x else format(x, fmt)

    print(f"{'step':40} {'frozen s':>9} {'total s':>8} {'pages MiB':>10} {'all MiB':>8} "
          f"{'server s':>9}")
    for name, frozen, total, pages, everything, server in rows:
        print(f"{name:40} {f(frozen, '9.3f')} {f(total, '8.3f')} {f(pages, '10.1f')} "
              f"{f(everything, '8.1f')} {f(server, '9.3f')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, metavar="N",
                    help="memory of the target process, MiB (default 1024)")
    ap.add_argument("--hot-mib", type=int, default=4, metavar="H",
                    help="the part it keeps rewriting, MiB (default 4)")
    args = ap.parse_args()
    base = "/var/tmp"
    if not ready("bench_migration", base, 6 * args.size_mib * MIB + 64 * MIB):
        return 2
    from ckpt.pages import tracking
    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=base))
    try:
        print(f"size {args.size_mib} MiB, working set {args.hot_mib} MiB; images in {root}; "
              f"kernel {os.uname().release}; memory tracking: {tracking.tracking_method()}")
        rows = bench(args.size_mib, args.hot_mib, root)
        moved = transport(args.size_mib, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(rows)
    print("frozen: first freeze to release (or kill); pages: page data written or sent; "
          "all: every image file; server s: the page server's receive time.")
    print()
    print(f"{'transport only, ' + str(args.size_mib) + ' MiB':40} {'seconds':>9} {'MiB/s':>8} "
          f"{'server CPU s':>13}")
    for mode, secs, cpu in moved:
        print(f"{'page server ' + mode:40} {secs:9.3f} {args.size_mib / secs:8.0f} {cpu:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
