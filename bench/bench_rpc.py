"""The fixed cost of criu's RPC: one ``swrk`` session answering VERSION (what runc
asks before every checkpoint and restore), from the socketpair to the exit.

Run from the repository:

    .venv/bin/python bench/bench_rpc.py [--runs N]     # 21

Times ``ckpt swrk``, ``ckpt-criu swrk`` and, when installed, ``criu swrk``
(median and minimum of N sessions each), and the import time of the RPC server
alone (``python -X importtime``). It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ckpt.rpc import schema  # noqa: E402
from ckpt.rpc.wire import decode, encode  # noqa: E402


def session(cmd: list[str]) -> float:
    """Seconds for one swrk session answering VERSION."""
    t0 = time.perf_counter()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([*cmd, "swrk", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                            stderr=subprocess.DEVNULL)
    theirs.close()
    ours.send(encode({"type": schema.VERSION}, "req"))
    resp = decode(ours.recv(1 << 20), "resp")
    ours.close()
    proc.wait()
    assert resp["type"] == schema.VERSION, resp
    return time.perf_counter() - t0


def import_ms() -> float:
    """Cumulative import time of ckpt.rpc.server, in ms."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ckpt.rpc.server"],
                         capture_output=True, text=True, check=True)
    m = re.search(r"\|\s*(\d+) \| ckpt\.rpc\.server$", res.stderr, re.M)
    return int(m[1]) / 1000 if m else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    commands = {"ckpt swrk": [str(bindir / "ckpt")], "ckpt-criu swrk": [str(bindir / "ckpt-criu")]}
    if shutil.which("criu"):
        commands["criu swrk"] = ["criu"]
    print(f"{'VERSION session':16} {'median ms':>10} {'min ms':>8}")
    for name, cmd in commands.items():
        times = sorted(session(cmd) for _ in range(args.runs))
        print(f"{name:16} {1000 * times[len(times) // 2]:10.1f} {1000 * times[0]:8.1f}")
    imports = sorted(import_ms() for _ in range(5))
    print(f"import ckpt.rpc.server: median {imports[2]:.1f} ms, min {imports[0]:.1f} ms")


if __name__ == "__main__":
    main()
