"""The restore driver: verify the images, fork the saved tree under its saved
PIDs, turn each process into the saved one with injected syscalls, and let
them all run.

The tree is first built by plain forks of ckpt (clone3 with set_tid): each
new process calls setsid/setpgid as its saved self did, forks its own
children, puts its fds in place and waits. Zombies are forked too and exit at
once with their saved status, for their parent to reap later. ckpt then
seizes every waiting process, unmaps everything it had, rebuilds memory,
per-task state, signals and credentials, and loads the saved registers last.
If anything fails every new process is killed: nothing half-restored is left.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import struct
import termios
import time
from dataclasses import dataclass, field
from typing import Any

from . import faults
from .errors import CkptError, RestoreError
from .hooks import Notify, ignore
from .images import ImageReader
from .inherit import available_keys, parse_inherit_fd, resolve_original_fds
from .kernel import libc, procfs, ptrace
from .kernel.inject import Injector, vdso_syscall_offset
from .pages.chain import Chain, Segment
from .resources import (
    cpu,
    files,
    kinds,  # noqa: F401  (registers every kind of file)
    mem,
    signals,
    task,
    thread,
    timers,
    tty,
)

log = logging.getLogger("ckpt.restore")

HELPER_SIZE = 64 << 10
PID_WAIT_SECONDS = 5.0
_SITE_OFFSET = HELPER_SIZE - 16


@dataclass
class RestoreResult:
    pid: int
    seconds: float
    exit_status: int | None = None
    pids: list[int] = field(default_factory=list)


@dataclass
class _Node:
    """One process to create in the tree-building phase."""

    info: dict[str, Any]
    plan: list[tuple[int, int, bool]] = field(default_factory=list)
    early: list[_Node] = field(default_factory=list)  # forked before setsid
    late: list[_Node] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.info["pid"])

    @property
    def zombie(self) -> bool:
        return bool(self.info.get("zombie"))


def _own_vdso_offset() -> int:
    for v in procfs.maps(os.getpid()):
        if v.path == "[vdso]":
            with open("/proc/self/mem", "rb") as f:
                f.seek(v.start)
                return vdso_syscall_offset(f.read(v.size))
    raise RestoreError("ckpt itself has no vDSO; cannot restore")


def _pid_holder(pid: int) -> str:
    try:
        st = procfs.stat(pid)
    except procfs.ProcessGone:
        return "a process that just exited"
    if st.state == "Z":
        return f"a zombie ({st.comm}) not yet reaped by its parent {st.ppid}"
    return f"{st.comm} (state {st.state}, parent {st.ppid})"


# ---------------------------------------------------------------- the tree-building phase
# Runs in forks of ckpt that Python does not know are forks: simple code only,
# and every exit through os._exit.

def _report(fd: int, pid: int, error: str = "") -> None:
    msg = error.encode()[:400]
    os.write(fd, struct.pack("<iH", pid, len(msg)) + msg)


def _spawn(node: _Node, ready_w: int, go_r: int, sibling: bool = False) -> None:
    deadline = time.monotonic() + PID_WAIT_SECONDS
    while True:
        try:
            pid = libc.clone3_with_pid(node.pid, sibling)
            break
        except OSError as e:
            if e.errno != errno.EEXIST or time.monotonic() > deadline:
                why = (f"PID {node.pid} is taken by {_pid_holder(node.pid)}"
                       if e.errno == errno.EEXIST else
                       f"cannot create a process with PID {node.pid}: {e.strerror}")
                _report(ready_w, node.pid, why)
                return
            time.sleep(0.02)
    if pid == 0:
        try:
            _become(node, ready_w, go_r)
        finally:
            os._exit(127)


def _become(node: _Node, ready_w: int, go_r: int) -> None:
    """Turn this fresh fork into ``node``'s process, up to the point where ckpt takes over."""
    info = node.info
    try:
        for kid in node.early:
            _spawn(kid, ready_w, go_r)
        if info.get("setsid"):
            os.setsid()
            if info.get("ctty_fd") is not None:
                tty.acquire_controlling(info["ctty_fd"])
        elif info["pgid"] == info["pid"]:
            os.setpgid(0, 0)
        for kid in node.late:
            _spawn(kid, ready_w, go_r)
    except OSError as e:
        _report(ready_w, node.pid, f"process {node.pid}: session/group set-up failed: {e}")
        return
    if node.zombie:
        status = info.get("exit_status", 0)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            signal.signal(sig, signal.SIG_DFL)
            libc.prlimit(0, 4, (0, libc.prlimit(0, 4)[1]))  # no core file
            os.kill(os.getpid(), sig)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0)
    try:
        ready_w, go_r = files.install_in_child(node.plan, [ready_w, go_r])
    except OSError as e:
        _report(ready_w, node.pid, f"process {node.pid}: fd set-up failed: {e}")
        return
    _report(ready_w, node.pid)
    os.read(go_r, 1)


