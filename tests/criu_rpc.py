"""A small client of criu's RPC for the tests, as runc is one: a SOCK_SEQPACKET
socketpair, ``ckpt swrk FD`` started with the other end inherited, one
message per packet, every NOTIFY acknowledged (and recorded)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ckpt.rpc import schema
from ckpt.rpc.wire import decode, encode
from ckpt_helpers import PYTHON, ckpt_cmd, scaled

TIMEOUT = scaled(60.0)


def criu_cmd() -> list[str]:
    """How to run ``ckpt-criu``: the venv's console script, else the module."""
    script = Path(PYTHON).with_name("ckpt-criu")
    return [str(script)] if script.exists() else [PYTHON, "-m", "ckpt.criu_cli"]


class Client:
    """One ``ckpt swrk`` session. ``stdio``: its fds 0-2 (runc gives it the container's)."""

    def __init__(self, stdio: Sequence[int | None] = (None, None, None),
                 cmd: Sequence[str] | None = None):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(TIMEOUT)
        fd = theirs.fileno()
        stdin, stdout, _ = stdio
        self.proc = subprocess.Popen([*(cmd or ckpt_cmd()), "swrk", str(fd)], pass_fds=(fd,),
                                     stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                     stdout=stdout, stderr=subprocess.PIPE)
        theirs.close()
        self.notes: list[tuple[str, int]] = []  # every notification: (script, pid)

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def send(self, req: dict[str, Any]) -> None:
        self.send_raw(encode(req, "req"))

    def recv(self) -> dict[str, Any]:
        data = self.sock.recv(1 << 20)
        assert data, "ckpt swrk closed the connection without answering"
        return decode(data, "resp")

    def call(self, req: dict[str, Any],
             on_notify: Callable[[str, int], dict[str, Any] | None] | None = None
             ) -> dict[str, Any]:
        """Send ``req``, acknowledge notifications until the response, return it.

        ``on_notify(script, pid)`` may return the acknowledgement to send instead."""
        self.send(req)
        while True:
            resp = self.recv()
            if resp["type"] != schema.NOTIFY or not resp["success"]:
                return resp
            note = resp.get("notify", {})
            script, pid = note.get("script", ""), note.get("pid", 0)
            self.notes.append((script, pid))
            ack = on_notify(script, pid) if on_notify else None
            self.send(ack or {"type": schema.NOTIFY, "notify_success": True})

    def close(self) -> tuple[int, str]:
        """Close our end; (exit status of ckpt swrk, its stderr)."""
        self.sock.close()
        try:
            _, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("ckpt swrk did not exit after the client closed") from None
        return self.proc.returncode, err.decode(errors="replace")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.sock.close()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def open_dir(path: Path) -> int:
    """An fd of this process on folder ``path`` (for images_dir_fd), created if needed."""
    path.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
