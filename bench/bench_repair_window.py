"""How long a process may meet its TCP socket in repair mode after a dump killed
while it read that socket.

Run as root, from the repository:

    .venv/bin/python bench/bench_repair_window.py [--runs N]   # 10

A Python target connected to the bench over loopback calls ``recv(MSG_DONTWAIT)``
in a loop and notes the first and last time it got EPERM or EINVAL (what a socket
in repair mode answers). For each run, ``ckpt dump --tcp-established`` of it kills
itself (SIGKILL) with the socket in repair mode (tests/progs/ckpt_killed.py
``repair``); its guard then takes the socket out of repair mode and removes the
network lock. The bench then sends one byte; the target prints how long it saw
repair mode. A table gives each run's window and the median; it asserts nothing.
Everything it creates is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = ROOT / "tests" / "progs" / "ckpt_killed.py"
TARGET = r"""
import errno, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
first = last = None
count = 0
while True:
    try:
        if s.recv(10, socket.MSG_DONTWAIT):
            break
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EINVAL):
            raise
        last = time.monotonic()
        first = first or last
        count += 1
print(count, (last - first) * 1000 if first else 0.0, flush=True)
"""


def one_run(work: Path, i: int) -> tuple[int, float]:
    """(EPERM answers seen, window in ms) of one killed dump."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        target = subprocess.Popen([sys.executable, "-c", TARGET,
                                   str(listener.getsockname()[1])],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        conn, _ = listener.accept()
        with conn:
            assert target.stdout is not None
            target.stdout.readline()
            env = dict(os.environ, CKPT_NETLOCK_DIR=str(work / f"notes{i}"))
            subprocess.run([sys.executable, str(KILLED), str(target.pid),
                            str(work / f"images{i}"), "repair"], capture_output=True,
                           env=env, timeout=60)
            conn.send(b"x")  # answered once the socket is out of repair mode
            count, window = target.stdout.readline().split()
            target.wait(timeout=60)
    return int(count), float(window)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-repair-"))
    try:
        rows = [one_run(work, i) for i in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'run':>4} {'EPERM seen':>10} {'window ms':>10}")
    for i, (count, window) in enumerate(rows):
        print(f"{i:>4} {count:>10} {window:>10.3f}")
    print(f"median window {statistics.median(w for _, w in rows):.3f} ms, "
          f"max {max(w for _, w in rows):.3f} ms")


if __name__ == "__main__":
    main()
