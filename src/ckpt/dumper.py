"""The dump driver: freeze a process, save every kind of its state, then kill,
stop or release it.

A dump that fails at any step gives the process back exactly as it was: the
scratch page is unmapped, its registers and signal mask are put back and it is
detached. Only after every image file and the folder are fsynced is the
process killed. ckpt itself may be killed at any moment: between injected
syscalls each task holds its own registers and mask (kernel/inject.py), and a
note of what is left to undo lets the next ckpt finish the job (recovery.py).

A pre-dump (``pre_dump``) saves only memory pages, and lets the processes run
on as soon as they are copied. With a parent (``prev_images_dir``) either
saves only the pages that changed since (the pages package); with ``page_server`` the
images go over TCP to a ``ckpt page-server`` (page_server.py).
"""

from __future__ import annotations

import errno
import os
import select
import time

from . import faults, guard, recovery, standins
from .errors import CkptError, DumpError, TransientError, UnsupportedError
from .hooks import ignore
from .images import ImageWriter
from .kernel import interrupts, libc, nsenter, procfs, ptrace, treeroot, vdso
from .kernel.inject import (
    BATCH_ENTRY,
    PARK_AREA,
    PARK_CODE,
    Injector,
    SignalBatch,
    find_syscall_site,
    resumable,
    settle_all,
)
from .kernel.record import dataclass, field
from .kernel.scoped import Scope
from .log import logger
from .pages import forked
from .pages.save import DumpMemory, ForkParent
from .resources import (
    cgroups,
    cpu,
    files,
    ghost,
    keyring,
    landlock,
    ldt,
    locks,
    mem,
    namespaces,
    nspids,
    sharing,
    signals,
    sysv,
    task,
    thread,
    timers,
    treens,
)
from .resources.filekind import TcpFlags
from .version import __version__

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:  # imported where used: most dumps need none of them
    from collections.abc import Callable
    from typing import Any

    from . import netlock, new_pidns
    from .hooks import Notify

log = logger("ckpt.dump")

SCRATCH_SIZE = 64 << 10  # (a whole LDT: resources/ldt.py TABLE_BYTES)
BATCH_ROOM = 8 << 10  # its last bytes: the table of a run of calls (inject.SignalBatch)


@dataclass
class DumpResult:
    """What a dump did, for callers of the API."""

    pid: int
    images_dir: str
    pages_bytes: int
    seconds: float
    fate: str  # "killed", "running" or "stopped"
    pids: list[int] = field(default_factory=list)
    frozen_seconds: float = 0.0  # from the first freeze to the release (or the kill)
    parent_bytes: int = 0  # page data left in the parent images
    image_bytes: int = 0  # every image file written (or sent), the inventory aside
    freezing_seconds: float = 0.0  # seizing and stopping the tree
    memory_seconds: float = 0.0  # saving the tasks (their memory above all)


def _traced_by(tracer: int) -> str:
    """Why a process cannot be seized: its tracer (a debugger, strace), named."""
    if not tracer:
        return ""
    try:
        name = procfs.thread_comm(tracer, tracer)
    except (procfs.ProcessGone, OSError):
        name = "gone since"
    return (f" (already traced by {tracer}, {name}: ckpt traces the processes it dumps "
            "and does not save another tracer's hold; detach it first)")


def _fault_in_syscall() -> None:
    faults.point("dump.inject")


def _fault_in_unmap() -> None:
    faults.point("dump.inject")
    faults.point("dump.unmap")


class _Frozen:
    """A seized, interrupted task and what is needed to let it go unchanged."""

    def __init__(self, pid: int):
        self.pid = pid
        self.regs0: ptrace.UserRegs | None = None
        self.mask0: int | None = None
        self.inj: Injector | None = None
        self.attached = False
        self.stop_signal = 0  # the signal of the group stop it was in (SIGSTOP...), or 0
        self.options = ptrace.INJECT_OPTIONS  # as seized (and seccomp suspended)
        self.status: procfs.Status | None = None  # /proc/TID/status, read once stopped
        # its syscall user dispatch (None: off), turned off while ckpt injects calls
        self.dispatch: ptrace.DispatchConfig | None = None
        self.dispatch_paused = False

    def freeze(self) -> bool:
        """Seize and stop the task; False if it turned out to be a zombie or gone."""
        return self.seize() and self.wait_trap() and self.hold()

    def seize(self) -> bool:
        """Seize the task and ask for its trap stop (``wait_trap`` takes it); False if it
        turned out to be a zombie or gone."""
        pid = self.pid
        try:
            ptrace.seize(pid, ptrace.INJECT_OPTIONS)
        except OSError as e:
            if e.errno == errno.ESRCH:
                return False
            if e.errno == errno.EPERM:  # (also a thread exiting: gone by now, or a zombie)
                try:
                    st = procfs.status(pid)
                except procfs.ProcessGone:
                    return False
                if st.state in ("Z", "X"):
                    return False
                raise DumpError(f"process {pid} cannot be traced{_traced_by(st.tracer_pid)}"
                                ) from None
            raise
        self.attached = True
        ptrace.interrupt(pid)
        return True

    def wait_trap(self) -> bool:
        """Take the trap stop ``seize`` asked for; False if the task exited first."""
        pid = self.pid
        while True:
            stop = ptrace.wait_stop(pid)
            if stop.exited:
                self.attached = False
                return False
            if stop.event == ptrace.PTRACE_EVENT_STOP:
                # Seized in a group stop, the trap reports the stop's signal.
                if stop.stopsig in ptrace.STOP_SIGNALS:
                    self.stop_signal = stop.stopsig
                return True
            # A signal arrived before the freeze: let it be delivered as it would have been.
            ptrace.cont(pid, stop.stopsig)

    def hold(self) -> bool:
        """In its trap stop: its registers and mask read (moved to the abort handler of
        an rseq critical section it was stopped in: cpu.rseq_aborted). Its status is
        read, and its seccomp filters suspended, once a call is to be injected in it
        (``injector``): neither the freeze of many threads nor the copy of the pages,
        which starts after it, waits for their status."""
        self.regs0 = cpu.rseq_aborted(self.pid, ptrace.get_regs(self.pid))
        self.mask0 = ptrace.get_sigmask(self.pid)
        self.dispatch = ptrace.get_dispatch(self.pid)
        return True

    def _pause_dispatch(self) -> None:
        """A thread under syscall user dispatch (Wine) whose selector blocks syscalls
        would take ckpt's injected calls for its own and get SIGSYS for each: its
        dispatch is off while ckpt works in it, put back by ``resume_dispatch`` (or,
        should ckpt die, by the next one: recovery.py)."""
        conf = self.dispatch
        if conf is None or self.dispatch_paused or not cpu.dispatches(self.pid, conf):
            return
        ptrace.set_dispatch(self.pid, ptrace.DispatchConfig())
        self.dispatch_paused = True

    def resume_dispatch(self) -> None:
        if self.dispatch is not None and self.dispatch_paused:
            try:
                ptrace.set_dispatch(self.pid, self.dispatch)
                self.dispatch_paused = False
            except OSError as e:
                log.warning("thread %d: could not put back its syscall user dispatch: %s",
                            self.pid, e)

    def _suspend_seccomp(self) -> None:
        """A task under seccomp runs ckpt's syscalls with its filters suspended: a filter
        could refuse them or kill the task, and strict mode kills it on the first one.
        Its ``status`` is read first, unless known."""
        if self.status is None:
            self.status = procfs.status(self.pid)
        mode = self.status.seccomp
        if not mode or self.options & ptrace.PTRACE_O_SUSPEND_SECCOMP:
            return
        try:
            ptrace.set_options(self.pid, self.options | ptrace.PTRACE_O_SUSPEND_SECCOMP)
        except OSError as e:
            what = "strict seccomp mode" if mode == 1 else "seccomp filters"
            raise DumpError(f"process {self.pid} runs under {what}, which ckpt cannot suspend "
                            f"while it works in the process ({e.strerror}: it needs "
                            "CAP_SYS_ADMIN and must not run under seccomp itself)") from None
        self.options |= ptrace.PTRACE_O_SUSPEND_SECCOMP

    def injector(self, site: int, parks: bool = False, area: int | None = None) -> Injector:
        """An injector for syscalls in this task, through the instruction at ``site``
        (``parks``: its parking code, written by another thread's injector, with the
        whole parking area at ``area``, if it is there); its seccomp filters suspended
        first."""
        assert self.regs0 is not None and self.mask0 is not None
        self._suspend_seccomp()
        self._pause_dispatch()
        self.inj = Injector(self.pid, site, cpu.on_release(self.regs0), mask=self.mask0,
                            options=self.options, parks=parks)
        self.inj.area = area
        self.inj.on_entry = _fault_in_syscall
        return self.inj

    @property
    def scratch(self) -> int:
        """The address of the scratch area mapped in the task."""
        assert self.inj is not None and self.inj.scratch is not None
        return self.inj.scratch[0]

    def undo(self) -> Injector | None:
        """Undo the changes made while frozen but the last (``_thaw_all`` settles the
        injector returned, if any): the scratch area unmapped, the parking code taken
        back."""
        inj, self.inj = self.inj, None
        if inj is None:  # still in the trap stop it was frozen in
            if self.regs0 is not None and cpu.on_release(self.regs0) is not self.regs0:
                try:
                    ptrace.set_regs(self.pid, cpu.on_release(self.regs0))
                except OSError as e:
                    log.warning("process %d: could not undo the freeze: %s", self.pid, e)
            return None
        inj.on_entry = _fault_in_unmap
        for undo, what in ((inj.unmap_scratch, "unmap the scratch area"),
                           (inj.unpark, "take back the parking code")):
            try:
                undo()
            except (OSError, procfs.ProcessGone) as e:
                log.warning("process %d: could not %s: %s", self.pid, what, e)
        return inj


