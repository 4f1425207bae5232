"""Per-task state that is neither memory, registers, signals nor files:
rlimits, umask, cwd, comm, personality, rseq, tid address, robust list,
credentials, parent-death signal, no_new_privs and the seccomp filters.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import logging
import os
from typing import Any

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import libc, procfs, ptrace
from ..kernel.inject import Injector

log = logging.getLogger("ckpt.task")

RSEQ_SIG = 0x53053053  # the signature glibc registers its rseq area with on x86


def dump(pid: int, inj: Injector, scratch: int, st: procfs.Status) -> dict[str, Any]:
    """``st`` is /proc/PID/status read while the task was frozen."""
    root = procfs.root(pid)
    if root != "/":
        raise UnsupportedError(f"process {pid} runs in a chroot ({root}); not supported yet")
    if st.umask is None:
        raise DumpError(f"process {pid} has no umask in /proc/{pid}/status (exiting?)")
    seccomp_mode = st.seccomp
    if seccomp_mode == 1:
        raise UnsupportedError(f"process {pid} is in strict seccomp mode; not supported")
    filters = ptrace.seccomp_filters(pid) if seccomp_mode == 2 else []
    inj.call("prctl", libc.PR_GET_PDEATHSIG, scratch)
    pdeathsig = int.from_bytes(inj.read(scratch, 4), "little")
    dumpable = inj.call("prctl", libc.PR_GET_DUMPABLE)
    return {
        **dump_own(pid, inj, scratch),
        "cwd": procfs.cwd(pid),
        "umask": st.umask,
        "personality": procfs.personality(pid),
        "rlimits": {n: list(libc.prlimit(pid, i)) for i, n in enumerate(procfs.LIMIT_NAMES)},
        "uids": st.uids, "gids": st.gids, "groups": st.groups,
        "no_new_privs": st.no_new_privs,
        "seccomp": [base64.b64encode(f).decode() for f in reversed(filters)],
        "pdeathsig": pdeathsig,
        "dumpable": dumpable,
    }


def dump_own(tid: int, inj: Injector, scratch: int) -> dict[str, Any]:
    """What each thread has of its own: comm, rseq, tid address, robust list, affinity.
    ``inj`` runs in thread ``tid``."""
    rseq = _rseq_config(tid)
    inj.call("prctl", libc.PR_GET_TID_ADDRESS, scratch)
    robust_head, robust_len = libc.get_robust_list(tid)
    return {
        "comm": procfs.thread_comm(inj.pid, tid),
        "rseq": [rseq.rseq_abi_pointer, rseq.rseq_abi_size, rseq.signature],
        "tid_address": int.from_bytes(inj.read(scratch, 8), "little"),
        "robust_list": [robust_head, robust_len],
        "affinity": sorted(os.sched_getaffinity(tid)),
    }


def restore_own(tid: int, inj: Injector, scratch: int, t: dict[str, Any]) -> None:
    """Inverse of ``dump_own``; ``inj`` runs in thread ``tid``."""
    inj.write(scratch, os.fsencode(t["comm"])[:15] + b"\0")
    inj.call("prctl", libc.PR_SET_NAME, scratch)
    inj.call("set_tid_address", t["tid_address"])
    head, size = t["robust_list"]
    if head:
        inj.call("set_robust_list", head, size)
    ptr, size, sig = t["rseq"]
    if ptr:
        inj.call("rseq", ptr, size, 0, sig)
    try:
        os.sched_setaffinity(tid, t["affinity"])
    except OSError as e:
        log.warning("thread %d: CPU affinity %s not restored: %s", tid, t["affinity"],
                    e.strerror)


def _rseq_config(tid: int) -> ptrace.RseqConfig:
    """The rseq area of ``tid``; an empty one, with a warning, on kernels before 5.13,
    which cannot tell (PTRACE_GET_RSEQ_CONFIGURATION). The restored thread then runs
    without rseq: glibc's sched_getcpu() may report a stale CPU, nothing worse."""
    try:
        return ptrace.get_rseq(tid)
    except OSError as e:
        if e.errno not in (errno.EIO, errno.EINVAL):
            raise
        log.warning("thread %d: this kernel cannot report rseq areas (Linux 5.13); "
                    "its rseq registration is not saved", tid)
        return ptrace.RseqConfig()


