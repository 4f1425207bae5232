"""The restore driver: verify the images, fork a child under the saved PID,
turn it into the saved process with injected syscalls, and let it run.

The child is a plain fork of ckpt (clone3 with set_tid) that puts its fds in
place and waits. ckpt then seizes it, unmaps everything it had, rebuilds the
saved memory, per-task state, signals and credentials, and loads the saved
registers last. If anything fails the child is killed: no half-restored
process is left behind.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass

from .errors import CkptError, RestoreError
from .images import ImageReader
from .kernel import libc, procfs, ptrace
from .kernel.inject import Injector, vdso_syscall_offset
from .resources import chrdev, cpu, files, files_reg, mem, pipes, signals, task, tty  # noqa: F401  (register file kinds)

log = logging.getLogger("ckpt.restore")

HELPER_SIZE = 64 << 10
PID_WAIT_SECONDS = 5.0


@dataclass
class RestoreResult:
    pid: int
    seconds: float
    exit_status: int | None = None


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


def _fork_with_pid(pid: int, plan: list[tuple[int, int, bool]], session: str,
                   pgid_leader: bool) -> tuple[int, int, int]:
    """Fork a child with PID ``pid`` whose fds follow ``plan``; it waits, ready to be seized.

    Returns (pid, ready_r, go_w): closing ``go_w`` makes a waiting child exit.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    deadline = time.monotonic() + PID_WAIT_SECONDS
    while True:
        try:
            child = libc.clone3_with_pid(pid)
            break
        except OSError as e:
            if e.errno != errno.EEXIST:
                for fd in (ready_r, ready_w, go_r, go_w):
                    os.close(fd)
                raise RestoreError(f"cannot create a process with PID {pid}: "
                                   f"{e.strerror}") from None
            if time.monotonic() > deadline:
                for fd in (ready_r, ready_w, go_r, go_w):
                    os.close(fd)
                raise RestoreError(f"PID {pid} is taken by {_pid_holder(pid)}") from None
            time.sleep(0.05)
    if child == 0:  # the child: no Python fork hooks ran; keep it simple, leave with _exit
        try:
            if session == "own":
                os.setsid()
            elif pgid_leader:
                os.setpgid(0, 0)
            rw, gr = files.install_in_child(plan, [ready_w, go_r])
            os.write(rw, b"R")
            os.read(gr, 1)
        finally:
            os._exit(127)
    os.close(ready_w)
    os.close(go_r)
    return child, ready_r, go_w


def _parse_inherit(inherit_fds: list[str] | tuple[str, ...]) -> dict[str, int]:
    from .inherit import parse_inherit_fd
    out: dict[str, int] = {}
    for arg in inherit_fds:
        parsed = parse_inherit_fd(arg)
        if parsed is not None:
            fd, key = parsed
            out[key] = fd
    return out


