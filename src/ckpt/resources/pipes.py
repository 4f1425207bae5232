"""Pipes and FIFOs: both ends, their flags, capacity and the bytes buffered in them.

Buffered bytes are read without consuming them: the pipe is opened again
through /proc/PID/fd/N and ``tee``d into a pipe of ckpt's. At restore a new
pipe per saved pipe is filled with those bytes before the process runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat as st_mod
from typing import Any

from ..errors import DumpError, RestoreError
from ..kernel import libc, procfs
from . import files

log = logging.getLogger("ckpt.pipes")

DATA_FILE = "pipes-data.img"


def _read_buffered(pid: int, fd: int, capacity: int) -> bytes:
    """The bytes in the pipe behind ``pid``'s ``fd``, left in place."""
    src = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, libc.F_SETPIPE_SZ, capacity)
        try:
            n = libc.tee(src, w, capacity)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == 11:
                return b""
            raise
        data = b""
        while len(data) < n:
            data += os.read(r, n - len(data))
        return data
    finally:
        for x in (src, r, w):
            os.close(x)


class Pipes:
    KIND = "pipe"

    def after_dump(self, ctx: files.DumpCtx, descriptions: dict[str, dict[str, Any]],
                   tasks: list[dict[str, Any]]) -> None:
        """Mark pipes with an end outside the dumped tree; the restore needs to know."""
        unnamed = [d for d in descriptions.values() if d["kind"] == "pipe" and "fifo" not in d]
        ends: dict[int, set[int]] = {}
        for desc in unnamed:
            ends.setdefault(desc["inode"], set()).add(desc["flags"] & os.O_ACCMODE)
        for desc in unnamed:
            modes = ends[desc["inode"]]
            desc["external"] = not ({os.O_RDONLY, os.O_WRONLY} <= modes or os.O_RDWR in modes)

    def before_restore(self, ctx: files.RestoreCtx,
                       descriptions: dict[str, dict[str, Any]]) -> None:
        """Say which pipes lost their outside end, and how to give them a new one."""
        for fid, desc in descriptions.items():
            if desc["kind"] != "pipe" or not desc.get("external"):
                continue
            if fid in ctx.inherit_files or any(k in ctx.inherit for k in self.keys(desc)):
                continue
            log.warning("pipe:[%s] had its other end outside the dumped tree; it is restored "
                        "as a new pipe whose other end nobody holds (give one with "
                        "--inherit-fd 'fd[N]:pipe:[%s]')", desc["inode"], desc["inode"])

    def claims(self, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISFIFO(st.st_mode)

    def dump(self, ctx: files.DumpCtx, pid: int, fd: int, link: str, st: os.stat_result,
             dup: int, info: procfs.FdInfo) -> dict[str, Any]:
        pipes: dict[int, dict[str, Any]] = ctx.raw.setdefault("pipes", {})
        ino = st.st_ino
        if ino not in pipes:
            capacity = fcntl.fcntl(dup, libc.F_GETPIPE_SZ)
            try:
                data = _read_buffered(pid, fd, capacity)
            except OSError as e:
                raise DumpError(f"process {pid} fd {fd}: cannot read the data buffered in "
                                f"{link}: {e.strerror}") from None
            if "pipes_raw" not in ctx.raw:
                ctx.raw["pipes_raw"] = ctx.images.raw(DATA_FILE)
            off = ctx.raw["pipes_raw"].write(data)
            pipes[ino] = {"capacity": capacity, "data_off": off, "data_len": len(data)}
            log.info("pipe %s: %d bytes buffered", link, len(data))
        desc: dict[str, Any] = {"inode": ino, **pipes[ino]}
        if not link.startswith("pipe:"):
            desc["fifo"] = link  # a named pipe
        return desc

    def keys(self, desc: dict[str, Any]) -> list[str]:
        keys = [f"pipe:[{desc['inode']}]"]
        if "fifo" in desc:
            keys += [desc["fifo"].lstrip("/"), desc["fifo"]]
        return keys

    def open(self, ctx: files.RestoreCtx, desc: dict[str, Any]) -> int:
        pipes: dict[int, tuple[int, int]] = ctx.state.setdefault("pipes", {})
        ino = desc["inode"]
        if ino not in pipes:
            if "fifo" in desc:
                # A named pipe: open both ends on the FIFO so its bytes can go back in.
                rw = os.open(desc["fifo"], os.O_RDWR | os.O_NONBLOCK)
                pipes[ino] = (rw, rw)
            else:
                pipes[ino] = os.pipe2(os.O_CLOEXEC)
            r, w = pipes[ino]
            try:
                fcntl.fcntl(w, libc.F_SETPIPE_SZ, desc["capacity"])
            except OSError as e:
                log.warning("pipe:[%s]: capacity %d not restored: %s", ino, desc["capacity"],
                            e.strerror)
            if desc["data_len"]:
                with open(ctx.images.path(DATA_FILE), "rb") as f:
                    f.seek(desc["data_off"])
                    data = f.read(desc["data_len"])
                if len(data) != desc["data_len"]:
                    raise RestoreError(f"{DATA_FILE}: truncated")
                os.write(w, data)
        r, w = pipes[ino]
        acc = desc["flags"] & os.O_ACCMODE
        if "fifo" in desc:
            fd = os.open(f"/proc/self/fd/{r}", (desc["flags"] & ~0o2000000) | os.O_NONBLOCK)
        else:
            fd = os.dup(r if acc == os.O_RDONLY else w)
        fcntl.fcntl(fd, fcntl.F_SETFL, desc["flags"] & (os.O_NONBLOCK | os.O_APPEND | os.O_DIRECT))
        return fd


files.register(Pipes())
