"""SysV IPC of this IPC namespace: the /proc/sysvipc tables parsed, and the shm, sem
and msg calls (by ctypes) with the structures they take, for x86_64."""

from __future__ import annotations

import ctypes
import os

from .record import dataclass

IPC_CREAT, IPC_EXCL, IPC_NOWAIT = 0o1000, 0o2000, 0o4000
IPC_RMID, IPC_SET, IPC_STAT = 0, 1, 2
SHM_RDONLY, SHM_EXEC = 0o10000, 0o100000
SHM_LOCK = 11
SHM_DEST, SHM_LOCKED = 0o1000, 0o2000  # in the mode /proc/sysvipc/shm shows
GETPID, GETALL, SETALL = 11, 13, 17
MSG_STAT_ANY, MSG_COPY = 13, 0o40000
MSGMAX_TEXT = 1 << 16  # the largest message text read back (msgmax is 8192 by default)

NEXT_ID = {"shm": "/proc/sys/kernel/shm_next_id", "sem": "/proc/sys/kernel/sem_next_id",
           "msg": "/proc/sys/kernel/msg_next_id"}

_libc = ctypes.CDLL(None, use_errno=True)
for _name, _args, _res in (
        ("shmget", (ctypes.c_int, ctypes.c_size_t, ctypes.c_int), ctypes.c_int),
        ("shmat", (ctypes.c_int, ctypes.c_void_p, ctypes.c_int), ctypes.c_void_p),
        ("shmdt", (ctypes.c_void_p,), ctypes.c_int),
        ("shmctl", (ctypes.c_int, ctypes.c_int, ctypes.c_void_p), ctypes.c_int),
        ("semget", (ctypes.c_int, ctypes.c_int, ctypes.c_int), ctypes.c_int),
        ("semctl", (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p), ctypes.c_int),
        ("msgget", (ctypes.c_int, ctypes.c_int), ctypes.c_int),
        ("msgctl", (ctypes.c_int, ctypes.c_int, ctypes.c_void_p), ctypes.c_int),
        ("msgsnd", (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int),
         ctypes.c_int),
        ("msgrcv", (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long,
                    ctypes.c_int), ctypes.c_ssize_t)):
    getattr(_libc, _name).argtypes = _args
    getattr(_libc, _name).restype = _res


class IpcPerm(ctypes.Structure):
    """struct ipc_perm (glibc, x86_64)."""

    _fields_ = [("key", ctypes.c_int), ("uid", ctypes.c_uint), ("gid", ctypes.c_uint),
                ("cuid", ctypes.c_uint), ("cgid", ctypes.c_uint), ("mode", ctypes.c_ushort),
                ("pad1", ctypes.c_ushort), ("seq", ctypes.c_ushort), ("pad2", ctypes.c_ushort),
                ("reserved1", ctypes.c_ulong), ("reserved2", ctypes.c_ulong)]


class ShmidDs(ctypes.Structure):
    _fields_ = [("perm", IpcPerm), ("segsz", ctypes.c_size_t), ("atime", ctypes.c_long),
                ("dtime", ctypes.c_long), ("ctime", ctypes.c_long), ("cpid", ctypes.c_int),
                ("lpid", ctypes.c_int), ("nattch", ctypes.c_ulong),
                ("reserved", ctypes.c_ulong * 2)]


class SemidDs(ctypes.Structure):
    _fields_ = [("perm", IpcPerm), ("otime", ctypes.c_long), ("reserved1", ctypes.c_ulong),
                ("ctime", ctypes.c_long), ("reserved2", ctypes.c_ulong),
                ("nsems", ctypes.c_ulong), ("reserved", ctypes.c_ulong * 2)]


class MsqidDs(ctypes.Structure):
    _fields_ = [("perm", IpcPerm), ("stime", ctypes.c_long), ("rtime", ctypes.c_long),
                ("ctime", ctypes.c_long), ("cbytes", ctypes.c_ulong), ("qnum", ctypes.c_ulong),
                ("qbytes", ctypes.c_ulong), ("lspid", ctypes.c_int), ("lrpid", ctypes.c_int),
                ("reserved", ctypes.c_ulong * 2)]


def _check(res: int, name: str) -> int:
    if res == -1 or res is None:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return res


@dataclass(frozen=True)
class Entry:
    """A row of /proc/sysvipc/{shm,sem,msg}: the fields every kind has, and the others
    by name (``size``, ``nattch``, ``cpid``, ``lpid``; ``nsems``; ``qnum``,
    ``cbytes``, ``lspid``, ``lrpid``)."""

    key: int
    id: int
    mode: int
    uid: int
    gid: int
    cuid: int
    cgid: int
    extra: dict[str, int]