# ---------------------------------------------------------------- the driver

def _build_nodes(tasks: list[dict[str, Any]], root_pid: int, outside_sid: int | None
                 ) -> tuple[_Node, list[_Node]]:
    """The creation tree: children under parents, split around their parent's setsid."""
    nodes = {t["pid"]: _Node(dict(t)) for t in tasks}
    order = [nodes[t["pid"]] for t in tasks]
    for n in order:
        n.info["setsid"] = n.info["sid"] == n.pid
        if outside_sid is not None and n.info["sid"] == outside_sid:
            n.info["sid"] = None  # stays in the restorer's session
    for n in order:
        if n.pid == root_pid:
            continue
        parent = nodes[n.info["ppid"]]
        if parent.info["setsid"] and n.info["sid"] != parent.pid and not n.info["setsid"]:
            parent.early.append(n)
        else:
            parent.late.append(n)
    return nodes[root_pid], order


def _collect_ready(ready_r: int, expected: set[int]) -> None:
    """Wait for each live process to report; raise the first error reported."""
    pending = set(expected)
    buf = b""
    while pending:
        chunk = os.read(ready_r, 4096)
        if not chunk:
            raise RestoreError(f"processes {sorted(pending)} died while being created")
        buf += chunk
        while len(buf) >= 6:
            pid, n = struct.unpack("<iH", buf[:6])
            if len(buf) < 6 + n:
                break
            msg, buf = buf[6:6 + n].decode(errors="replace"), buf[6 + n:]
            if msg:
                raise RestoreError(msg)
            pending.discard(pid)


