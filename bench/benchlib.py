"""What the benchmarks share: running ckpt, watching a target's log, reaping it,
and the checks before a run (root, gcc, free space, child subreaper)."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
MIB = 1 << 20


def ckpt_command() -> list[str]:
    """The ckpt CLI next to this interpreter (the venv's), else ``python -m ckpt``."""
    exe = Path(sys.executable).parent / "ckpt"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ckpt"]


def run(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): "
                           f"{(res.stderr or res.stdout).strip()}")


def wait_for(log: Path, pattern: str, after: int, timeout: float) -> re.Match[str]:
    """The first line matching ``pattern`` in ``log`` beyond byte ``after``; fails if
    the target reported its memory changed (CORRUPT)."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_bytes()[after:].decode(errors="replace")
        if "CORRUPT" in text:
            raise RuntimeError(f"the target found its memory changed: {text.strip()[-200:]}")
        m = rx.search(text)
        if m:
            return m
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {pattern!r} in {log}")
        time.sleep(0.02)


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def ready(name: str, base: str, need: int) -> bool:
    """Root, gcc and ``need`` bytes free under ``base``; then become a child subreaper,
    so restored processes (re-parented when ``ckpt restore -d`` exits) can be reaped."""
    problem = ("run as root" if os.geteuid() != 0 else
               "gcc is needed" if shutil.which("gcc") is None else
               f"{base} needs {need // MIB} MiB free" if shutil.disk_usage(base).free < need
               else "")
    if problem:
        print(f"{name}: {problem}", file=sys.stderr)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")
    return True
