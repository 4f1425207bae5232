"""The process tree of a restore: its nodes, how it is created, and how a failed restore
kills it.

Only the root is a fork of ckpt (clone3 with set_tid). Each process is then made what
it is before its own state comes back, parents first (``Creation``): it gets its fds
(fdtable.py) and its memory (mem.restore), then clones its children by an injected
clone3 with set_tid and without CLONE_VM, before and after its ``setsid`` as their
sessions need. A child so starts with its parent's restored address space,
copy-on-write, and a copy of its parent's fd table: it keeps what it shared with its
parent at dump (the pages it still had from its fork, pages/forked.py; the fds on the
same description at the same number) and changes only the rest. A zombie is cloned
like the others and made to exit with its saved status once the tree is complete (its
group exists then). A group or session
whose leader had exited is made by a stand-in (standins.py), killed and reaped by its
creator once the tree is complete.

Every process so comes back as a child of the one that was its parent, and ckpt traces
each one from its creation (the root seized, the others attached at their clone) until
the restore lets them go, or kills and reaps them all (``kill``). A restore into a PID
namespace of its own (issue 15) changes who forks the root and the PIDs asked for.
"""

from __future__ import annotations

import _signal
import ctypes
import errno
import os
import struct
import time

from . import faults, standins
from .errors import RestoreError
from .kernel import libc, nsenter, procfs, ptrace
from .kernel.inject import BatchArea, Injector
from .kernel.record import dataclass, field
from .log import logger
from .pages import fill
from .pages.chain import Segment
from .resources import fdtable, keyring, mem, nspids, seccomp, sharing, signals, task

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .pages.lazy import Handover

log = logger("ckpt.restore")

PID_WAIT_SECONDS = 5.0  # a PID held by a zombie its parent (or init) has yet to reap
RLIMIT_CORE = 4
_WALL = ptrace.__WALL


@dataclass
class Node:
    """One process of the tree: its inventory entry and, unless a zombie, its images;
    then the fds it is to get and the children it clones around its setsid."""

    info: dict[str, Any]
    core: dict[str, Any] = field(default_factory=dict)
    mm: dict[str, Any] = field(default_factory=dict)
    fd_table: list[dict[str, Any]] = field(default_factory=list)
    segments: list[Segment] | None = None
    plan: list[fdtable.Want] = field(default_factory=list)
    sock: int = -1  # where it holds the socket its fds come through
    parent: Node | None = None  # None for the root
    early: list[Node] = field(default_factory=list)  # cloned before its setsid
    late: list[Node] = field(default_factory=list)
    stand_in: standins.StandIn | None = None  # a stand-in's plan (its parent: its creator)
    creator: Node | None = None  # the stand-in that clones it, when not its parent
    joins_group: bool = False  # joins a stand-in's group as soon as it is made

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def zombie(self) -> bool:
        return bool(self.info.get("zombie"))

    @property
    def threads(self) -> list[dict[str, Any]]:
        """The saved state of each of its other threads (thread.py)."""
        return list(self.core.get("threads", []))

    @property
    def thread_ids(self) -> list[int]:
        return [th["tid"] for th in self.threads]


def build_nodes(tasks: list[dict[str, Any]], root_pid: int, outside_sid: int | None,
                stand_ins: Sequence[standins.StandIn] = ()) -> tuple[Node, list[Node]]:
    """The creation tree: children under parents, split around their parent's setsid;
    stand-ins where they are cloned (not in the returned order: they are no process to
    restore)."""
    nodes = {t["pid"]: Node(dict(t)) for t in tasks}
    order = [nodes[t["pid"]] for t in tasks]
    for n in order:
        n.info["setsid"] = n.info["sid"] == n.pid
        if outside_sid is not None and n.info["sid"] == outside_sid:
            n.info["sid"] = None  # stays in the restorer's session
    for n in order:
        if n.pid == root_pid:
            continue
        parent = n.parent = nodes[n.info["ppid"]]
        if parent.info["setsid"] and n.info["sid"] != parent.pid and not n.info["setsid"]:
            parent.early.append(n)
        else:
            parent.late.append(n)
    _place_stand_ins(nodes, order, stand_ins)
    return nodes[root_pid], order


