"""POSIX message queues (mq_open): each queue's name, size limits, owner, mode and
messages, made again (or taken back) under its name; each fd description reopens it.

A queue outlives its processes while it has a name: when the dumped tree is killed it
stays, with its messages. At restore a queue found under its name with the same limits
and owner is taken for the tree's own, left behind, and gets the saved messages back
(what others sent or took since is undone); else it is made with ``mq_open``, and
one that had no name any more (``mq_unlink``) loses it again at once.

The messages are read at dump by taking them all from the queue (there is no way to
copy them) and putting them back at once, in the same order with the same
priorities. A registration for notification (``mq_notify``) is refused: its
``sigev_value`` cannot be read from outside. A process blocked in ``mq_receive`` or
``mq_send`` comes back blocked in it (the kernel restarts them).
"""

from __future__ import annotations

import ctypes
import os
import stat as st_mod

from ..errors import RestoreError, UnsupportedError
from ..kernel import mqueue
from ..log import logger
from ..schema import BOOL, U32, U64, UID, Hex, Int, List, Opt, Str, Tup
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.mqueue")

DELETED = " (deleted)"
_OPEN_MASK = os.O_ACCMODE


def _queue_name(link: str) -> str:
    name = link[:-len(DELETED)] if link.endswith(DELETED) else link
    return "/" + os.path.basename(name)


def _drain(fd: int, msgsize: int) -> list[tuple[int, bytes]]:
    """Take every message of the queue (``fd`` non-blocking): [(priority, bytes)]."""
    buf = ctypes.create_string_buffer(max(msgsize, 1))
    out: list[tuple[int, bytes]] = []
    while (got := mqueue.receive(fd, buf)) is not None:
        n, prio = got
        out.append((prio, buf.raw[:n]))
    return out


class MessageQueues(FileKind):
    KIND = "mqueue"
    # its own fields in files.json
    SCHEMA = {
        "name": Str(256, pattern="/[^/]+"), "inode": U64, "maxmsg": Int(1, 1 << 20),
        "msgsize": Int(1, 1 << 24), "mode": Int(0, 0o7777), "uid": UID, "gid": UID,
        "unlinked": BOOL,
        "messages": Opt(List(Tup(U32, Hex(1 << 24)), max=1 << 20)),
    }

    def __init__(self) -> None:
        super().__init__()
        self._saved: set[int] = set()  # dump: queues whose messages are saved, by inode
        self._made: dict[int, int] = {}  # restore: inode -> ckpt's fd of the queue

    @classmethod
    def claims_fd(cls, f: OpenFd) -> bool:
        return st_mod.S_ISREG(f.st.st_mode) and mqueue.is_mqueue(f.dup)

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [f"mqueue:{desc['name']}"]

    @classmethod
    def shown_path(cls, desc: Description) -> str:
        return str(desc["name"]) + (DELETED if desc.get("unlinked") else "")

    # ---- dump

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        name, st = _queue_name(f.link), f.st
        status = os.pread(f.dup, 128, 0).decode(errors="replace")
        fields = dict(part.split(":", 1) for part in status.split() if ":" in part)
        if fields.get("NOTIFY_PID", "0") != "0":
            raise UnsupportedError(f"{f.where}: POSIX message queue {name} has a "
                                   "notification registered (mq_notify); not supported")
        attr = mqueue.getattr_(f.dup)
        desc: Description = {
            "name": name, "inode": st.st_ino, "maxmsg": attr.maxmsg, "msgsize": attr.msgsize,
            "mode": st_mod.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
            "unlinked": st.st_nlink == 0,
        }
        ctx.images.need("mqueue")
        if st.st_ino not in self._saved:  # once per queue, whoever holds it
            self._saved.add(st.st_ino)
            desc["messages"] = self._copy_messages(f, attr.msgsize)
            log.info("%s: POSIX message queue %s saved (%d messages)", f.where, name,
                     len(desc["messages"]))
        return desc

    @staticmethod
    def _copy_messages(f: OpenFd, msgsize: int) -> list[list[Any]]:
        """The queue's messages in order, [priority, hex]: taken, then put back at once."""
        fd = os.open(f"/proc/self/fd/{f.dup}", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            messages = _drain(fd, msgsize)
            for prio, data in messages:
                mqueue.send(fd, data, prio)
        finally:
            os.close(fd)
        return [[prio, data.hex()] for prio, data in messages]

    def verify(self, ctx: DumpCtx | RestoreCtx, desc: Description) -> None:
        msg_max, msgsize_max = mqueue.limits()
        if desc["maxmsg"] > msg_max or desc["msgsize"] > msgsize_max:
            raise RestoreError(
                f"POSIX message queue {desc['name']} holds up to {desc['maxmsg']} messages "
                f"of {desc['msgsize']} bytes, beyond fs.mqueue.msg_max {msg_max} or "
                f"msgsize_max {msgsize_max}: making it again needs CAP_SYS_RESOURCE")

    # ---- restore

    def _queue(self, ctx: RestoreCtx, desc: Description) -> int:
        """ckpt's fd of the queue of ``desc``, made (or taken back) and filled once."""
        ino = int(desc["inode"])
        if ino in self._made:
            return self._made[ino]
        full = next((d for d in self.descriptions.values()
                     if int(d["inode"]) == ino and "messages" in d), desc)
        name = desc["name"]
        attr = mqueue.MqAttr(maxmsg=desc["maxmsg"], msgsize=desc["msgsize"])
        flags = os.O_RDWR | os.O_NONBLOCK
        try:
            fd = mqueue.mq_open(name, flags | os.O_CREAT | os.O_EXCL, desc["mode"], attr)
            made = True
        except FileExistsError:
            if desc["unlinked"]:
                raise RestoreError(f"POSIX message queue {name} had lost its name, which "
                                   "another queue has now") from None
            fd = mqueue.mq_open(name, flags)
            made = False
        try:
            st, now = os.fstat(fd), mqueue.getattr_(fd)
            if not made and ((now.maxmsg, now.msgsize) != (desc["maxmsg"], desc["msgsize"])
                             or (st.st_uid, st.st_gid) != (desc["uid"], desc["gid"])):
                raise RestoreError(f"POSIX message queue {name} exists with other limits "
                                   f"or owner ({now.maxmsg} x {now.msgsize} bytes, uid "
                                   f"{st.st_uid}) than at dump")
            os.fchown(fd, desc["uid"], desc["gid"])
            os.fchmod(fd, desc["mode"])
            _drain(fd, desc["msgsize"])  # one left behind: what came since is undone
            for prio, data in full.get("messages", []):
                mqueue.send(fd, bytes.fromhex(data), int(prio))
            if desc["unlinked"]:
                mqueue.mq_unlink(name)
        except OSError as e:
            os.close(fd)
            raise RestoreError(f"cannot make POSIX message queue {name} again: "
                               f"{e.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        self._made[ino] = fd
        return fd

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        base = self._queue(ctx, desc)
        try:
            return os.open(f"/proc/self/fd/{base}", desc["flags"] & _OPEN_MASK | os.O_CLOEXEC)
        except OSError as e:
            raise RestoreError(f"cannot reopen POSIX message queue {desc['name']}: "
                               f"{e.strerror}") from None

    def close(self) -> None:
        for fd in self._made.values():
            os.close(fd)
        self._made.clear()
