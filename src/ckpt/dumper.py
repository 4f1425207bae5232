"""The dump driver: freeze a process, save every kind of its state, then kill,
stop or release it.

A dump that fails at any step gives the process back exactly as it was: the
scratch page is unmapped, its registers and signal mask are put back and it is
detached. Only after every image file and the folder are fsynced is the
process killed.
"""

from __future__ import annotations

import logging
import os
import platform
import select
import time
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .errors import CkptError, DumpError, UnsupportedError
from .images import ImageWriter
from .kernel import libc, procfs, ptrace
from .kernel.inject import Injector, find_syscall_site
from .resources import chrdev, cpu, files, files_reg, mem, pipes, signals, task, tty  # noqa: F401  (register file kinds)

log = logging.getLogger("ckpt.dump")

SCRATCH_SIZE = 64 << 10


@dataclass
class DumpResult:
    """What a dump did, for callers of the API."""

    pid: int
    images_dir: str
    pages_bytes: int
    seconds: float
    fate: str  # "killed", "running" or "stopped"
    notes: list[str] = field(default_factory=list)


class _Frozen:
    """A seized, interrupted task and what is needed to let it go unchanged."""

    def __init__(self, pid: int):
        self.pid = pid
        self.regs0: ptrace.UserRegs | None = None
        self.mask0: int | None = None
        self.inj: Injector | None = None
        self.scratch = 0
        try:
            ptrace.seize(pid)
        except OSError as e:
            if e.errno == 1:
                tracer = procfs.status(pid).get("TracerPid", "0")
                raise DumpError(f"process {pid} cannot be traced"
                                f"{' (already traced by ' + tracer + ')' if tracer != '0' else ''}"
                                ) from None
            if e.errno == 3:
                raise DumpError(f"process {pid} does not exist") from None
            raise
        ptrace.interrupt(pid)
        while True:
            stop = ptrace.wait_stop(pid)
            if stop.exited:
                raise DumpError(f"process {pid} exited while being frozen ({stop.describe()})")
            if stop.event == ptrace.PTRACE_EVENT_STOP:
                break
            # A signal arrived before the freeze: let it be delivered as it would have been.
            ptrace.cont(pid, stop.stopsig)
        self.regs0 = ptrace.get_regs(pid)
        self.mask0 = ptrace.get_sigmask(pid)
        ptrace.set_sigmask(pid, signals.ALL_BLOCKED)

    def thaw(self) -> None:
        """Undo every change made while frozen and detach."""
        try:
            if self.inj is not None:
                if self.scratch:
                    self.inj.raw("munmap", self.scratch, SCRATCH_SIZE)
                    self.scratch = 0
                self.inj.close()
            if self.regs0 is not None:
                ptrace.set_regs(self.pid, self.regs0)
            if self.mask0 is not None:
                ptrace.set_sigmask(self.pid, self.mask0)
        except (OSError, procfs.ProcessGone) as e:
            log.warning("process %d: could not undo the freeze: %s", self.pid, e)


def _wait_gone(pidfd: int, timeout: float = 5.0) -> None:
    select.select([pidfd], [], [], timeout)


def _check_dumpable(pid: int, shell_job: bool) -> procfs.Stat:
    """Refuse early, before freezing, what this ckpt cannot dump."""
    if pid <= 0:
        raise DumpError(f"invalid PID {pid}")
    if pid == os.getpid():
        raise DumpError("ckpt cannot dump itself")
    try:
        st = procfs.stat(pid)
    except procfs.ProcessGone:
        raise DumpError(f"process {pid} does not exist") from None
    if st.state in ("Z", "X"):
        raise DumpError(f"process {pid} is a zombie")
    if st.num_threads > 1:
        raise UnsupportedError(f"process {pid} has {st.num_threads} threads; "
                               "multi-threaded processes are not supported yet")
    kids = procfs.children(pid)
    if kids:
        raise UnsupportedError(f"process {pid} has child processes {kids}; "
                               "process trees are not supported yet")
    if st.sid != pid and not shell_job:
        raise DumpError(f"process {pid} belongs to session {st.sid} of a process outside "
                        "the dump (a shell job?); dump it with -j (--shell-job)")
    timers = procfs.posix_timers(pid)
    if timers:
        raise UnsupportedError(f"process {pid} has {len(timers)} POSIX timer(s) "
                               "(timer_create); not supported yet")
    return st


