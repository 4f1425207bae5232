"""Per-task state that is neither memory, registers, signals nor files: rlimits,
umask, cwd, personality, oom_score_adj, coredump_filter, the prctl knobs of the process (dumpable,
THP disabled, child subreaper, memory-deny-write-execute, KSM merging),
membarrier registrations; and what each thread has of its own (``dump_own``):
comm, rseq, tid address, robust list, CPU affinity, scheduling, timer slack, TSC
access, machine-check kill policy, parent-death signal, credentials and seccomp.

Credentials and seccomp come last at restore (``restore_final``): a change of
credentials resets the parent-death signal and the process's dumpable flag, so
those are set after them.
"""

from __future__ import annotations

import ctypes
import errno
import os

from ..errors import DumpError, RestoreError, UnsupportedError
from ..kernel import libc, procfs, ptrace
from ..kernel.inject import InjectionError, Injector, raw_runs
from ..log import logger
from ..schema import PATH, U32, U64, Int, List, Obj, Opt, Str, Tup
from . import creds, ghost, keyring, ldt, numa, sched, seccomp

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

log = logger("ckpt.task")

RSEQ_SIG = 0x53053053  # the signature glibc registers its rseq area with on x86
CAP_SYS_RESOURCE = 24
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42
PR_GET_TSC, PR_SET_TSC = 25, 26
PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30
PR_MCE_KILL, PR_MCE_KILL_GET = 33, 34
PR_MCE_KILL_CLEAR, PR_MCE_KILL_SET, PR_MCE_KILL_DEFAULT = 0, 1, 2
PR_SET_MDWE, PR_GET_MDWE = 65, 66
PR_SET_MEMORY_MERGE, PR_GET_MEMORY_MERGE = 67, 68
SUID_DUMP_ROOT = 2
COREDUMP_FILTER_DEFAULT = 0x33  # the kernel's (anonymous, ELF headers, huge pages)
# membarrier: the registrations a process holds (6.3+), each re-done by its own command.
MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9
MEMBARRIER_REGISTER_COMMANDS = (1 << 2, 1 << 4, 1 << 6, 1 << 8)


# What ``dump_own`` writes: a thread's own (docs/image-format.md, core-PID.json).
OWN = Obj(
    comm=Str(64), rseq=Tup(U64, U32, U32), tid_address=U64, robust_list=Tup(U64, U64),
    affinity=List(Int(0, 1 << 16), max=1 << 16), sched=sched.SCHEMA, timerslack=U64,
    tsc=Int(0, 2), mce_kill=Int(0, 3), pdeathsig=Int(0, 64), creds=creds.SCHEMA,
    seccomp=seccomp.SCHEMA, mempolicy=Opt(numa.SCHEMA),  # absent: the default policy
)
# What ``dump`` writes: the first thread's own and the process's (core-PID.json's task).
SCHEMA = OWN.extend(
    cwd=PATH, cwd_ghost=Opt(ghost.SCHEMA), root=Opt(PATH), umask=Int(0, 0o777),
    personality=U32, rlimits=Obj({n: Tup(U64, U64) for n in procfs.LIMIT_NAMES}),
    oom_score_adj=Int(-1000, 1000), dumpable=Int(0, 2), thp_disable=U64,
    child_subreaper=Int(0, 1), membarrier=U64, mdwe=U64, memory_merge=Int(0, 1),
    coredump_filter=Opt(Int(0, 0x1ff)),  # absent: the kernel's default
    keyring=Opt(keyring.SCHEMA),  # absent: the session keyring of whoever restores it
    ldt=Opt(ldt.SCHEMA),  # absent: no LDT
    autogroup=Opt(Int(-20, 19)),  # absent: its autogroup's nice value is 0
)
AUTOGROUP_FEATURE = "autogroup"  # the image feature of ``autogroup``