def _thaw_all(frozen: list[_Frozen]) -> None:
    """Undo every change made while ``frozen`` (threads of one process) were: each task
    stopped as it was found, with its own registers and mask; their stops taken in one
    round trip for them all (inject.settle_all). Should that fail (a thread killed
    meanwhile), each is taken alone, its failure told."""
    injs = [inj for fr in frozen if (inj := fr.undo()) is not None]
    try:
        settle_all(injs)
    except (OSError, procfs.ProcessGone):
        for inj in injs:
            try:
                inj.settle()
            except (OSError, procfs.ProcessGone) as e:
                log.warning("process %d: could not undo the freeze: %s", inj.pid, e)
    for inj in injs:
        inj.close()
    for fr in frozen:
        fr.resume_dispatch()


@dataclass
class _Task:
    """One process of the dumped tree."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    frozen: _Frozen | None = None  # None for a zombie
    exit_status: int = 0
    ctty: int = 0  # the session's controlling terminal (a device number), 0 for none
    tpgid: int = -1  # that terminal's foreground process group
    exit_signal: int = libc.SIGCHLD  # what its parent gets when it ends (clone's)
    threads: list[_Frozen] = field(default_factory=list)  # all but the first
    shares: dict[str, int] = field(default_factory=dict)  # files_of, fs_of (sharing.py)
    fd_owner: int = 0  # the first process sharing its fd table, if another one
    job_tpgid: int = -1  # the root of a shell job: its terminal's foreground group
    zombie_as: dict[str, Any] | None = None  # a zombie's name and ids (``zombie_identity``)

    def freeze_threads(self) -> None:
        """Seize every other thread; again until no new one appeared meanwhile."""
        done = {self.pid}
        while True:
            new = [tid for tid in procfs.threads(self.pid) if tid not in done]
            if not new:
                return
            done.update(new)
            # All seized and interrupted before ckpt waits for the first: their round
            # trips overlap. Each is in ``threads`` once seized, to be let go on a failure.
            seized = [fr for fr in map(_Frozen, new) if fr.seize()]
            self.threads += seized
            stopped = [fr for fr in seized if fr.wait_trap()]
            self.threads = [fr for fr in self.threads if fr.attached]
            for fr in stopped:
                fr.hold()

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pid": self.pid, "ppid": self.ppid, "pgid": self.pgid,
                             "sid": self.sid}
        if self.ctty and self.sid == self.pid:
            d["ctty"] = self.ctty
            d["tpgid"] = self.tpgid
        elif self.job_tpgid > 0:
            d["tpgid"] = self.job_tpgid
        if self.frozen is None:
            d["zombie"] = True
            d["exit_status"] = self.exit_status
            if self.zombie_as is not None:
                d["zombie_as"] = self.zombie_as
        elif self.exit_signal != libc.SIGCHLD:
            d["exit_signal"] = self.exit_signal
        return {**d, **self.shares}


def _freeze_tree(root: int) -> list[_Task]:
    """Seize ``root`` and all its descendants, parents before children.

    A task's children are listed only once it is frozen, so no fork can slip
    through.
    """
    tasks: list[_Task] = []
    queue = [root]
    seen = {root}
    try:
        while queue:
            pid = queue.pop(0)
            _refuse_shared_vm(pid)
            fr = _Frozen(pid)
            alive = fr.freeze()
            try:
                st = procfs.stat(pid)
            except procfs.ProcessGone:
                if pid == root:
                    raise DumpError(f"process {pid} exited during the dump") from None
                continue
            if not alive and st.state not in ("Z", "X"):
                raise DumpError(f"process {pid} could not be frozen")
            task = _Task(pid, st.ppid, st.pgid, st.sid, fr if alive else None, st.exit_code,
                         st.tty_nr, st.tpgid,
                         libc.SIGCHLD if pid == root else st.exit_signal)
            if pid == root and st.sid != pid and st.tty_nr:
                task.job_tpgid = st.tpgid  # a job's own job in the foreground (its shell's)
            tasks.append(task)
            if not alive:
                _refuse_zombie_leader(pid)
                if pid == root:
                    raise DumpError(f"process {pid} is a zombie")
                if os.WCOREDUMP(st.exit_code):
                    log.warning("zombie %d dumped core; its restored zombie will not say "
                                "so to its parent (WCOREDUMP)", pid)
                task.zombie_as = zombie_identity(pid, st.comm)
                continue
            task.freeze_threads()
            for kid in sorted(procfs.children(pid)):
                if kid not in seen:
                    seen.add(kid)
                    queue.append(kid)
    except BaseException:
        _release(tasks, kill=False)
        raise
    return tasks


def _release(tasks: list[_Task], kill: bool, stop: bool = False,
             wait_exit: bool = True) -> None:
    """Thaw and detach every frozen task, or kill them all (``_exit_kill`` first), and
    wait for their exit unless not ``wait_exit`` (``_kill``). Not cut short by a signal."""
    stopped = []
    with interrupts.held():
        for t in reversed(tasks):
            fr = t.frozen
            if fr is None or not fr.attached:
                continue
            if kill:
                _kill(t, wait_exit)
            else:
                _let_go(t, stop)
                if stop or fr.stop_signal:
                    stopped.append(t.pid)
    procfs.settle_stopped(stopped)


def _exit_kill(tasks: list[_Task]) -> None:
    """Make the kernel kill every frozen task should ckpt die before it does."""
    for t in tasks:
        for fr in [t.frozen, *t.threads] if t.frozen is not None else []:
            if fr.attached:
                try:
                    ptrace.set_options(fr.pid, fr.options | ptrace.PTRACE_O_EXITKILL)
                except OSError as e:
                    log.warning("thread %d: %s", fr.pid, e)


def _let_go(t: _Task, stop: bool) -> None:
    """Thaw and detach every thread of ``t``, the first last; SIGSTOP it with ``stop``."""
    assert t.frozen is not None
    frozen = [fr for fr in [*t.threads, t.frozen] if fr.attached]
    _thaw_all(frozen)
    if stop:  # queued now, taken by the first thread let go: none runs on
        os.kill(t.pid, libc.SIGSTOP)
    for fr in frozen:
        try:
            ptrace.detach(fr.pid)
        except OSError as e:
            log.warning("thread %d: release: %s", fr.pid, e)
        fr.attached = False


def _kill(t: _Task, wait_exit: bool = True) -> None:
    """Kill ``t`` and reap its threads and itself as their tracer (its parent still
    reaps it). Its children are killed first (``_release``): the init of a PID
    namespace of the tree does not finish exiting before every process of its
    namespace is reaped, which for one ckpt traces takes ckpt's wait first.

    Not ``wait_exit``: return once SIGKILL is sent. ``t`` can never run again (the
    signal is pending before the kill returns) and exits while ckpt ends. Only for a
    ckpt command that exits right after the dump: its exit lets go of the dying tasks
    it traces, whose parent then reaps them, and a restore waits for a dumped process
    still exiting (tree.wait_dumped_exits). A ckpt that lives on (the API, RPC) waits:
    a task ckpt traces cannot be reaped by its parent until ckpt collects its exit."""
    assert t.frozen is not None
    pidfd = -1
    if wait_exit:
        try:  # before the kill, so that process_mrelease comes right after it
            pidfd = libc.pidfd_open(t.pid)
        except OSError:
            pass
    try:
        os.kill(t.pid, libc.SIGKILL)
    except OSError as e:
        log.warning("process %d: kill: %s", t.pid, e)
    else:
        _free_memory(t.pid, pidfd)
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    t.frozen.attached = False
    for th in t.threads:
        th.attached = False
    if not wait_exit:
        return
    # dead threads still traced by ckpt hold the process back; then the process, unless
    # ckpt is its parent too (the API's caller): that wait would take its exit status
    for tid in [th.pid for th in t.threads] + ([t.pid] if t.ppid != os.getpid() else []):
        try:
            os.waitpid(tid, ptrace.__WALL)
        except ChildProcessError:
            pass


def _free_memory(pid: int, pidfd: int) -> None:
    """Free the memory of killed ``pid`` (``pidfd``) from ckpt while it exits
    (process_mrelease): its exit, which the dump waits for, unmaps 1 GiB in about
    0.1-0.2 s here, half of it done on the other CPU. Only while the memory is still
    the process's: once its exit took it over (ESRCH), which with the pidfd opened
    after the kill it had done in every one of 5 dumps of 300 MiB (1 in 5 with it
    opened before), the exit frees it alone. A hint: a process sharing its memory
    with one that lives on is left to its own exit."""
    if pidfd < 0:
        return
    try:
        libc.process_mrelease(pidfd)
    except OSError as e:
        log.debug("process %d: process_mrelease: %s", pid, e)


def _outside_ids(tasks: list[_Task], shell_job: bool) -> tuple[int | None, int | None]:
    """The root's session and group that stay the restorer's: a shell job's (-j)."""
    root, pids = tasks[0], {t.pid for t in tasks}
    if not shell_job:
        return None, None
    return (root.sid if root.sid not in pids else None,
            root.pgid if root.pgid not in pids else None)


