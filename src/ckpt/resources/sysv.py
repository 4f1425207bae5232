"""SysV IPC objects of the host's IPC namespace used by the tree: shared memory
segments, semaphore sets and message queues, saved with their contents and made again
under the same ids (kernel.{shm,sem,msg}_next_id).

Which objects are the tree's: every segment a process of the tree has attached (its
mappings, "/SYSV%08x (deleted)"), or created and left unattached; every queue the
tree last sent to or received from; every semaphore set whose last operation on one
of its semaphores was the tree's; every object a thread of the tree is blocked on
(semop, semtimedop, msgrcv, msgsnd). A segment attached by processes outside the
tree too is refused at dump: its contents are not the tree's alone.

These objects outlive processes: when the dumped tree is killed, its objects stay,
unattached. At restore an object still there under its id with the same key, size
(or number of semaphores) and owner is taken for the tree's own, left behind: its
contents are set back to the saved ones (a segment must not be attached by anyone).
Any other object under the id or the key refuses the restore. Otherwise the object
is made again under its id with its key, mode and owner (its creator becomes root),
filled, and removed again if the restore fails. A segment removed while attached
(IPC_RMID, key shown as 0) is removed again once every process attached it.

Attachments are made again by the processes themselves (mem.py) with shmat at their
address.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..errors import DumpError, RestoreError, UnsupportedError
from ..images import SYSV, ImageReader, ImageWriter, ctypes_view
from ..kernel import sysvipc
from ..kernel.libc import PAGE_SIZE as PAGE
from ..log import logger
from ..schema import BOOL, NAT, S32, U16, UID, Hex, Int, List, Obj, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.sysv")

IMAGE = SYSV
DATA = "sysv-shm.img"
PREFIX = "/SYSV"
SHM_RDONLY, SHM_EXEC = sysvipc.SHM_RDONLY, sysvipc.SHM_EXEC
# Syscalls whose first argument is a semaphore set or a queue a thread may block in.
_SEM_CALLS = {65, 220}  # semop, semtimedop
_MSG_CALLS = {69, 70}  # msgsnd, msgrcv


_OBJECT = dict(id=Int(0, (1 << 31) - 1), key=S32, mode=Int(0, 0o777), uid=UID, gid=UID,
               cuid=UID, cgid=UID)
# What ``dump`` writes (docs/image-format.md, sysv.json).
SCHEMA = Obj(
    shm=List(Obj(**_OBJECT, size=Int(1, 1 << 48), data_off=NAT, length=Int(0, 1 << 48, PAGE),
                 dest=BOOL, locked=BOOL)),
    sem=List(Obj(**_OBJECT, values=List(U16, max=1 << 16))),
    msg=List(Obj(**_OBJECT, qbytes=NAT, messages=List(Tup(Int(1, (1 << 63) - 1),
                                                          Hex(1 << 16))))),
)

def is_attachment(path: str) -> bool:
    return path.startswith(PREFIX) and path.endswith(" (deleted)")


def _pages(size: int) -> int:
    return (size + PAGE - 1) & ~(PAGE - 1)


# ---------------------------------------------------------------- dump


def _blocked_on(pids: list[int]) -> tuple[set[int], set[int]]:
    """Semaphore sets and queues a thread of ``pids`` is blocked on (its syscall's
    first argument, /proc/PID/task/TID/syscall)."""
    sems: set[int] = set()
    msgs: set[int] = set()
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                    fields = f.read().split()
            except OSError:
                continue
            if len(fields) < 2 or not fields[0].isdigit():
                continue
            nr, arg = int(fields[0]), int(fields[1], 16)
            (sems if nr in _SEM_CALLS else msgs if nr in _MSG_CALLS else set()).add(arg)
    return sems, msgs


def _attachments(mappings: dict[int, list[dict[str, Any]]]
                 ) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    """shmid -> [(pid, its entry)] of every SysV attachment among ``mappings`` (each
    process's saved mappings, mem.py's entries: /proc/PID/maps is not read again)."""
    out: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for pid, vmas in mappings.items():
        for v in vmas:
            if v["kind"] == "sysv":
                out.setdefault(v["shmid"], []).append((pid, v))
    return out


def _read_attached(pid: int, addr: int, length: int, out: Any) -> None:
    """``length`` bytes of ``pid``'s memory at ``addr`` to the raw image ``out``, through
    a buffer of ckpt's (never a Python object), without attaching the segment."""
    buf = ctypes.create_string_buffer(min(length, 1 << 20))
    view = memoryview(buf).cast("B")
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        done = 0
        while done < length:
            n = os.preadv(fd, [view[:min(len(view), length - done)]], addr + done)
            if n <= 0:
                raise DumpError(f"process {pid}: short read of SysV shared memory at "
                                f"{addr + done:#x}")
            out.write(view[:n])
            done += n
    finally:
        os.close(fd)