def dump(pid: int, inj: Injector, scratch: int, st: procfs.Status) -> dict[str, Any]:
    """``st`` is /proc/PID/status read while the task was frozen."""
    root = procfs.root(pid)
    if root.endswith(" (deleted)") or not os.path.isdir(root):
        raise UnsupportedError(f"process {pid} runs in a chroot whose directory {root} was "
                               "removed; not supported")
    if st.umask is None:
        raise DumpError(f"process {pid} has no umask in /proc/{pid}/status (exiting?)")
    rlimits = procfs.limits(pid)
    _check_rlimits(pid, rlimits)
    oom = procfs.oom_score_adj(pid)
    _check_oom_score_adj(pid, oom)
    # the leader's own values and the process's, in one run of calls (one round trip
    # when the injector batches: Injector.raw_all)
    own = own_queries(scratch)
    subreaper_at = scratch + OWN_SLOT
    results = inj.raw_all([*own, ("prctl", (libc.PR_GET_DUMPABLE,)),
                           ("prctl", (libc.PR_GET_CHILD_SUBREAPER, subreaper_at)),
                           ("prctl", (PR_GET_THP_DISABLE,)),
                           ("membarrier", (MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0)),
                           ("prctl", (PR_GET_MDWE,)), ("prctl", (PR_GET_MEMORY_MERGE,)),
                           ldt.PROBE])
    raw = inj.read(scratch, OWN_SLOT + 4)
    got = own_values(pid, results[:len(own)], raw[:OWN_SLOT])
    dumpable, subreaper_res, thp, membarrier, mdwe, merge, ldt_probe = results[len(own):]
    dumpable = inj.checked("prctl", dumpable)
    if dumpable == SUID_DUMP_ROOT and _suid_dumpable() != SUID_DUMP_ROOT:
        raise UnsupportedError(
            f"process {pid} is dumpable by root only (dumpable 2, from fs.suid_dumpable=2 "
            "when it changed credentials), which a restore cannot set now that "
            f"fs.suid_dumpable is {_suid_dumpable()}")
    inj.checked("prctl", subreaper_res)
    subreaper = int.from_bytes(raw[OWN_SLOT:], "little")
    core_filter = procfs.coredump_filter(pid)
    autogroup = procfs.autogroup_nice(pid)
    return {
        **dump_own(pid, pid, inj, scratch, got, st=st),
        "cwd": _cwd(pid),
        **({"root": root} if root != "/" else {}),
        "umask": st.umask,
        "personality": procfs.personality(pid),
        "rlimits": {n: list(lim) for n, lim in zip(procfs.LIMIT_NAMES, rlimits, strict=True)},
        "oom_score_adj": oom,
        "dumpable": dumpable,
        "thp_disable": inj.checked("prctl", thp),
        "child_subreaper": subreaper,
        "membarrier": _membarrier_registrations(pid, membarrier),
        "mdwe": _optional_prctl(pid, PR_GET_MDWE, mdwe),  # Linux 6.3
        "memory_merge": _optional_prctl(pid, PR_GET_MEMORY_MERGE, merge),  # Linux 6.4
        **({"coredump_filter": core_filter} if core_filter != COREDUMP_FILTER_DEFAULT
           else {}),
        **({"autogroup": autogroup} if autogroup else {}),
        # last: a table is read over the whole scratch area (64 KiB)
        **ldt.dump(pid, inj, scratch, ldt_probe),
    }


def _optional_prctl(pid: int, option: int, got: int) -> int:
    """A prctl value (``got``: the injected call's raw result) this kernel may not know
    (EINVAL): 0, what every process has there."""
    if got == -errno.EINVAL:
        return 0
    if got < 0:
        raise OSError(-got, f"prctl {option} in process {pid}: {os.strerror(-got)}")
    return got


