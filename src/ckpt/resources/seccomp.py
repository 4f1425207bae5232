"""seccomp, per thread: strict mode, or the thread's filters with the flags the
kernel keeps of them (SECCOMP_FILTER_FLAG_LOG).

ckpt works in a process under seccomp with its filters suspended
(PTRACE_O_SUSPEND_SECCOMP): at dump a filter could refuse or kill on the
syscalls ckpt injects, and strict mode would kill the process on the first
one. At restore the filters are installed after everything else but the
credentials, and the suspension lasts until ckpt lets the process go.

Threads that got their filters together (SECCOMP_FILTER_FLAG_TSYNC) share one
filter chain; a restore shares them again: the filters every thread has, in
the same order from the first, are installed once by the first thread with
TSYNC, then each thread's own on top, so that a later TSYNC by the process
still finds its threads in step.
"""

from __future__ import annotations

import binascii
import struct

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc, procfs, ptrace
from ..kernel.inject import Injector
from ..schema import B64, U32, Int, List, Obj, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MODE_STRICT, MODE_FILTER = 1, 2
KEPT_FLAGS = 2  # SECCOMP_FILTER_FLAG_LOG: the only flag the kernel reports
_BPF_RET_K, _RET_ACTION_FULL, _RET_USER_NOTIF = 0x06, 0xFFFF0000, 0x7FC00000

# What ``dump`` writes (docs/image-format.md, task.seccomp): BPF_MAXINSNS of 8 bytes.
SCHEMA = Obj(mode=Int(0, 2), filters=List(Tup(B64(4096 * 8), U32), max=1 << 12))


def dump(pid: int, tid: int, st: procfs.Status | None = None) -> dict[str, Any]:
    """Thread ``tid``'s mode and filters, oldest first: ``[base64 of its sock_filter
    array, flags]`` each; ``st``: the thread's status, if read already."""
    mode = (st or procfs.thread_status(pid, tid)).seccomp
    filters: list[list[Any]] = []
    if mode == MODE_FILTER:
        progs = ptrace.seccomp_filters(tid)  # newest first
        for prog in progs:
            _refuse_user_notif(pid, tid, prog)
        filters = [[binascii.b2a_base64(prog, newline=False).decode(), ptrace.seccomp_flags(tid, i)]
                   for i, prog in enumerate(progs)][::-1]
    return {"mode": mode, "filters": filters}


def _refuse_user_notif(pid: int, tid: int, prog: bytes) -> None:
    """Refuse a filter that hands syscalls to a supervisor (a ``return`` of
    SECCOMP_RET_USER_NOTIF): its listener, an fd the supervisor got when the filter was
    installed, cannot be attached to a filter installed again, whose notifying syscalls
    would then fail with ENOSYS."""
    for off in range(0, len(prog) - 7, 8):
        code, _jt, _jf, k = struct.unpack_from("<HBBI", prog, off)
        if code == _BPF_RET_K and k & _RET_ACTION_FULL == _RET_USER_NOTIF:
            raise UnsupportedError(f"thread {tid} of process {pid}: a seccomp filter hands "
                                   "syscalls to a supervisor (SECCOMP_RET_USER_NOTIF), whose "
                                   "listener ckpt cannot attach again; not supported")


def used(core: dict[str, Any]) -> bool:
    """True if any thread of the process saved in ``core`` is under seccomp."""
    states = [core["task"]["seccomp"]] + [t["own"]["seccomp"] for t in core.get("threads", [])]
    return any(s["mode"] for s in states)


def shared_prefix(states: list[dict[str, Any]]) -> int:
    """How many filters, from the oldest, every thread has alike (0 for one thread)."""
    if len(states) < 2 or any(s["mode"] != MODE_FILTER for s in states):
        return 0
    n = 0
    chains = [s["filters"] for s in states]
    while all(len(c) > n and c[n] == chains[0][n] for c in chains):
        n += 1
    return n


def restore(leader: Injector, scratch: int, leader_state: dict[str, Any],
            threads: list[tuple[int, dict[str, Any]]],
            open_thread: Callable[[int], Injector]) -> None:
    """Install every thread's seccomp state: ``leader`` runs in the first thread,
    ``threads`` are (tid, state) of the others, ``open_thread(tid)`` gives an injector
    running in one of them."""
    shared = shared_prefix([leader_state] + [s for _, s in threads])
    _install(leader, scratch, leader_state, 0, shared, tsync=True)
    for tid, state in threads:
        with open_thread(tid) as inj:
            _install(inj, scratch, state, shared, None)
    _install(leader, scratch, leader_state, shared, None)


def _install(inj: Injector, scratch: int, state: dict[str, Any], start: int,
             stop: int | None, tsync: bool = False) -> None:
    """Filters ``start:stop`` of ``state`` in the thread ``inj`` runs in; strict mode
    when the slice reaches the end."""
    for raw_b64, flags in state["filters"][start:stop]:
        raw = binascii.a2b_base64(raw_b64)
        inj.write(scratch + 64, raw)
        fprog = (len(raw) // 8).to_bytes(2, "little") + b"\0" * 6 + \
            (scratch + 64).to_bytes(8, "little")
        inj.write(scratch, fprog)
        mode_flags = (flags & KEPT_FLAGS) | (libc.SECCOMP_FILTER_FLAG_TSYNC if tsync else 0)
        got = inj.call("seccomp", libc.SECCOMP_SET_MODE_FILTER, mode_flags, scratch)
        if got:
            raise RestoreError(f"process {inj.pid}: thread {got} could not share its seccomp "
                               "filters (TSYNC)")
    if stop is None and state["mode"] == MODE_STRICT:
        inj.call("seccomp", libc.SECCOMP_SET_MODE_STRICT, 0, 0)