def restore(images_dir: str, *, detach: bool = True, shell_job: bool | None = None,
            inherit_fds: tuple[str, ...] | list[str] = (), pidfile: str | None = None
            ) -> RestoreResult:
    """Restore the process saved in ``images_dir``; return its PID.

    With ``detach`` the process runs on its own when this returns; otherwise
    this waits for it to exit and returns its exit status too.
    """
    t0 = time.monotonic()
    images = ImageReader(images_dir)
    inherit = _parse_inherit(inherit_fds)
    images.verify()
    inv = images.inventory
    if shell_job is None:
        shell_job = bool(inv.get("shell_job"))
    if inv.get("shell_job") and not shell_job:
        raise RestoreError("the image is of a shell job; restore it with -j (--shell-job)")
    tinfo = inv["tasks"][0]
    pid = tinfo["pid"]
    core = images.load_json(f"core-{pid}.json")
    mm = images.load_json(f"mm-{pid}.json")
    fd_table = images.load_json(f"fds-{pid}.json")
    descriptions = images.load_json("files.json")
    mem.check_files(mm)
    log.info("restoring process %d from %s", pid, images_dir)

    fctx = files.RestoreCtx(images, shell_job=shell_job, inherit=inherit)
    child = 0
    ready_r = go_w = -1
    try:
        plan = files.prepare_task(fctx, fd_table, descriptions)
        unused = set(inherit) - fctx.used_keys
        if unused:
            from .inherit import available_keys
            raise RestoreError(
                f"--inherit-fd key {sorted(unused)[0]!r} matches no file in the image; "
                f"keys in the image: {', '.join(available_keys(descriptions)) or 'none'}")
        vdso_offset = _own_vdso_offset()
        occupied = [(v.start, v.end) for v in procfs.maps(os.getpid())]
        occupied += [(v["start"], v["end"]) for v in mm["vmas"]]
        helper = mem.free_area(occupied, HELPER_SIZE)
        libc.syscall("mmap", helper, HELPER_SIZE,
                     libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC,
                     libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_FIXED_NOREPLACE, -1, 0)
        # The child runs its injected syscalls from here: its vDSO will move.
        ctypes.memmove(helper + HELPER_SIZE - 16, b"\x0f\x05\xcc", 3)
        try:
            own_session = tinfo["sid"] == pid
            child, ready_r, go_w = _fork_with_pid(
                pid, plan, "own" if own_session else "join", tinfo["pgid"] == pid)
        finally:
            libc.syscall("munmap", helper, HELPER_SIZE)
        for fd in set(fctx.opened.values()):
            os.close(fd)
        for r, w in fctx.state.get("pipes", {}).values():
            os.close(r)
            if w != r:
                os.close(w)
        fctx.opened.clear()
        fctx.state.clear()
        if os.read(ready_r, 1) != b"R":
            raise RestoreError(f"the new process {pid} died while setting up its files")
        ptrace.seize(child)
        ptrace.interrupt(child)
        stop = ptrace.wait_stop(child)
        if stop.exited:
            raise RestoreError(f"the new process {pid} died: {stop.describe()}")
        ptrace.set_sigmask(child, signals.ALL_BLOCKED)
        regs = ptrace.get_regs(child)
        inj = Injector(child, helper + HELPER_SIZE - 16, regs)
        try:
            # The child's own fds used to wait for ckpt.
            for fd in procfs.fd_numbers(child):
                if fd not in {e["fd"] for e in fd_table}:
                    inj.call("close", fd)
            task.unregister_rseq(child, inj)
            mem.restore(child, inj, mm, images_dir, helper, HELPER_SIZE)
            log.info("process %d: memory restored (%d injected syscalls so far)", pid, inj.count)
            task.restore(child, inj, helper, core["task"])
            signals.restore(child, inj, helper, core["signals"])
            task.restore_final(child, inj, helper, core["task"])
            saved_vdso = [v["start"] for v in mm["vmas"] if v["path"] == "[vdso]"]
            if saved_vdso:
                inj.site = saved_vdso[0] + vdso_offset
            inj.call("munmap", helper, HELPER_SIZE)
            cpu.restore(child, core["cpu"])
            ptrace.set_sigmask(child, core["signals"]["blocked"])
            log.info("process %d: state restored with %d injected syscalls", pid, inj.count)
        finally:
            inj.close()
        if pidfile:
            path = pidfile if os.path.isabs(pidfile) else os.path.join(images_dir, pidfile)
            with open(path, "w") as f:
                f.write(f"{pid}\n")
        ptrace.detach(child)
        os.close(go_w)
        os.close(ready_r)
        go_w = ready_r = -1
    except BaseException as e:
        for fd in fctx.opened.values():
            try:
                os.close(fd)
            except OSError:
                pass
        if child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        for fd in (ready_r, go_w):
            if fd >= 0:
                os.close(fd)
        if isinstance(e, CkptError):
            raise
        if isinstance(e, procfs.ProcessGone):
            raise RestoreError(f"the new process {pid} died during the restore") from None
        if isinstance(e, OSError):
            raise RestoreError(f"restore of process {pid} failed: {e}") from e
        raise
    dt = time.monotonic() - t0
    log.info("process %d restored in %.3f s", pid, dt)
    result = RestoreResult(pid, dt)
    if not detach:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        result.exit_status = os.waitstatus_to_exitcode(status)
    return result
