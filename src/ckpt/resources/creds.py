"""Credentials of a thread: uids, gids, supplementary groups, the five capability
sets (effective, permitted, inheritable, bounding, ambient), securebits,
no_new_privs and the audit loginuid.

The kernel keeps all of them per thread, so they are saved and restored per
thread. A restored thread starts with ckpt's credentials (it is a fork of
ckpt) and is lowered to the saved ones in an order the kernel allows, ending
with exactly what was saved: never more. What ckpt itself lacks (a capability,
the right to set a loginuid) it could not give back, so the dump refuses it
(``check``).
"""

from __future__ import annotations

import ctypes
import os

from ..errors import RestoreError, UnsupportedError
from ..kernel import interrupts, libc, procfs
from ..kernel.inject import Injector
from ..kernel.scoped import once
from ..schema import U32, U64, UID, Int, List, Null, Obj, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
    "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
    "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
    "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 6, 7, 8
SETS = ("eff", "prm", "inh", "bnd", "amb")

PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_GET_SECUREBITS, PR_SET_SECUREBITS = 27, 28
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
AUDIT_UID_UNSET = 0xFFFFFFFF


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int32)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def cap_names(mask: int) -> str:
    """"CAP_SYS_ADMIN, CAP_NET_RAW" for the capabilities in ``mask``."""
    return ", ".join("CAP_" + (CAP_NAMES[i] if i < len(CAP_NAMES) else str(i)).upper()
                     for i in range(64) if mask >> i & 1)


def _who(pid: int, tid: int) -> str:
    return f"process {pid}" if tid == pid else f"thread {tid} of process {pid}"


# ---------------------------------------------------------------- dump

IDS = Tup(UID, UID, UID, UID)  # real, effective, saved, filesystem
# What ``dump`` writes (docs/image-format.md, task.creds).
SCHEMA = Obj(uids=IDS, gids=IDS, groups=List(UID, max=65536),
             caps=Obj(eff=U64, prm=U64, inh=U64, bnd=U64, amb=U64),
             securebits=U32, no_new_privs=Int(0, 1), loginuid=Null(U32))


def dump(pid: int, tid: int, securebits: int, st: procfs.Status | None = None
         ) -> dict[str, Any]:
    """The credentials of thread ``tid`` of the frozen process ``pid``; ``securebits``
    as the thread itself told them (an injected ``prctl``: /proc does not show them);
    ``st``: the thread's status, if read already."""
    st = st or procfs.thread_status(pid, tid)
    return {
        "uids": st.uids, "gids": st.gids, "groups": st.groups,
        "caps": {"eff": st.cap_effective, "prm": st.cap_permitted,
                 "inh": st.cap_inheritable, "bnd": st.cap_bounding, "amb": st.cap_ambient},
        "securebits": securebits,
        "no_new_privs": st.no_new_privs,
        "loginuid": _loginuid(pid, tid),
    }


def _loginuid(pid: int, tid: int) -> int | None:
    """The audit loginuid, None on kernels without audit."""
    try:
        return int(procfs.thread_file(pid, tid, "loginuid"))
    except FileNotFoundError:
        return None


def check(pid: int, tid: int, c: dict[str, Any], mine: procfs.Status | None = None) -> None:
    """Refuse, at dump, credentials a restore by this ckpt could not give back (``mine``:
    ckpt's own status, if read already)."""
    mine = mine or procfs.status(os.getpid())
    caps = c["caps"]
    missing = ((caps["bnd"] & ~mine.cap_bounding) | (caps["prm"] & ~mine.cap_permitted)
               | (caps["inh"] & ~(mine.cap_inheritable | mine.cap_bounding)))
    if missing:
        raise UnsupportedError(
            f"{_who(pid, tid)} has capabilities ckpt itself lacks ({cap_names(missing)}): "
            "a restore could not give them back; run ckpt with them")
    needed = (1 << CAP_SETUID) | (1 << CAP_SETGID) | (1 << CAP_SETPCAP)
    if needed & ~mine.cap_effective:
        raise UnsupportedError(
            f"ckpt lacks {cap_names(needed & ~mine.cap_effective)}, which it needs to give "
            f"{_who(pid, tid)} its credentials back at restore")
    wanted = c.get("loginuid")
    if wanted is not None and wanted != _own_loginuid(os.getpid()) \
            and not _can_set_loginuid(wanted):
        raise UnsupportedError(
            f"{_who(pid, tid)} has audit loginuid {wanted}, which ckpt cannot set in a new "
            "process (ckpt's own loginuid is set and the kernel makes it immutable or "
            "ckpt lacks CAP_AUDIT_CONTROL)")


@once
def _own_loginuid(pid: int) -> int | None:
    """ckpt's own loginuid (``pid``, its PID: a fork of ckpt reads its own)."""
    return _loginuid(pid, pid)


@once
def _can_set_loginuid(value: int) -> bool:
    """Try it in a throwaway child of ckpt: the kernel's rules depend on audit settings
    that cannot be read from /proc."""
    pid = interrupts.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open("/proc/self/loginuid", os.O_WRONLY)
            os.write(fd, str(value).encode())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------- restore