def table(kind: str) -> dict[int, Entry]:
    """The objects of ``kind`` ("shm", "sem", "msg") of this IPC namespace, by id."""
    out: dict[int, Entry] = {}
    with open(f"/proc/sysvipc/{kind}") as f:
        names = f.readline().split()
        for line in f:
            row = dict(zip(names, line.split(), strict=False))
            ident = "shmid" if kind == "shm" else "semid" if kind == "sem" else "msqid"
            extra = {k: int(v) for k, v in row.items()
                     if k not in ("key", ident, "perms", "uid", "gid", "cuid", "cgid")}
            e = Entry(int(row["key"]), int(row[ident]), int(row["perms"], 8), int(row["uid"]),
                      int(row["gid"]), int(row["cuid"]), int(row["cgid"]), extra)
            out[e.id] = e
    return out


def set_next_id(kind: str, ident: int) -> None:
    """The id the next object of ``kind`` gets (CONFIG_CHECKPOINT_RESTORE)."""
    with open(NEXT_ID[kind], "w") as f:
        f.write(str(ident))


def shmget(key: int, size: int, flags: int) -> int:
    return _check(_libc.shmget(key, size, flags), "shmget")


def shmat(shmid: int, flags: int) -> int:
    addr = _libc.shmat(shmid, None, flags)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        err = ctypes.get_errno()
        raise OSError(err, f"shmat: {os.strerror(err)}")
    return int(addr)


def shmdt(addr: int) -> None:
    _check(_libc.shmdt(addr), "shmdt")


def shm_stat(shmid: int) -> ShmidDs:
    ds = ShmidDs()
    _check(_libc.shmctl(shmid, IPC_STAT, ctypes.byref(ds)), "shmctl(IPC_STAT)")
    return ds


def shmctl(shmid: int, cmd: int, ds: ShmidDs | None = None) -> None:
    _check(_libc.shmctl(shmid, cmd, ctypes.byref(ds) if ds is not None else None), "shmctl")


def semget(key: int, nsems: int, flags: int) -> int:
    return _check(_libc.semget(key, nsems, flags), "semget")


def sem_values(semid: int, nsems: int) -> list[int]:
    vals = (ctypes.c_ushort * nsems)()
    _check(_libc.semctl(semid, 0, GETALL, vals), "semctl(GETALL)")
    return list(vals)


def sem_pids(semid: int, nsems: int) -> list[int]:
    """The last process that operated on each semaphore of the set."""
    return [_check(_libc.semctl(semid, i, GETPID, None), "semctl(GETPID)")
            for i in range(nsems)]


def set_sem_values(semid: int, values: list[int]) -> None:
    vals = (ctypes.c_ushort * len(values))(*values)
    _check(_libc.semctl(semid, 0, SETALL, vals), "semctl(SETALL)")


def sem_set_perm(semid: int, uid: int, gid: int, mode: int) -> None:
    ds = SemidDs()
    _check(_libc.semctl(semid, 0, IPC_STAT, ctypes.byref(ds)), "semctl(IPC_STAT)")
    ds.perm.uid, ds.perm.gid, ds.perm.mode = uid, gid, mode
    _check(_libc.semctl(semid, 0, IPC_SET, ctypes.byref(ds)), "semctl(IPC_SET)")


def sem_rmid(semid: int) -> None:
    _check(_libc.semctl(semid, 0, IPC_RMID, None), "semctl(IPC_RMID)")


def msgget(key: int, flags: int) -> int:
    return _check(_libc.msgget(key, flags), "msgget")


def msg_stat(msqid: int) -> MsqidDs:
    ds = MsqidDs()
    _check(_libc.msgctl(msqid, IPC_STAT, ctypes.byref(ds)), "msgctl(IPC_STAT)")
    return ds


def msgctl(msqid: int, cmd: int, ds: MsqidDs | None = None) -> None:
    _check(_libc.msgctl(msqid, cmd, ctypes.byref(ds) if ds is not None else None), "msgctl")


def msg_copy(msqid: int, index: int, buf: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
    """Message ``index`` of the queue, copied (MSG_COPY) into ``buf`` (mtype, then
    text), not taken from the queue: (mtype, text length)."""
    n = _libc.msgrcv(msqid, buf, len(buf) - 8, index, MSG_COPY | IPC_NOWAIT)
    _check(n, "msgrcv(MSG_COPY)")
    return ctypes.c_long.from_buffer(buf).value, n


def msg_take(msqid: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    """Take the first message of the queue (without waiting); its text length."""
    return _check(_libc.msgrcv(msqid, buf, len(buf) - 8, 0, IPC_NOWAIT), "msgrcv")


def msgsnd(msqid: int, buf: ctypes.Array[ctypes.c_char], length: int) -> None:
    _check(_libc.msgsnd(msqid, buf, length, IPC_NOWAIT), "msgsnd")

