"""Threads of a process: what each has of its own, saved per thread and restored in
threads created under their old TIDs.

What each thread has of its own is saved per thread: registers and xstate,
blocked mask, signals queued for it alone, alternate signal stack, name, rseq
area, tid address, robust futex list, CPU affinity, scheduling, parent-death
signal, credentials and seccomp (task.dump_own). Everything else (memory,
files, signal handlers...) is the process's and is saved once, with its first
thread.

At restore the process is rebuilt as a single thread first; every other
thread is then created inside it by an injected ``clone3`` with ``set_tid``,
so each gets its old TID, and ``PTRACE_O_TRACECLONE`` keeps the new thread
stopped under ckpt until its own state is loaded.
"""

from __future__ import annotations

import ctypes
import os
import struct

from ..errors import RestoreError, UnsupportedError
from ..kernel import libc, procfs, ptrace
from ..kernel.inject import BATCH_ENTRY, Injector, SignalBatch, raw_runs
from ..log import logger
from ..schema import PID, U64, List, Obj
from . import cpu, creds, nspids, signals, task

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.thread")

THREAD_FLAGS = (libc.CLONE_VM | libc.CLONE_FS | libc.CLONE_FILES | libc.CLONE_SIGHAND
                | libc.CLONE_THREAD | libc.CLONE_SYSVSEM)


# What ``dump`` writes: one entry of core-PID.json's threads.
SCHEMA = Obj(tid=PID, cpu=cpu.SCHEMA, blocked=U64, pending=List(signals.SIGINFO, max=1 << 16),
             altstack=signals.ALTSTACK, own=task.OWN)


# Bytes of the scratch area each thread's injected calls write into at dump: its own
# values (task.OWN_SLOT), then its alternate signal stack.
_SLOT = 64
# Then, apart, the table of its calls as one batch (inject.SignalBatch): room for them,
# the calls that end it, and what follows.
_TABLE_ENTRIES = 12
_QUERY = 0xFFFFFFFF  # personality's argument that only reads it
_TABLE = (_TABLE_ENTRIES + 1) * BATCH_ENTRY