def _read_unattached(shmid: int, length: int, out: Any) -> None:
    addr = sysvipc.shmat(shmid, sysvipc.SHM_RDONLY)
    try:
        with ctypes_view(addr, length) as view:
            out.write(view)
    finally:
        sysvipc.shmdt(addr)


def dump(images: ImageWriter, pids: list[int],
         mappings: dict[int, list[dict[str, Any]]]) -> None:
    """Save the SysV objects of the frozen processes ``pids`` (see the module's doc);
    ``mappings``: their saved mappings, by pid."""
    tree = set(pids)
    attached = _attachments(mappings)
    blocked_sems, blocked_msgs = _blocked_on(pids)
    shm = sysvipc.table("shm")
    saved: dict[str, list[dict[str, Any]]] = {"shm": [], "sem": [], "msg": []}
    data = None
    for shmid, seg in sorted(shm.items()):
        maps = attached.get(shmid, [])
        if not maps and not (seg.extra["cpid"] in tree and seg.extra["nattch"] == 0):
            continue
        where = f"SysV shared memory segment {shmid} (key {seg.key:#x})"
        size = seg.extra["size"]
        for pid, v in maps:
            if v["offset"] or v["end"] - v["start"] != _pages(size):
                raise UnsupportedError(f"process {pid}: {where} is attached only in part "
                                       f"({v['start']:#x}-{v['end']:#x}); not supported")
        if seg.extra["nattch"] > len(maps):
            raise UnsupportedError(
                f"process {maps[0][0] if maps else seg.extra['cpid']}: {where} is attached "
                f"{seg.extra['nattch'] - len(maps)} more time(s) by processes outside the "
                "dumped tree; its contents are not the tree's alone")
        if data is None:
            data = images.raw(DATA)
        entry = _common(seg)
        entry.update(size=size, data_off=data.size, length=_pages(size),
                     dest=bool(seg.mode & sysvipc.SHM_DEST),
                     locked=bool(seg.mode & sysvipc.SHM_LOCKED))
        if maps:
            pid, v = maps[0]
            _read_attached(pid, v["start"], _pages(size), data)
        else:
            _read_unattached(shmid, _pages(size), data)
        saved["shm"].append(entry)
        log.info("%s saved (%d bytes, attached %d times)", where, size, len(maps))
    for semid, sem in sorted(sysvipc.table("sem").items()):
        nsems = sem.extra["nsems"]
        if semid not in blocked_sems and not any(p in tree for p in _sem_pids(semid, nsems)):
            continue
        entry = _common(sem)
        entry.update(values=sysvipc.sem_values(semid, nsems))
        saved["sem"].append(entry)
        log.info("SysV semaphore set %d (key %#x) saved: %s", semid, sem.key, entry["values"])
    for msqid, q in sorted(sysvipc.table("msg").items()):
        if msqid not in blocked_msgs and not {q.extra["lspid"], q.extra["lrpid"]} & tree:
            continue
        entry = _common(q)
        entry.update(qbytes=sysvipc.msg_stat(msqid).qbytes, messages=_messages(msqid))
        saved["msg"].append(entry)
        log.info("SysV message queue %d (key %#x) saved: %d messages", msqid, q.key,
                 len(entry["messages"]))
    if any(saved.values()):
        images.write_json(IMAGE, saved)
        images.need("sysv")


