"""The demo: a C counter is dumped, killed, and restored under the same PID.

Run through ./demo.sh as root. It compiles a tiny counter, starts it, dumps
it with ``ckpt dump`` (which kills it), restores it with ``ckpt restore -d``
and shows that it goes on counting from where it stopped.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import time

COUNTER_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec ts = {0, 200 * 1000 * 1000};
    setvbuf(stdout, NULL, _IONBF, 0);
    for (long i = 0;; i++) { printf("tick %ld\n", i); nanosleep(&ts, NULL); }
}
"""


def sh(*cmd: str) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def last_line(path: str) -> str:
    with open(path) as f:
        lines = f.read().splitlines()
    return lines[-1] if lines else ""


def main() -> int:
    if os.geteuid() != 0:
        print("the demo needs root (ptrace of any process, clone3 with set_tid)")
        return 1
    # Restored processes re-parent to us, so we can reap them.
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    ckpt = os.path.join(os.path.dirname(sys.executable), "ckpt")
    work = tempfile.mkdtemp(prefix="ckpt-demo-")
    src, exe, out = (os.path.join(work, n) for n in ("counter.c", "counter", "out.txt"))
    with open(src, "w") as f:
        f.write(COUNTER_C)
    subprocess.run(["gcc", "-O1", "-o", exe, src], check=True)
    with open(out, "w") as o:
        proc = subprocess.Popen([exe], stdout=o, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pid = proc.pid
    time.sleep(1.1)
    print(f"counter running as PID {pid}; its output so far ends with: {last_line(out)!r}")
    images = os.path.join(work, "images")
    sh(ckpt, "dump", "-t", str(pid), "-D", images, "-o", "dump.log", "-v4")
    proc.wait()
    print(f"after the dump: PID {pid} is gone ({'dead' if proc.returncode else '?'}), "
          f"last line {last_line(out)!r}; images: {sorted(os.listdir(images))}")
    time.sleep(1.0)
    print(f"one second later the output still ends with {last_line(out)!r}")
    sh(ckpt, "restore", "-D", images, "-d", "-o", "restore.log", "-v4", "--pidfile", "pid")
    with open(os.path.join(images, "pid")) as f:
        restored = int(f.read())
    time.sleep(1.1)
    with open(f"/proc/{restored}/comm") as f:
        comm = f.read().strip()
    print(f"restored as PID {restored} ({comm}), same PID: {restored == pid}; "
          f"output goes on: {last_line(out)!r}")
    with open(out) as f:
        ticks = [int(line.split()[1]) for line in f.read().splitlines()]
    continuous = ticks == list(range(len(ticks)))
    print(f"{len(ticks)} ticks, none lost or repeated: {continuous}")
    os.kill(restored, 9)
    os.waitpid(restored, 0)
    print(f"images and logs are in {images}")
    return 0 if continuous and restored == pid else 1


if __name__ == "__main__":
    sys.exit(main())