def _cwd(pid: int) -> str:
    """The working directory. One that is the /proc folder of a process that has
    exited cannot even be opened (/proc answers "no such process"): refused."""
    link = procfs.cwd(pid)
    try:
        os.close(os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except ProcessLookupError:
        if procfs.status(pid).state not in ("Z", "X"):
            raise UnsupportedError(f"process {pid}: its working directory {link} is the /proc "
                                   "folder of a process that has exited; not supported"
                                   ) from None
    except OSError:
        pass  # another trouble: for the steps that use it to report
    return link


def _check_rlimits(pid: int, rlimits: list[tuple[int, int]]) -> None:
    """Without CAP_SYS_RESOURCE ckpt cannot raise a hard limit above its own: a process
    with a higher one could not get it back, so it is refused (not lowered)."""
    if _has_cap(CAP_SYS_RESOURCE):
        return
    for i, (name, (_, hard)) in enumerate(zip(procfs.LIMIT_NAMES, rlimits, strict=True)):
        mine = libc.prlimit(0, i)[1]
        if hard > mine:
            raise UnsupportedError(
                f"process {pid}: its hard {name} limit {_limit_text(hard)} is above ckpt's "
                f"own ({_limit_text(mine)}), and ckpt lacks CAP_SYS_RESOURCE to raise it at "
                f"restore; run ckpt with a hard {name} limit of at least {_limit_text(hard)}")


def _check_oom_score_adj(pid: int, value: int) -> None:
    """A new process inherits ckpt's oom_score_adj; lowering it needs CAP_SYS_RESOURCE."""
    mine = procfs.oom_score_adj(os.getpid())
    if value < mine and not _has_cap(CAP_SYS_RESOURCE):
        raise UnsupportedError(
            f"process {pid} has oom_score_adj {value}, below ckpt's own ({mine}): a restore "
            "could not set it without CAP_SYS_RESOURCE; run ckpt with an oom_score_adj of "
            f"{value} or lower")


def _limit_text(value: int) -> str:
    return "unlimited" if value == procfs.RLIM_INFINITY else str(value)


def _has_cap(cap: int) -> bool:
    return bool(procfs.status(os.getpid()).cap_effective >> cap & 1)


def _suid_dumpable() -> int:
    with open("/proc/sys/fs/suid_dumpable") as f:
        return int(f.read())


def _membarrier_registrations(pid: int, got: int) -> int:
    """The membarrier commands the process registered for (a mask of REGISTER_*), from
    the raw result ``got`` of an injected GET_REGISTRATIONS."""
    if got >= 0:
        return got
    if got == -errno.EINVAL:  # before Linux 6.3: registrations cannot be read
        log.warning("process %d: this kernel cannot report membarrier registrations "
                    "(Linux 6.3); any are not restored", pid)
        return 0
    raise OSError(-got, f"process {pid}: membarrier registrations: {os.strerror(-got)}")


# What only a thread itself tells, by an injected prctl: (key, option, where in the
# thread's slot of the scratch area the value is written, its size), or the value is
# the call's result (None, 0).
_OWN_CALLS = (
    ("tid_address", libc.PR_GET_TID_ADDRESS, 0, 8),
    ("pdeathsig", libc.PR_GET_PDEATHSIG, 8, 4),
    ("tsc", PR_GET_TSC, 16, 4),
    ("timerslack", PR_GET_TIMERSLACK, None, 0),
    ("mce_kill", PR_MCE_KILL_GET, None, 0),
    ("securebits", creds.PR_GET_SECUREBITS, None, 0),
)
OWN_SLOT = 32  # bytes of the scratch area each thread's calls write into
_MEMPOLICY_AT = 20  # where in it get_mempolicy writes the thread's NUMA policy mode


def own_queries(slot: int) -> list[tuple[str, tuple[int, ...]]]:
    """The injected calls that read what ``_OWN_CALLS`` names and the thread's NUMA policy
    mode, for a thread whose OWN_SLOT bytes of the scratch area are at ``slot``."""
    return [("prctl", (option,) if at is None else (option, slot + at))
            for _key, option, at, _size in _OWN_CALLS] + \
        [("get_mempolicy", (slot + _MEMPOLICY_AT, 0, 0, 0, 0))]


def own_values(tid: int, results: Sequence[int], raw: bytes) -> dict[str, int]:
    """What ``own_queries`` read in thread ``tid``: their ``results``, in order, and
    ``raw``, the OWN_SLOT bytes of its slot after them."""
    got: dict[str, int] = {}
    for (key, _option, at, size), res in zip(_OWN_CALLS, results, strict=False):
        if -4096 < res < 0:
            raise InjectionError(-res, f"prctl {key} in thread {tid}: {os.strerror(-res)}")
        got[key] = res if at is None else int.from_bytes(raw[at:at + size], "little")
    numa_known = results[len(_OWN_CALLS)] == 0  # (ENOSYS without CONFIG_NUMA)
    got["mempolicy"] = (int.from_bytes(raw[_MEMPOLICY_AT:_MEMPOLICY_AT + 4], "little")
                        if numa_known else 0)
    return got


def own_injected(injs: Sequence[Injector], slots: Sequence[int]) -> list[dict[str, int]]:
    """The values ``own_queries`` read, for several threads of one process at once
    (``injs`` run in them; ``slots``, each one's OWN_SLOT bytes of the scratch area),
    the threads' round trips overlapping (inject.raw_runs)."""
    results = raw_runs([(inj, own_queries(slot)) for inj, slot in zip(injs, slots, strict=True)])
    if not slots:
        return []
    raw = injs[0].read(slots[0], slots[-1] + OWN_SLOT - slots[0])  # their memory is one
    return [own_values(inj.pid, res, raw[slot - slots[0]:slot - slots[0] + OWN_SLOT])
            for inj, slot, res in zip(injs, slots, results, strict=True)]


def dump_own(pid: int, tid: int, inj: Injector, scratch: int,
             got: dict[str, int] | None = None, mine: procfs.Status | None = None,
             st: procfs.Status | None = None) -> dict[str, Any]:
    """What each thread has of its own: comm, rseq, tid address, robust list, affinity,
    scheduling, parent-death signal, credentials, seccomp. ``inj`` runs in thread
    ``tid`` of process ``pid``; ``got``: what ``own_injected`` read in it already;
    ``mine``: ckpt's own status, if read already; ``st``: the thread's, read while it
    was frozen."""
    if got is None:
        got = own_injected([inj], [scratch])[0]
    rseq = _rseq_config(tid)
    robust_head, robust_len = libc.get_robust_list(tid)
    st = st or procfs.thread_status(pid, tid)
    cred = creds.dump(pid, tid, got["securebits"], st)
    creds.check(pid, tid, cred, mine)
    scheduling = sched.dump(tid)
    sched.check(pid, tid, scheduling, mine)
    policy = numa.thread_policy(inj, scratch, got["mempolicy"])
    return {
        "comm": procfs.thread_comm(pid, tid),
        "rseq": [rseq.rseq_abi_pointer, rseq.rseq_abi_size, rseq.signature],
        "tid_address": got["tid_address"],
        "robust_list": [robust_head, robust_len],
        "affinity": sorted(os.sched_getaffinity(tid)),
        "sched": scheduling,
        "timerslack": got["timerslack"],
        "tsc": got["tsc"],
        "mce_kill": got["mce_kill"],
        "pdeathsig": got["pdeathsig"],
        "creds": cred,
        "seccomp": seccomp.dump(pid, tid, st),
        **({"mempolicy": policy} if policy is not None else {}),
    }


def restore_own(tid: int, inj: Injector, scratch: int, t: dict[str, Any],
                cloned_from: dict[str, Any] | None = None) -> None:
    """Inverse of ``dump_own`` but for the parent-death signal, credentials and seccomp
    (``restore_final_own``); ``inj`` runs in thread ``tid``. What the thread has already
    is not set again (an injected call each): its name and timer slack as /proc shows
    them; for a thread cloned by its restored leader (``cloned_from``: the leader's
    state), its name when it is the leader's (not even read), its tid address (given to
    clone3) and the machine-check and TSC modes it inherited, and its robust list and
    rseq area, which ``thread.create_all`` gives every new thread at once
    (``own_calls``)."""
    inherited = cloned_from or {}
    if t["comm"] != inherited.get("comm") and procfs.thread_comm(tid, tid) != t["comm"]:
        inj.later("prctl", libc.PR_SET_NAME, 0, data=os.fsencode(t["comm"])[:15] + b"\0",
                  data_at=1, scratch=scratch)
    if cloned_from is None:
        inj.later("set_tid_address", t["tid_address"])
        for name, args in own_calls(t):
            inj.later(name, *args)
    try:
        os.sched_setaffinity(tid, t["affinity"])
    except OSError as e:
        log.warning("thread %d: CPU affinity %s not restored: %s", tid, t["affinity"],
                    e.strerror)
    if _timerslack(tid) != t["timerslack"]:
        inj.call("prctl", PR_SET_TIMERSLACK, t["timerslack"])  # before a real-time policy
    if t["tsc"] and t["tsc"] != inherited.get("tsc"):
        inj.later("prctl", PR_SET_TSC, t["tsc"])
    if t["mce_kill"] == inherited.get("mce_kill"):
        pass
    elif t["mce_kill"] == PR_MCE_KILL_DEFAULT:
        inj.later("prctl", PR_MCE_KILL, PR_MCE_KILL_CLEAR)
    else:
        inj.later("prctl", PR_MCE_KILL, PR_MCE_KILL_SET, t["mce_kill"])
    sched.restore(tid, t["sched"])
    policy = t.get("mempolicy")
    if policy != inherited.get("mempolicy"):  # (a new process: its creator's, the default)
        numa.set_thread_policy(inj, scratch, policy)


def own_calls(t: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """The calls only the thread itself can make for what ``t`` holds: its robust futex
    list and its rseq area."""
    out: list[tuple[str, tuple[int, ...]]] = []
    head, size = t["robust_list"]
    if head:
        out.append(("set_robust_list", (head, size)))
    ptr, size, sig = t["rseq"]
    if ptr:
        out.append(("rseq", (ptr, size, 0, sig)))
    return out


def _timerslack(tid: int) -> int | None:
    """The timer slack of thread ``tid`` as /proc shows it to ckpt (root), None if not."""
    try:
        with open(f"/proc/{tid}/timerslack_ns", "rb") as f:  # a thread's too, by its TID
            return int(f.read())
    except (OSError, ValueError):
        return None


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
    """Drop the fresh child's rseq area before its memory goes away (it would crash):
    queued (``Injector.later``), to run with the next calls."""
    try:
        conf = ptrace.get_rseq(pid)
        area = (conf.rseq_abi_pointer, conf.rseq_abi_size, conf.signature)
    except OSError as e:  # before Linux 5.13: the child is ckpt's fork, ask ckpt's libc
        if e.errno not in (errno.EIO, errno.EINVAL):
            raise
        area = _own_rseq_area(ptrace.get_regs(pid))
    if area[0]:  # EINVAL: none registered there
        inj.later("rseq", area[0], area[1], libc.RSEQ_FLAG_UNREGISTER, area[2],
                  ok=(errno.EINVAL,))


def restore(pid: int, inj: Injector, scratch: int, t: dict[str, Any], fs: bool = True
            ) -> None:
    """Everything but credentials and seccomp, which come last (``restore_final``).
    ``fs``: the working directory, root (chroot) and umask too, unless the process
    shares them with its parent, restored already (CLONE_FS)."""
    if fs:
        _restore_fs(pid, inj, scratch, t)
    inj.later("personality", t["personality"])
    _restore_rlimits(pid, t["rlimits"])
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(str(t["oom_score_adj"]))
    core_filter = t.get("coredump_filter", COREDUMP_FILTER_DEFAULT)
    if procfs.coredump_filter(pid) != core_filter:  # else inherited from ckpt already
        with open(f"/proc/{pid}/coredump_filter", "w") as f:
            f.write(f"{core_filter:#x}")
    thp = t["thp_disable"]
    inj.later("prctl", PR_SET_THP_DISABLE, thp & 1, thp & ~1)
    if t["child_subreaper"]:
        inj.later("prctl", libc.PR_SET_CHILD_SUBREAPER, 1)
    for cmd in MEMBARRIER_REGISTER_COMMANDS:
        if t["membarrier"] & cmd:
            inj.later("membarrier", cmd, 0, 0)
    if t["memory_merge"]:  # KSM for all its memory, which is in place now
        inj.later("prctl", PR_SET_MEMORY_MERGE, 1)
    if t["mdwe"]:  # no mapping may become writable and executable from here on
        inj.later("prctl", PR_SET_MDWE, t["mdwe"])
    if "ldt" in t:  # its children cloned already: they do not inherit it
        ldt.restore(inj, t["ldt"], scratch)
    restore_own(pid, inj, scratch, t)


def _restore_rlimits(pid: int, rlimits: dict[str, list[int]]) -> None:
    """Set from ckpt while the new process still has ckpt's credentials (once they are
    another user's, only CAP_SYS_RESOURCE could). A hard limit above ckpt's own is
    refused, as the dump refuses it: ckpt does not lower limits silently."""
    for i, name in enumerate(procfs.LIMIT_NAMES):
        cur, hard = rlimits[name]
        try:
            libc.prlimit(pid, i, (cur, hard))
        except OSError as e:
            raise RestoreError(
                f"process {pid}: cannot set its {name} limit to {_limit_text(cur)} (hard "
                f"{_limit_text(hard)}): {e.strerror}; ckpt's own hard limit is "
                f"{_limit_text(libc.prlimit(0, i)[1])}") from None


def restore_final(pid: int, inj: Injector, scratch: int, t: dict[str, Any],
                  pdeathsig: bool = True, alone: bool = False) -> None:
    """The first thread's credentials, then what a change of credentials resets: the
    process's dumpable flag and the thread's parent-death signal (``pdeathsig`` False
    leaves it unset). Its other threads and seccomp are done (thread.py, seccomp.py);
    ``alone``: it has none."""
    restore_final_own(pid, inj, scratch, t, pdeathsig,
                      before_drop=lambda changed: _restore_dumpable(inj, t, changed or not alone))
    if "autogroup" in t:
        _restore_autogroup(pid, t["autogroup"])


def _restore_autogroup(pid: int, nice: int) -> None:
    """The nice value of the autogroup the process is in: the one its session made at
    its ``setsid`` (every process of a session shares it), unless that session is
    ckpt's own (a shell job's: its autogroup is the caller's, left alone)."""
    if os.getsid(pid) == os.getsid(0):
        log.warning("process %d: its autogroup's nice value %d is not restored: it is in "
                    "ckpt's session, whose autogroup is the caller's", pid, nice)
        return
    with open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


def restore_final_own(pid: int, inj: Injector, scratch: int, own: dict[str, Any],
                      pdeathsig: bool = True, before_drop: Any = None) -> None:
    """A thread's credentials, then its parent-death signal."""
    creds.restore(pid, inj, scratch, own["creds"], before_drop)
    if pdeathsig and own["pdeathsig"]:
        inj.call("prctl", libc.PR_SET_PDEATHSIG, own["pdeathsig"])


def _restore_dumpable(inj: Injector, t: dict[str, Any], changed: bool = True) -> None:
    """Set once every thread has its credentials (each change resets it). Dumpable 2
    cannot be set by prctl; the kernel gives it on a change of credentials when
    fs.suid_dumpable is 2 (checked at dump): a passing change of fsuid makes one.
    Unless ``changed`` (a thread's credentials changed since the fork), the process has
    ckpt's, which the fork copied: nothing to set when that is the saved one."""
    if not changed and t["dumpable"] == libc.syscall("prctl", libc.PR_GET_DUMPABLE):
        return
    if t["dumpable"] != SUID_DUMP_ROOT:
        inj.call("prctl", libc.PR_SET_DUMPABLE, t["dumpable"])
    elif inj.call("prctl", libc.PR_GET_DUMPABLE) != SUID_DUMP_ROOT:
        fsuid = t["creds"]["uids"][3]
        inj.call("setfsuid", fsuid ^ 1)
        inj.call("setfsuid", fsuid)


def _restore_fs(pid: int, inj: Injector, scratch: int, t: dict[str, Any]) -> None:
    """cwd, then the root (chroot keeps the cwd, which may lie outside it), umask."""
    if "cwd_ghost" not in t:  # a removed one is entered before (ghost.cwd_source)
        inj.later("chdir", 0, data=os.fsencode(t["cwd"]) + b"\0", scratch=scratch,
                  failed=lambda err: RestoreError(f"process {pid}: working directory "
                                                  f"{t['cwd']}: {os.strerror(err)}"))
    if t.get("root"):
        inj.later("chroot", 0, data=os.fsencode(t["root"]) + b"\0", scratch=scratch,
                  failed=lambda err: RestoreError(f"process {pid}: cannot chroot to "
                                                  f"{t['root']}: {os.strerror(err)}"))
    inj.later("umask", t["umask"])


def check_root(pid: int, t: dict[str, Any]) -> None:
    """Before anything is created: the directory a chrooted process had as its root."""
    root = t.get("root")
    if root is not None and (not isinstance(root, str) or not os.path.isdir(root)):
        raise RestoreError(f"process {pid} ran in a chroot at {root}, which is not a "
                           "directory now")