def _sem_pids(semid: int, nsems: int) -> list[int]:
    """The last process that operated on each semaphore of the set; none for a set
    removed since the table was read (by a process outside the frozen tree)."""
    try:
        return sysvipc.sem_pids(semid, nsems)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EIDRM):
            return []
        raise


def _common(e: sysvipc.Entry) -> dict[str, Any]:
    return {"id": e.id, "key": e.key, "mode": e.mode & 0o777, "uid": e.uid, "gid": e.gid,
            "cuid": e.cuid, "cgid": e.cgid}


def _messages(msqid: int) -> list[list[Any]]:
    """Every message of the queue, in order, copied (not taken): [mtype, hex text]."""
    buf = ctypes.create_string_buffer(8 + sysvipc.MSGMAX_TEXT)
    out: list[list[Any]] = []
    for i in range(int(sysvipc.msg_stat(msqid).qnum)):
        mtype, n = sysvipc.msg_copy(msqid, i, buf)
        out.append([mtype, buf.raw[8:8 + n].hex()])
    return out


# ---------------------------------------------------------------- restore


class Objects:
    """The SysV objects of one restore: made (or found) before the processes, their
    contents set; removed again if the restore fails, if they were made here."""

    def __init__(self, images: ImageReader):
        self.images = images
        self.saved = (images.load_json(IMAGE) if IMAGE in images.files
                      else {"shm": [], "sem": [], "msg": []})
        self.made: list[tuple[str, int]] = []

    def check(self) -> None:
        """Refuse, before anything is made, an id or key taken by another object."""
        for kind in ("shm", "sem", "msg"):
            if not self.saved.get(kind):
                continue  # nothing to check: the namespace's table is not read
            now = sysvipc.table(kind)
            keys = {e.key: e.id for e in now.values() if e.key}
            for obj in self.saved.get(kind, []):
                self._check_one(kind, obj, now, keys)

    def _check_one(self, kind: str, obj: dict[str, Any], now: dict[int, sysvipc.Entry],
                   keys: dict[int, int]) -> None:
        what = _describe(kind, obj)
        there = now.get(obj["id"])
        if there is not None:
            if not _same(kind, obj, there):
                raise RestoreError(f"{what}: its id is taken by another object (key "
                                   f"{there.key:#x}, owner {there.uid})")
            if kind == "shm" and there.extra["nattch"]:
                raise RestoreError(f"{what} is still attached {there.extra['nattch']} "
                                   "time(s) (do the dumped processes still run?)")
        elif obj["key"] and obj["key"] in keys:
            raise RestoreError(f"{what}: its key is taken by {kind} id {keys[obj['key']]}")

    def make(self) -> None:
        """Make (or take back) every object and set its contents."""
        self.check()
        for obj in self.saved.get("shm", []):
            self._make_shm(obj)
        for obj in self.saved.get("sem", []):
            self._make_sem(obj)
        for obj in self.saved.get("msg", []):
            self._make_msg(obj)

    def _new(self, kind: str, obj: dict[str, Any], create: Any) -> int:
        """Make an object of ``kind`` under the saved id: ``create(flags)`` makes it."""
        if obj["id"] in sysvipc.table(kind):
            return int(obj["id"])  # the tree's own, left behind (check said so)
        sysvipc.set_next_id(kind, obj["id"])
        ident = create(sysvipc.IPC_CREAT | sysvipc.IPC_EXCL | obj["mode"])
        self.made.append((kind, ident))
        if ident != obj["id"]:
            raise RestoreError(f"{_describe(kind, obj)} was made under id {ident}")
        return ident

    def _make_shm(self, obj: dict[str, Any]) -> None:
        shmid = self._new("shm", obj, lambda fl: sysvipc.shmget(obj["key"], obj["size"], fl))
        ds = sysvipc.shm_stat(shmid)
        ds.perm.uid, ds.perm.gid, ds.perm.mode = obj["uid"], obj["gid"], obj["mode"]
        sysvipc.shmctl(shmid, sysvipc.IPC_SET, ds)
        addr = sysvipc.shmat(shmid, 0)
        try:
            with ctypes_view(addr, obj["length"]) as view:
                fd = os.open(self.images.path(DATA), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if os.preadv(fd, [view], obj["data_off"]) != obj["length"]:
                        raise RestoreError(f"{DATA}: short read at {obj['data_off']}")
                finally:
                    os.close(fd)
        finally:
            sysvipc.shmdt(addr)
        if obj.get("locked"):
            sysvipc.shmctl(shmid, sysvipc.SHM_LOCK)

    def _make_sem(self, obj: dict[str, Any]) -> None:
        values = [int(x) for x in obj["values"]]
        semid = self._new("sem", obj, lambda fl: sysvipc.semget(obj["key"], len(values), fl))
        sysvipc.set_sem_values(semid, values)
        sysvipc.sem_set_perm(semid, obj["uid"], obj["gid"], obj["mode"])

    def _make_msg(self, obj: dict[str, Any]) -> None:
        msqid = self._new("msg", obj, lambda fl: sysvipc.msgget(obj["key"], fl))
        buf = ctypes.create_string_buffer(8 + sysvipc.MSGMAX_TEXT)
        while sysvipc.msg_stat(msqid).qnum:  # a queue left behind: emptied first
            sysvipc.msg_take(msqid, buf)
        ds = sysvipc.msg_stat(msqid)
        ds.qbytes = max(int(obj["qbytes"]), ds.qbytes)
        ds.perm.uid, ds.perm.gid, ds.perm.mode = obj["uid"], obj["gid"], obj["mode"]
        sysvipc.msgctl(msqid, sysvipc.IPC_SET, ds)
        for mtype, text in obj["messages"]:
            raw = bytes.fromhex(text)
            ctypes.c_long.from_buffer(buf).value = mtype
            ctypes.memmove(ctypes.addressof(buf) + 8, raw, len(raw))
            sysvipc.msgsnd(msqid, buf, len(raw))

    def finish(self) -> None:
        """Once every process attached its segments: remove those removed at dump."""
        for obj in self.saved.get("shm", []):
            if obj.get("dest"):
                sysvipc.shmctl(obj["id"], sysvipc.IPC_RMID)
        self.made.clear()

    def undo(self) -> None:
        """The restore failed: remove what was made here."""
        for kind, ident in reversed(self.made):
            try:
                {"shm": lambda i: sysvipc.shmctl(i, sysvipc.IPC_RMID),
                 "sem": sysvipc.sem_rmid,
                 "msg": lambda i: sysvipc.msgctl(i, sysvipc.IPC_RMID)}[kind](ident)
            except OSError as e:
                log.warning("cannot remove SysV %s %d: %s", kind, ident, e.strerror)
        self.made.clear()


def _describe(kind: str, obj: dict[str, Any]) -> str:
    name = {"shm": "shared memory segment", "sem": "semaphore set", "msg": "message queue"}
    return f"SysV {name[kind]} {obj['id']} (key {obj['key']:#x})"


def _same(kind: str, obj: dict[str, Any], there: sysvipc.Entry) -> bool:
    """Whether ``there`` is the object ``obj`` left behind by the dumped tree."""
    if (there.key, there.uid, there.gid) != (obj["key"], obj["uid"], obj["gid"]):
        return False
    if kind == "shm":
        return there.extra["size"] == obj["size"]
    if kind == "sem":
        return there.extra["nsems"] == len(obj["values"])
    return True
