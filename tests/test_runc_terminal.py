"""runc containers with a terminal (issue 11): ``"terminal": true``, runc handing the
pty master to a console socket (here the test's). The container's shell is on the
pty's slave, whose master is outside the tree: runc asks criu for
``orphan_pts_master``, and at restore ckpt makes a new pair in the container's
devpts, gives the slave back to the shell (its controlling terminal, and the
/dev/console runc bound over it) and hands the master over (orphan-pts-master),
which runc passes to the console socket given to ``runc restore``. The shell must
answer there, the same shell: its variables, its PID, its terminal's size."""

from __future__ import annotations

import array
import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_helpers import Output, scaled, wait_until
from runc_helpers import Container, make_bundle, runc_or_skip


class ConsoleSocket:
    """A console socket (``runc --console-socket``): each connection brings the master
    of a container's terminal (SCM_RIGHTS)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.masters: list[int] = []

    def receive(self, timeout: float) -> int | None:
        """The next master sent, or None."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return None
        conn, _ = self.sock.accept()
        with conn:
            fds = array.array("i")
            _, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        self.masters += fds
        return fds[0] if fds else None

    def close(self) -> None:
        for fd in self.masters:
            os.close(fd)
        self.sock.close()


def _with_console(args: list[str], console: ConsoleSocket, cwd: Path,
                  timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], int | None]:
    """Run runc ``args`` while taking the master it sends to ``console``."""
    got: list[int | None] = []
    taker = threading.Thread(target=lambda: got.append(console.receive(scaled(timeout))))
    taker.start()
    try:
        res = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=scaled(timeout))
    finally:
        taker.join()
    return res, got[0] if got else None


def _say(master: int, line: str, want: str, timeout: float = 30) -> str:
    """Type ``line`` into the terminal; what it shows until ``want`` appears."""
    os.write(master, line.encode() + b"\n")
    seen = b""
    deadline = time.monotonic() + scaled(timeout)
    while want.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want!r} on the terminal after {line!r}: {seen!r}")
        if select.select([master], [], [], min(left, 0.5))[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:  # EIO: the slave side is gone
                raise AssertionError(f"the terminal hung up after {line!r}: {seen!r}"
                                     ) from None
    return seen.decode(errors="replace")


def _reap(pid: int) -> None:
    """The dumped shell is ours once runc has let it go (we are a child subreaper):
    reap its zombie, which holds its PID."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, f"process {pid} to go")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[ConsoleSocket]:
    c = ConsoleSocket(tmp_path / "console.sock")
    try:
        yield c
    finally:
        c.close()


def test_shell_on_a_terminal_comes_back_twice(tmp_path: Path, console: ConsoleSocket) -> None:
    runc = runc_or_skip()
    data = tmp_path / "data"
    data.mkdir()
    bundle = make_bundle(tmp_path / "bundle", ["sh"], data)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = True
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    ctr = Container(runc, tmp_path / "state", bundle, f"ckpt-tty-{os.getpid()}",
                    Output(tmp_path / "out"))
    try:
        res, master = _with_console(ctr.cmd("run", "-d", "--console-socket", console.path,
                                            ctr.cid), console, bundle)
        assert res.returncode == 0 and master is not None, f"runc run: {res.stderr}"
        _say(master, "x=kept; stty rows 33 cols 77; echo $((6*7))", "42")
        pid = ctr.pid()
        for round_ in (1, 2):
            images = tmp_path / f"images{round_}"
            res = ctr.checkpoint(images)
            log = images.with_name(images.name + "-work")
            assert res.returncode == 0, f"{res.stderr}\n{(log / 'dump.log').read_text()}"
            assert ctr.status() == "absent"
            _reap(pid)
            res, master = _with_console(
                ctr.cmd("restore", "-d", "--console-socket", console.path, "--image-path",
                        str(images), "--work-path", str(log), ctr.cid, criu=True),
                console, bundle)
            assert res.returncode == 0, f"{res.stderr}\n{(log / 'restore.log').read_text()}"
            assert master is not None, "runc sent no terminal to the console socket"
            assert ctr.status() == "running" and ctr.pid() == pid
            # the same shell (its variable, PID 1 inside), its terminal's size, the
            # slave's name, and runc's /dev/console bound over it
            _say(master, f"echo $x-$$-$(stty size)-$(tty)-{round_}",
                 f"kept-1-33 77-/dev/pts/0-{round_}")
            _say(master, "echo $((7*8)) > /dev/console", "56")
    finally:
        ctr.delete()