def _check_sessions(tasks: list[_Task], shell_job: bool) -> list[standins.StandIn]:
    """Refuse trees whose sessions and groups ckpt could not build again; return the
    stand-ins that make those whose leader has exited (standins.py)."""
    root = tasks[0]
    outside = _outside_ids(tasks, shell_job)
    sessions, groups = standins.leaderless([t.info() for t in tasks], outside)
    if root.sid in sessions and _alive(root.sid):
        raise DumpError(f"process {root.pid} belongs to session {root.sid} of a process "
                        "outside the dump (a shell job?); dump it with -j (--shell-job)")
    for t in tasks:
        for what, ident in (("session", t.sid), ("process group", t.pgid)):
            if ident in sessions or ident in groups:
                holder = _alive(ident)
                if holder:
                    raise UnsupportedError(
                        f"process {t.pid} is in {what} {ident}, whose leader {ident} "
                        f"({holder}) is alive outside the dumped tree: its PID would be "
                        "taken at restore; dump the tree from the leader" +
                        (", or with -j when it is the shell's" if not shell_job else ""))
    try:
        return standins.plan([t.info() for t in tasks], *outside)
    except standins.Unbuildable as e:
        raise UnsupportedError(str(e)) from None


def _alive(pid: int) -> str:
    """The name of the process holding ``pid``, or '' when none does (a group's or
    session's leader that has exited: the kernel keeps its PID for the group, taken by
    no other process, while the group has members)."""
    try:
        st = procfs.stat(pid)
    except procfs.ProcessGone:
        return ""
    return st.comm + (", a zombie" if st.state == "Z" else "")


def _wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    """Wait until each killed process has exited (it may stay a zombie). A process
    whose exit ckpt, its tracer, has not collected cannot be reaped by its parent: the
    init of a PID namespace of the tree's own waits for that before it exits itself, so
    each exit is collected (waitpid by the tracer hands the zombie to its parent)."""
    deadline = time.monotonic() + timeout
    pending: dict[int, int] = {}  # pidfd -> pid
    for pid in pids:
        try:
            pending[libc.pidfd_open(pid)] = pid
        except OSError:
            continue
    uncollected = set(pids)  # exits ckpt may still hold as the tracer
    try:
        while pending:
            for pid in list(uncollected):
                try:
                    if os.waitpid(pid, os.WNOHANG | ptrace.__WALL)[0] == pid:
                        uncollected.discard(pid)
                except ChildProcessError:
                    uncollected.discard(pid)
            left = deadline - time.monotonic()
            for fd in select.select(list(pending), [], [], max(0.0, min(left, 0.05)))[0]:
                os.close(fd)
                del pending[fd]
            if left <= 0:
                break
    finally:
        if pending:
            log.warning("killed processes not gone after %.0f s: %s", timeout,
                        ", ".join(f"{pid} ({procfs.stat(pid).state})" if os.path.exists(
                            f"/proc/{pid}") else str(pid) for pid in pending.values()))
        for fd in pending:
            os.close(fd)


def _check_dumpable(pid: int) -> procfs.Stat:
    """Refuse early, before freezing, what is plainly wrong."""
    if pid <= 0:
        raise DumpError(f"invalid PID {pid}")
    if pid == os.getpid():
        raise DumpError("ckpt cannot dump itself")
    try:
        st = procfs.stat(pid)
    except procfs.ProcessGone:
        raise DumpError(f"process {pid} does not exist") from None
    if st.state in ("Z", "X"):
        _refuse_zombie_leader(pid)
        raise DumpError(f"process {pid} is a zombie")
    if pid in _ancestors(os.getpid()):
        raise DumpError(f"process {pid} is an ancestor of ckpt; ckpt cannot dump itself")
    return st


_CAP_SYS_ADMIN, _CAP_CHECKPOINT_RESTORE = 21, 40


