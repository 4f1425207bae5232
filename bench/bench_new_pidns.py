"""Many warm copies of one service from one dump (issue 15): restore --new-pidns against
a cold start.

Run as root, from the repository:

    .venv/bin/python bench/bench_new_pidns.py [COPIES] [MEGABYTES]

tests/progs/warm_service.py imports modules and builds a table of MEGABYTES (200) MB,
then answers on a unix listener it inherits (socket activation's way). The bench
starts it cold, times its first answer, and dumps it once with -R (it runs on). Then
one copy is restored alone (``ckpt restore -d --new-pidns`` with a listener of its own
given by ``--inherit-fd 'fd[N]:socket:[INODE]'``) and ended, then COPIES (10) copies
are restored at once the same way; each copy's time is from the start of its ckpt to
its first answer, every copy checked to answer from its warm table under the PID it
was dumped with. Memory: the Pss and Rss of the copies' processes
(/proc/PID/smaps_rollup), their inits' too, and the original's.
It asserts nothing but the answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import MIB, ckpt_command, kill_and_reap, ready

REPO = Path(__file__).resolve().parent.parent
SERVICE = REPO / "tests" / "progs" / "warm_service.py"
KEY = "key-000000007"


def listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(64)
    return s


def ask(path: Path, timeout: float = 120.0) -> str:
    """The service's answer on ``path``, retrying until it listens... and answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                s.sendall(KEY.encode())
                return s.makefile().readline().strip()
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.002)


def rollup(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of ``pid`` in bytes."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                out[key] = int(rest.split()[0]) * 1024
    return out["Pss"], out["Rss"]


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for t in os.listdir(f"/proc/{p}/task"):
            todo += [int(k) for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
    return out


def start_cold(work: Path, name: str, megabytes: int) -> tuple[subprocess.Popen[bytes], float]:
    """The service started from nothing; the time to its first answer."""
    path = work / f"{name}.sock"
    lst = listener(path)
    t0 = time.monotonic()
    with open(work / f"{name}.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, str(SERVICE)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                pass_fds=(lst.fileno(),), start_new_session=True,
                                env={**os.environ, "SERVICE_MB": str(megabytes),
                                     "SERVICE_FD": str(lst.fileno())})
    lst.close()
    answer = ask(path)
    dt = time.monotonic() - t0
    if not answer.startswith(f"{proc.pid} {proc.pid} {megabytes * 10_000} value-"):
        raise RuntimeError(f"cold service answered {answer!r}")
    return proc, dt


def main() -> int:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    megabytes = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    if not ready("bench_new_pidns", tempfile.gettempdir(), 2 * megabytes * MIB):
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-pidns-"))
    procs: list[int] = []
    try:
        colds = []
        for i in range(3):
            proc, dt = start_cold(work, f"cold{i}", megabytes)
            colds.append(dt)
            if i < 2:
                kill_and_reap(proc.pid)
        original = proc.pid
        procs.append(original)
        images = work / "images"
        t0 = time.monotonic()
        subprocess.run(ckpt_command() + ["dump", "-t", str(original), "-D", str(images), "-R"],
                       check=True, capture_output=True)
        dump_s = time.monotonic() - t0
        image_bytes = sum(f.stat().st_size for f in images.iterdir() if f.is_file())
        ino = int(os.readlink(f"/proc/{original}/fd/"
                              f"{_service_fd(original)}").strip("socket:[]"))

        alone = listener(work / "alone.sock")
        t0 = time.monotonic()
        subprocess.run(ckpt_command() + [
            "restore", "-D", str(images), "-d", "--new-pidns", "--pidfile",
            str(work / "alone.pid"), "--inherit-fd", f"fd[{alone.fileno()}]:socket:[{ino}]"],
            pass_fds=(alone.fileno(),), stdin=subprocess.DEVNULL, check=True,
            capture_output=True)
        alone.close()
        ask(work / "alone.sock")
        alone_s = time.monotonic() - t0
        root = int((work / "alone.pid").read_text())
        kill_and_reap(int(Path(f"/proc/{root}/stat").read_text().split()[3]))  # its init

        listeners = [listener(work / f"copy{i}.sock") for i in range(copies)]
        started, runs = [], []
        for i, lst in enumerate(listeners):
            argv = ckpt_command() + [
                "restore", "-D", str(images), "-d", "--new-pidns", "--pidfile",
                str(work / f"copy{i}.pid"), "--inherit-fd", f"fd[{lst.fileno()}]:socket:[{ino}]"]
            started.append(time.monotonic())
            runs.append(subprocess.Popen(argv, pass_fds=(lst.fileno(),),
                                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for lst in listeners:
            lst.close()
        firsts = []
        for i, run in enumerate(runs):
            answer = ask(work / f"copy{i}.sock")
            firsts.append(time.monotonic() - started[i])
            if run.wait() != 0:
                raise RuntimeError(f"copy {i}: {run.stderr.read().decode() if run.stderr else ''}")
            root = int((work / f"copy{i}.pid").read_text())
            procs.append(int(Path(f"/proc/{root}/stat").read_text().split()[3]))  # its init
            want = f"{original} {original} {megabytes * 10_000} value-"
            if not answer.startswith(want):
                raise RuntimeError(f"copy {i} answered {answer!r}, expected {want}...")
        inits = procs[1:]
        copy_pids = [p for init in inits for p in tree(init) if p != init]
        copy_mem = [rollup(p) for p in copy_pids]
        init_mem = [rollup(p) for p in inits]
        orig_pss, orig_rss = rollup(original)
        if not ask(work / "cold2.sock").startswith(f"{original} "):
            raise RuntimeError("the original stopped answering")

        def ms(x: float) -> str:
            return f"{x * 1000:.0f} ms"

        print(f"warm CPython service, {megabytes} MB table; {copies} copies at once; "
              f"{os.cpu_count()} CPUs")
        print("| what | time |")
        print("|---|---|")
        print(f"| cold start to first answer (3 runs) | {', '.join(ms(c) for c in colds)} |")
        print(f"| dump -R of the warm service ({image_bytes / MIB:.0f} MiB of images) "
              f"| {ms(dump_s)} |")
        print(f"| restore --new-pidns to first answer, one copy alone | {ms(alone_s)} |")
        print(f"| restore --new-pidns to first answer, {copies} at once: median, min, max "
              f"| {ms(statistics.median(firsts))}, {ms(min(firsts))}, {ms(max(firsts))} |")
        print()
        print("| memory | Pss | Rss |")
        print("|---|---|---|")
        print(f"| the original | {orig_pss / MIB:.0f} MiB | {orig_rss / MIB:.0f} MiB |")
        print(f"| {copies} copies | {sum(p for p, _ in copy_mem) / MIB:.0f} MiB | "
              f"{sum(r for _, r in copy_mem) / MIB:.0f} MiB |")
        print(f"| their {copies} inits | {sum(p for p, _ in init_mem) / 1024:.0f} KiB | "
              f"{sum(r for _, r in init_mem) / 1024:.0f} KiB |")
        return 0
    finally:
        for pid in procs:
            kill_and_reap(pid)
        shutil.rmtree(work, ignore_errors=True)


def _service_fd(pid: int) -> int:
    """The service's listener: its one unix socket fd."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
            return int(fd)
    raise RuntimeError(f"process {pid} holds no socket")


if __name__ == "__main__":
    sys.exit(main())