def restore(pid: int, inj: Injector, scratch: int, c: dict[str, Any],
            before_drop: Callable[[bool], None] | None = None) -> None:
    """Lower the thread ``inj`` runs in, which has ckpt's credentials, to ``c``.

    The order is the kernel's: the loginuid and the ids while root may set them,
    with capabilities kept across the uid change (KEEP_CAPS); the effective set
    raised again for what follows; fs ids (setresuid resets them); bounding set,
    ambient set (its capabilities must be permitted and inheritable, and raising
    may not yet be locked), ``before_drop`` (the leader sets the process's
    dumpable there; called with whether the credentials changed), securebits, and
    last the three sets. No privilege is left
    that ``c`` does not have. A thread that has ``c`` already (ckpt's credentials, as
    root) gets none of it (``unchanged``)."""
    tid = inj.pid
    if unchanged(pid, tid, c):
        if before_drop is not None:
            before_drop(False)
        return
    _set_loginuid(inj, scratch, c.get("loginuid"))
    groups = c["groups"]
    inj.write(scratch, b"".join(g.to_bytes(4, "little") for g in groups) or b"\0")
    inj.call("setgroups", len(groups), scratch)
    inj.call("prctl", PR_SET_KEEPCAPS, 1)
    inj.call("setresgid", *c["gids"][:3])
    inj.call("setresuid", *c["uids"][:3])
    now = procfs.thread_status(pid, tid)
    caps = c["caps"]
    _capset(inj, scratch, now.cap_permitted, now.cap_permitted, caps["inh"])
    if len(c["gids"]) > 3:
        inj.call("setfsgid", c["gids"][3])
    if len(c["uids"]) > 3:
        inj.call("setfsuid", c["uids"][3])
    drop = now.cap_bounding & ~caps["bnd"]
    for cap in range(64):
        if drop >> cap & 1:
            inj.call("prctl", PR_CAPBSET_DROP, cap)
    for cap in range(64):
        if caps["amb"] >> cap & 1:
            inj.call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
    if before_drop is not None:
        before_drop(True)
    inj.call("prctl", PR_SET_SECUREBITS, c["securebits"])
    _capset(inj, scratch, caps["eff"], caps["prm"], caps["inh"])
    if c["no_new_privs"]:
        inj.call("prctl", libc.PR_SET_NO_NEW_PRIVS, 1)
    _verify(pid, tid, c)


def _capset(inj: Injector, scratch: int, eff: int, prm: int, inh: int) -> None:
    head = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(eff & 0xFFFFFFFF, prm & 0xFFFFFFFF, inh & 0xFFFFFFFF),
                          _CapData(eff >> 32, prm >> 32, inh >> 32))
    inj.write(scratch, bytes(head) + bytes(data))
    inj.call("capset", scratch, scratch + ctypes.sizeof(head))


def _set_loginuid(inj: Injector, scratch: int, value: int | None) -> None:
    """Write the loginuid from inside the thread (the kernel takes it from no one else)."""
    if value is None:
        return
    path = f"/proc/{inj.pid}/loginuid"
    with open(path) as f:
        if int(f.read()) == value:
            return
    n = inj.write_string(scratch, "/proc/thread-self/loginuid")
    fd = inj.call("open", scratch, os.O_WRONLY)
    try:
        text = str(value).encode()
        inj.write(scratch + n, text)
        inj.call("write", fd, scratch + n, len(text))
    finally:
        inj.call("close", fd)


def unchanged(pid: int, tid: int, c: dict[str, Any]) -> bool:
    """Whether thread ``tid`` of a new process has exactly ``c`` already: it has ckpt's
    credentials (securebits included) until they are lowered, and those may be the saved
    ones (a process of root's)."""
    if c["securebits"] != _own_securebits():
        return False
    if c.get("loginuid") is not None and c["loginuid"] != _loginuid(pid, tid):
        return False
    got, want = _compared(pid, tid, c)
    return got == want


@once
def _own_securebits() -> int:
    """ckpt's own securebits, which every process it forks starts with."""
    return libc.syscall("prctl", PR_GET_SECUREBITS)


def _compared(pid: int, tid: int, c: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What thread ``tid`` has, and what ``c`` says, of what /proc shows."""
    st = procfs.thread_status(pid, tid)
    got = {"uids": st.uids, "gids": st.gids, "groups": sorted(st.groups),
           "eff": st.cap_effective, "prm": st.cap_permitted, "inh": st.cap_inheritable,
           "bnd": st.cap_bounding, "amb": st.cap_ambient, "no_new_privs": st.no_new_privs}
    want = {"uids": c["uids"], "gids": c["gids"], "groups": sorted(c["groups"]),
            **c["caps"], "no_new_privs": c["no_new_privs"]}
    return got, want


def _verify(pid: int, tid: int, c: dict[str, Any]) -> None:
    """The thread has exactly the saved credentials (the kernel changes some as a side
    effect of others: this is where a wrong order would show)."""
    got, want = _compared(pid, tid, c)
    diff = [k for k in want if got[k] != want[k]]
    if diff:
        raise RestoreError(f"{_who(pid, tid)}: credentials came back different "
                           f"({', '.join(f'{k} {got[k]} instead of {want[k]}' for k in diff)})")