def dump_all(pid: int, threads: list[tuple[Injector, ptrace.UserRegs, int, procfs.Status]],
             scratch: int, scratch_size: int) -> list[dict[str, Any]]:
    """The state of the frozen threads of process ``pid`` but its first: for each, an
    injector running in it, and its registers, blocked mask and status as it was frozen
    (credentials and seccomp mode do not change while it is). What
    only injected calls tell is read in all of them at once, each thread running its
    calls one after the other while the others run theirs (inject.raw_runs; as many
    threads at once as the scratch area has slots for)."""
    out: list[dict[str, Any]] = []
    trips = sum(inj.trips for inj, *_ in threads)
    per_round = max(1, scratch_size // (_SLOT + _TABLE))
    mine = procfs.status(os.getpid())  # ckpt's own, which each thread's are checked with
    persona = procfs.personality(pid) if threads else 0  # the process's (its first thread's)
    for first in range(0, len(threads), per_round):
        part = threads[first:first + per_round]
        slots = [scratch + i * _SLOT for i in range(len(part))]
        tables = scratch + len(part) * _SLOT
        for i, (inj, _regs, blocked, st) in enumerate(part):
            _batch_in(inj, tables + i * _TABLE, blocked, st)
        results = raw_runs([(inj, [*task.own_queries(slot),
                                   signals.altstack_query(slot + task.OWN_SLOT),
                                   ("personality", (_QUERY,))])
                            for (inj, _regs, _blocked, _st), slot in zip(part, slots,
                                                                          strict=True)])
        raw = part[0][0].read(scratch, len(part) * _SLOT)  # the threads' memory is one
        for (inj, regs, blocked, st), slot, res in zip(part, slots, results, strict=True):
            tid = inj.pid
            at = slot - scratch
            _check_personality(pid, tid, res[-1], persona)
            own = task.own_values(tid, res[:-2], raw[at:at + task.OWN_SLOT])
            at += task.OWN_SLOT
            stack = signals.altstack_value(tid, res[-2], raw[at:at + signals.ALTSTACK_SIZE])
            out.append({"tid": tid, "cpu": cpu.dump(tid, regs), "blocked": blocked,
                        "pending": signals.pending_private(tid), "altstack": stack,
                        "own": task.dump_own(pid, tid, inj, scratch, own, mine, st)})
    if threads:
        log.info("process %d: the own state of its %d other threads read in %d round trips",
                 pid, len(threads), sum(inj.trips for inj, *_ in threads) - trips)
    return out


def _check_personality(pid: int, tid: int, got: int, persona: int) -> None:
    """Refuse a thread whose personality (``got``: what personality(0xffffffff) gave in
    it) is not its process's: personality() sets the calling thread's only, and restored
    threads take the process's."""
    if got != persona and not -4096 < got < 0:
        raise UnsupportedError(f"thread {tid} of process {pid} has personality {got:#x}, not "
                               f"its process's ({persona:#x}); ckpt restores one personality "
                               "for all threads")


def _batch_in(inj: Injector, table: int, blocked: int, st: procfs.Status) -> None:
    """Let the thread ``inj`` runs in take its run of calls as one batch, its table at
    ``table`` (inject.SignalBatch), ended by a signal the process ignores and the
    thread, whose mask is ``blocked``, does not block; if there is one, and the
    parking area is whole (``Injector.area``)."""
    quiet = signals.ignored_signal(st.sig_ignored, st.sig_caught, blocked)
    if inj.area is not None and quiet is not None:
        inj.signal_batch = SignalBatch(table, _TABLE_ENTRIES, quiet)


_CLONE_SLOT = 128  # scratch bytes of one new thread's clone3 arguments, then its TIDs
_TIDS_AT = 96  # where in it the TIDs are (struct clone_args is 88 bytes)
CLONES_AT_ONCE = 128  # threads one batch makes (their slots: 16 KiB of the scratch memory)


def _create(leader: Injector, scratch: int, jobs: list[tuple[int, int]]) -> list[Injector]:
    """The threads ``jobs`` (``(tid, tid_address)`` each) made by ``leader``'s thread in
    one batch of injected clone3 calls (Injector.clone_all), their arguments in slots of
    the scratch memory written at once; an injector for each, taken in its first stop."""
    blob = bytearray()
    calls = []
    for k, (tid, tid_address) in enumerate(jobs):
        area = scratch + k * _CLONE_SLOT
        tids = nspids.levels(tid)
        flags = THREAD_FLAGS | (libc.CLONE_CHILD_CLEARTID if tid_address else 0)
        args = libc.CloneArgs(flags=flags, child_tid=tid_address, set_tid=area + _TIDS_AT,
                              set_tid_size=len(tids))
        blob += bytes(args).ljust(_TIDS_AT, b"\0")
        blob += struct.pack(f"<{len(tids)}i", *tids).ljust(_CLONE_SLOT - _TIDS_AT, b"\0")
        calls.append(("clone3", (area, ctypes.sizeof(args))))
    leader.write(scratch, bytes(blob))
    ptrace.set_options(leader.pid, leader.options | ptrace.PTRACE_O_TRACECLONE)
    try:
        results = leader.clone_all(calls)
    finally:
        ptrace.set_options(leader.pid, leader.options)
    for (tid, _), got in zip(jobs, results, strict=True):
        if got != nspids.levels(tid)[0]:
            why = os.strerror(-got) if -4096 < got < 0 else f"came back as {got}"
            raise RestoreError(f"process {leader.pid}: cannot create thread {tid}: {why}")
    made = []
    for tid, _ in jobs:
        stop = ptrace.wait_stop(tid)
        if stop.exited or stop.event != ptrace.PTRACE_EVENT_STOP:
            raise RestoreError(f"process {leader.pid}: new thread {tid}: {stop.describe()}")
        made.append(Injector(tid, leader.site, ptrace.get_regs(tid), options=leader.options))
    return made


def restore(tgid: int, inj: Injector, scratch: int, state: dict[str, Any],
            leader: dict[str, Any]) -> None:
    """What the new thread ``inj`` runs in has of its own, but registers and mask; what
    it inherited from its restored ``leader`` (its own state) is not set again.

    Its queued signals are queued by itself: the kernel refuses to queue a
    thread-directed siginfo (SI_TKILL) to another thread. They stay pending, as
    the new thread has every signal blocked until ``finish``."""
    task.restore_own(inj.pid, inj, scratch, state["own"], cloned_from=leader)
    signals.restore_altstack(inj, scratch, state["altstack"])
    signals.queue_private(inj, scratch, tgid, inj.pid, state["pending"])


def create_all(leader: Injector, scratch: int, states: list[dict[str, Any]],
               leader_own: dict[str, Any]) -> None:
    """Create every other thread of the process ``leader`` runs in (its own state
    ``leader_own`` restored), each a copy of it, and ``restore`` it. The leader makes
    them in one batch of injections (``_create``); what only a thread itself can set
    (``task.own_calls``) is injected in all of them at once, each thread running its
    calls one after the other while the others run theirs (inject.raw_runs)."""
    made: list[Injector] = []
    try:
        for first in range(0, len(states), CLONES_AT_ONCE):
            made += _create(leader, scratch, [(s["tid"], s["own"]["tid_address"])
                                              for s in states[first:first + CLONES_AT_ONCE]])
        calls = [task.own_calls(state["own"]) for state in states]
        for inj, c, results in zip(made, calls, raw_runs(list(zip(made, calls, strict=True))),
                                   strict=True):
            for (name, _), res in zip(c, results, strict=True):
                if -4096 < res < 0:
                    raise RestoreError(f"thread {inj.pid} of process {leader.pid}: {name}: "
                                       f"{os.strerror(-res)}")
        for inj, state in zip(made, states, strict=True):
            restore(leader.pid, inj, scratch, state, leader_own)
    finally:
        for inj in made:
            inj.close()


def open_thread(leader: Injector, tid: int) -> Injector:
    """An injector running in thread ``tid`` of the process ``leader`` runs in."""
    return Injector(tid, leader.site, ptrace.get_regs(tid), options=leader.options)


def restore_final_all(leader: Injector, scratch: int, states: list[dict[str, Any]],
                      pdeathsig: bool = True) -> None:
    """Each other thread's credentials and parent-death signal (the kernel keeps them
    per thread), before the first thread's own (``task.restore_final``); nothing is
    injected in a thread that has them already (ckpt's, as root)."""
    known: dict[str, bool] = {}
    for state in states:
        own = state["own"]
        if not (pdeathsig and own["pdeathsig"]) and _has_creds(leader.pid, state, known):
            continue
        with open_thread(leader, state["tid"]) as inj:
            task.restore_final_own(leader.pid, inj, scratch, state["own"], pdeathsig)


def _has_creds(pid: int, state: dict[str, Any], known: dict[str, bool]) -> bool:
    """Whether the new thread ``state`` of process ``pid`` has its saved credentials
    already (creds.unchanged). A thread under no seccomp filter still has those of the
    leader it was cloned from: the answer for one holds for every other saved with the
    same credentials (``known``, by them)."""
    own = state["own"]
    if own["seccomp"]["mode"]:
        return creds.unchanged(pid, state["tid"], own["creds"])
    key = repr(own["creds"])
    if key not in known:
        known[key] = creds.unchanged(pid, state["tid"], own["creds"])
    return known[key]


def finish_all(states: list[dict[str, Any]]) -> None:
    for state in states:
        finish(state)


def finish(state: dict[str, Any]) -> None:
    """Registers and blocked mask last: the thread then runs as saved once detached."""
    cpu.restore(state["tid"], state["cpu"])
    ptrace.set_sigmask(state["tid"], state["blocked"])