def _own_rseq_area(regs: ptrace.UserRegs) -> tuple[int, int, int]:
    """Where glibc (2.35+) registered the rseq area of a fresh fork of ckpt: at
    ``__rseq_offset`` from its thread pointer. (0, 0, 0) if this libc registers none."""
    lib = ctypes.CDLL(None)
    try:
        offset = ctypes.c_long.in_dll(lib, "__rseq_offset").value
        size = ctypes.c_uint.in_dll(lib, "__rseq_size").value
    except ValueError:
        return 0, 0, 0
    if not size:
        return 0, 0, 0
    return regs.fs_base + offset, max(size, 32), RSEQ_SIG


def unregister_rseq(pid: int, inj: Injector) -> None:
    """Drop the fresh child's rseq area before its memory goes away (it would crash)."""
    try:
        conf = ptrace.get_rseq(pid)
        area = (conf.rseq_abi_pointer, conf.rseq_abi_size, conf.signature)
    except OSError as e:  # before Linux 5.13: the child is ckpt's fork, ask ckpt's libc
        if e.errno not in (errno.EIO, errno.EINVAL):
            raise
        area = _own_rseq_area(ptrace.get_regs(pid))
    if area[0]:
        res = inj.raw("rseq", area[0], area[1], libc.RSEQ_FLAG_UNREGISTER, area[2])
        if res < 0 and res != -errno.EINVAL:  # EINVAL: none registered there
            raise OSError(-res, f"rseq unregister in process {pid}: {os.strerror(-res)}")


def restore(pid: int, inj: Injector, scratch: int, t: dict[str, Any]) -> None:
    """Everything but credentials and seccomp, which come last (see ``restore_final``)."""
    inj.write_string(scratch, t["cwd"])
    try:
        inj.call("chdir", scratch)
    except OSError as e:
        raise RestoreError(f"working directory {t['cwd']}: {os.strerror(e.errno)}") from None
    inj.call("umask", t["umask"])
    inj.call("personality", t["personality"])
    for i, name in enumerate(procfs.LIMIT_NAMES):
        cur, hard = t["rlimits"][name]
        _, my_hard = libc.prlimit(pid, i)
        if hard > my_hard:
            log.warning("rlimit %s: hard limit %d is above the restorer's %d "
                        "(no CAP_SYS_RESOURCE); keeping %d", name, hard, my_hard, my_hard)
            hard = my_hard
            cur = min(cur, hard)
        libc.prlimit(pid, i, (cur, hard))
    restore_own(pid, inj, scratch, t)
    inj.call("prctl", libc.PR_SET_PDEATHSIG, t["pdeathsig"])
    if t["dumpable"] != 1:
        inj.call("prctl", libc.PR_SET_DUMPABLE, t["dumpable"])


def restore_final(pid: int, inj: Injector, scratch: int, t: dict[str, Any]) -> None:
    """Credentials, then no_new_privs and seccomp: after these, injected calls may be refused."""
    groups = t["groups"]
    inj.write(scratch, b"".join(g.to_bytes(4, "little") for g in groups) or b"\0")
    inj.call("setgroups", len(groups), scratch)
    inj.call("setresgid", *t["gids"][:3])
    inj.call("setresuid", *t["uids"][:3])
    if t["no_new_privs"]:
        inj.call("prctl", libc.PR_SET_NO_NEW_PRIVS, 1)
    for prog in t["seccomp"]:
        raw = base64.b64decode(prog)
        inj.write(scratch + 64, raw)
        fprog = ctypes.c_uint16(len(raw) // 8).value.to_bytes(2, "little") + b"\0" * 6 + \
            (scratch + 64).to_bytes(8, "little")
        inj.write(scratch, fprog)
        inj.call("seccomp", libc.SECCOMP_SET_MODE_FILTER, 0, scratch)