def _syscall_site(pid: int, vmas: list[procfs.Vma]) -> int:
    """An existing ``syscall`` instruction in the target: its vDSO, else any code."""
    candidates = [v for v in vmas if v.path == "[vdso]"]
    candidates += [v for v in vmas if v.perms[2] == "x" and v.path != "[vsyscall]"]
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for v in candidates:
            try:
                code = os.pread(fd, min(v.size, 1 << 20), v.start)
            except OSError:
                continue
            site = find_syscall_site(code, v.start)
            if site is not None:
                return site
    finally:
        os.close(fd)
    raise DumpError(f"process {pid}: no syscall instruction found to run syscalls with")


def dump(pid: int, images_dir: str, *, leave_running: bool = False,
         leave_stopped: bool = False, shell_job: bool = False,
         external: tuple[str, ...] = ()) -> DumpResult:
    """Checkpoint process ``pid`` into ``images_dir``.

    By default the process is killed once the images are safely on disk;
    ``leave_running`` lets it go on, ``leave_stopped`` leaves it stopped (SIGSTOP).
    """
    t0 = time.monotonic()
    stat0 = _check_dumpable(pid, shell_job)
    log.info("dumping process %d (%s) into %s", pid, stat0.comm, images_dir)
    pidfd = libc.pidfd_open(pid)
    frozen: _Frozen | None = None
    images: ImageWriter | None = None
    ok = False
    try:
        frozen = _Frozen(pid)
        log.debug("process %d frozen at rip=%#x", pid, frozen.regs0.rip)
        vmas = procfs.maps(pid, with_flags=True)
        for v in vmas:
            mem.classify(v)
        status = procfs.status(pid)
        stat = procfs.stat(pid)
        images = ImageWriter(images_dir)
        inj = Injector(pid, _syscall_site(pid, vmas), frozen.regs0)
        frozen.inj = inj
        frozen.scratch = inj.call("mmap", 0, SCRATCH_SIZE, libc.PROT_READ | libc.PROT_WRITE,
                                  libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0)

        core: dict[str, Any] = {
            "pid": pid, "ppid": stat.ppid, "pgid": stat.pgid, "sid": stat.sid,
            "cpu": cpu.dump(pid, frozen.regs0),
            "signals": signals.dump(pid, inj, frozen.scratch, frozen.mask0),
            "task": task.dump(pid, inj, frozen.scratch, status),
        }
        log.info("process %d: registers, signals and task state saved", pid)
        fctx = files.DumpCtx(images, shell_job=shell_job, external=set(external))
        dumper = files.DumpFiles(fctx)
        fd_table = dumper.dump_task(pid, pidfd)
        log.info("process %d: %d fds saved", pid, len(fd_table))
        mm = mem.dump(pid, vmas, inj, images, stat)
        pages = mem.summarize_pagemap(mm["pagemap"])
        log.info("process %d: %d mappings, %d pages in %d runs saved", pid, len(mm["vmas"]),
                 pages["pages"], pages["runs"])

        images.write_json(f"core-{pid}.json", core)
        images.write_json(f"mm-{pid}.json", mm)
        images.write_json(f"fds-{pid}.json", fd_table)
        images.write_json("files.json", dumper.descriptions)
        images.finish({
            "root_pid": pid,
            "tasks": [{"pid": pid, "ppid": stat.ppid, "pgid": stat.pgid, "sid": stat.sid}],
            "shell_job": shell_job,
            "kernel": platform.release(),
            "arch": platform.machine(),
            "ckpt_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "injected_syscalls": inj.count,
        })
        log.info("images written and synced (%d injected syscalls)", inj.count)
        ok = True
    except CkptError:
        raise
    except procfs.ProcessGone as e:
        raise DumpError(f"process {pid} vanished during the dump ({e})") from None
    except OSError as e:
        raise DumpError(f"dump of process {pid} failed: {e}") from e
    finally:
        if not ok and images is not None:
            images.abort()
        if frozen is not None:
            frozen.thaw()
            try:
                if ok and not leave_running and not leave_stopped:
                    libc.pidfd_send_signal(pidfd, libc.SIGKILL)
                else:
                    ptrace.detach(pid, libc.SIGSTOP if (ok and leave_stopped) else 0)
            except OSError as e:
                log.warning("process %d: detach: %s", pid, e)
        if ok and not leave_running and not leave_stopped:
            _wait_gone(pidfd)
        os.close(pidfd)
    fate = "running" if leave_running else "stopped" if leave_stopped else "killed"
    dt = time.monotonic() - t0
    log.info("dump of %d done in %.3f s; process %s", pid, dt, fate)
    return DumpResult(pid, images_dir, pages["bytes"], dt, fate)
