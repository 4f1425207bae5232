"""How fast ckpt is, in one table: the fixed cost of a command, the cost per megabyte,
1 GiB next to ``dd``, ckpt's own memory, and ``--compress`` (issue 12).

Run as root, from the repository:

    .venv/bin/python bench/bench_dump_restore.py [--runs N] [--size-mib N] [--quick | --gib]

Every time is a whole command as a user runs it (``ckpt dump``, ``ckpt restore -d``,
``ckpt check``: interpreter start included), of the venv's ``ckpt``:

* **fixed cost**: a trivial process (``sleep 1000``), images on tmpfs, median (and
  minimum) of ``--runs`` (default 7); ``python -c pass`` is the floor every command
  pays; each ckpt's ``check`` (ckpt's and base's) keeps what it found in a file of its
  own, as one ckpt does from one boot to the next;
* **per megabyte**: a C program with 24 threads holding 105 MiB (half of it
  compressible text, half random), images on tmpfs, median of 3;
* **CPU**: of the command (user + system), and for a restore with the restored
  process's own (it read its pages itself before ckpt wrote them);
* **1 GiB**: a C program holding ``--size-mib`` (default 1024) of random bytes, with
  images on tmpfs (/dev/shm) and on disk (/var/tmp; the page cache dropped before each
  read), each next to ``dd`` moving the same bytes in the same round:
  ``dd if=/dev/zero of=DIR/file bs=1M conv=fsync`` for a dump (the dump fsyncs its
  images too), ``dd if=pages.img of=/dev/null bs=SIZE`` for a restore (one read into
  fresh memory, as the restored process's memory is; of each file of striped page data,
  one after the other). The ratio is the median over
  the rounds of ckpt's time over dd's in the same round;
* **memory**: ckpt's peak RSS (``wait4``'s ``ru_maxrss``) during the 1 GiB dump and
  restore on tmpfs;
* **--compress**: dump and restore of the 105 MiB and 1 GiB processes, and the size of
  the images against the plain dump's.
* **--lazy-pages**: time to running of ``restore -d`` of the 1 GiB process, images on
  tmpfs, against ``restore -d --lazy-pages`` with ``ckpt lazy-pages`` started before (its
  start-up, which checks the images, and the time until every page is in place, from
  the start of the restore, in the note).

After each restore the process must count on and find every byte of its memory as
it was (it checks on SIGUSR1). With ``CKPT_BENCH_CRIU`` naming a criu that passes
``criu check``, criu runs the same commands in the same rounds, in a column of its
own; with ``CKPT_BENCH_BASE`` naming another ckpt command (another checkout's
``.venv/bin/ckpt``: the version before a change), that one too, in a column ``base``.
The machine is shared and noisy: rounds interleave the tools, and ratios come
from the same round. It asserts nothing about speed. Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchlib import MIB, ckpt_command, kill_and_reap, ready, wait_for

PROGRAM = r"""
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* argv: MiB of memory, threads, percent of it that is compressible text */
static volatile sig_atomic_t full_check;
static void on_usr1(int sig) { (void)sig; full_check = 1; }
static size_t text_words;
static const char *phrase[] = {"checkpoint ", "restore ", "the process ", "memory ",
                               "pages ", "of a tree ", "kernel ", "Linux "};