def _check_restorable_here() -> None:
    """Refuse, before anything is frozen, a dump by a ckpt that lacks what any restore
    needs: it would kill processes for images only root could bring back."""
    caps = procfs.status(os.getpid()).cap_effective
    if not caps >> _CAP_CHECKPOINT_RESTORE & 1 and not caps >> _CAP_SYS_ADMIN & 1:
        raise DumpError("ckpt runs without CAP_CHECKPOINT_RESTORE and CAP_SYS_ADMIN, one of "
                        "which a restore needs (to give processes their PIDs, clone3 "
                        "set_tid, and their memory layout, PR_SET_MM_MAP): run ckpt as root "
                        "or give it CAP_CHECKPOINT_RESTORE")


ZOMBIE_FEATURE = "zombie-identity"


def zombie_identity(pid: int, comm: str) -> dict[str, Any] | None:
    """What a zombie still shows of itself: its name, and the ids its parent sees it by
    (kill(2) from a parent of another user, waitid's si_uid, ps). None if it was reaped
    meanwhile."""
    try:
        st = procfs.status(pid)
    except procfs.ProcessGone:
        return None
    return {"comm": comm, "uids": st.uids, "gids": st.gids, "groups": st.groups}


def _refuse_zombie_leader(pid: int) -> None:
    """A process whose first thread exited while others run shows as a zombie: it is
    not one, and saving it as one would lose its threads."""
    try:
        others = [t for t in procfs.threads(pid) if t != pid]
    except procfs.ProcessGone:
        return
    if others:
        raise UnsupportedError(f"process {pid}: its main thread has exited while its "
                               f"threads {others[:5]} run on (a zombie leader); not "
                               "supported yet")


_VFORK_GRACE = 1.0  # seconds a child may share its parent's memory before the refusal


def _refuse_shared_vm(pid: int) -> None:
    """A child sharing its parent's memory (vfork, CLONE_VM) is not supported: refuse it
    before seizing anything of the parent. A vfork child is most often on its way to
    exec (a shell starting a command), so it is given ``_VFORK_GRACE`` to get there."""
    deadline = time.monotonic() + _VFORK_GRACE
    while (kid := _child_sharing_vm(pid)) is not None:
        if time.monotonic() > deadline:
            raise UnsupportedError(f"process {pid} shares its memory with its child {kid} "
                                   "(vfork or CLONE_VM) for over "
                                   f"{_VFORK_GRACE:g} s; not supported")
        time.sleep(0.002)


def _child_sharing_vm(pid: int) -> int | None:
    """A child of ``pid`` that shares its memory, if any."""
    try:
        kids = procfs.children(pid)
    except procfs.ProcessGone:
        return None
    for kid in kids:
        try:
            if libc.kcmp_vm(pid, kid):
                return kid
        except OSError:
            continue
    return None


def _ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        try:
            pid = procfs.stat(pid).ppid
        except procfs.ProcessGone:
            break
        out.append(pid)
    return out


def _syscall_sites(pid: int, vmas: list[procfs.Vma]) -> tuple[int, int | None, bytes]:
    """An existing ``syscall`` instruction in the target (in its vDSO, else in any
    code), where parking code fits in its vDSO (kernel/inject.py), if it does, and
    which: PARK_AREA (with the splice loop, pages/splice.py) where there is room."""
    candidates = [v for v in vmas if v.path == "[vdso]"]
    candidates += [v for v in vmas if v.perms[2] == "x" and v.path != "[vsyscall]"]
    park = None
    parking = PARK_CODE
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for v in candidates:
            try:
                code = os.pread(fd, min(v.size, 1 << 20), v.start)
            except OSError:
                continue
            if v.path == "[vdso]":
                offset = vdso.padding(code, len(PARK_AREA))
                if offset is not None:
                    parking = PARK_AREA
                else:
                    offset = vdso.padding(code, len(PARK_CODE))
                park = None if offset is None else v.start + offset
            site = find_syscall_site(code, v.start)
            if site is not None:
                return site, park, parking
    finally:
        os.close(fd)
    raise DumpError(f"process {pid}: no syscall instruction found to run syscalls with")


def _find_sharing(tasks: list[_Task]) -> None:
    """Which processes share their parent's fd table or fs struct (sharing.py)."""
    found = sharing.find([t.info() for t in tasks])
    by_pid = {t.pid: t for t in tasks}
    for t in tasks:  # parents first
        t.shares = found.get(t.pid, {})
        if "files_of" in t.shares:
            parent = by_pid[t.shares["files_of"]]
            t.fd_owner = parent.fd_owner or parent.pid


def _dump_task(t: _Task, images: ImageWriter, dumper: files.DumpFiles,
               shmem_seen: dict[int, int], note: recovery.Note,
               memctx: DumpMemory | None = None,
               mappings: dict[int, list[dict[str, Any]]] | None = None,
               confinement: landlock.Probe | None = None,
               watch: guard.Guard | None = None,
               keyrings: keyring.Probe | None = None, tree: tuple[int, ...] = ()
               ) -> dict[str, int]:
    """Save everything of one frozen task; return its page summary. ``mappings``: the
    saved mappings of the tasks saved so far, whose children may share their pages;
    ``confinement``: what tells a process confined by Landlock (refused); ``watch``:
    the dump's guard, started before a process moves its own pages (pages/splice.py);
    ``keyrings``: what finds the session keyring a process joined; ``tree``: the live
    processes of the tree."""
    mappings = {} if mappings is None else mappings
    pid = t.pid
    fr = t.frozen
    assert fr is not None and fr.regs0 is not None and fr.mask0 is not None
    status = fr.status = procfs.status(pid)  # its seccomp mode too (_Frozen.injector)
    # A big process's VmFlags (smaps walks every page: ~25 ms a GiB) are read once its
    # pages are being copied (MemoryDump.take_flags), unless a parent saved already may
    # share pages with it: the flags tell which it does since a fork (pages.forked).
    early_flags = status.rss_kb < LATE_FLAGS_FROM >> 10 or t.ppid in mappings
    vmas = procfs.maps(pid, with_flags=early_flags)
    for v in vmas:
        mem.classify(v, pid)
    stat = procfs.stat(pid)
    for th in (fr, *t.threads):  # ckpt's calls would not run there as 64-bit ones
        if th.regs0 is not None and th.regs0.cs == cpu.COMPAT_CS:
            who = f"process {pid}" if th.pid == pid else f"thread {th.pid} of process {pid}"
            raise UnsupportedError(f"{who} runs 32-bit code (compat mode: an i386 program, or "
                                   "64-bit code that switched to it); not supported")
    site, park, parking = _syscall_sites(pid, vmas)
    scratch = libc.free_area([(v.start, v.end) for v in vmas], SCRATCH_SIZE)
    note.process(pid, stat.start_time, [(th.pid, resumable(th.regs0), th.mask0)
                                        for th in (fr, *t.threads)
                                        if th.regs0 is not None and th.mask0 is not None],
                 park, (scratch, SCRATCH_SIZE), len(parking),
                 {th.pid: th.dispatch for th in (fr, *t.threads) if th.dispatch is not None})
    fork = ForkParent(t.ppid, mappings[t.ppid]) if t.ppid in mappings else None
    track = memctx.task(pid, fork) if memctx is not None else None
    memory = mem.MemoryDump(pid, vmas, images, stat, shmem_seen, track=track,
                            compress=memctx is not None and memctx.compress)
    splice = False
    if _copy_aside(vmas, images):
        # A process moves its own pages (pages/splice.py) unless a seccomp filter would
        # judge the loop's syscalls should ckpt die (then they run unsuspended).
        splice = parking is PARK_AREA and status.seccomp == 0 and memory.can_splice()
        if splice and watch is not None:
            watch.start()  # should ckpt die, the loop's pipe is closed at once
        elif not splice:
            memory.start()
    try:
        if not early_flags:
            memory.take_flags(procfs.maps(pid, with_flags=True))
        core, fd_table, inj = _task_state(t, images, dumper, site, park, scratch, status,
                                          tree, confinement, parking, keyrings)
        # Written (and synced) while the pages are copied: a core of many threads is
        # ~4 KiB a thread, encoded and synced after the copy otherwise.
        images.write_json(f"core-{pid}.json", core)
        images.write_json(f"fds-{pid}.json", fd_table)
        mm = memory.finish(inj, core["task"].get("mempolicy"), splice=splice)
    except BaseException:
        memory.cancel()
        raise
    if mm["pagemap"]:  # here, not in the copy's thread: the injected calls are done
        faults.point("dump.task.pages")
    if track is not None:
        track.after_pages()
    mappings[pid] = sorted(mm["vmas"], key=lambda v: v["start"])
    pages = mem.summarize(mm)
    log.info("process %d: %d mappings, %d pages in %d runs saved, %d in the parent images, "
             "%d shared with its parent process (%d injected syscalls, %d round trips)", pid,
             len(mm["vmas"]), pages["pages"], pages["runs"],
             sum(n for _, n in mm.get("in_parent", [])),
             sum(n for _, n in mm.get("inherited", [])), inj.count, inj.trips)
    if t.shares or "root" in core["task"]:
        images.need(sharing.FEATURE)
    if _uses_knobs(core, mm):
        images.need("process-knobs")
    cpus = [core["cpu"], *(t["cpu"] for t in core["threads"])]
    if any("in_call" in c for c in cpus):
        images.need(cpu.FEATURE)
    if any("dispatch" in c for c in cpus):
        images.need(cpu.DISPATCH_FEATURE)
    if any("tls" in c for c in cpus):
        images.need(cpu.TLS_FEATURE)
    if "ldt" in core["task"]:
        images.need(ldt.FEATURE)
    if "autogroup" in core["task"]:
        images.need(task.AUTOGROUP_FEATURE)
    images.write_json(f"mm-{pid}.json", mm)
    faults.point("dump.task.done")
    return pages