def _place_stand_ins(nodes: dict[int, Node], order: list[Node],
                     stand_ins: Sequence[standins.StandIn]) -> None:
    """Each stand-in under its creator; a session's members it clones under it."""
    for s in stand_ins:
        creator = nodes[s.creator] if s.creator is not None else None
        node = nodes[s.pid] = Node({"pid": s.pid, "ppid": s.creator or 0, "pgid": s.pid,
                                    "sid": s.pid if s.session else None,
                                    "setsid": s.session},
                                   parent=creator, stand_in=s)
        for pid in s.members:
            member = nodes[pid]
            if member.parent is not None:
                parent = member.parent
                parent.early = [k for k in parent.early if k is not member]
                parent.late = [k for k in parent.late if k is not member]
            member.creator = node
            node.late.append(member)
        if creator is not None:
            kids = creator.early if s.early else creator.late
            at = next((i for i, k in enumerate(kids) if k.pid == s.before), len(kids))
            kids.insert(at, node)
    groups = {s.pid for s in stand_ins}
    for n in order:  # a zombie joins its group last, once every group is made
        n.joins_group = n.info["pgid"] != n.pid and (
            n.info["pgid"] in groups or (n.zombie and n.info["pgid"] in nodes))


def ptrace_options(node: Node) -> int:
    """The ptrace options ckpt traces a new process with: EXITKILL, so that a killed ckpt
    takes it along until the tree is complete (``Restore.resume`` clears it); seccomp
    suspended while ckpt works in it when it gets filters or strict mode (they are
    installed before its last injected syscalls)."""
    options = ptrace.INJECT_OPTIONS | ptrace.PTRACE_O_EXITKILL
    if node.core and seccomp.used(node.core):
        options |= ptrace.PTRACE_O_SUSPEND_SECCOMP
    return options


_SIGKILL_BIT = 1 << (libc.SIGKILL - 1)


def wait_dumped_exits(started: dict[int, int], timeout: float = PID_WAIT_SECONDS) -> None:
    """Wait (at most ``timeout``) for each dumped process still exiting: PID -> its saved
    start time (/proc/PID/stat field 22). A CLI dump returns once it has sent SIGKILL,
    not once its processes have exited (dumper._kill): one of them may still hold
    its PID, memory, files, locks and ports, all let go at its exit (its pidfd is then
    readable; a zombie leader waits for its other threads). A process with that PID and
    start time that is not dying (a dump -R let it run) is left to the PID's own
    refusal; a zombie's PID, to the retries of the clone."""
    pending: dict[int, int] = {}  # pidfd -> pid
    try:
        for pid, start in started.items():
            try:
                if procfs.stat(pid).start_time != start:
                    continue
                st = procfs.status(pid)
            except (procfs.ProcessGone, OSError):
                continue
            if st.state not in ("Z", "X") and \
                    not (st.shared_pending | st.sig_pending) & _SIGKILL_BIT:
                continue  # alive, not dying
            try:
                pending[libc.pidfd_open(pid)] = pid
            except OSError:
                continue
        deadline = time.monotonic() + timeout
        if pending:
            import select  # here: a restore right after a CLI dump only
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("dumped processes still exiting after %.0f s: %s", timeout,
                            ", ".join(map(str, pending.values())))
                return
            for fd in select.select(list(pending), [], [], left)[0]:
                log.debug("process %d (the dumped one) has exited", pending.pop(fd))
                os.close(fd)
    finally:
        for fd in pending:
            os.close(fd)


def pid_holder(pid: int) -> str:
    try:
        st = procfs.stat(pid)
    except procfs.ProcessGone:
        return _group_holder(pid) or "a process that just exited"
    if st.state == "Z":
        return f"a zombie ({st.comm}) not yet reaped by its parent {st.ppid}"
    return f"{st.comm} (state {st.state}, parent {st.ppid})"