static uint64_t word(size_t i)
{
    if (i < text_words) {  /* text: a few phrases, numbered now and then */
        uint64_t w;
        const char *p = phrase[(i / 3) % 8];
        size_t len = strlen(p), at = (i * 8) % len;
        for (int k = 0; k < 8; k++) ((char *)&w)[k] = p[(at + k) % len];
        return (i % 64) ? w : i;
    }
    uint64_t x = i * 0x9E3779B97F4A7C15ull + 0xC0FFEEull;  /* splitmix64 */
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
static void *idle(void *arg) { (void)arg; for (;;) pause(); return NULL; }

int main(int argc, char **argv)
{
    size_t words = (size_t)atol(argv[1]) * (1u << 20) / 8;
    int threads = atoi(argv[2]);
    text_words = words / 100 * (size_t)atoi(argv[3]);
    uint64_t *mem = mmap(NULL, words * 8, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < words; i++) mem[i] = word(i);
    for (int t = 0; t < threads; t++) {
        pthread_t th;
        if (pthread_create(&th, NULL, idle, NULL)) { perror("pthread_create"); return 1; }
    }
    signal(SIGUSR1, on_usr1);
    struct timespec tick = {0, 100 * 1000 * 1000};
    for (long n = 0;; n++) {
        size_t step = full_check ? 1 : 512;  /* one word per page, or every word */
        for (size_t i = 0; i < words; i += step)
            if (mem[i] != word(i)) {
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


@dataclass
class Run:
    """One command: wall seconds, CPU seconds (user + system) and peak RSS in bytes."""

    wall: float
    cpu: float
    maxrss: int


def run(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` to its end; fail on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{err.decode(errors='replace').strip()}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


@dataclass
class Tool:
    """A checkpoint tool: ckpt, or criu."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None  # of its commands (None: the bench's own)

    def dump(self, pid: int, images: Path, *extra: str) -> Run:
        return run(self.argv + ["dump", "-t", str(pid), "-D", str(images), *extra], self.env)

    def restore(self, images: Path, *extra: str) -> Run:
        return run(self.argv + ["restore", "-d", "-D", str(images), *extra], self.env)

    def check(self) -> Run:
        return run(self.argv + ["check"], self.env)


def criu_tool() -> Tool | None:
    """criu from CKPT_BENCH_CRIU, when it passes ``criu check``."""
    path = os.environ.get("CKPT_BENCH_CRIU")
    if not path:
        return None
    tool = Tool("criu", [path])
    try:
        tool.check()
    except (RuntimeError, OSError) as e:
        print(f"CKPT_BENCH_CRIU={path}: criu check fails, no criu column ({e})",
              file=sys.stderr)
        return None
    return tool


class Target:
    """The bench's C program holding memory, started in a session of its own."""

    def __init__(self, exe: Path, log: Path, mib: int, threads: int, text_pct: int):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(exe), str(mib), str(threads), str(text_pct)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.timeout = 60 + mib / 20
        wait_for(log, r"^tick 1$", 0, self.timeout)

    def cpu(self) -> float:
        """CPU seconds the (restored) process has used: what a restore makes it do
        itself (its pages read by the process) counts with ckpt's own."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def killed(self) -> None:
        """The dump killed it: reap it, so that its PID is free again."""
        self.proc.wait()

    def check_restored(self) -> None:
        """It counts on after the restore and its whole memory is intact."""
        size = self.log.stat().st_size
        wait_for(self.log, r"^tick \d+$", size, self.timeout)
        size = self.log.stat().st_size
        os.kill(self.pid, signal.SIGUSR1)
        wait_for(self.log, r"^FULL OK$", size, self.timeout)

    def stop(self) -> None:
        kill_and_reap(self.pid)


def drop_cache(path: Path) -> None:
    """Evict ``path`` from the page cache (fsynced first, so its pages are clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def pages_bytes(images: Path, pid: int) -> int:
    """The process's page data: its pages file, and the other files of its stripes
    (pages-PID-N.img, pages/stripes.py)."""
    return sum(p.stat().st_size for pattern in (f"pages-{pid}.img*", f"pages-{pid}-*.img")
               for p in images.glob(pattern))


def images_bytes(images: Path) -> int:
    return sum(p.stat().st_size for p in images.iterdir() if p.is_file())


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


# ---------------------------------------------------------------- the table

@dataclass
class Row:
    case: str
    values: dict[str, str]  # tool name -> cell
    note: str = ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def median_min(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} (min {fmt(min(values))})"


def print_table(rows: list[Row], tools: list[str], header: str) -> None:
    print(header)
    width = max(len(r.case) for r in rows) + 2
    cols = {t: max([len(t)] + [len(r.values.get(t, "")) for r in rows]) + 2 for t in tools}
    print(f"{'case':{width}}" + "".join(f"{t:>{cols[t]}}" for t in tools) + "  note")
    for r in rows:
        cells = "".join(f"{r.values.get(t, '-'):>{cols[t]}}" for t in tools)
        print(f"{r.case:{width}}{cells}  {r.note}".rstrip())


# ---------------------------------------------------------------- the cases

def fixed_cost(tools: list[Tool], root: Path, runs: int) -> list[Row]:
    """dump, restore -d and check of ``sleep 1000``, interleaved, images on tmpfs."""
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    floor = [run([sys.executable, "-c", "pass"]) for _ in range(runs)]
    for _ in range(runs):
        for tool in tools:
            images = fresh(root / f"trivial-{tool.name}")
            sleeper = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
            try:
                time.sleep(0.05)
                d = tool.dump(sleeper.pid, images)
                sleeper.wait()
                r = tool.restore(images)
                if not os.path.exists(f"/proc/{sleeper.pid}"):
                    raise RuntimeError(f"{tool.name} restore: sleep {sleeper.pid} not back")
            finally:
                kill_and_reap(sleeper.pid)
            for what, res in (("dump", d), ("restore", r), ("check", tool.check())):
                times.setdefault((tool.name, what), []).append(res.wall)
                cpu.setdefault((tool.name, what), []).append(res.cpu)
    rows = [Row("python -c pass (the floor)", {"ckpt": median_min([f.wall for f in floor], ms)},
                f"CPU {ms(statistics.median(f.cpu for f in floor))}")]
    for what, label in (("dump", "dump, sleep 1000"), ("restore", "restore -d, sleep 1000"),
                        ("check", "check")):
        rows.append(Row(f"{label} (median of {runs})",
                        {t.name: median_min(times[(t.name, what)], ms) for t in tools},
                        "CPU " + ", ".join(f"{t.name} {ms(statistics.median(cpu[(t.name, what)]))}"
                                           for t in tools)))
    return rows


def per_megabyte(tools: list[Tool], exe: Path, root: Path, runs: int) -> list[Row]:
    """A 24-thread process holding 105 MiB: dump and restore, images on tmpfs."""
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    size = 0
    for _ in range(runs):
        for tool in tools:
            images = fresh(root / f"mid-{tool.name}")
            target = Target(exe, root / "mid.log", 105, 24, 50)
            try:
                d = tool.dump(target.pid, images)
                target.killed()
                size = pages_bytes(images, target.pid) or images_bytes(images)
                r = tool.restore(images)
                restored_cpu = target.cpu()
                target.check_restored()
                for what, res, extra in (("dump", d, 0.0), ("restore", r, restored_cpu)):
                    times.setdefault((tool.name, what), []).append(res.wall)
                    cpu.setdefault((tool.name, what), []).append(res.cpu + extra)
            finally:
                target.stop()
    def cpu_note(what: str) -> str:
        return "CPU " + ", ".join(f"{t.name} {secs(statistics.median(cpu[(t.name, what)]))}"
                                  for t in tools)

    note = f"{size / MIB:.0f} MiB of pages, 25 threads; "
    return [Row(f"dump, 105 MiB (median of {runs})",
                {t.name: secs(statistics.median(times[(t.name, "dump")])) for t in tools},
                note + cpu_note("dump")),
            Row(f"restore -d, 105 MiB (median of {runs})",
                {t.name: secs(statistics.median(times[(t.name, "restore")])) for t in tools},
                cpu_note("restore"))]


def gigabyte(tools: list[Tool], exe: Path, where: str, base: Path, size_mib: int,
             rounds: int, rss: dict[str, Run]) -> list[Row]:
    """Dump and restore of ``size_mib`` of random bytes with images under ``base``, each
    next to dd in the same round."""
    ratio: dict[tuple[str, str], list[float]] = {}
    took: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    dd: dict[str, list[float]] = {"write": [], "read": []}
    dd_cpu: dict[str, list[float]] = {"write": [], "read": []}
    on_disk = where == "disk"
    for _ in range(rounds):
        for tool in tools:
            images = fresh(base / f"big-{tool.name}")
            target = Target(exe, base / "big.log", size_mib, 0, 0)
            try:
                images.mkdir()
                ddfile = images / "dd.out"
                w_run = run(["dd", "if=/dev/zero", f"of={ddfile}", "bs=1M",
                             f"count={size_mib}", "conv=fsync", "status=none"])
                w = w_run.wall
                ddfile.unlink()
                d = tool.dump(target.pid, images)
                target.killed()
                # every file of the page data: the pages file, the other files of its
                # stripes (pages-PID-N.img); criu names its pages files otherwise
                files = [*images.glob(f"pages-{target.pid}.img"),
                         *images.glob(f"pages-{target.pid}-*.img")] or \
                    [max(images.iterdir(), key=lambda p: p.stat().st_size)]
                r_run = Run(0.0, 0.0, 0)
                for pages in files:  # one read of each into fresh memory, one after the other
                    if on_disk:
                        drop_cache(pages)
                    one = run(["dd", f"if={pages}", "of=/dev/null",
                               f"bs={pages.stat().st_size}", "count=1", "iflag=fullblock",
                               "status=none"])
                    r_run = Run(r_run.wall + one.wall, r_run.cpu + one.cpu, 0)
                    if on_disk:
                        drop_cache(pages)
                r_dd = r_run.wall
                r = tool.restore(images)
                restored_cpu = target.cpu()
                target.check_restored()
            finally:
                target.stop()
            cpu.setdefault((tool.name, "dump"), []).append(d.cpu)
            cpu.setdefault((tool.name, "restore"), []).append(r.cpu + restored_cpu)
            dd["write"].append(w)
            dd["read"].append(r_dd)
            dd_cpu["write"].append(w_run.cpu)
            dd_cpu["read"].append(r_run.cpu)
            for what, t, base_t in (("dump", d.wall, w), ("restore", r.wall, r_dd)):
                took.setdefault((tool.name, what), []).append(t)
                ratio.setdefault((tool.name, what), []).append(t / base_t)
            if not on_disk:
                rss[f"{tool.name} dump"] = d
                rss[f"{tool.name} restore"] = r
            shutil.rmtree(images, ignore_errors=True)
    gib = f"{size_mib / 1024:g} GiB"
    rows = []
    for what in ("dump", "restore"):
        cells = {t.name: f"{secs(statistics.median(took[(t.name, what)]))} = "
                         f"{statistics.median(ratio[(t.name, what)]):.2f}x dd"
                 for t in tools}
        op = "write" if what == "dump" else "read"
        base_t = statistics.median(dd[op])
        rows.append(Row(f"{what} {gib}, {where} ({rounds} rounds)", cells,
                        f"dd {op}: {secs(base_t)}; CPU "
                        + ", ".join(f"{t.name} {secs(statistics.median(cpu[(t.name, what)]))}"
                                    for t in tools)
                        + f", dd {secs(statistics.median(dd_cpu[op]))}"))
    return rows


def compress(exe: Path, root: Path, size_mib: int) -> list[Row]:
    """``--compress`` against a plain dump, on the 105 MiB and the big processes."""
    ckpt = Tool("ckpt", ckpt_command())
    rows = []
    for mib, threads, text, label in ((105, 24, 50, "105 MiB, half text"),
                                      (size_mib, 0, 0, f"{size_mib / 1024:g} GiB random")):
        sizes, dumps, restores = {}, {}, {}
        for mode in ("plain", "compress"):
            images = fresh(root / f"z-{mode}")
            target = Target(exe, root / "z.log", mib, threads, text)
            try:
                extra = ["--compress"] if mode == "compress" else []
                dumps[mode] = ckpt.dump(target.pid, images, *extra).wall
                target.killed()
                sizes[mode] = images_bytes(images)
                restores[mode] = ckpt.restore(images).wall
                target.check_restored()
            finally:
                target.stop()
                shutil.rmtree(images, ignore_errors=True)
        rows.append(Row(f"dump --compress, {label}",
                        {"ckpt": f"{secs(dumps['compress'])} vs {secs(dumps['plain'])}"},
                        f"images {sizes['compress'] / sizes['plain']:.0%} of plain "
                        f"({sizes['compress'] / MIB:.0f} MiB)"))
        rows.append(Row(f"restore -d --compress'd, {label}",
                        {"ckpt": f"{secs(restores['compress'])} vs {secs(restores['plain'])}"}))
    return rows


def lazy(exe: Path, root: Path, size_mib: int, rounds: int) -> list[Row]:
    """``restore -d`` against ``restore -d --lazy-pages`` of the big process: the time
    until the process runs, and until every page is in place."""
    ckpt = Tool("ckpt", ckpt_command())
    took: dict[str, list[float]] = {"plain": [], "lazy": []}
    daemon_start: list[float] = []
    complete: list[float] = []
    for _ in range(rounds):
        for mode in ("plain", "lazy"):
            images = fresh(root / f"lazy-{mode}")
            target = Target(exe, root / "lazy.log", size_mib, 0, 0)
            daemon = None
            try:
                ckpt.dump(target.pid, images)
                target.killed()
                extra: list[str] = []
                if mode == "lazy":
                    t0 = time.perf_counter()
                    daemon = subprocess.Popen(ckpt.argv + ["lazy-pages", "-D", str(images)],
                                              stdin=subprocess.DEVNULL,
                                              stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True)
                    assert daemon.stdout is not None
                    if not daemon.stdout.readline().startswith("ckpt lazy-pages: listening"):
                        raise RuntimeError("ckpt lazy-pages did not start")
                    daemon_start.append(time.perf_counter() - t0)
                    extra = ["--lazy-pages"]
                t0 = time.perf_counter()
                took[mode].append(ckpt.restore(images, *extra).wall)
                if daemon is not None:
                    if daemon.wait(target.timeout) != 0:
                        raise RuntimeError("ckpt lazy-pages failed")
                    complete.append(time.perf_counter() - t0)
                target.check_restored()
            finally:
                if daemon is not None and daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()
                target.stop()
                shutil.rmtree(images, ignore_errors=True)
    gib = f"{size_mib / 1024:g} GiB"
    return [Row(f"time to running, restore -d {gib}, tmpfs ({rounds} rounds)",
                {"ckpt": f"{secs(statistics.median(took['lazy']))} --lazy-pages vs "
                         f"{secs(statistics.median(took['plain']))}"},
                f"lazy-pages daemon start-up (checks the pages) "
                f"{secs(statistics.median(daemon_start))}; every page in place "
                f"{secs(statistics.median(complete))} after the restore began")]


def supports_compress() -> bool:
    res = subprocess.run(ckpt_command() + ["dump", "--help"], capture_output=True, text=True)
    return "--compress" in res.stdout


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, "
            f"load {load:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs of the trivial case")
    ap.add_argument("--size-mib", type=int, default=1024, metavar="N",
                    help="memory of the big process, MiB (default 1024)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the big case")
    ap.add_argument("--quick", action="store_true",
                    help="the fixed cost and per-megabyte rows only")
    ap.add_argument("--lazy", action="store_true", help="the --lazy-pages row only")
    ap.add_argument("--gib", action="store_true",
                    help="the 1 GiB rows only (dump and restore on tmpfs and disk, peak RSS)")
    args = ap.parse_args()
    disk, tmpfs = Path("/var/tmp"), Path("/dev/shm")
    need = 2 * args.size_mib * MIB + 256 * MIB
    if not ready("bench_dump_restore", str(disk), need) or \
            not ready("bench_dump_restore", str(tmpfs), need):
        return 2
    # Byte-compiled once, as an installed ckpt is: PYTHONDONTWRITEBYTECODE would
    # otherwise make every command compile ckpt from source.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parent.parent / "src")],
                   check=True, stdout=subprocess.DEVNULL)
    # And the dataclasses' methods and the modules' code a command takes (dccache.py,
    # modcache.py), as bootstrap writes them: sources changed since are imported slower.
    subprocess.run([sys.executable, "-m", "ckpt.dccache"], check=True, stdout=subprocess.DEVNULL)
    tools = [Tool("ckpt", ckpt_command())]
    if os.environ.get("CKPT_BENCH_BASE"):
        tools.append(Tool("base", [os.environ["CKPT_BENCH_BASE"]]))
    criu = criu_tool()
    if criu is not None:
        tools.append(criu)
    work_disk = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=disk))
    work_tmpfs = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=tmpfs))
    for tool in tools:  # ckpt and base: each check keeps the result it prints in a file
        if tool.name != "criu":  # of its own (one file, keyed by the code, would flip)
            tool.env = {**os.environ, "CKPT_CHECK_CACHE": str(work_tmpfs / f"{tool.name}.check")}
    header = f"machine: {machine()}"
    rows: list[Row] = []
    try:
        exe = work_disk / "holder"
        (work_disk / "holder.c").write_text(PROGRAM)
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(work_disk / "holder.c")],
                       check=True)
        if not args.lazy and not args.gib:
            rows += fixed_cost(tools, work_tmpfs, args.runs)
            rows += per_megabyte(tools, exe, work_tmpfs, 3)
        if not args.quick and not args.lazy:
            rss: dict[str, Run] = {}
            rows += gigabyte(tools, exe, "tmpfs", work_tmpfs, args.size_mib, args.rounds, rss)
            rows += gigabyte(tools, exe, "disk", work_disk, args.size_mib, args.rounds, rss)
            for what in ("dump", "restore"):
                rows.append(Row(f"peak RSS, {what} {args.size_mib / 1024:g} GiB",
                                {t.name: f"{rss[f'{t.name} {what}'].maxrss / MIB:.0f} MiB"
                                 for t in tools if f"{t.name} {what}" in rss},
                                "the command's own memory (wait4 ru_maxrss)"))
            if supports_compress() and not args.gib:
                rows += compress(exe, work_tmpfs, args.size_mib)
        if not args.quick and not args.gib:
            rows += lazy(exe, work_tmpfs, args.size_mib, args.rounds)
    finally:
        shutil.rmtree(work_disk, ignore_errors=True)
        shutil.rmtree(work_tmpfs, ignore_errors=True)
    print_table(rows, [t.name for t in tools], header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