def _parse_inherit(inherit_fds: list[str] | tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for arg in inherit_fds:
        parsed = parse_inherit_fd(arg)
        if parsed is not None:
            fd, key = parsed
            out[key] = fd
    return out


def _restore_task(pid: int, core: dict[str, Any], mm: dict[str, Any], fd_numbers: set[int],
                  images_dir: str, helper: int, vdso_offset: int,
                  shmem: dict[int, tuple[int, int, int]], pgid: int | None,
                  fctx: files.RestoreCtx, fd_table: list[dict[str, Any]],
                  segments: list[Segment] | None = None) -> None:
    """Turn seized, waiting process ``pid`` into its saved self (registers last)."""
    regs = ptrace.get_regs(pid)
    inj = Injector(pid, helper + _SITE_OFFSET, regs)
    try:
        for fd in procfs.fd_numbers(pid):
            if fd not in fd_numbers:  # the fds it waited on
                inj.call("close", fd)
        # File kinds that must act inside the process, on its final fd numbers.
        files.restore_in_task(fctx, pid, inj, helper, fd_table, fctx.descriptions)
        if pgid is not None and pgid != pid:
            try:
                inj.call("setpgid", 0, pgid)
            except OSError as e:
                raise RestoreError(f"process {pid}: cannot join process group {pgid}: "
                                   f"{os.strerror(e.errno)}") from None
        if core.get("ctty") and core.get("tpgid", pid) not in (pid, -1, 0):
            _set_foreground_group(inj, helper, core["tpgid"])
        task.unregister_rseq(pid, inj)
        mem.restore(pid, inj, mm, images_dir, helper, HELPER_SIZE, shmem, segments)
        log.info("process %d: memory restored (%d injected syscalls so far)", pid, inj.count)
        faults.point("restore.task.memory")
        task.restore(pid, inj, helper, core["task"])
        threads = core.get("threads", [])
        for th in threads:
            tinj = thread.create(inj, helper, th["tid"])
            try:
                thread.restore(pid, tinj, helper, th)
            finally:
                tinj.close()
        if threads:
            log.info("process %d: %d more threads created", pid, len(threads))
            faults.point("restore.task.threads")
        signals.drain_pending(inj, helper)
        signals.restore(pid, inj, helper, core["signals"])
        timers.restore(pid, inj, helper, core.get("timers", []))
        faults.point("restore.task.signals")
        for th in threads:  # credentials and seccomp filters are per thread
            tinj = Injector(th["tid"], inj.site, ptrace.get_regs(th["tid"]))
            try:
                task.restore_final(th["tid"], tinj, helper, core["task"])
            finally:
                tinj.close()
        task.restore_final(pid, inj, helper, core["task"])
        faults.point("restore.task.final")
        saved_vdso = [v["start"] for v in mm["vmas"] if v["path"] == "[vdso]"]
        if saved_vdso:
            inj.site = saved_vdso[0] + vdso_offset
        inj.call("munmap", helper, HELPER_SIZE)
        for th in threads:
            thread.finish(th)
        cpu.restore(pid, core["cpu"])
        ptrace.set_sigmask(pid, core["signals"]["blocked"])
        log.info("process %d: state restored with %d injected syscalls", pid, inj.count)
    finally:
        inj.close()


def _set_foreground_group(inj: Injector, scratch: int, pgid: int) -> None:
    """In a session leader: make ``pgid`` the foreground group of its terminal."""
    inj.write(scratch, b"/dev/tty\0" + struct.pack("<i", pgid))
    fd = inj.call("open", scratch, os.O_RDWR | os.O_NOCTTY)
    try:
        inj.call("ioctl", fd, termios.TIOCSPGRP, scratch + 9)
    except OSError as e:
        raise RestoreError(f"process {inj.pid}: cannot make group {pgid} the foreground of "
                           f"its terminal: {os.strerror(e.errno)}") from None
    finally:
        inj.call("close", fd)


def restore(images_dir: str, *, detach: bool = True, shell_job: bool | None = None,
            inherit_fds: tuple[str, ...] | list[str] = (), pidfile: str | None = None,
            notify: Notify | None = None, sibling: bool = False) -> RestoreResult:
    """Restore the process tree saved in ``images_dir``.

    With ``detach`` the processes run on their own when this returns;
    otherwise this waits for the root to exit and returns its exit status too.
    ``notify``: called at hooks.RESTORE_ACTIONS (see hooks.py). ``sibling``: the
    root becomes a child of ckpt's parent instead of ckpt's (criu's rst_sibling);
    implies ``detach``.
    """
    t0 = time.monotonic()
    notify = notify or ignore
    detach = detach or sibling
    notify("pre-restore", 0)
    images = ImageReader(images_dir)
    images.verify()
    faults.point("restore.verified")
    inv = images.inventory
    if inv.get("type", "dump") != "dump":
        raise RestoreError(f"{images_dir} holds a {inv.get('type')} (memory pages only); "
                           "restore the folder of the dump made after it")
    chain = Chain(images)  # every parent checked too, before anything is created
    inherit = _parse_inherit(inherit_fds)
    if shell_job is None:
        shell_job = bool(inv.get("shell_job"))
    if inv.get("shell_job") and not shell_job:
        raise RestoreError("the image is of a shell job; restore it with -j (--shell-job)")
    root_pid = inv["root_pid"]
    tasks = inv["tasks"]
    live = [t for t in tasks if not t.get("zombie")]
    cores = {t["pid"]: images.load_json(f"core-{t['pid']}.json") for t in live}
    mms = {t["pid"]: images.load_json(f"mm-{t['pid']}.json") for t in live}
    fd_tables = {t["pid"]: images.load_json(f"fds-{t['pid']}.json") for t in live}
    descriptions = images.load_json("files.json")
    segments = {pid: chain.segments(pid, mm) for pid, mm in mms.items()}
    if chain.depth:
        log.info("pages come from a chain of %d image folders", chain.depth + 1)
    for mm in mms.values():
        mem.check_files(mm)
    log.info("restoring %d processes (root %d) from %s", len(tasks), root_pid, images_dir)

    by_original_fd = resolve_original_fds(inherit, root_pid, fd_tables.get(root_pid, []))
    fctx = files.RestoreCtx(images, shell_job=shell_job, inherit=inherit,
                            inherit_files=by_original_fd, descriptions=descriptions)
    root, order = _build_nodes(tasks, root_pid, inv.get("outside_sid"))
    outside_pgid = inv.get("outside_pgid")
    started: list[int] = []
    foreground: tty.Foreground | None = None
    ready_r = go_w = -1
    pidfile_written: str | None = None
    try:
        for n in order:
            if not n.zombie:
                n.plan = files.prepare_task(fctx, fd_tables[n.pid], descriptions)
                if n.info["setsid"]:
                    n.info["ctty_fd"] = tty.controlling_slave(fctx, n.info)
        unused = set(inherit) - fctx.used_keys
        if unused:
            raise RestoreError(
                f"--inherit-fd key {sorted(unused)[0]!r} matches no file in the image; "
                f"keys in the image: {', '.join(available_keys(descriptions)) or 'none'}")
        files.before_restore(fctx, descriptions)
        faults.point("restore.fds_opened")
        vdso_offset = _own_vdso_offset()
        occupied = [(v.start, v.end) for v in procfs.maps(os.getpid())]
        for mm in mms.values():
            occupied += [(v["start"], v["end"]) for v in mm["vmas"]]
        helper = mem.free_area(occupied, HELPER_SIZE)
        libc.syscall("mmap", helper, HELPER_SIZE,
                     libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC,
                     libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_FIXED_NOREPLACE, -1, 0)
        # The new processes run their injected syscalls from here: their vDSO moves.
        ctypes.memmove(helper + _SITE_OFFSET, b"\x0f\x05\xcc", 3)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        try:
            _spawn(root, ready_w, go_r, sibling)
        finally:
            libc.syscall("munmap", helper, HELPER_SIZE)
            os.close(ready_w)
            os.close(go_r)
            fctx.close_all()
        expected = {n.pid for n in order if not n.zombie}
        try:
            _collect_ready(ready_r, expected)
        finally:
            parent = os.getppid() if sibling else os.getpid()
            started = [p for p in (n.pid for n in order if not n.zombie)
                       if _is_ours(p, root_pid, parent)]
        faults.point("restore.forked")
        for pid in started:
            ptrace.seize(pid)
            ptrace.interrupt(pid)
        for pid in started:
            stop = ptrace.wait_stop(pid)
            if stop.exited:
                raise RestoreError(f"the new process {pid} died: {stop.describe()}")
            ptrace.set_sigmask(pid, signals.ALL_BLOCKED)
        faults.point("restore.seized")
        shmem: dict[int, tuple[int, int, int]] = {}
        for n in order:
            if n.zombie:
                continue
            pgid = n.info["pgid"]
            if pgid == outside_pgid:
                pgid = None
            _restore_task(n.pid, cores[n.pid], mms[n.pid],
                          {e["fd"] for e in fd_tables[n.pid]}, images_dir, helper,
                          vdso_offset, shmem, pgid, fctx, fd_tables[n.pid], segments[n.pid])
        if pidfile:
            path = pidfile if os.path.isabs(pidfile) else os.path.join(images_dir, pidfile)
            with open(path, "w") as f:
                pidfile_written = path
                f.write(f"{root_pid}\n")
        if not detach and shell_job:
            root_pgid = root.info["pgid"] if root.info["pgid"] != outside_pgid else None
            foreground = tty.Foreground(root_pgid or os.getpgrp())
        notify("post-restore", root_pid)
        faults.point("restore.before_detach")
        notify("pre-resume", 0)
        for pid in started:
            for th in cores[pid].get("threads", []):
                ptrace.detach(th["tid"])
            ptrace.detach(pid)
        os.close(go_w)
        os.close(ready_r)
        go_w = ready_r = -1
    except BaseException as e:
        fctx.close_all()
        if foreground is not None:
            foreground.close()
        if pidfile_written is not None:
            try:
                os.unlink(pidfile_written)
            except OSError:
                pass
        _kill_tree(started, [n.pid for n in order], cores, (ready_r, go_w))
        if isinstance(e, CkptError):
            raise
        if isinstance(e, procfs.ProcessGone):
            raise RestoreError(f"a new process died during the restore ({e})") from None
        if isinstance(e, OSError):
            raise RestoreError(f"restore of process {root_pid} failed: {e}") from e
        raise
    dt = time.monotonic() - t0
    log.info("%d processes restored in %.3f s", len(tasks), dt)
    try:
        notify("post-resume", 0)
    except CkptError as e:  # the processes run already: nothing to undo
        log.warning("post-resume: %s", e)
    result = RestoreResult(root_pid, dt, pids=[t["pid"] for t in tasks])
    if not detach:
        if foreground is None:
            status = _wait_for(root_pid)
        else:
            try:
                status = foreground.wait(root_pid)
            finally:
                foreground.close()
        result.exit_status = os.waitstatus_to_exitcode(status)
    return result


def _kill_tree(started: list[int], tree: list[int], cores: dict[int, dict[str, Any]],
               fds: tuple[int, int]) -> None:
    """Kill every process a failed restore created and reap them all.

    Killed parents would hand their dead or dying children to the nearest child
    subreaper (or init), so ckpt is one meanwhile: every orphan comes back to
    it and is reaped here; nothing is left to the caller. Parents are reaped
    before their children (``tree`` is in creation order), each thread before
    its leader, whose exit it holds back while ckpt still traces it.
    """
    was = ctypes.c_int(0)
    try:
        libc.prctl(libc.PR_GET_CHILD_SUBREAPER, ctypes.addressof(was))
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        log.warning("cannot become a child subreaper to clean up: %s", e)
    try:
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for fd in fds:
            if fd >= 0:
                os.close(fd)  # processes still waiting see EOF and exit
        for pid in started:
            for th in cores.get(pid, {}).get("threads", []):
                _reap(th["tid"])
        for pid in started:
            _reap(pid)
        # What was forked but not seized (a zombie of the tree, a process that
        # reported an error) is ckpt's now, or soon: kill and reap until none is left.
        wanted = set(tree)
        deadline = time.monotonic() + PID_WAIT_SECONDS
        while time.monotonic() < deadline:
            left = [p for p in _children_of_self() if p in wanted]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                _reap(pid)
    finally:
        try:
            libc.prctl(libc.PR_SET_CHILD_SUBREAPER, was.value)
        except OSError:
            pass


def _reap(pid: int) -> None:
    """Wait for ``pid`` as its tracer, then as its parent, until it is neither."""
    for _ in range(3):
        try:
            os.waitpid(pid, ptrace.__WALL)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _wait_for(pid: int) -> int:
    """The waitpid() status of child ``pid`` once it has ended."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _children_of_self() -> list[int]:
    return procfs.children(os.getpid())


def _is_ours(pid: int, root_pid: int, parent: int) -> bool:
    """True if ``pid`` is the root (a child of ``parent``) or one of its descendants."""
    seen = 0
    while pid > 1 and seen < 4096:
        try:
            ppid = procfs.stat(pid).ppid
        except procfs.ProcessGone:
            return False
        if ppid == parent:
            return pid == root_pid
        pid = ppid
        seen += 1
    return False