def _group_holder(pid: int) -> str | None:
    """The processes still in the process group or session numbered ``pid`` after its
    leader ended (the kernel keeps the number theirs), or None when there are none: a
    killed job whose children lived on holds its leader's PID."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = procfs.stat(int(entry))
            except procfs.ProcessGone:
                continue
            if pid in (st.pgid, st.sid):
                zombie = ", a zombie not yet reaped" if st.state == "Z" else ""
                members.append(f"{st.pid} ({st.comm}{zombie})")
    if not members:
        return None
    more = f" and {len(members) - 3} more" if len(members) > 3 else ""
    return (f"the process group or session its process led, which lives on in "
            f"{', '.join(members[:3])}{more}")


def _pid_refused(pid: int, err: int) -> RestoreError:
    if err == errno.EEXIST:
        return RestoreError(f"PID {pid} is taken by {pid_holder(pid)}; restore with "
                            "--new-pidns to give the tree a PID namespace of its own")
    return RestoreError(f"cannot create a process with PID {pid}: {os.strerror(err)}")


@dataclass
class Helper:
    """The helper area every new process has until it is restored: scratch memory at
    its start, a ``syscall`` instruction at ``site``, the batch loop and its table
    (``batch``, inject.py)."""

    start: int
    size: int
    site: int
    batch: BatchArea | None = None


class Creation:
    """Creates the tree of one restore. ``made`` lists every live process created so far
    (traced by ckpt), for the restore to go on with, or to kill on failure."""

    def __init__(self, helper: Helper, sender: fdtable.FdSender, images_dir: str,
                 shmem: dict[Any, tuple[int, int, int]], held: dict[int, int],
                 join_cgroups: Callable[[int], None],
                 mapped_locks: dict[int, dict[int, dict[str, Any]]] | None = None,
                 pages: fill.Fill | None = None, lazy: Handover | None = None):
        self.helper = helper
        self.lazy = lazy  # --lazy-pages: the daemon's connection
        self.pages = pages  # the pages files, checked as the processes' pages are written
        self.mapped_locks = mapped_locks or {}  # pid -> mapping start -> lock (locks.py)
        self.join_cgroups = join_cgroups  # before its memory: its pages are charged there
        self.sender = sender
        self.images_dir = images_dir
        self.shmem = shmem  # shared memory mapped so far (mem.restore)
        self.held = held  # ghost id -> ckpt's fd on it
        self.made: list[Node] = []
        self.stand_ins: list[Node] = []  # alive until the tree is complete
        self.zombies: list[Node] = []  # exit once the tree is complete, in their groups
        self.go_w = -1  # the root waits on the other end until ckpt has seized it
        # A tree of one process (no stand-in, no zombie): its injector, its last calls
        # (its memory's last ones, its session) still queued, to join the first round
        # trip of its own state (restorer.py): one round trip fewer. In a larger tree
        # each process's calls run before the next is made, and the next's own state
        # may count on them (a group it joins, a stop its parent sees).
        self.carried: dict[int, Injector] = {}
        self.cgroup_ns = False  # the root makes a cgroup namespace once in its cgroups

    def fork_root(self, root: Node, sibling: bool, mount_ns: int = -1) -> None:
        """Fork ckpt under the root's PID (``sibling``: as a child of ckpt's parent); the
        fork waits, and leaves if ckpt dies first, until ckpt seizes and stops it. A root
        whose session's leader had exited is cloned by that session's stand-in, forked so.
        With ``mount_ns`` (an fd on the tree's new mount namespace, mounts.py) it enters
        it first; a root that is PID 1 of a PID namespace of its own starts it
        (nspids.py)."""
        if root.creator is not None:
            if sibling:
                raise RestoreError(f"process {root.pid}: its session's leader "
                                   f"{root.creator.pid} had exited; ckpt recreates the "
                                   "session only for a root that is ckpt's child, not "
                                   "with --restore-sibling")
            root = root.creator
            self.stand_ins.append(root)
        go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        try:
            deadline = time.monotonic() + PID_WAIT_SECONDS
            tids = nspids.levels(root.pid)
            handled = signals.not_default()
            flags = libc.CLONE_CLEAR_SIGHAND | (nsenter.CLONE_NEWPID if len(tids) > 1 else 0)
            while True:
                try:  # born with every signal blocked, as the processes it clones:
                    # one sent to its PID meanwhile waits for the restore's end
                    # (signals.take_arrived) rather than kill it or meet ckpt's stops
                    pid = libc.clone3_with_pid(tids, sibling, flags, blocked=True)
                    break
                except OSError as e:
                    if e.errno != errno.EEXIST or time.monotonic() > deadline:
                        raise _refused(root, e.errno or 0) from None
                    time.sleep(0.02)
            if pid == 0:  # a fork Python does not know of: simple code, out by os._exit
                try:
                    # ckpt's handlers are not the process's; the processes cloned from
                    # it start from the defaults too (signals.restore counts on it)
                    signals.reset_actions(handled)
                    if mount_ns >= 0:
                        nsenter.setns(mount_ns, nsenter.CLONE_NEWNS)
                        os.chdir("/")
                    os.write(ready_w, b".")  # ckpt may seize it now
                    os.close(self.go_w)  # ckpt's end: EOF once ckpt is gone
                    os.read(go_r, 1)
                finally:
                    os._exit(127)
            # marked closed first: a signal's exception raised right after the close
            # would have the finally close it again (EBADF, taken for the restore's error)
            mine, ready_w = ready_w, -1
            os.close(mine)
            if os.read(ready_r, 1) != b".":
                self.made.append(root)
                raise RestoreError(f"the new process {root.pid} died before it was seized"
                                   + (" (entering the tree's mount namespace)"
                                      if mount_ns >= 0 else ""))
        finally:
            os.close(go_r)
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)
        self.made.append(root)
        faults.point("restore.forked")
        ptrace.seize(root.pid, ptrace_options(root))
        ptrace.interrupt(root.pid)
        stop = ptrace.wait_stop(root.pid)
        if stop.exited:
            raise RestoreError(f"the new process {root.pid} died: {stop.describe()}")
        root.sock = self.sender.theirs
        faults.point("restore.seized")

    def build(self, root: Node) -> None:
        """Every process of the tree, from the root down, each parent before its children."""
        todo = [root.creator or root]
        while todo:
            node = todo.pop(0)
            inj, kids = self._make(node)
            todo += kids
            if inj is None:
                continue
            if todo or self.zombies or self.stand_ins or len(self.made) > 1:
                inj.close()  # its calls run before any other process is made
            else:
                self.carried[node.pid] = inj
        for kid in sorted(self.zombies, key=lambda z: z.info["pgid"] != z.pid):
            self._make_zombie(kid)  # group leaders first
        for stand_in in reversed(self.stand_ins):
            self._retire(stand_in)

    def run_carried(self, pid: int) -> None:
        """Run the calls process ``pid``'s carried injector holds, if any: before ckpt acts
        on the process otherwise (its session and group in place before a stop signal,
        which the kernel discards in an orphaned group)."""
        carried = self.carried.get(pid)
        if carried is not None:
            carried.flush()

    def close(self) -> None:
        if self.go_w >= 0:
            os.close(self.go_w)
            self.go_w = -1
        for inj in self.carried.values():  # left by a failed restore
            inj.discard()
        self.carried.clear()

    # ------------------------------------------------------------ one process

    @staticmethod
    def _new_cgroup_ns(node: Node, inj: Injector) -> None:
        """The tree's own cgroup namespace, made by its root in the cgroups it has just
        joined (its root's at dump, treens.py): every process cloned from it after is
        in it."""
        try:
            inj.call("unshare", nsenter.CLONE_NEWCGROUP)
        except OSError as e:
            raise RestoreError(f"process {node.pid}: cannot make its cgroup namespace: "
                               f"{e.strerror}") from None

    def _make(self, node: Node) -> tuple[Injector | None, list[Node]]:
        """Make ``node``'s process what it is before its own state: its fds, its memory,
        its session or group, its children; return its injector, its last calls still
        queued (None for a stand-in), and its live children."""
        if node.stand_in is not None:  # a group's made as soon as it is cloned
            if node.stand_in.session:
                self._make_session(node)
            return None, [kid for kid in node.late if not kid.zombie]
        inj = Injector(node.pid, self.helper.site, ptrace.get_regs(node.pid),
                       options=ptrace_options(node), batch=self.helper.batch)
        try:
            task.unregister_rseq(node.pid, inj)  # queued: in the round trip of its fds
            self._give_fds(node, inj)
            self.join_cgroups(node.pid)
            if self.cgroup_ns and node.parent is None:
                self._new_cgroup_ns(node, inj)
            keyring.restore(node.pid, inj, self.helper.start, _keyring(node),
                            _keyring(node.parent) if node.parent is not None else None)
            self._restore_memory(node, inj)
            for kid in node.early:
                self._clone(node, inj, kid)
            self._set_session(node, inj)
            for kid in node.late:
                self._clone(node, inj, kid)
            faults.point("restore.task.children")
            if self.lazy is not None:  # its children have their copy: faults now served
                self.lazy.give(node.pid, inj)
        except BaseException:
            inj.discard()
            raise
        return inj, [kid for kid in node.early + node.late if not kid.zombie]

    def _give_fds(self, node: Node, inj: Injector) -> None:
        """Its fds: those its parent holds at the same number on the same description (and
        close-on-exec flag) it has already; the others come from ckpt (fdtable.py). A
        process sharing its parent's fd table (CLONE_FILES) has its parent's, all of them."""
        if "files_of" in node.info:
            return
        theirs = ({w.fd: w for w in node.parent.plan} if node.parent is not None else {})
        kept = {w.fd for w in node.plan if theirs.get(w.fd) == w}
        node.sock = self.sender.install(inj, self.helper.start, node.sock,
                                        [w for w in node.plan if w.fd not in kept], kept)
        log.info("process %d: %d fds (%d as its parent's)", node.pid, len(node.plan),
                 len(kept))
        faults.point("restore.task.fds")

    def _restore_memory(self, node: Node, inj: Injector) -> None:
        parent = node.parent.mm if node.parent is not None else None
        mem.restore(node.pid, inj, node.mm, self.images_dir, self.helper.start,
                    self.helper.size, self.shmem, node.segments, parent, self.held,
                    self.mapped_locks.get(node.pid),
                    lambda fd: self.sender.lend(inj, self.helper.start, node.sock, fd),
                    self.pages, self.lazy,
                    [r for kid in node.early + node.late for r in kid.mm.get("inherited", [])])
        log.info("process %d: memory restored (%d pages its own, %d its parent's; %d "
                 "injected syscalls so far, in %d round trips)", node.pid,
                 sum(n for _, n in node.mm["pagemap"] + node.mm.get("in_parent", [])),
                 sum(n for _, n in node.mm.get("inherited", [])), inj.count, inj.trips)
        faults.point("restore.task.memory")

    def _set_session(self, node: Node, inj: Injector) -> None:
        """``setsid`` (with its controlling terminal again) or a group of its own: queued
        (the next round trip runs them, before any clone)."""
        info = node.info

        def failed(err: int) -> RestoreError:
            return RestoreError(f"process {node.pid}: session/group set-up failed: "
                                f"{os.strerror(err)}")

        try:
            if info.get("setsid"):
                inj.later("setsid", failed=failed)
                slave = info.get("ctty_fd")
                if slave is not None:
                    from .resources.tty import TIOCSCTTY  # a tree with terminals only
                    fd = self.sender.lend(inj, self.helper.start, node.sock, slave)
                    try:
                        inj.call("ioctl", fd, TIOCSCTTY, 0)
                    finally:
                        inj.call("close", fd)
            elif info["pgid"] == node.pid:
                inj.later("setpgid", 0, 0, failed=failed)
            elif node.joins_group:  # while its stand-in lives; the PID it knows it by
                inj.later("setpgid", 0, nspids.inner(info["pgid"]), failed=failed)
        except OSError as e:
            raise RestoreError(f"process {node.pid}: session/group set-up failed: "
                               f"{os.strerror(e.errno or 0)}") from None

    def _clone(self, parent: Node, inj: Injector, kid: Node) -> None:
        """Clone ``kid`` from ``parent`` under its PID: its copy of the parent's memory and
        fds (its parent's fd table or fs struct themselves if it shared them: sharing.py),
        stopped under ckpt (PTRACE_O_TRACEFORK); then made, or made a zombie."""
        scratch = self.helper.start
        flags = sharing.clone_flags(kid.info)
        exit_signal = kid.info.get("exit_signal", libc.SIGCHLD)  # as it was cloned
        if parent.stand_in is not None and kid.stand_in is None:
            # the parent it had, as the kernel reparented it; its exit signal then is
            # the stand-in's, SIGCHLD (clone3 wants none given)
            flags, exit_signal = flags | libc.CLONE_PARENT, 0
        tids = nspids.levels(kid.pid)
        args = libc.CloneArgs(flags=flags, exit_signal=exit_signal,
                              set_tid=scratch + 256, set_tid_size=len(tids))
        inj.write(scratch, bytes(args))
        inj.write(scratch + 256, struct.pack(f"<{len(tids)}i", *tids))
        ptrace.set_options(parent.pid, inj.options | ptrace.PTRACE_O_TRACEFORK
                           | ptrace.PTRACE_O_TRACECLONE)  # CLONE_PARENT: a clone event
        try:
            deadline = time.monotonic() + PID_WAIT_SECONDS
            while True:
                got = inj.raw("clone3", scratch, ctypes.sizeof(args))
                if got != -errno.EEXIST or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        finally:
            ptrace.set_options(parent.pid, inj.options)
        if got < 0:
            raise _refused(kid, -got)
        self.made.append(kid)
        if got != tids[0]:
            raise RestoreError(f"process {parent.pid}: child {kid.pid} came back as {got}")
        stop = ptrace.wait_stop(kid.pid)
        if stop.exited or stop.event != ptrace.PTRACE_EVENT_STOP:
            raise RestoreError(f"the new process {kid.pid}: {stop.describe()}")
        ptrace.set_options(kid.pid, ptrace_options(kid))  # it came with its parent's
        kid.sock = parent.sock
        if kid.zombie:
            self.zombies.append(kid)
        if kid.stand_in is not None:
            self.stand_ins.append(kid)
            if not kid.stand_in.session:  # the group, before a member may join it
                self._make_session(kid)

    def _make_session(self, node: Node) -> None:
        """A stand-in's ``setsid`` (then the session's members it clones) or
        ``setpgid(0, 0)``."""
        with Injector(node.pid, self.helper.site, ptrace.get_regs(node.pid),
                      options=ptrace_options(node)) as inj:
            self._set_session(node, inj)
            for kid in node.late:
                self._clone(node, inj, kid)
        log.info("process %d: a stand-in for the exited leader of %s %d", node.pid,
                 _what(node), node.pid)

    def _retire(self, stand_in: Node) -> None:
        """Kill a stand-in, the tree complete, and have its creator reap it: no trace is
        left (the SIGCHLD its creator gets goes with its pending signals, signals.py)."""
        os.kill(stand_in.pid, _signal.SIGKILL)
        _reap(stand_in.pid)  # as its tracer (and its parent, if ckpt forked it)
        self.made.remove(stand_in)
        creator = stand_in.parent
        if creator is None:
            return
        with Injector(creator.pid, self.helper.site, ptrace.get_regs(creator.pid),
                      options=ptrace_options(creator)) as inj:
            inj.call("wait4", stand_in.pid, 0, _WALL, 0)


    def _make_zombie(self, kid: Node) -> None:
        """Make the fresh ``kid`` exit as it did, in its session or group: its parent has
        it to reap, with its saved exit status."""
        status = kid.info.get("exit_status", 0)
        with Injector(kid.pid, self.helper.site, ptrace.get_regs(kid.pid),
                      options=ptrace_options(kid)) as inj:
            self._set_session(kid, inj)
            _become(kid.pid, inj, self.helper.start, kid.info.get("zombie_as"))
            if os.WIFSIGNALED(status):
                _die_of(kid.pid, inj, self.helper.start, os.WTERMSIG(status))
            else:
                try:
                    inj.raw("exit_group", os.WEXITSTATUS(status))
                except procfs.ProcessGone:
                    pass  # gone as it should, its exit seen by ckpt (its tracer)
        self.made.remove(kid)  # a zombie of its parent's now, no longer traced
        log.info("process %d: a zombie again (status %#x)", kid.pid, status)


def _keyring(node: Node) -> dict[str, Any] | None:
    """The session keyring ``node``'s process had joined (a stand-in has none)."""
    return node.core.get("task", {}).get("keyring")


def _what(stand_in: Node) -> str:
    return "session" if stand_in.info["setsid"] else "process group"


def _refused(node: Node, err: int) -> RestoreError:
    """Why ``node``'s process could not be created under its PID."""
    e = _pid_refused(node.pid, err)
    if node.stand_in is None:
        return e
    return RestoreError(f"the stand-in for {_what(node)} {node.pid}, whose leader had "
                        f"exited: {e}")


def _become(pid: int, inj: Injector, scratch: int, who: dict[str, Any] | None) -> None:
    """Give the zombie-to-be ``pid`` the name and ids it had (``who``, zombie_as), which
    its parent sees it by: a clone of its parent made by ckpt, it has ckpt's (its parent
    of another user could not kill(2) it, waitid's si_uid said root, ps said ckpt).
    Ids already its own are left alone (a ckpt that is not root could not set them)."""
    if not who:
        return
    inj.write(scratch, os.fsencode(who["comm"])[:15] + b"\0")
    inj.call("prctl", libc.PR_SET_NAME, scratch)
    now = procfs.status(pid)
    if sorted(now.groups) != sorted(who["groups"]):
        groups = who["groups"]
        inj.write(scratch, b"".join(g.to_bytes(4, "little") for g in groups) or b"\0")
        inj.call("setgroups", len(groups), scratch)
    if now.gids != who["gids"]:
        inj.call("setresgid", *who["gids"][:3])
        inj.raw("setfsgid", who["gids"][3])  # (it returns the one before, never fails)
    if now.uids != who["uids"]:
        inj.call("setresuid", *who["uids"][:3])
        inj.raw("setfsuid", who["uids"][3])


def _die_of(pid: int, inj: Injector, scratch: int, sig: int) -> None:
    """Kill the traced process ``pid`` with ``sig`` as its default action would, without
    a core file: the status its parent sees is the one saved."""
    if sig not in (_signal.SIGKILL, _signal.SIGSTOP):
        inj.write(scratch, bytes(32))  # struct sigaction: SIG_DFL
        inj.call("rt_sigaction", sig, scratch, 0, 8)
    inj.write(scratch, struct.pack("<QQ", 0, libc.prlimit(pid, RLIMIT_CORE)[1]))
    inj.call("prlimit64", 0, RLIMIT_CORE, scratch, 0)
    ptrace.set_sigmask(pid, signals.ALL_BLOCKED & ~(1 << (sig - 1)))
    os.kill(pid, sig)
    deliver = 0
    while True:
        try:
            ptrace.cont(pid, deliver)
        except OSError as e:
            if e.errno != errno.ESRCH:  # dying already (SIGKILL): no longer in a stop
                raise
        stop = ptrace.wait_stop(pid)
        if stop.exited:
            return
        deliver = sig if stop.stopsig == sig else 0


# ---------------------------------------------------------------- failure

def kill(made: list[Node], tree: list[int]) -> None:
    """Kill every process a failed restore created and reap them all.

    Killed parents would hand their dead or dying children to the nearest child
    subreaper (or init), so ckpt is one meanwhile: every orphan comes back to
    it and is reaped here; nothing is left to the caller. No process is waited
    for alone: each exit may wait on another's reaping (a thread's holds back its
    leader's while ckpt traces it; the init of the tree's PID namespace does not
    exit until it has reaped its children, which ckpt, their tracer, must let go
    first), so all are polled together until none is left.
    """
    was = ctypes.c_int(0)
    try:
        libc.prctl(libc.PR_GET_CHILD_SUBREAPER, ctypes.addressof(was))
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        log.warning("cannot become a child subreaper to clean up: %s", e)
    try:
        for n in made:
            try:
                os.kill(n.pid, _signal.SIGKILL)
            except OSError:
                pass
        _reap_all([tid for n in made for tid in (*n.thread_ids, n.pid)])
        # The zombies of the tree, orphans now, are ckpt's, or soon: reap until none is left.
        wanted = set(tree)
        deadline = time.monotonic() + PID_WAIT_SECONDS
        while time.monotonic() < deadline:
            left = [p for p in procfs.children(os.getpid()) if p in wanted]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, _signal.SIGKILL)
                except OSError:
                    pass
                _reap(pid)
    finally:
        try:
            libc.prctl(libc.PR_SET_CHILD_SUBREAPER, was.value)
        except OSError:
            pass


def _reap_all(pids: list[int]) -> None:
    """Wait for every one of ``pids`` as its tracer, then as its parent, until each is
    neither, polling them all (see ``kill``)."""
    pending = set(pids)
    deadline = time.monotonic() + 6 * PID_WAIT_SECONDS
    while pending:
        for pid in list(pending):
            try:
                os.waitpid(pid, _WALL | os.WNOHANG)
            except ChildProcessError:
                pending.discard(pid)
            except InterruptedError:
                pass
        if pending:
            if time.monotonic() > deadline:
                log.warning("processes %s not reaped after they were killed",
                            ", ".join(map(str, sorted(pending))))
                return
            time.sleep(0.005)


def _reap(pid: int) -> None:
    """Wait for ``pid`` as its tracer, then as its parent, until it is neither."""
    for _ in range(3):
        try:
            os.waitpid(pid, ptrace.__WALL)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