COPY_ASIDE_FROM = 8 << 20  # private writable mappings this large: pages copied aside
LATE_FLAGS_FROM = 64 << 20  # memory in use from which VmFlags are read during the copy


def _copy_aside(vmas: list[procfs.Vma], images: ImageWriter) -> bool:
    """Whether the pages are worth a thread of their own (mem.MemoryDump.start): a
    process whose private writable mappings are small is copied after its state, and
    so is every process whose pages go to a page server (one connection carries every
    file, one after the other)."""
    return images.remote is None and sum(
        v.end - v.start for v in vmas if not v.shared and "w" in v.perms) >= COPY_ASIDE_FROM


def _task_state(t: _Task, images: ImageWriter, dumper: files.DumpFiles, site: int,
                park: int | None, scratch: int, status: procfs.Status,
                tree: tuple[int, ...], confinement: landlock.Probe | None = None,
                parking: bytes = PARK_CODE, keyrings: keyring.Probe | None = None
                ) -> tuple[dict[str, Any], Any, Injector]:
    """The registers, signals, task state and threads of frozen ``t``, and its fds:
    its core, its fd table, and the injector that read them; ``confinement``: what
    tells a process confined by Landlock (refused); ``tree``: the tree's live PIDs."""
    pid, fr = t.pid, t.frozen
    assert fr is not None
    inj = fr.injector(site)
    if park is not None and not inj.park_at(park, parking):
        log.info("process %d: cannot write parking code in its vDSO", pid)
    inj.map_scratch(scratch, SCRATCH_SIZE)
    quiet = signals.ignored_signal(status.sig_ignored, status.sig_caught, fr.mask0)
    if quiet is not None:  # runs of calls in one round trip (inject.SignalBatch)
        inj.signal_batch = SignalBatch(scratch + SCRATCH_SIZE - BATCH_ROOM,
                                       BATCH_ROOM // BATCH_ENTRY - 1, quiet)
    if confinement is not None:
        confinement.check(pid, inj, status)
    core: dict[str, Any] = {
        **t.info(),
        "cpu": cpu.dump(pid, fr.regs0),
        "signals": signals.dump(pid, inj, fr.scratch, fr.mask0),
        "task": task.dump(pid, inj, fr.scratch, status),
        "timers": timers.dump(pid, inj, fr.scratch, tree),
        "stop_signal": fr.stop_signal,
    }
    if keyrings is not None:
        ring = keyrings.dump(pid, t.ppid, inj, fr.scratch, status.uids, status.gids)
        if ring is not None:
            core["task"]["keyring"] = ring
            images.need(keyring.FEATURE)
    cwd_ghost = ghost.save_cwd(images, pid, core["task"]["cwd"])  # a removed directory
    if cwd_ghost is not None:
        core["task"]["cwd_ghost"] = cwd_ghost
    others = []
    for th in t.threads:
        th_inj = th.injector(inj.site, inj.parks, inj.area)  # its status read
        assert th.regs0 is not None and th.mask0 is not None and th.status is not None
        others.append((th_inj, th.regs0, th.mask0, th.status))
    core["threads"] = thread.dump_all(pid, others, fr.scratch, SCRATCH_SIZE - BATCH_ROOM)
    if fr.dispatch is not None:
        core["cpu"]["dispatch"] = cpu.dispatch_state(fr.dispatch)
    for th, state in zip(t.threads, core["threads"], strict=True):
        if th.dispatch is not None:
            state["cpu"]["dispatch"] = cpu.dispatch_state(th.dispatch)
    log.info("process %d: registers, signals and task state saved (%d threads)", pid,
             1 + len(t.threads))
    faults.point("dump.task.core")
    pidfd = libc.pidfd_open(pid)
    try:
        fd_table = dumper.dump_task(pid, pidfd, t.fd_owner or pid)
    finally:
        os.close(pidfd)
    log.info("process %d: %d fds saved", pid, len(fd_table))
    faults.point("dump.task.fds")
    return core, fd_table, inj


def _uses_knobs(core: dict[str, Any], mm: dict[str, Any]) -> bool:
    """Whether a process's images hold what the feature ``process-knobs`` names."""
    owns = [core["task"], *(t["own"] for t in core["threads"])]
    return ("coredump_filter" in core["task"] or "lock_future" in mm
            or "exit_signal" in core
            or any("ioprio" in o["sched"] or "mempolicy" in o for o in owns))


def _lock_network(tasks: list[_Task], tcp: TcpFlags, backend: str | None,
                  watch: guard.Guard) -> netlock.Lock | None:
    """With --tcp-established: drop every packet of the tree's TCP connections from now
    on (the tree is frozen), before any of them is read; ``watch`` is started first, to
    undo the lock should ckpt die before it is released or handed to the restore."""
    if not tcp.established or tcp.close:
        return None
    from . import netlock
    from .resources import sk_tcp  # here: a dump of no TCP connection needs it not
    pids = [t.pid for t in tasks if t.frozen is not None]
    found = sk_tcp.tree_connections(pids)
    if not found:
        return None
    conns = [netlock.Conn(c.local, c.peer) for c in found]
    holders = [netlock.Holder.of(pid, fd, c.inode) for c in found for pid, fd in c.holders]
    backend = netlock.choose(backend)
    if backend != "skip":
        watch.start()
    return netlock.lock(conns, backend, tasks[0].pid, holders)


def _unlock_network(lock: netlock.Lock | None, notify: Notify, failed: bool) -> None:
    """The connections run on (a failed dump, -R, -s): let their packets pass again.
    After a failure, a failing unlock is logged, not raised over the first error."""
    if lock is None or not lock.held:
        return
    from . import netlock
    try:
        netlock.unlock(lock)
        notify("network-unlock", 0)
    except CkptError as e:
        if not failed:
            raise
        log.error("%s", e)


# A dump that meets state held for an instant only is tried again, at least 5 times and
# for 2 s: a process talking to the kernel over netlink in a loop has an answer waiting
# for it at most moments it can be stopped at (the end of its sendmsg), and 70% of
# tries were refused (CRIU's netlink00).
_TRANSIENT_TRIES = 5
_TRANSIENT_FOR = 2.0


class _SentOnce:
    """A dump's notify that sends pre-dump and query-ext-files once over several tries
    (the query's answer kept), and knows whether anything beyond them was sent (a try
    after that would repeat it to the caller)."""

    ONCE = ("pre-dump", "query-ext-files")

    def __init__(self, notify: Notify):
        self.notify = notify
        self.answers: dict[str, Any] = {}

    def __call__(self, action: str, pid: int) -> Any:
        if action in self.ONCE and action in self.answers:
            return self.answers[action]
        self.answers[action] = answer = self.notify(action, pid)
        return answer

    def beyond_once(self) -> bool:
        """Whether a try after this one would repeat a notification to someone (no
        action script nor RPC client: nobody hears them)."""
        return self.notify is not ignore and bool(set(self.answers) - set(self.ONCE))


def _tried_again_when_transient(fn: Callable[..., DumpResult]) -> Callable[..., DumpResult]:
    """Run the dump ``fn`` again, a moment later, when it was refused for state a
    process holds for an instant only (errors.TransientError): that refusal left the
    tree running as it was, so trying again changes nothing but the outcome."""
    def run(pid: int, images_dir: str, **options: Any) -> DumpResult:
        if isinstance(options.get("notify"), _SentOnce):  # a try of an outer run
            return fn(pid, images_dir, **options)
        notify = options["notify"] = _SentOnce(options.get("notify") or ignore)
        end = time.monotonic() + _TRANSIENT_FOR
        attempt = 1
        while True:
            try:
                return fn(pid, images_dir, **options)
            except TransientError as e:
                if (attempt >= _TRANSIENT_TRIES and time.monotonic() >= end) \
                        or notify.beyond_once():
                    raise
                attempt += 1
                log.info("%s; the dump is tried again (try %d)", e, attempt)
                time.sleep(0.02 * min(attempt - 1, 5))
    run.__doc__, run.__name__ = fn.__doc__, fn.__name__
    return run


@_tried_again_when_transient
def dump(pid: int, images_dir: str, *, leave_running: bool = False,
         leave_stopped: bool = False, shell_job: bool = False,
         external: tuple[str, ...] = (), ghost_limit: int | None = None,
         track_mem: bool = False, prev_images_dir: str | None = None,
         page_server: tuple[str, int] | None = None, notify: Notify | None = None,
         file_locks: bool = False, tcp: TcpFlags | None = None,
         network_lock: str | None = None, link_remap: bool = False,
         ghost_fiemap: bool | None = None, ext_unix_sk: bool = False,
         manage_cgroups: str | None = None, overwrite: bool = False,
         compress: bool = False, empty_ns: str | tuple[str, ...] = (),
         orphan_pts_master: bool = False, wait_exit: bool = True) -> DumpResult:
    """Checkpoint process ``pid`` and all its descendants into ``images_dir``.

    By default the processes are killed once the images are safely on disk;
    ``leave_running`` lets them go on, ``leave_stopped`` leaves them stopped.
    ``wait_exit`` (False: only for a caller that exits right after, as the CLI): the
    dump returns once the killed processes can never run again, not once they have
    exited (their exit frees their memory, 40-60 ms for 1 GiB; ``_kill``).
    ``ghost_limit``: the most data of a deleted file saved, in bytes (64 MiB by default;
    holes do not count). ``link_remap`` and ``ghost_fiemap`` (criu's flags) change
    nothing: a removed name of a file with other links is always saved as a link, found
    without changing the file system, and a deleted file's data is always found with
    SEEK_DATA/SEEK_HOLE (files_reg.py, ghost.py).
    ``prev_images_dir`` (relative to ``images_dir``): the parent images; pages
    unchanged since are left there. ``track_mem``: track memory changes from
    now on, for a next dump (when the processes survive this one).
    ``page_server``: (address, port) of a ``ckpt page-server`` that gets the
    images; ``images_dir`` then gets everything but the page data.
    ``notify``: called at hooks.DUMP_ACTIONS (see hooks.py).
    ``file_locks``: save the file locks the processes hold (else such a tree is refused).
    ``tcp``: criu's --tcp-established, --tcp-close, --skip-in-flight; ``network_lock``:
    "nftables", "iptables", "skip" or None (the first backend that works here). The
    lock is released unless the processes are killed; then the restore releases it.
    ``ext_unix_sk``: criu's --ext-unix-sk: connections to a unix listener of the tree
    from clients outside it, not accepted yet, come back as connections whose
    client left (else they are refused).
    ``manage_cgroups``: criu's mode (cgroups.MODES; None: criu's default, soft): with
    "ignore" the processes' cgroups are not saved.
    ``overwrite``: dump into a folder that holds images already (they are replaced),
    or that belongs to another user; refused otherwise (images.Folder.for_dump).
    ``orphan_pts_master``: criu's RPC option: a pty slave whose master is outside the
    tree (a container's console) is saved, to come back as the slave of a new pair whose
    master the restore hands over (tty.py); else such a tree is refused.
    ``empty_ns``: criu's --empty-ns ("net"): the tree's own network namespace is not
    saved; the restore makes an empty one (its loopback up). Else such a tree is refused.
    A process in a PID namespace below ckpt's (one ``restore --new-pidns`` made), not
    its init, is dumped by a fork of ckpt in its namespaces, under the PIDs it has there
    (new_pidns.run_inside); its namespace's init, when ckpt's, stands for its tree.
    """
    options = {k: v for k, v in locals().items() if k not in ("pid", "images_dir")}
    where = _namespace_of(pid)
    if where is not None:
        from . import new_pidns
        folder = os.path.abspath(images_dir)
        return new_pidns.run_inside(  # type: ignore[return-value]
            where, lambda ns_pid: dump(ns_pid, folder, **options))
    empty_ns = tuple(empty_ns.split(",")) if isinstance(empty_ns, str) else empty_ns
    t0 = time.monotonic()
    tcp = tcp or TcpFlags()
    cgroups.check_mode(manage_cgroups)
    if leave_running and leave_stopped:
        raise DumpError("leave_running and leave_stopped exclude each other")
    notify = notify or ignore
    _check_restorable_here()
    recovery.recover()
    stat0 = _check_dumpable(pid)
    if link_remap:
        log.info("--link-remap: not needed; a removed name of a file with other links is "
                 "saved as a link to another of its names, the file system left unchanged")
    if ghost_fiemap is not None:
        log.info("--%sghost-fiemap: the data of deleted files is found with SEEK_DATA and "
                 "SEEK_HOLE either way", "" if ghost_fiemap else "no-")
    log.info("dumping process %d (%s) and its descendants into %s", pid, stat0.comm,
             images_dir)
    notify("pre-dump", 0)
    memctx = DumpMemory(images_dir, prev_images_dir, track_mem,
                             will_run=leave_running or leave_stopped)
    if compress:  # ``compress``: page data as zstd streams (pages/compressed.py)
        if prev_images_dir or page_server or track_mem:
            raise DumpError("--compress goes with neither --prev-images-dir, --track-mem "
                            "nor --page-server: compressed pages are read in order only")
        memctx.compress = True
    remote = _connect(page_server, images_dir)
    tasks: list[_Task] = []
    images: ImageWriter | None = None
    dumper: files.DumpFiles | None = None
    lock: netlock.Lock | None = None
    watch = guard.Guard(guard.undo_killed_dump)
    note = recovery.Note()
    ok = False
    total = 0
    t_freeze = time.monotonic()
    scope = Scope()  # what holds while the tree is dumped
    try:
        images = ImageWriter(images_dir, remote=remote, overwrite=overwrite)  # refused now
        tasks = _freeze_tree(pid)
        freezing = time.monotonic() - t_freeze
        log.info("froze %d processes: %s", len(tasks), [t.pid for t in tasks])
        faults.point("dump.frozen")
        external = (*external, *(notify("query-ext-files", 0) or ()))
        ext_mounts, external = _split_external(external)
        _find_sharing(tasks)
        stand_ins = _check_sessions(tasks, shell_job)  # after: a stand-in cannot share
        live = [t for t in tasks if t.frozen is not None]
        own_ns = treens.others([t.pid for t in live], pid)
        net_key, external = treens.external_net(external, pid)
        if "net" in own_ns and "net" not in empty_ns and net_key is None:
            own_ns.remove("net")  # refused below: its network namespace is not saved
        namespaces.check_tree([t.pid for t in live], (*own_ns, "pid_for_children")
                              if "pid" in own_ns else tuple(own_ns))
        for t in live:
            if t.threads:
                tids = [th.pid for th in t.threads]
                sharing.check_threads(t.pid, tids)
                namespaces.check_threads(t.pid, tids)
        inside = nspids.dump({t.pid: [th.pid for th in t.threads] for t in tasks}, pid) \
            if "pid" in own_ns else None
        if "net" in own_ns:  # its sockets are found by sock_diag from inside it
            scope.enter(nsenter.entered(pid, ["net"]))
        if "mnt" in own_ns:  # the tree's paths are under its own root
            scope.enter(treeroot.at(f"/proc/{pid}/root"))
        elif ext_mounts:
            log.info("external mounts %s: the tree has no mount namespace of its own",
                     sorted(ext_mounts))
        memberships = cgroups.dump({t.pid: [th.pid for th in t.threads] for t in live},
                                   manage_cgroups)
        lock = _lock_network(tasks, tcp, network_lock, watch)
        if lock is not None:
            notify("network-lock", 0)
        faults.point("dump.network_locked")
        if memberships is not None:
            images.write_json(cgroups.IMAGE, memberships)
            images.need(cgroups.FEATURE)
        if set(own_ns) & {*treens.KINDS, "net", "pid", "cgroup"}:
            images.write_json(treens.IMAGE, treens.dump(pid, own_ns, inside, net_key))
            images.need(treens.FEATURE)
            if net_key is not None and "net" in own_ns:
                images.need(treens.NET_FEATURE)
            if "cgroup" in own_ns:
                images.need(treens.CGROUP_FEATURE)
        mount_tree = None
        if "mnt" in own_ns:
            from .resources import mounts
            mount_tree = mounts.DumpMounts(images, pid, ext_mounts)
            mount_tree.dump()
        ghost.configure(images, ghost_limit)
        dumper = files.DumpFiles(images, shell_job=shell_job, external=set(external),
                                 file_locks=file_locks, tcp=tcp, ext_unix_sk=ext_unix_sk,
                                 empty_net="net" in own_ns, orphan_pts=orphan_pts_master)
        shmem_seen: dict[int, int] = {}
        mappings: dict[int, list[dict[str, Any]]] = {}
        t_tasks = time.monotonic()
        confinement = landlock.Probe()
        keyrings = keyring.Probe()
        tree = tuple(t.pid for t in live)
        try:
            for t in tasks:  # parents first: their children's pages are compared with theirs
                if t.frozen is not None:
                    try:
                        total += _dump_task(t, images, dumper, shmem_seen, note, memctx,
                                            mappings, confinement, watch,
                                            keyrings, tree)["bytes"]
                    except OSError as e:
                        raise _task_failed(t.pid, e) from e
        finally:
            confinement.close()
        memory = time.monotonic() - t_tasks
        with nsenter.entered(pid, [k for k in own_ns if k == "ipc"]):
            sysv.dump(images, [t.pid for t in tasks if t.frozen is not None], mappings)
        dumper.after_dump([t.info() for t in tasks], mappings)
        if mount_tree is not None:  # a tmpfs's socket files are bound again by the tree's
            mount_tree.check_sockets(dumper.descriptions)
        if memctx.inherited_pages:
            images.need(forked.FEATURE)
        images.write_json("files.json", dumper.descriptions)
        if dumper.locks.saved:
            images.write_json(locks.IMAGE, dumper.locks.saved)
            images.need(locks.FEATURE)
            if dumper.locks.mapped:
                images.need(locks.MAPPED_FEATURE)
            if dumper.locks.breaking:
                images.need(locks.BREAKING_FEATURE)
        faults.point("dump.files")
        outside_sid, outside_pgid = _outside_ids(tasks, shell_job)
        if stand_ins:
            images.need(standins.FEATURE)
        if any(t.zombie_as for t in tasks):
            images.need(ZOMBIE_FEATURE)
        faults.point("dump.inventory")
        images.finish({
            "root_pid": pid,
            "tasks": [t.info() for t in tasks],
            "shell_job": shell_job,
            "outside_sid": outside_sid,
            "outside_pgid": outside_pgid,
            **({"standins": [s.record() for s in stand_ins]} if stand_ins else {}),
            # held until the restore unless the processes run on (then released below)
            "network_lock": lock.to_json() if lock is not None and lock.held
            and not (leave_running or leave_stopped) else None,
            **_common_inventory("dump", memctx, track_mem),
        })
        log.info("images written and synced")
        faults.point("dump.before_kill")
        notify("post-dump", 0)
        ok = True
    except (CkptError, procfs.ProcessGone, OSError) as e:
        killed = _killed_meanwhile(tasks, "dump")
        if killed is not None:
            raise DumpError(killed) from None
        if isinstance(e, CkptError):
            raise
        raise _failed("dump", pid, e) from e
    finally:
        scope.close()
        try:
            with interrupts.held():  # a signal now waits until the tree is let go
                if not ok:
                    if images is not None:
                        images.abort()
                    elif remote is not None:
                        remote.abort()
                kill = ok and not leave_running and not leave_stopped
                if kill:  # from now on a killed ckpt takes the tree along: the lock stays
                    if dumper is not None:  # first: a ckpt killed once the kernel kills
                        # the tree with it closes no connection with a packet (a FIN the
                        # lock dropped kept the connection alive, and the restore said
                        # its address was in use); killed before, the guard undoes it
                        dumper.before_kill()
                    _exit_kill(tasks)
                    watch.stand_down()
                _release(tasks, kill=kill, stop=ok and leave_stopped, wait_exit=wait_exit)
                note.close()
                if images is not None:
                    images.close()
                frozen = time.monotonic() - t_freeze
                if kill and wait_exit:
                    _wait_gone([t.pid for t in tasks if t.frozen is not None])
                if dumper is not None:
                    dumper.close()
                if not kill:
                    try:
                        _unlock_network(lock, notify, failed=not ok)
                    finally:
                        watch.stand_down()
                elif lock is not None:  # the connections stay locked until their restore
                    from . import netlock
                    netlock.keep(lock, images_dir)
        except interrupts.Interrupted as e:
            if not ok:
                raise
            log.warning("%s once the dump was complete: it stands", e)
    fate = "running" if leave_running else "stopped" if leave_stopped else "killed"
    dt = time.monotonic() - t0
    log.info("dump of %d done in %.3f s (frozen %.3f s); processes %s", pid, dt, frozen, fate)
    return DumpResult(pid, images_dir, total, dt, fate, pids=[t.pid for t in tasks],
                      frozen_seconds=frozen, parent_bytes=memctx.parent_pages * libc.PAGE_SIZE,
                      image_bytes=sum(f["size"] for f in images.files.values()),
                      freezing_seconds=freezing, memory_seconds=memory)


def _namespace_of(pid: int) -> new_pidns.Inside | None:
    """Where ``pid`` lives if in a PID namespace below ckpt's; None in ckpt's (or gone,
    or closed to ckpt: ``_check_dumpable`` and the freeze say so). new_pidns.py is
    imported for a process in another PID namespace only."""
    try:
        if pid <= 0 or os.stat(f"/proc/{pid}/ns/pid").st_ino == \
                os.stat("/proc/self/ns/pid").st_ino:
            return None
        from . import new_pidns
        return new_pidns.inside(pid)
    except (FileNotFoundError, ProcessLookupError, PermissionError, procfs.ProcessGone):
        return None


def _split_external(external: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """mounts.split_external, mounts.py imported only for an ``mnt[...]`` entry: a tree
    without a mount namespace of its own needs none of it."""
    if not any(e.startswith("mnt[") for e in external):
        return {}, tuple(external)
    from .resources import mounts
    return mounts.split_external(external)


def _connect(page_server: tuple[str, int] | None, images_dir: str) -> Any:
    """The page server's client, connected before anything is frozen; or None."""
    if page_server is None:
        return None
    from .page_server import Client
    os.makedirs(images_dir, exist_ok=True)
    return Client(page_server[0], page_server[1], images_dir)


def _common_inventory(kind: str, memctx: DumpMemory, track_mem: bool) -> dict[str, Any]:
    return {
        "type": kind,
        "parent": memctx.parent_link(),
        "track_mem": track_mem,
        "kernel": os.uname().release,
        "arch": os.uname().machine,
        "ckpt_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _task_failed(pid: int, e: OSError) -> DumpError:
    """The error naming the process whose dump failed (not the tree's root), and the
    user it ran as when that is the likely cause."""
    why = e.strerror or str(e)
    try:
        st = procfs.status(pid)
        comm = procfs.stat(pid).comm
    except procfs.ProcessGone:
        return DumpError(f"dump of process {pid} failed: {why} (it exited meanwhile)")
    hint = ""
    if e.errno in (errno.EPERM, errno.EACCES) and st.uids[:1] != [os.getuid()]:
        hint = (f"; it runs as user {st.uids[0]}, ckpt as {os.getuid()}: this kernel "
                "refused ckpt the access (a capability ckpt lacks?)")
    return DumpError(f"dump of process {pid} ({comm}) failed: {why}{hint}")


def _killed_meanwhile(tasks: list[_Task], what: str) -> str | None:
    """The process of the tree a signal from outside ckpt killed during the dump (kill
    -9, the OOM killer), said in one line; None when none was. Read while ckpt still
    traces them: the failure its death caused (a bare ESRCH of a ptrace call, a short
    read of its memory) says less."""
    killed = procfs.killed_by_signal(t.pid for t in tasks if t.frozen is not None)
    if killed is None:
        return None
    return f"process {killed[0]} was {ptrace.Stop(*killed).describe()} during the {what}"


def _failed(what: str, pid: int, e: procfs.ProcessGone | OSError) -> DumpError:
    """The error a dump or pre-dump reports for a system error that stopped it."""
    if isinstance(e, procfs.ProcessGone):
        return DumpError(f"a process vanished during the {what} ({e})")
    return DumpError(f"{what} of process {pid} failed: {e}")


def pre_dump(pid: int, images_dir: str, *, track_mem: bool = False, overwrite: bool = False,
             prev_images_dir: str | None = None,
             page_server: tuple[str, int] | None = None) -> DumpResult:
    """Save the memory pages of ``pid`` and its descendants, and let them run on.

    The processes are frozen only while the pages to save are chosen; they are
    copied once the processes run again (mem.PreDumpTask says why that is
    right), and the files synced after. ``track_mem`` tracks memory changes from then on, so that a
    dump or pre-dump with this one as ``prev_images_dir`` saves only what
    changed. A pre-dump cannot be restored: it is the parent of a dump.
    ``overwrite``: as for ``dump``.
    """
    t0 = time.monotonic()
    recovery.recover()
    stat0 = _check_dumpable(pid)
    log.info("pre-dumping the memory of process %d (%s) and its descendants into %s", pid,
             stat0.comm, images_dir)
    memctx = DumpMemory(images_dir, prev_images_dir, track_mem, will_run=True)
    remote = _connect(page_server, images_dir)
    tasks: list[_Task] = []
    images: ImageWriter | None = None
    ok = False
    frozen = 0.0
    jobs: list[mem.PreDumpTask] = []
    try:
        t_freeze = time.monotonic()
        try:  # frozen: the mappings, which pages to save, soft-dirty bits cleared
            images = ImageWriter(images_dir, remote=remote, overwrite=overwrite)
            tasks = _freeze_tree(pid)
            log.info("froze %d processes: %s", len(tasks), [t.pid for t in tasks])
            faults.point("predump.frozen")
            for t in tasks:
                if t.frozen is None:
                    continue
                job = mem.PreDumpTask(t.pid, memctx.task(t.pid))
                jobs.append(job)
                job.plan(procfs.maps(t.pid, with_flags=True), images)
            faults.point("predump.planned")
        finally:
            _release(tasks, kill=False)
            frozen = time.monotonic() - t_freeze
        log.info("processes released after %.3f s frozen; copying their pages", frozen)
        faults.point("predump.released")
        gone: set[int] = set()
        for job in jobs:  # the processes run meanwhile
            try:
                mm = job.copy()
            except (ProcessLookupError, procfs.ProcessGone):
                if job.pid == pid:
                    raise
                # it exited since (a shell's short-lived child): the next dump will not
                # have it, nor need its pages
                log.info("process %d exited while its pages were copied: left out of the "
                         "pre-dump", job.pid)
                gone.add(job.pid)
                continue
            log.info("process %d: %d pages saved, %d in the parent", job.pid,
                     sum(n for _, n in mm["pagemap"]), sum(n for _, n in mm["in_parent"]))
            images.write_json(f"mm-{job.pid}.json", mm)
        faults.point("predump.inventory")
        images.finish({
            "root_pid": pid,
            "tasks": [t.info() for t in tasks if t.pid not in gone],
            **_common_inventory("pre-dump", memctx, track_mem),
        })
        ok = True
    except CkptError:
        raise
    except (procfs.ProcessGone, OSError) as e:
        raise _failed("pre-dump", pid, e) from e
    finally:
        for job in jobs:
            job.close()
        if not ok:
            if images is not None:
                images.abort()
            elif remote is not None:
                remote.abort()
        if images is not None:
            images.close()
    dt = time.monotonic() - t0
    log.info("pre-dump of %d done in %.3f s (frozen %.3f s)", pid, dt, frozen)
    return DumpResult(pid, images_dir, memctx.own_pages * libc.PAGE_SIZE, dt, "running",
                      pids=[t.pid for t in tasks], frozen_seconds=frozen,
                      parent_bytes=memctx.parent_pages * libc.PAGE_SIZE,
                      image_bytes=sum(f["size"] for f in images.files.values()))
