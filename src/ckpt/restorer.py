"""The restore driver: verify the images, fork the saved tree under its saved
PIDs, turn each process into the saved one with injected syscalls, and let
them all run.

The tree is created first (tree.py): the root is a fork of ckpt (clone3 with
set_tid), whose address space becomes the saved one; every other process is
cloned from its restored parent, so that the memory they shared copy-on-write
is shared again, and changes only what differs. Each gets its fds and memory on
the way, calls setsid/setpgid as its saved self did, and clones its children;
zombies exit with their saved status once all are created, for their parent to reap.
ckpt then restores each process's own state: per-task state, threads, signals
and credentials, and the saved registers last. If anything fails every new
process is killed: nothing half-restored is left.

``Restore`` holds one restore's state and runs its phases in order;
``_TaskRestore`` lists the steps that turn one process into its saved self.
"""

from __future__ import annotations

import _signal
import ctypes
import errno
import os
import struct
import time

from . import faults, recovery, standins, tree, validate
from .errors import CkptError, ImageError, RestoreError
from .hooks import ignore
from .images import CGROUPS, INVENTORY, LOCKS, MOUNTS, NAMESPACES, SYSV, ImageReader, untrusted
from .inherit import available_keys, parse_inherit_fd, resolve_original_fds
from .kernel import interrupts, libc, procfs, ptrace, safefs, scoped, treeroot, vdso
from .kernel.inject import BATCH_CODE, BATCH_ENTRY, BatchArea, Injector, vdso_syscall_offset
from .kernel.record import dataclass, field
from .log import logger
from .pages import fill
from .pages.chain import Chain
from .resources import (
    cpu,
    fdtable,
    files,
    ghost,
    mem,
    nspids,
    seccomp,
    sharing,
    signals,
    task,
    thread,
    timers,
)
from .resources.filekind import TcpFlags

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:  # imported when the images hold a lock, or sockets; --new-pidns; a tree
    from collections.abc import Callable  # with its own namespaces, mounts or cgroups
    from typing import Any

    from . import guard, netlock, new_pidns
    from .hooks import Notify
    from .job_control import Foreground
    from .pages.lazy import Handover
    from .resources import cgroups, locks, mounts, sk_inet, sysv, treens, tty

log = logger("ckpt.restore")

HELPER_SIZE = 64 << 10
_SITE_OFFSET = HELPER_SIZE - 16
# The helper's second half: the table of batched syscalls, then their loop (inject.py);
# its first is scratch memory.
_TABLE_OFFSET = HELPER_SIZE // 2
_BATCH_CODE_OFFSET = HELPER_SIZE - 256
# How long a process whose loss (ESRCH) failed the restore may take to become the zombie
# that says what killed it (a killed thread group's leader waits for its threads' exit)
_DYING_SECONDS = 1.0

@dataclass
class RestoreResult:
    """What a restore did, for callers of the API."""

    pid: int
    seconds: float
    exit_status: int | None = None
    pids: list[int] = field(default_factory=list)  # as saved (in its namespace: --new-pidns)
    init_pid: int | None = None  # --new-pidns: the namespace's init, on the host


def _own_vdso_offset() -> int:
    image = vdso.own_image()
    if not image:
        raise RestoreError("ckpt itself has no vDSO; cannot restore")
    return vdso_syscall_offset(image)


def _stand_ins(images: ImageReader, inv: dict[str, Any]) -> list[standins.StandIn]:
    """The stand-ins for groups and sessions whose leader had exited: the tree's, which
    must be those the inventory records."""
    try:
        planned = standins.plan(inv["tasks"], inv.get("outside_sid"), inv.get("outside_pgid"))
    except standins.Unbuildable as e:
        raise ImageError(f"{images.path(INVENTORY)}: {e}") from None
    problem = standins.check_recorded(inv.get("standins", []), planned)
    if problem:
        raise ImageError(f"{images.path(INVENTORY)}: {problem}")
    return planned


