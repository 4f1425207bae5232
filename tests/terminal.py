"""An interactive shell on a real pseudo-terminal, driven by a test as a user would."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

from ckpt_helpers import (
    Output,
    assert_consecutive,
    assert_silent,
    ckpt_cmd,
    proc_state,
    wait_until,
)


class Terminal:
    """``bash -i`` on a new pty: the session leader, with job control on; or another
    program ``argv`` there in its place (as ``pty.fork`` starts one), with ``env``."""

    def __init__(self, cwd: Path, path_dirs: list[str], argv: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.master, slave = os.openpty()
        self.slave_path = os.ttyname(slave)
        env = {"PATH": ":".join(path_dirs + [os.environ.get("PATH", "/usr/bin:/bin")]),
               "HOME": str(cwd), "TERM": "dumb", "PS1": "$ ", "LC_ALL": "C", **(env or {})}
        self.shell = subprocess.Popen(
            argv or ["bash", "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave,
            stderr=slave, cwd=cwd, env=env, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._marks = 0
        if argv is None:
            self.run("true")

    @classmethod
    def with_ckpt(cls, cwd: Path) -> Terminal:
        """A terminal whose shell finds ``ckpt`` (the one the tests run) on its PATH."""
        return cls(cwd, [str(Path(ckpt_cmd()[0]).parent)])

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError as e:
                # EIO: nobody holds the slave (its program dumped), until a restore
                if e.errno != errno.EIO or self.master < 0:
                    return
                time.sleep(0.05)
                continue
            if not chunk:
                return
            with self._lock:
                self._buf += chunk

    def text(self) -> str:
        with self._lock:
            return self._buf.decode(errors="replace").replace("\r", "")

    def resize(self, rows: int, cols: int) -> None:
        """The terminal's window resized, as a user drags it: its foreground group gets
        SIGWINCH (a full-screen program draws its whole screen again)."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("4H", rows, cols, 0, 0))

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern, re.M)
        return wait_until(lambda: rx.search(self.text(), start), timeout,
                          f"{pattern!r} on the terminal; it shows:\n{self.text()[-2000:]}")

    def run(self, command: str, timeout: float = 60.0) -> tuple[int, str]:
        """Type ``command`` at the prompt; return its exit status and what it printed."""
        self._marks += 1
        mark = f"__done{self._marks}_"
        start = len(self.text())
        self.send(f"{command}\necho {mark}$?__\n")
        m = self.wait_for(rf"^{mark}(\d+)__$", timeout, start)
        return int(m[1]), self.text()[start:m.start()]

    def close(self) -> None:
        """The shell killed and the terminal gone (once; again does nothing)."""
        if self.master < 0:
            return
        self.shell.kill()
        self.shell.wait()
        os.close(self.master)
        self.master = -1


def job_control_round(term: Terminal, pid: int, out: Output, start: int) -> None:
    """A job restored in the foreground of ``term`` (its group ``pid``, printing numbered
    lines to ``out``; ``start``: where the terminal's text stood when it was started):
    Ctrl-Z stops it (the shell shows it stopped and gets its terminal back), ``fg``
    continues it, Ctrl-C ends it and ckpt restore exits 130; no line lost or repeated."""
    term.send("\x1a")  # Ctrl-Z
    term.wait_for(r"Stopped", start=start)
    wait_until(lambda: proc_state(pid) == "T", 10, "the job to stop")
    assert os.tcgetpgrp(term.master) == term.shell.pid, "the shell did not get its terminal"
    assert_silent(pid, out)
    assert proc_state(pid) == "T"
    stopped_at = len(out.first_field_numbers())
    term.send("fg\n")
    wait_until(lambda: len(out.first_field_numbers()) >= stopped_at + 5, 10, "lines after fg")
    assert os.tcgetpgrp(term.master) == pid
    term.send("\x03")  # Ctrl-C
    wait_until(lambda: proc_state(pid) is None, 10, "the job to end on Ctrl-C")
    assert term.run("(exit $?)")[0] == 128 + signal.SIGINT, "ckpt restore's exit status"
    assert_consecutive(out.first_field_numbers())