def _parse_inherit(inherit_fds: list[str] | tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for arg in inherit_fds:
        parsed = parse_inherit_fd(arg)
        if parsed is not None:
            fd, key = parsed
            out[key] = fd
    return out


class Restore:
    """One restore of the tree saved in ``images_dir``: its inputs, what it has
    created so far, and its phases, which ``run`` calls in order.

    Nothing is created before ``open_files``. From there on a failure in any
    phase undoes everything (``undo``): every new process is killed and reaped,
    the pidfile removed. ``notify`` is called between phases, at each of
    hooks.RESTORE_ACTIONS; raising fails the restore, except at "post-resume",
    when the processes run already.
    """

    def __init__(self, images_dir: str, *, detach: bool = True,
                 shell_job: bool | None = None,
                 inherit_fds: tuple[str, ...] | list[str] = (),
                 pidfile: str | None = None, notify: Notify | None = None,
                 sibling: bool = False, tcp: TcpFlags | None = None,
                 network_lock: str | None = None, manage_cgroups: str | None = None,
                 root: str | None = None, external: tuple[str, ...] = (),
                 cg_root: dict[str, str] | None = None, in_new_pidns: bool = False,
                 trust_images: bool = False,
                 orphan_pts_master: Callable[[int], None] | None = None,
                 lazy_pages: bool = False, work_dir: str | None = None):
        self.images_dir = images_dir
        self.lazy_pages = lazy_pages  # the lazy-pages daemon in work_dir serves the pages
        self.work_dir = work_dir or images_dir
        self.lazy: Handover | None = None
        self.in_new_pidns = in_new_pidns  # run by the init of a new PID namespace
        self.trust_images = trust_images  # restore images others could have written
        self.new_root = root  # where the root mount of the tree's mount namespace comes from
        self.external = external  # mnt[KEY]:PATH: the host paths of external mounts
        self.cg_root = cg_root or {}  # criu's cgroup roots: where the tree's cgroups are
        self.manage_cgroups = manage_cgroups
        self.detach = detach or sibling
        self.shell_job = shell_job
        self.orphan_pts_master = orphan_pts_master  # takes the new master of the console
        self.inherit_fds = inherit_fds
        self.pidfile = pidfile
        self.notify = notify or ignore
        self.sibling = sibling  # the root a child of ckpt's parent (criu's rst_sibling)
        self.tcp = tcp or TcpFlags()
        self.network_lock = network_lock  # "skip": leave the dump's lock alone
        self.net_lock: netlock.Lock | None = None  # the dump's network lock, still held
        # What ``load`` reads from the images.
        self.root_pid = 0
        self.tasks: list[dict[str, Any]] = []
        self.order: list[tree.Node] = []  # every process, parents before children
        self.live: list[tree.Node] = []  # the same, zombies left out
        self.outside_pgid: int | None = None  # a shell job's group, outside the tree
        self.inherit: dict[str, int] = {}
        self.fctx: files.RestoreFiles | None = None
        self.locks: locks.RestoreLocks | None = None  # a tree that held file locks
        self.ipc: sysv.Objects | None = None  # a tree that had SysV objects
        self.namespaces: treens.Enter | None = None  # the tree's own uts, ipc, pid ones
        self.mounts: mounts.Builder | None = None  # its mount tree, if it had its own
        self.stand_in_pids: set[int] = set()
        self.scope = scoped.Scope()  # what holds until the restore ends
        self.cgroups: cgroups.RestoreCgroups | None = None
        # What the phases create; ``undo`` takes it all back.
        self.helper = 0  # the helper area, mapped in ckpt until the tree is forked
        self.helper_in_ckpt = False
        self.vdso_offset = 0
        self.sender: fdtable.FdSender | None = None  # passes the fds to the new processes
        self.fd_limit = 0  # ckpt's RLIMIT_NOFILE, raised as far as it goes
        self.creation: tree.Creation | None = None  # the processes made so far
        self.shmem: dict[int, tuple[int, int, int]] = {}  # shared memory mapped so far
        self.cwds: dict[int, int] = {}  # removed working directories: ghost id -> a pid in it
        self.pidfile_written: str | None = None
        self.watch: guard.Guard | None = None  # made by let_live, for a tree of several
        self.pages: fill.Fill | None = None  # the pages files, checked as they are read
        self.foreground: Foreground | None = None

    @property
    def root(self) -> tree.Node:
        return next(n for n in self.order if n.pid == self.root_pid)

    @property
    def own_pids(self) -> dict[int, int]:
        """{PID: PID inside} of a tree that had a PID namespace of its own (treens.py)."""
        return self.namespaces.pids if self.namespaces is not None else {}

    @property
    def needed_pids(self) -> set[int]:
        """The PIDs the restore gives its processes, threads and stand-ins, which ckpt's
        own helpers must not hold."""
        return {tid for n in self.order for tid in (n.pid, *n.thread_ids)} | \
            self.stand_in_pids

    def run(self) -> RestoreResult:
        t0 = time.monotonic()
        if not self.in_new_pidns:  # else done outside, where the notes' PIDs are
            recovery.recover()
        self.notify("pre-restore", 0)
        self.fd_limit = fdtable.raise_limit()  # ckpt holds every description at once
        self.load()
        try:
            self.enter_namespaces()
            self.make_ipc()
            self.open_files()
            self.make_cgroups()
            self.map_helper()
            self.create_tree()
            self.across_tasks()
            for node in self.live:
                _TaskRestore(self, node).run()
            ghost.seal_memfds()  # once every mapping of every memfd is made
            if self.ipc is not None:
                self.ipc.finish()
            self._files().set_owners()  # once every process and thread exists
            self.lend_terminal()
            self.notify("post-restore", self.root_pid)
            faults.point("restore.before_detach")
            self.unlock_network()
            self.notify("pre-resume", 0)
            self.let_live()
            self.resume()
            if self.lazy is not None:
                self.lazy.done()
        except BaseException as e:
            with interrupts.held():  # a signal now waits until everything is taken back
                killed = self._killed_meanwhile(
                    isinstance(e, (ProcessLookupError, procfs.ProcessGone))) if isinstance(
                    e, (OSError, procfs.ProcessGone, CkptError)) else None
                self.undo()
            if killed is not None:
                raise RestoreError(killed) from None
            if isinstance(e, CkptError):
                raise
            if isinstance(e, procfs.ProcessGone):
                raise RestoreError(f"a new process died during the restore ({e})") from None
            if isinstance(e, OSError):
                raise RestoreError(f"restore of process {self.root_pid} failed: {e}") from e
            raise
        finally:
            self.scope.close()
            if self.mounts is not None:
                self.mounts.close()
            if self.namespaces is not None:
                self.namespaces.leave()  # they live on in the tree, or vanish with it
        # The tree runs, the pidfile written: a terminating signal from now on must not
        # make ckpt say it failed (it exited 143, "interrupted", the tree running); only
        # a wait for the root's exit is interrupted again.
        raising = interrupts.only_note()
        faults.point("restore.done")
        dt = time.monotonic() - t0
        log.info("%d processes restored in %.3f s", len(self.tasks), dt)
        return RestoreResult(self.root_pid, dt, exit_status=self.finish(raising),
                             pids=[t["pid"] for t in self.tasks])

    def _killed_meanwhile(self, gone: bool = False) -> str | None:
        """The process of the tree a signal from outside ckpt killed while it was being
        restored (kill -9, the OOM killer, the keeper of a lazy-pages daemon that died),
        said in one line; None when each is alive. Read before ``undo`` kills them: the
        failure it caused (a bare ESRCH of a ptrace call, an injected call cut short) says
        less. ``gone``: the failure was an ESRCH, the process perhaps still exiting."""
        killed = procfs.killed_by_signal(n.pid for n in self.started)
        deadline = time.monotonic() + _DYING_SECONDS
        while killed is None and gone and time.monotonic() < deadline:
            time.sleep(0.005)  # ``gone``: a process ckpt lost (ESRCH) may still be exiting
            killed = procfs.killed_by_signal(n.pid for n in self.started)
        if killed is None:
            return None
        lazy = (" (with --lazy-pages: the daemon's keeper kills the processes it "
                "serves when the daemon dies)" if self.lazy is not None else "")
        return (f"process {killed[0]} was {ptrace.Stop(*killed).describe()} while it was "
                f"being restored{lazy}")

    # ------------------------------------------------------------ the phases, in order

    def load(self) -> None:
        """Verify every image and read what the restore needs; nothing is created."""
        self.images_dir = self.check_owner(self.images_dir, [INVENTORY])
        images = ImageReader(self.images_dir)
        self.check_owner(self.images_dir, list(images.files))
        # Pages files: their size now, their checksum as the pages are written (fill.py).
        self.pages = fill.Fill(images, images.verify(later=fill.is_pages))
        self.scope.callback(self.pages.close)
        faults.point("restore.verified")
        if self.lazy_pages:  # no daemon, no restore: before anything is created
            from .pages.lazy import Handover
            self.lazy = Handover(self.work_dir, images.crc32)
            self.scope.callback(self.lazy.close)
        inv = images.inventory
        if inv.get("type", "dump") != "dump":
            raise RestoreError(f"{self.images_dir} holds a {inv.get('type')} (memory pages "
                               "only); restore the folder of the dump made after it")
        checked = validate.load(images)  # every image against its schema, and each other
        chain = Chain(images)  # every parent checked too, before anything is created
        for parent in chain.readers[1:]:
            self.check_owner(parent.dir, [INVENTORY, *parent.files])
            validate.check_parent(parent, checked.live)
        self.inherit = _parse_inherit(self.inherit_fds)
        if self.shell_job is None:
            self.shell_job = bool(inv.get("shell_job"))
        if inv.get("shell_job") and not self.shell_job:
            raise RestoreError("the image is of a shell job; restore it with -j (--shell-job)")
        self.root_pid = root_pid = inv["root_pid"]
        self.tasks = tasks = inv["tasks"]
        if self.in_new_pidns and any(t["pid"] == 1 for t in tasks):
            raise RestoreError("the tree holds PID 1, which in a new PID namespace is "
                               "ckpt's init")
        live = [t for t in tasks if not t.get("zombie")]
        cores, mms, fd_tables = checked.cores, checked.mms, checked.fd_tables
        # a CLI dump does not wait for its processes' exit: before anything is checked
        # against the system (ports, locks, PIDs), those still exiting are waited for
        tree.wait_dumped_exits({pid: mm["start_time"] for pid, mm in mms.items()
                                if mm.get("start_time")})
        descriptions = checked.descriptions
        segments = {pid: chain.segments(pid, mm) for pid, mm in mms.items()}
        if chain.depth:
            log.info("pages come from a chain of %d image folders", chain.depth + 1)
        for pid, core in cores.items():
            task.check_root(pid, core["task"])
        sharing.check(tasks)
        for t in live:  # the pages a process shares with the parent it is cloned from
            pid = t["pid"]
            problem = mem.check_inherited(mms.get(t["ppid"]) if pid != root_pid else None,
                                          mms[pid])
            if problem:
                raise ImageError(f"{images.path(f'mm-{pid}.json')}: {problem}")
        log.info("restoring %d processes (root %d) from %s", len(tasks), root_pid,
                 self.images_dir)
        by_original_fd = resolve_original_fds(self.inherit, root_pid, fd_tables.get(root_pid, []))
        self.fctx = files.RestoreFiles(images, descriptions, shell_job=self.shell_job,
                                       inherit=self.inherit, inherit_files=by_original_fd,
                                       tcp=self.tcp, tree={t["pid"] for t in tasks},
                                       orphan_pts=self.orphan_pts_master,
                                       ids={pid: (c["task"]["creds"]["uids"],
                                                  c["task"]["creds"]["gids"])
                                            for pid, c in cores.items()})
        stand_ins = _stand_ins(images, inv)
        _, self.order = tree.build_nodes(tasks, root_pid, inv.get("outside_sid"), stand_ins)
        self.stand_in_pids = {s.pid for s in stand_ins}
        self.live = [n for n in self.order if not n.zombie]
        for n in self.live:
            n.core, n.mm, n.fd_table = cores[n.pid], mms[n.pid], fd_tables[n.pid]
            n.segments = segments[n.pid]
        self.outside_pgid = inv.get("outside_pgid")
        if LOCKS in images.files:  # locks.py, sysv.py: imported for the trees that need them
            from .resources import locks
            self.locks = locks.RestoreLocks(images.load_json(LOCKS), fd_tables, mms)
        if SYSV in images.files:
            from .resources import sysv
            self.ipc = sysv.Objects(images)
        if NAMESPACES in images.files:
            from .resources import treens
            saved = treens.check_image(images.load_json(NAMESPACES), images.path(NAMESPACES))
            net_key = treens.external_net_key(saved)
            if net_key is not None and net_key not in self.inherit:
                raise RestoreError(f"the tree's network namespace was external as {net_key!r}: "
                                   f"give it with --inherit-fd fd[N]:{net_key}")
            # the key names a namespace, not a file of the tree
            self.namespaces = treens.Enter(saved, self.inherit.pop(net_key, -1))
        self.load_mounts(images)
        pids = self.own_pids
        if pids and (pids.get(root_pid) != 1 or any(t["pid"] not in pids for t in tasks)):
            raise ImageError(f"{images.path(NAMESPACES)}: the PIDs inside must name every "
                             "process, the root as 1")
        if self.mounts is None:  # else once its mounts are made (enter_namespaces)
            self.check_mapped_files()
        if CGROUPS in images.files or self.manage_cgroups is not None or self.cg_root:
            from .resources import cgroups  # else the processes stay in ckpt's cgroups
            self.cgroups = cgroups.RestoreCgroups(
                images.load_json(CGROUPS) if CGROUPS in images.files else None,
                self.manage_cgroups, root_pid, self.cg_root)
            self.cgroups.check()
            if self.mounts is not None and self.cgroups.moves:
                self.mounts.move_cgroup_roots(self.cgroups.moves)
        # before anything is created: a refused restore leaves the lock for a next try
        inet = self._inet()
        if inet is not None:
            inet.check_connections(self.fctx.ctx)
        if inv.get("network_lock") and self.network_lock != "skip":
            from . import netlock
            try:
                self.net_lock = netlock.Lock.from_json(inv["network_lock"])
            except (LookupError, TypeError, ValueError) as e:
                raise RestoreError(f"the image's network lock is malformed: {e}") from None

    def load_mounts(self, images: ImageReader) -> None:
        """The tree's mount tree, if it had a mount namespace of its own, checked with
        --root and the external mounts' sources (mounts.py, imported for those only)."""
        if not self.external and MOUNTS not in images.files:
            if self.new_root not in (None, "", "/"):
                raise RestoreError(f"--root {self.new_root}: the tree had no mount "
                                   "namespace of its own")
            return
        from .resources import mounts
        ext, others = mounts.split_external(self.external)
        if others:
            raise RestoreError(f"--external {others[0]} at restore: only mounts "
                               "(mnt[KEY]:PATH); give files with --inherit-fd")
        if MOUNTS not in images.files:
            if self.new_root not in (None, "", "/"):
                raise RestoreError(f"--root {self.new_root}: the tree had no mount "
                                   "namespace of its own")
            return
        saved = mounts.check_image(images.load_json(MOUNTS), images.path(MOUNTS))
        if self.new_root in (None, "", "/"):
            raise RestoreError("the tree had a mount namespace of its own: give the folder "
                               "its root mount comes back from (--root, runc's root)")
        self.mounts = mounts.Builder(images, saved, self.new_root, ext,
                                     pid_ns=bool(self.own_pids))
        self.mounts.check()

    def enter_namespaces(self) -> None:
        """ckpt in the new uts, ipc and mount namespaces of the tree, if it had its own:
        what it makes from now on (mounts, SysV objects, files, the root) is made in them
        (treens.py); the tree's mounts built under --root (mounts.py)."""
        if self.namespaces is not None:
            self.namespaces.enter()
        self.scope.enter(nspids.restoring(self.own_pids))
        if self.mounts is not None:
            self.mounts.hold(self.needed_pids)
            self.mounts.build()
            self.scope.enter(treeroot.at(f"/proc/{self.mounts.holder}/root"))
            self.check_mapped_files()

    def finish_mounts(self) -> None:
        """The tree's proc mounts, now that its PID namespace exists (the root's)."""
        assert self.mounts is not None
        pid_ns = os.open(f"/proc/{self.root_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.mounts.finish(pid_ns)
        finally:
            os.close(pid_ns)

    def check_mapped_files(self) -> None:
        """Every mapped file is there, unchanged since the dump (mem.py)."""
        for n in self.live:
            mem.check_files(n.mm)

    def check_owner(self, directory: str, names: list[str]) -> str:
        """Refuse, as root, images anyone but root could have written (``untrusted``:
        a crafted image could make root run anything), unless ``trust_images``; run by
        another user, that user's images are taken too. Returns the folder's path
        without symbolic links, which the restore uses from then on."""
        euid = os.geteuid()
        real, why = untrusted(directory, names, (0,) if euid == 0 else (0, euid))
        if why is None:
            return real
        if not self.trust_images:
            raise RestoreError(
                f"{why}: images that {'anyone but root' if euid == 0 else 'another user'} "
                "could have written are not restored (a crafted image runs anything with "
                "ckpt's privileges); make them root's and writable by root only, or restore "
                "with --trust-images")
        log.warning("%s: restored all the same (--trust-images): whoever could write these "
                    "images can run anything with ckpt's privileges", why)
        return real

    def make_ipc(self) -> None:
        """The tree's SysV objects, under their ids, before any process attaches them."""
        if self.ipc is None:
            return
        self.ipc.check()  # ids and keys free, or the tree's own objects left behind
        self.ipc.make()

    def open_files(self) -> None:
        """Open, in ckpt, every file of every process (each process's plan of fds), once
        every --inherit-fd key names a file and every kind had its say."""
        fctx = self._files()
        unused = set(self.inherit) - fctx.used_keys
        if unused:
            raise RestoreError(
                f"--inherit-fd key {sorted(unused)[0]!r} matches no file in the image; keys "
                f"in the image: {', '.join(available_keys(fctx.descriptions)) or 'none'}")
        fctx.check()  # each kind refuses now, before anything is opened
        problem = files.check_limits({n.pid: n.fd_table for n in self.live}, fctx.descriptions,
                                     self.fd_limit)
        if problem:
            raise RestoreError(f"{problem} (ckpt's hard RLIMIT_NOFILE here)")
        for n in self.live:
            n.plan = fctx.prepare_task(n.fd_table)
            if n.info["setsid"] and "ctty" in n.info:  # a session leader with a terminal
                n.info["ctty_fd"] = self._terminals().controlling_slave(n.info,
                                                                        self.shell_job)
        fctx.after_open()
        faults.point("restore.fds_opened")

    def make_cgroups(self) -> None:
        """The cgroups the processes go back into, made if missing, their knobs set, as
        the mode wants (cgroups.py)."""
        if self.cgroups is not None:
            self.cgroups.make()
        faults.point("restore.cgroups")

    def map_helper(self) -> None:
        """Map, in ckpt, the helper area the new processes inherit: free in ckpt and in
        every saved address space, it holds the syscall instruction and the scratch
        memory their injected syscalls use while their vDSO moves."""
        self.vdso_offset = _own_vdso_offset()
        occupied = [(v["start"], v["end"]) for n in self.live for v in n.mm["vmas"]]
        mine = False  # ckpt's own mappings in ``occupied``: read only if one is in the way
        while True:
            self.helper = mem.free_area(occupied, HELPER_SIZE)
            try:
                libc.syscall("mmap", self.helper, HELPER_SIZE,
                             libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC,
                             libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_FIXED_NOREPLACE,
                             -1, 0)
                break
            except OSError as e:
                if e.errno != errno.EEXIST or mine:
                    raise
            occupied += [(v.start, v.end) for v in procfs.maps(os.getpid())]
            mine = True
        self.helper_in_ckpt = True
        ctypes.memmove(self.helper + _SITE_OFFSET, b"\x0f\x05\xcc", 3)
        ctypes.memmove(self.helper + _BATCH_CODE_OFFSET, BATCH_CODE, len(BATCH_CODE))

    @property
    def batch(self) -> BatchArea:
        """Where the new processes run batches of injected syscalls (inject.py)."""
        return BatchArea(self.helper + _BATCH_CODE_OFFSET, self.helper + _TABLE_OFFSET,
                         (_BATCH_CODE_OFFSET - _TABLE_OFFSET) // BATCH_ENTRY - 1)

    def create_tree(self) -> None:
        """Fork the root, then clone every other process from its restored parent, each
        with its fds and memory (tree.py); ckpt then drops its copies of the helper and
        of the files. Then each process stops as it was saved, if it was."""
        self.sender = fdtable.FdSender()
        helper = tree.Helper(self.helper, HELPER_SIZE, self.helper + _SITE_OFFSET, self.batch)
        join = self.cgroups.join if self.cgroups is not None else _stay
        mapped_locks = self.locks.by_mapping if self.locks is not None else {}
        creation = self.creation = tree.Creation(helper, self.sender, self.images_dir,
                                                 self.shmem, self._files().held_ghosts(),
                                                 join, mapped_locks, self.pages, self.lazy)
        creation.cgroup_ns = self.namespaces is not None and self.namespaces.cgroup
        try:
            creation.fork_root(self.root, self.sibling,
                               self.mounts.ns_fd if self.mounts is not None else -1)
            own = self.has_own_namespaces()
            if own:  # the root in them, stopped (runc runs its prestart hooks then)
                self.notify("setup-namespaces", self.root_pid)
            if self.mounts is not None and self.own_pids:
                self.finish_mounts()
            if own:  # their mounts complete, no other process yet
                self.notify("post-setup-namespaces", 0)
        finally:
            self._unmap_helper()
        creation.build(self.root)
        assert self.pages is not None
        self.pages.finish()  # every pages file checked, before any process runs
        log.info("%d processes created, %d fds passed", len(creation.made), self.sender.sent)
        self._files().close_all()
        self.sender.close()
        for n in creation.made:  # before any process's signals are back (see enter_stop)
            if n.core.get("stop_signal"):
                creation.run_carried(n.pid)
            signals.enter_stop(n.pid, n.core.get("stop_signal", 0), n.core["signals"])
        faults.point("restore.created")

    def has_own_namespaces(self) -> bool:
        """The tree had namespaces of its own (uts, ipc, net, mount, PID): as criu,
        the restore then tells its caller when they are made."""
        return (self.namespaces is not None and bool(self.namespaces.kinds or self.own_pids)
                or self.mounts is not None)

    @property
    def started(self) -> list[tree.Node]:
        """Every live process created so far (ckpt traces them all)."""
        return self.creation.made if self.creation is not None else []

    def across_tasks(self) -> None:
        """What kinds of files do in several new processes in turn, before any is
        restored (unix connections not accepted yet: the listener listens in its
        process, then each client connects from its own); each process's registers
        put back after."""
        holders: dict[str, list[tuple[int, int]]] = {}
        for n in self.live:
            for e in n.fd_table:
                holders.setdefault(e["file"], []).append((n.pid, e["fd"]))
        injectors: dict[int, tuple[Injector, ptrace.UserRegs]] = {}

        def injector(pid: int) -> Injector:
            if pid not in injectors:
                if self.creation is not None:  # its last calls first (Creation.carried)
                    self.creation.run_carried(pid)
                regs = ptrace.get_regs(pid)
                injectors[pid] = (Injector(pid, self.helper + _SITE_OFFSET, regs), regs)
            return injectors[pid][0]

        try:
            self._files().restore_across_tasks(holders, injector, self.helper)
        finally:
            for inj, regs in injectors.values():
                inj.close()
                ptrace.set_regs(inj.pid, regs)

    def write_pidfile(self) -> None:
        """Once the tree is sure to run: a killed restore leaves no pidfile."""
        if not self.pidfile:
            return
        path = (self.pidfile if os.path.isabs(self.pidfile)
                else os.path.join(self.images_dir, self.pidfile))
        self.pidfile_written = path
        try:  # a symbolic link planted under its name is removed, never written through
            safefs.write_new(path, f"{self.root_pid}\n".encode())
        except OSError as e:
            raise RestoreError(f"cannot write the pidfile {path}: {e.strerror}") from None

    def lend_terminal(self) -> None:
        """A shell job's terminal gets the job's settings again (raw mode, window size);
        restored without ``detach`` the job gets ckpt's terminal (job_control.py)."""
        if not self.shell_job:
            return
        self._terminals().lend_to_job()
        if self.detach or self.root.info["setsid"]:  # a session of its own: not ckpt's job
            return
        from .job_control import Foreground
        pgid = self.job_foreground()
        self.foreground = Foreground((pgid if pgid != self.outside_pgid else None)
                                     or os.getpgrp())

    def job_foreground(self) -> int:
        """The group of a shell job that gets the terminal: the one in its foreground at
        dump when it is a group of the tree (a job of a shell in the job), else the
        root's."""
        ahead = self.root.info.get("tpgid", -1)
        if any(n.info["pgid"] == ahead for n in self.live):
            return ahead
        return self.root.info["pgid"]

    def let_live(self) -> None:
        """The point of no return: every process stops depending on ckpt's life (EXITKILL
        cleared, thread by thread), so that from now on a killed ckpt lets the complete
        tree run. Meanwhile a guard (guard.py) kills the whole tree should ckpt die:
        none is left half alive. A tree of one process needs none: a thread whose
        EXITKILL is still set takes its whole process along."""
        if len(self.started) > 1:
            self._start_guard()
        with interrupts.held():
            for n in self.started:
                options = tree.ptrace_options(n) & ~ptrace.PTRACE_O_EXITKILL
                for tid in [*n.thread_ids, n.pid]:
                    ptrace.set_options(tid, options)
                faults.point("restore.task.let_go")
            if self.watch is not None:
                self.watch.stand_down()
        faults.point("restore.let_live")

    def _start_guard(self) -> None:
        from . import guard
        pidfds = [os.pidfd_open(n.pid) for n in self.started]
        self.watch = guard.Guard(lambda: _kill_all(pidfds), keep=pidfds)
        try:
            self.watch.start()
        finally:
            for fd in pidfds:  # the guard has its own
                os.close(fd)

    def unlock_network(self) -> None:
        """Every process restored and stopped: the dump's network lock goes, then the TCP
        connections leave repair mode (their window probes and unsent bytes go out)."""
        if self.net_lock is not None:
            from . import netlock
            netlock.unlock(self.net_lock)
            self.notify("network-unlock", 0)
        faults.point("restore.network_unlocked")
        inet = self._inet()
        if inet is not None:
            inet.connections.finish()

    def resume(self) -> None:
        """Write the pidfile and detach every thread of every process (let live before):
        the tree runs as saved."""
        with interrupts.held():
            self.write_pidfile()
            for n in self.started:
                _detach(n)
        procfs.settle_stopped([n.pid for n in self.started if n.core.get("stop_signal")])
        if self.creation is not None:
            self.creation.close()

    def finish(self, raising: bool) -> int | None:
        """The tree runs: report ``post-resume``; without ``detach``, wait for the root
        and return its exit code (a signal then interrupts the wait if ``raising``)."""
        if self.foreground is None:
            return self._finish(raising)
        with self.foreground:
            return self._finish(raising)

    def _finish(self, raising: bool) -> int | None:
        try:
            self.notify("post-resume", 0)
        except CkptError as e:  # the processes run already: nothing to undo
            log.warning("post-resume: %s", e)
        if self.detach:
            return None
        interrupts.resume(raising)
        if self.foreground is None:
            from .job_control import wait_for_exit
            status = wait_for_exit(self.root_pid)
        else:
            status = self.foreground.wait(self.root_pid)
        return os.waitstatus_to_exitcode(status)

    # ------------------------------------------------------------ failure

    def undo(self) -> None:
        """Take back everything the phases created, after a failure in any of them. The
        rebuilt TCP connections are closed silently and the network lock released."""
        self._unmap_helper()
        inet = self._inet()
        if inet is not None:
            inet.connections.drop()
        self._files().close_all()
        terminals = self._files().kinds.get("tty")  # made if a process had a terminal
        if terminals is not None:
            terminals.take_back()  # type: ignore[attr-defined]
        ghost.drop_memfds()
        if self.ipc is not None:
            self.ipc.undo()
        if self.sender is not None:
            self.sender.close()
        if self.foreground is not None:
            self.foreground.close()
        if self.pidfile_written is not None:
            try:
                os.unlink(self.pidfile_written)
            except OSError:
                pass
        tree.kill(self.started, [n.pid for n in self.order])
        if self.creation is not None:
            self.creation.close()
        if self.cgroups is not None:
            self.cgroups.undo()
        if self.net_lock is not None and self.net_lock.held:
            from . import netlock
            try:
                netlock.unlock(self.net_lock)
            except CkptError as e:
                log.error("%s", e)
        if self.watch is not None:
            self.watch.stand_down()

    def _inet(self) -> sk_inet.InetSockets | None:
        """The restore's sockets of kind inet (TCP connections among them), None when
        the images hold none: sk_inet and the TCP modules are then never imported."""
        kind = self.fctx.kinds.get("inet") if self.fctx is not None else None
        return kind  # type: ignore[return-value]

    def _terminals(self) -> tty.Terminals:
        """The restore's kind of terminals (tty.py, imported only for a tree where a
        process had a controlling terminal, or a shell job)."""
        from .resources.tty import Terminals
        return self._files().kind(Terminals)

    def _unmap_helper(self) -> None:
        if self.helper_in_ckpt:
            self.helper_in_ckpt = False
            libc.syscall("munmap", self.helper, HELPER_SIZE)

    def _files(self) -> files.RestoreFiles:
        assert self.fctx is not None, "load() runs first"
        return self.fctx


class _TaskRestore:
    """Turns one seized, waiting process into its saved self, step by step in the
    order of ``run``. Its other threads are made in one step, once the process's
    own state is in place; like the first thread they get their credentials and
    their registers last (thread.py)."""

    def __init__(self, restore: Restore, node: tree.Node):
        self.r = restore
        self.node = node
        self.pid = node.pid
        self.core = node.core
        self.scratch = restore.helper  # the helper area, mapped in every new process
        pgid = node.info["pgid"]
        self.pgid = None if pgid == restore.outside_pgid else pgid  # None: keep ckpt's
        regs = ptrace.get_regs(self.pid)  # ESRCH first if it was killed meanwhile
        carried = restore.creation.carried.pop(self.pid, None) if restore.creation else None
        self.inj = carried or Injector(self.pid, restore.helper + _SITE_OFFSET, regs,
                                       options=tree.ptrace_options(node), batch=restore.batch)

    def run(self) -> None:
        with self.inj:
            self.close_unsaved_fds()
            self.finish_files()
            self.join_group()
            self.give_terminal_foreground()
            self.take_locks()
            mem.seal(self.inj, self.node.mm)  # once its children are cloned
            self.enter_removed_cwd()
            task.restore(self.pid, self.inj, self.scratch, self.core["task"],
                         fs="fs_of" not in self.node.info)
            self.create_threads()
            self.restore_signals()
            self.restore_credentials()
            self.drop_helper_and_load_registers()
        log.info("process %d: state restored with %d injected syscalls in %d round trips",
                 self.pid, self.inj.count, self.inj.trips)

    def close_unsaved_fds(self) -> None:
        """Close the socket its fds came through; not in a process sharing its parent's fd
        table (CLONE_FILES): its parent does."""
        if "files_of" in self.node.info:
            return
        self.inj.later("close", self.node.sock)

    def finish_files(self) -> None:
        """File kinds that must act inside the process, on its final fd numbers (once
        per fd table: not again in a process sharing its parent's)."""
        if "files_of" in self.node.info:
            return
        self.r._files().restore_in_task(self.pid, self.inj, self.scratch, self.node.fd_table)

    def take_locks(self) -> None:
        """Its file locks (locks.py): after its memory, whose restore opens and closes
        the files it maps inside it (a close drops the process's POSIX locks on that
        file), before its credentials (a lease on a file it does not own needs root)."""
        if self.r.locks is not None:
            self.r.locks.take(self.pid, self.inj, self.scratch, self.r._files().descriptions)

    def join_group(self) -> None:
        if self.pgid is None or self.pgid == self.pid:
            return
        try:
            self.inj.call("setpgid", 0, nspids.inner(self.pgid))
        except OSError as e:
            raise RestoreError(f"process {self.pid}: cannot join process group {self.pgid}: "
                               f"{os.strerror(e.errno)}") from None

    def give_terminal_foreground(self) -> None:
        """In a session leader: make the saved group the foreground of its terminal."""
        tpgid = self.core.get("tpgid", self.pid)
        if not self.core.get("ctty") or tpgid in (self.pid, -1, 0):
            return
        inj = self.inj
        inj.write(self.scratch, b"/dev/tty\0" + struct.pack("<i", tpgid))
        fd = inj.call("open", self.scratch, os.O_RDWR | os.O_NOCTTY)
        import termios
        try:
            inj.call("ioctl", fd, termios.TIOCSPGRP, self.scratch + 9)
        except OSError as e:
            raise RestoreError(f"process {self.pid}: cannot make group {tpgid} the foreground "
                               f"of its terminal: {os.strerror(e.errno)}") from None
        finally:
            inj.call("close", fd)

    def enter_removed_cwd(self) -> None:
        """A working directory that was removed: the restored one (ghost.py), the same
        directory as the fds and other processes that hold it."""
        info = self.core["task"].get("cwd_ghost")
        if info is None or "fs_of" in self.node.info:  # shared: its parent entered it
            return
        path, own = ghost.cwd_source(self.r.images_dir, info, self.r.cwds)
        try:
            self.inj.write_string(self.scratch, path)
            fd = self.inj.call("openat", -100, self.scratch,
                               os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        finally:
            if own is not None:
                os.close(own)
        try:
            self.inj.call("fchdir", fd)
        finally:
            self.inj.call("close", fd)
        self.r.cwds.setdefault(int(info["id"]), self.pid)

    def create_threads(self) -> None:
        """Its other threads, each under its TID, with what is its own but credentials,
        registers and mask (before the signals: timers may target a thread)."""
        threads = self.node.threads
        if not threads:
            return
        thread.create_all(self.inj, self.scratch, threads, self.core["task"])
        log.info("process %d: %d more threads created", self.pid, len(threads))
        faults.point("restore.task.threads")

    def restore_signals(self) -> None:
        """Its signals: what its restore made pending dropped first, what was sent to it
        meanwhile queued again after its saved ones (blocked, all wait for its own mask:
        signals.take_arrived); from here on its signal actions are its own: no more
        batches of injected calls (whose trap would change them)."""
        arrived = signals.take_arrived(self.inj, self.scratch, nspids.inner(self.pid))
        self.inj.stop_batching()
        signals.restore(self.pid, self.inj, self.scratch, self.core["signals"])
        signals.queue_arrived(self.inj, self.scratch, self.pid, arrived)
        timers.restore(self.pid, self.inj, self.scratch, self.core.get("timers", []))
        faults.point("restore.task.signals")

    def restore_credentials(self) -> None:
        """seccomp, then credentials per thread, the first thread last: the kernel keeps
        both per thread. ckpt's own injected syscalls go past the filters until it lets
        the process go (suspended: ``_options``). The root's parent-death signal is left
        unset when ckpt, its parent, exits at once (``restore -d``): it would kill it."""
        threads = self.node.threads
        seccomp.restore(self.inj, self.scratch, self.core["task"]["seccomp"],
                        [(th["tid"], th["own"]["seccomp"]) for th in threads],
                        lambda tid: thread.open_thread(self.inj, tid))
        orphaned = (self.pid == self.r.root_pid and self.r.detach and not self.r.sibling
                    and not self.r.in_new_pidns)  # there the init is its parent
        signalled = sorted({t["pdeathsig"] for t in [self.core["task"]]
                            + [th["own"] for th in threads]} - {0})
        if orphaned and signalled:
            log.warning("process %d: its parent-death signal (%s) is not restored: its "
                        "parent at restore is ckpt, which exits now (-d) and would send it",
                        self.pid, ", ".join(map(str, signalled)))
        thread.restore_final_all(self.inj, self.scratch, threads, pdeathsig=not orphaned)
        task.restore_final(self.pid, self.inj, self.scratch, self.core["task"],
                           pdeathsig=not orphaned, alone=not threads)
        faults.point("restore.task.final")

    def drop_helper_and_load_registers(self) -> None:
        """Unmap the helper area, through the syscall instruction of its restored vDSO;
        then the registers and blocked masks, every thread's: each runs as saved once
        detached. Threads frozen in a syscall go back inside it, from a trap stop
        (cpu.restore), which the unmapping reaches on its way out (one stop fewer)."""
        saved_vdso = [v["start"] for v in self.node.mm["vmas"] if v["path"] == "[vdso]"]
        if saved_vdso:
            self.inj.site = saved_vdso[0] + self.r.vdso_offset
        threads = self.node.threads
        if any(cpu.needs_trap_stop(c) for c in [self.core["cpu"], *(t["cpu"] for t in threads)]):
            self.inj.call_then_trap("munmap", self.scratch, HELPER_SIZE,
                                    others=[t["tid"] for t in threads])
        else:
            self.inj.call("munmap", self.scratch, HELPER_SIZE)
        thread.finish_all(threads)
        cpu.restore(self.pid, self.core["cpu"])
        ptrace.set_sigmask(self.pid, self.core["signals"]["blocked"])


def _detach(node: tree.Node) -> None:
    """Let every thread of ``node``'s process go. Once one runs, a signal sent during the
    restore that kills (SIGTERM, pending and blocked until the thread's own mask came
    back) may end the process before its other threads are let go: they are gone
    (ESRCH), the process having run restored, which is no failure of the restore."""
    let_go = False
    for tid in [*node.thread_ids, node.pid]:
        try:
            ptrace.detach(tid)
        except ProcessLookupError:
            if not let_go:
                raise
            log.info("process %d ended as soon as it was let go", node.pid)
            return
        let_go = True


def restore(images_dir: str, *, detach: bool = True, shell_job: bool | None = None,
            inherit_fds: tuple[str, ...] | list[str] = (), pidfile: str | None = None,
            notify: Notify | None = None, sibling: bool = False, tcp: TcpFlags | None = None,
            network_lock: str | None = None, manage_cgroups: str | None = None,
            root: str | None = None, external: tuple[str, ...] = (),
            empty_ns: str | tuple[str, ...] = (), cg_root: dict[str, str] | None = None,
            new_pidns: bool = False, trust_images: bool = False,
            orphan_pts_master: Callable[[int], None] | None = None,
            lazy_pages: bool = False, work_dir: str | None = None) -> RestoreResult:
    """Restore the process tree saved in ``images_dir``.

    With ``detach`` the processes run on their own when this returns;
    otherwise this waits for the root to exit and returns its exit status too.
    ``notify``: called at hooks.RESTORE_ACTIONS (see hooks.py). ``sibling``: the
    root becomes a child of ckpt's parent instead of ckpt's (criu's rst_sibling);
    implies ``detach``. ``tcp``: criu's --tcp-established (needed when the images hold
    TCP connections) and --tcp-close; the dump's network lock is released once every
    process is restored (on failure too), unless ``network_lock`` is "skip".
    ``manage_cgroups``: criu's mode (cgroups.MODES; None: criu's default, soft).
    ``root``: the folder the root mount of a tree's own mount namespace comes back from;
    ``external``: ``mnt[KEY]:PATH``, the host path of each mount saved as external.
    ``empty_ns``: criu's --empty-ns; the images say whether the tree had a network
    namespace of its own (made empty), so it changes nothing here. ``cg_root``:
    {controller: path}, criu's cgroup roots; each must be where the tree was.
    ``new_pidns``: restore the tree in a PID namespace of its own (new_pidns.py); the
    result's ``pid`` (and the pidfile) is then the root's PID on the host.
    ``trust_images``: restore, as root, images others than root could have written (a
    warning says so); by default they are refused (docs/security.md).
    ``orphan_pts_master``: called with ckpt's fd of the new master of a pty whose master
    was outside the tree (dumped with ``orphan_pts_master``), once it is made: criu's
    orphan-pts-master notification (the fd stays ckpt's, closed after).
    ``lazy_pages``: the private anonymous pages are left to the ``ckpt lazy-pages``
    daemon listening in ``work_dir`` (default ``images_dir``), which fills them on first
    touch (pages/lazy.py, lazy_pages.py); without a daemon the restore fails first.
    """
    if empty_ns not in ((), "net", ("net",)):
        raise RestoreError(f"--empty-ns {empty_ns}: only net")
    if new_pidns:
        return _restore_in_new_pidns(
            images_dir, detach=detach, pidfile=pidfile, sibling=sibling,
            kwargs=dict(shell_job=shell_job, inherit_fds=inherit_fds, notify=notify, tcp=tcp,
                        network_lock=network_lock, manage_cgroups=manage_cgroups, root=root,
                        external=external, cg_root=cg_root, trust_images=trust_images,
                        lazy_pages=lazy_pages, work_dir=work_dir))
    return Restore(images_dir, detach=detach, shell_job=shell_job, inherit_fds=inherit_fds,
                   pidfile=pidfile, notify=notify, sibling=sibling, tcp=tcp,
                   network_lock=network_lock, manage_cgroups=manage_cgroups, root=root,
                   external=external, cg_root=cg_root, trust_images=trust_images,
                   orphan_pts_master=orphan_pts_master, lazy_pages=lazy_pages,
                   work_dir=work_dir).run()


def _restore_in_new_pidns(images_dir: str, *, detach: bool, pidfile: str | None,
                          sibling: bool, kwargs: dict[str, Any]) -> RestoreResult:
    """``Restore`` run by the init of a new PID namespace (new_pidns.py); ``sibling``:
    that init is the child of ckpt's parent (the root is always the init's child)."""
    t0 = time.monotonic()
    recovery.recover()  # and the network locks' notes
    if pidfile and not os.path.isabs(pidfile):
        pidfile = os.path.join(images_dir, pidfile)

    def run(handshake: new_pidns.Handshake) -> int:
        r = Restore(images_dir, detach=True, in_new_pidns=True, **kwargs)
        notify = r.notify

        def notify_and_wait(action: str, pid: int) -> None:
            if notify is not ignore:  # the PID as the host (the client) numbers it
                notify(action, handshake.host_pid(pid) if pid > 0 else pid)
            if action == "pre-resume":
                handshake.ready(r.root_pid, bool(r.shell_job), [t["pid"] for t in r.tasks],
                                r.job_foreground() if r.shell_job else 0)

        r.notify = notify_and_wait
        return r.run().pid

    from . import new_pidns
    out = new_pidns.restore(run, detach=detach or sibling, pidfile=pidfile, sibling=sibling)
    return RestoreResult(out.pid, time.monotonic() - t0, exit_status=out.exit_status,
                         pids=out.pids, init_pid=out.init_pid)


def _stay(pid: int) -> None:
    """A tree without cgroups to restore: its processes stay in ckpt's."""


def _kill_all(pidfds: list[int]) -> None:
    """A restore's guard, ckpt dead while it let the tree go: the tree is killed."""
    for fd in pidfds:
        try:
            _signal.pidfd_send_signal(fd, _signal.SIGKILL)
        except OSError:
            pass
    log.warning("ckpt died while it let the restored tree go: its guard killed the tree")
