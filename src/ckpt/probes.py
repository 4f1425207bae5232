"""The probes of ``ckpt check``: each, for real, a kernel interface ckpt needs.

Like ``criu check``, but each probe does what a dump or a restore does, on a
throwaway child process forked for the purpose (killed and reaped after):
seize and interrupt it, read and write its registers, xstate and signal mask,
read its rseq configuration and queued signals, run syscalls inside it by
single-stepping over a ``syscall`` instruction of its vDSO, read its memory,
pagemap and map_files, copy its fds, compare them with kcmp, ``tee`` a pipe it
holds, move its vDSO, try ``PR_SET_MM_MAP`` and a seccomp filter in it. A
``clone3`` with ``set_tid`` makes a second child under a chosen PID.

Each failing probe says in one line what is missing and why (``probe_all``);
``OPTIONAL`` interfaces, whose absence ckpt works around, give notes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import signal
import sys
import time

from .kernel import interrupts, libc, pagemap, procfs, ptrace, vdso
from .kernel.inject import Injector, find_syscall_site

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable

MIN_KERNEL = (5, 10)
CAP_SYS_ADMIN = 21
CAP_CHECKPOINT_RESTORE = 40
PR_SET_MM_MAP_SIZE = 15
SIGNALS_ALL = (1 << 64) - 1
_UNBLOCKABLE = (1 << (libc.SIGKILL - 1)) | (1 << (libc.SIGSTOP - 1))
_SI_QUEUE = -1
_PIPE_PAYLOAD = b"ckpt-check-tee"
_SHM_BYTE = b"\x5a"
# A one-instruction seccomp program: return SECCOMP_RET_ALLOW.
_BPF_ALLOW = (0x06).to_bytes(2, "little") + b"\0\0" + (0x7FFF0000).to_bytes(4, "little")


class Missing(Exception):
    """A probe found that the kernel (or ckpt's privileges) lack what ckpt needs."""


class Skipped(Exception):
    """A probe could not run because a probe it depends on failed."""


def _errno_text(e: OSError) -> str:
    return f"{errno.errorcode.get(e.errno or 0, e.errno)} ({os.strerror(e.errno or 0)})"


def _caps() -> int:
    try:
        return procfs.status(os.getpid()).cap_effective
    except (ValueError, procfs.ProcessGone):
        return 0


def _has_cap(cap: int) -> bool:
    return bool(_caps() >> cap & 1)


def _cr_capable_hint() -> str:
    """Why an EPERM happened, when ckpt lacks the checkpoint/restore capabilities."""
    if _has_cap(CAP_CHECKPOINT_RESTORE) or _has_cap(CAP_SYS_ADMIN):
        return ""
    return " (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, which ckpt lacks)"


class _Ctx:
    """The throwaway child and what the probes learned about it."""

    def __init__(self) -> None:
        self.child = 0
        self.pidfd = -1
        self.regs: ptrace.UserRegs | None = None
        self.inj: Injector | None = None
        self.scratch = 0
        self.pipe_r = self.pipe_w = self.exe_fd = -1
        self.shm = 0
        self.failed: set[str] = set()

    def need(self, *probes: str) -> None:
        for p in probes:
            if p in self.failed:
                raise Skipped(f"not probed, since {p} failed")


def _wait_stop(pid: int, timeout: float = 2.0) -> ptrace.Stop:
    """waitpid for a ptrace-stop of ``pid``, giving up after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0001
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG | ptrace.__WALL)
        if wpid:
            return ptrace.Stop(wpid, status)
        if time.monotonic() > deadline:
            raise Missing(f"process {pid} did not stop within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def _fork_child(ctx: _Ctx) -> None:
    """A child that sleeps, holding a pipe with bytes in it, the exe and a shared page."""
    ctx.pipe_r, ctx.pipe_w = os.pipe()
    os.write(ctx.pipe_w, _PIPE_PAYLOAD)
    ctx.exe_fd = os.open("/proc/self/exe", os.O_RDONLY)
    page = libc.PAGE_SIZE
    ctx.shm = libc.syscall("mmap", 0, page, libc.PROT_READ | libc.PROT_WRITE,
                           libc.MAP_SHARED | libc.MAP_ANONYMOUS, -1, 0)
    ctypes.memmove(ctx.shm, _SHM_BYTE, 1)
    pid = interrupts.fork()
    if pid == 0:
        try:
            libc.prctl(libc.PR_SET_PDEATHSIG, libc.SIGKILL)
            if os.getppid() == 1:
                os._exit(0)
            while True:
                time.sleep(60)
        finally:
            os._exit(0)
    ctx.child = pid


# ---------------------------------------------------------------- probes

def probe_kernel(ctx: _Ctx) -> None:
    rel = os.uname().release
    m = re.match(r"(\d+)\.(\d+)", rel)
    if not m:
        raise Missing(f"cannot read the version of kernel {rel!r}")
    if (int(m[1]), int(m[2])) < MIN_KERNEL:
        raise Missing(f"kernel {rel} is too old: ckpt needs Linux "
                      f"{MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer")


def probe_seize(ctx: _Ctx) -> None:
    try:
        ptrace.seize(ctx.child, ptrace.INJECT_OPTIONS)
    except OSError as e:
        hint = ""
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                scope = f.read().strip()
            if scope != "0":
                hint = f"; Yama ptrace_scope is {scope}"
        except OSError:
            pass
        raise Missing(f"PTRACE_SEIZE of a child failed: {_errno_text(e)}{hint}") from None
    try:
        ptrace.interrupt(ctx.child)
    except OSError as e:
        raise Missing(f"PTRACE_INTERRUPT failed: {_errno_text(e)}") from None
    while True:
        stop = _wait_stop(ctx.child)
        if stop.exited:
            raise Missing(f"the probe child {stop.describe()} instead of stopping")
        if stop.event == ptrace.PTRACE_EVENT_STOP:
            break
        ptrace.cont(ctx.child, stop.stopsig)


def probe_regs(ctx: _Ctx) -> None:
    ctx.need("ptrace")
    try:
        regs = ptrace.get_regs(ctx.child)
    except OSError as e:
        raise Missing(f"PTRACE_GETREGS failed: {_errno_text(e)}") from None
    try:
        ptrace.set_regs(ctx.child, regs)
    except OSError as e:
        raise Missing(f"PTRACE_SETREGS failed: {_errno_text(e)}") from None
    ctx.regs = regs


def probe_xstate(ctx: _Ctx) -> None:
    ctx.need("ptrace")
    try:
        xs = ptrace.get_xstate(ctx.child)
    except OSError as e:
        raise Missing(f"PTRACE_GETREGSET NT_X86_XSTATE failed: {_errno_text(e)}") from None
    if len(xs) < 576:  # legacy FXSAVE area + XSAVE header
        raise Missing(f"PTRACE_GETREGSET NT_X86_XSTATE returned only {len(xs)} bytes")
    try:
        ptrace.set_xstate(ctx.child, xs)
    except OSError as e:
        raise Missing(f"PTRACE_SETREGSET NT_X86_XSTATE failed: {_errno_text(e)}") from None


def probe_sigmask(ctx: _Ctx) -> None:
    ctx.need("ptrace")
    try:
        old = ptrace.get_sigmask(ctx.child)
        ptrace.set_sigmask(ctx.child, SIGNALS_ALL)
        now = ptrace.get_sigmask(ctx.child)
    except OSError as e:
        raise Missing(f"PTRACE_GETSIGMASK/SETSIGMASK failed: {_errno_text(e)}") from None
    if now != SIGNALS_ALL & ~_UNBLOCKABLE:
        raise Missing(f"PTRACE_SETSIGMASK did not take: mask {now:#x} after setting all, "
                      f"was {old:#x}")


def probe_rseq(ctx: _Ctx) -> None:
    ctx.need("ptrace")
    try:
        conf = ptrace.get_rseq(ctx.child)
    except OSError as e:
        if e.errno in (errno.EIO, errno.EINVAL):  # before Linux 5.13: worked around
            NOTES.append("rseq configuration: PTRACE_GET_RSEQ_CONFIGURATION missing (Linux "
                          "5.13); rseq areas are not saved, restored threads run without")
            return
        raise Missing(f"PTRACE_GET_RSEQ_CONFIGURATION failed: {_errno_text(e)}") from None
    if conf.rseq_abi_pointer and conf.rseq_abi_size < 32:
        raise Missing(f"PTRACE_GET_RSEQ_CONFIGURATION gave a bad area size "
                      f"{conf.rseq_abi_size}")


def probe_robust_rlimit(ctx: _Ctx) -> None:
    try:
        libc.get_robust_list(ctx.child)
    except OSError as e:
        raise Missing(f"get_robust_list of another process failed: {_errno_text(e)}") from None
    try:
        for res in range(len(procfs.LIMIT_NAMES)):
            libc.prlimit(ctx.child, res)
    except OSError as e:
        raise Missing(f"prlimit64 of another process failed: {_errno_text(e)}") from None


def probe_inject(ctx: _Ctx) -> None:
    ctx.need("ptrace", "PTRACE_GETREGS")
    vdso = [v for v in procfs.maps(ctx.child) if v.path == "[vdso]"]
    if not vdso:
        raise Missing("the child has no [vdso] mapping to run syscalls from")
    try:
        with open(f"/proc/{ctx.child}/mem", "rb", buffering=0) as f:
            f.seek(vdso[0].start)
            code = f.read(vdso[0].size)
    except OSError as e:
        raise Missing(f"reading /proc/PID/mem of the child failed: {_errno_text(e)}") from None
    site = find_syscall_site(code, vdso[0].start)
    if site is None:
        raise Missing("no syscall instruction found in the child's vDSO")
    assert ctx.regs is not None
    inj = Injector(ctx.child, site, ctx.regs)
    ctx.inj = inj
    try:
        got = inj.call("getpid")
    except OSError as e:
        raise Missing(f"an injected getpid failed: {e}") from None
    if got != ctx.child:
        raise Missing(f"an injected getpid returned {got}, not {ctx.child}: the syscall did "
                      "not run in the child")
    # A scratch page of the child, written through /proc/PID/mem, as a restore does.
    try:
        ctx.scratch = inj.call("mmap", 0, 2 * libc.PAGE_SIZE,
                               libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC,
                               libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0)
        helper = ctx.scratch + libc.PAGE_SIZE - 16
        inj.write(helper, b"\x0f\x05\xcc")
    except OSError as e:
        raise Missing(f"mapping a scratch page in the child / writing /proc/PID/mem "
                      f"failed: {e}") from None
    inj.site = helper
    got = inj.raw("getpid")
    if got != ctx.child:
        raise Missing(f"an injected getpid through a written helper page returned {got}")


def probe_peeksiginfo(ctx: _Ctx) -> None:
    ctx.need("ptrace", "PTRACE_GETSIGMASK/SETSIGMASK")
    # All signals are blocked in the stopped child: these stay queued.
    os.kill(ctx.child, signal.SIGUSR1)
    info = (signal.SIGUSR2).to_bytes(4, "little") + b"\0" * 4 + \
        _SI_QUEUE.to_bytes(4, "little", signed=True) + b"\0" * 116
    buf = ctypes.create_string_buffer(info, 128)
    try:
        libc.syscall("rt_tgsigqueueinfo", ctx.child, ctx.child, signal.SIGUSR2,
                     ctypes.addressof(buf))
    except OSError as e:
        raise Missing(f"rt_tgsigqueueinfo to another process failed: {_errno_text(e)}") from None
    try:
        shared = ptrace.peek_siginfo(ctx.child, True)
        private = ptrace.peek_siginfo(ctx.child, False)
    except OSError as e:
        raise Missing(f"PTRACE_PEEKSIGINFO failed: {_errno_text(e)}") from None

    def signos(infos: list[bytes]) -> list[int]:
        return [int.from_bytes(i[:4], "little") for i in infos]

    if signos(shared) != [signal.SIGUSR1] or signos(private) != [signal.SIGUSR2]:
        raise Missing(f"PTRACE_PEEKSIGINFO showed {signos(shared)} (shared) and "
                      f"{signos(private)} (private), not the signals just queued")


def probe_vm_readv(ctx: _Ctx) -> None:
    ctx.need("ptrace")
    vdso = [v for v in procfs.maps(ctx.child) if v.path == "[vdso]"]
    if not vdso:
        raise Missing("the child has no [vdso] mapping to read")
    size = min(vdso[0].size, 4096)
    buf = ctypes.create_string_buffer(size)
    try:
        n = libc.process_vm_readv(ctx.child, ctypes.addressof(buf), vdso[0].start, size)
    except OSError as e:
        raise Missing(f"process_vm_readv failed: {_errno_text(e)}") from None
    with open(f"/proc/{ctx.child}/mem", "rb", buffering=0) as f:
        f.seek(vdso[0].start)
        want = f.read(size)
    if n != size or buf.raw != want:
        raise Missing("process_vm_readv returned other bytes than /proc/PID/mem")


def probe_pagemap(ctx: _Ctx) -> None:
    ctx.need("PTRACE_GETREGS")
    assert ctx.regs is not None
    sp_page = ctx.regs.rsp - ctx.regs.rsp % libc.PAGE_SIZE  # surely present: in use
    try:
        flags = procfs.pagemap_flags(ctx.child, sp_page, 1)
    except OSError as e:
        raise Missing(f"reading /proc/PID/pagemap failed: {_errno_text(e)}") from None
    if len(flags) != 1 or not flags[0] & 0x80:
        raise Missing("/proc/PID/pagemap does not show the page at the child's stack pointer "
                      "as present")
    try:
        vmas = procfs.maps(ctx.child, with_flags=True)
    except OSError as e:
        raise Missing(f"reading /proc/PID/smaps failed: {_errno_text(e)}") from None
    if not any(v.flags for v in vmas):
        raise Missing("/proc/PID/smaps has no VmFlags lines")


def probe_map_files(ctx: _Ctx) -> None:
    vmas = [v for v in procfs.maps(ctx.child) if v.start == ctx.shm]
    if not vmas:
        raise Missing("the child's shared anonymous page is not in /proc/PID/maps")
    v = vmas[0]
    path = f"/proc/{ctx.child}/map_files/{v.start:x}-{v.end:x}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise Missing(f"opening /proc/PID/map_files/... failed: {_errno_text(e)}"
                      f"{_cr_capable_hint()}") from None
    try:
        if os.lseek(fd, 0, os.SEEK_DATA) != 0 or os.pread(fd, 1, 0) != _SHM_BYTE:
            raise Missing("a /proc/PID/map_files entry of shared memory does not show its data")
    except OSError as e:
        raise Missing(f"SEEK_DATA/read on a /proc/PID/map_files entry failed: "
                      f"{_errno_text(e)}") from None
    finally:
        os.close(fd)


def probe_proc_files(ctx: _Ctx) -> None:
    """/proc files a dump reads that exist only with some kernel options."""
    for name, option in (("timers", "CONFIG_CHECKPOINT_RESTORE and CONFIG_POSIX_TIMERS"),
                         (f"task/{ctx.child}/children", "CONFIG_PROC_CHILDREN")):
        if not os.path.exists(f"/proc/{ctx.child}/{name}"):
            raise Missing(f"/proc/PID/{name} does not exist (needs {option})")
    try:
        procfs.fdinfo(ctx.child, ctx.pipe_r)
    except (OSError, procfs.ProcessGone) as e:
        raise Missing(f"reading /proc/PID/fdinfo failed: {e}") from None


def probe_pidfd(ctx: _Ctx) -> None:
    try:
        ctx.pidfd = libc.pidfd_open(ctx.child)
    except OSError as e:
        raise Missing(f"pidfd_open failed: {_errno_text(e)} (needs Linux 5.3)") from None
    try:
        dup = libc.pidfd_getfd(ctx.pidfd, ctx.pipe_r)
    except OSError as e:
        raise Missing(f"pidfd_getfd failed: {_errno_text(e)} (needs Linux 5.6)") from None
    try:
        if os.fstat(dup).st_ino != os.fstat(ctx.pipe_r).st_ino:
            raise Missing("pidfd_getfd returned an fd on another file")
    finally:
        os.close(dup)


def probe_kcmp(ctx: _Ctx) -> None:
    me = os.getpid()
    try:
        same = libc.kcmp_file(me, ctx.child, ctx.pipe_r, ctx.pipe_r)
        other = libc.kcmp_file(me, ctx.child, ctx.pipe_r, ctx.pipe_w)
    except OSError as e:
        why = " (needs CONFIG_KCMP)" if e.errno == errno.ENOSYS else ""
        raise Missing(f"kcmp(KCMP_FILE) failed: {_errno_text(e)}{why}") from None
    if same != 0 or other == 0:
        raise Missing(f"kcmp(KCMP_FILE) gave {same} for one file and {other} for two")


def probe_tee(ctx: _Ctx) -> None:
    """What a dump does to read the bytes in a pipe: tee from /proc/PID/fd/N."""
    try:
        src = os.open(f"/proc/{ctx.child}/fd/{ctx.pipe_r}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise Missing(f"reopening a pipe through /proc/PID/fd failed: {_errno_text(e)}") from None
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            n = libc.tee(src, w, 1 << 16)
        except OSError as e:
            raise Missing(f"tee on pipes failed: {_errno_text(e)}") from None
        if os.read(r, 1 << 16) != _PIPE_PAYLOAD or n != len(_PIPE_PAYLOAD):
            raise Missing("tee copied other bytes than the pipe held")
        try:
            again = libc.tee(src, w, 1 << 16)
        except OSError as e:
            raise Missing(f"a second tee on the pipe failed: {_errno_text(e)}") from None
        if again != len(_PIPE_PAYLOAD):
            raise Missing("tee consumed the bytes of the pipe")
    finally:
        for fd in (src, r, w):
            os.close(fd)


def probe_rseq_register(ctx: _Ctx) -> None:
    """A restore unregisters the fresh child's rseq area and registers the saved one."""
    ctx.need("PTRACE_GET_RSEQ_CONFIGURATION", "syscall injection")
    assert ctx.inj is not None
    try:
        conf = ptrace.get_rseq(ctx.child)
    except OSError:
        return  # before Linux 5.13 (see probe_rseq)
    if not conf.rseq_abi_pointer:
        return  # this libc registers no rseq area: nothing to try
    try:
        ctx.inj.call("rseq", conf.rseq_abi_pointer, conf.rseq_abi_size,
                     libc.RSEQ_FLAG_UNREGISTER, conf.signature)
        ctx.inj.call("rseq", conf.rseq_abi_pointer, conf.rseq_abi_size, 0, conf.signature)
    except OSError as e:
        raise Missing(f"unregistering and registering rseq with the configuration "
                      f"PTRACE_GET_RSEQ_CONFIGURATION gave failed: {e}") from None


def probe_mm_map(ctx: _Ctx) -> None:
    """PR_SET_MM_MAP in the child with its own values and an exe_fd, as a restore does.

    The exe file is still mapped, so the kernel answers EBUSY after every check
    ckpt depends on has passed (field validation, the capability for exe_fd).
    """
    size = ctypes.c_uint32()
    try:
        libc.prctl(libc.PR_SET_MM, PR_SET_MM_MAP_SIZE, ctypes.addressof(size))
    except OSError as e:
        raise Missing(f"prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) failed: {_errno_text(e)} "
                      "(needs CONFIG_CHECKPOINT_RESTORE)") from None
    if size.value != ctypes.sizeof(libc.PrctlMmMap):
        raise Missing(f"the kernel's struct prctl_mm_map has {size.value} bytes, "
                      f"ckpt's {ctypes.sizeof(libc.PrctlMmMap)}")
    ctx.need("syscall injection")
    inj = ctx.inj
    assert inj is not None
    st = procfs.stat(ctx.child)
    m = libc.PrctlMmMap(start_code=st.start_code, end_code=st.end_code, start_data=st.start_data,
                   end_data=st.end_data, start_brk=st.start_brk, brk=inj.call("brk", 0),
                   start_stack=st.start_stack, arg_start=st.arg_start, arg_end=st.arg_end,
                   env_start=st.env_start, env_end=st.env_end, auxv=0, auxv_size=0,
                   exe_fd=ctx.exe_fd)
    inj.write(ctx.scratch, bytes(m))
    res = inj.raw("prctl", libc.PR_SET_MM, libc.PR_SET_MM_MAP, ctx.scratch,
                  ctypes.sizeof(m), 0)
    if res in (0, -errno.EBUSY):
        return
    why = {errno.EPERM: " setting exe_fd" + (_cr_capable_hint() or " was refused"),
           errno.EINVAL: ": the kernel refused the child's own memory layout"}.get(-res, "")
    raise Missing(f"prctl(PR_SET_MM, PR_SET_MM_MAP) failed: "
                  f"{_errno_text(OSError(-res, ''))}{why}")


def probe_vdso_mremap(ctx: _Ctx) -> None:
    """Move the vDSO areas of the child elsewhere, keeping their distances, as a restore does."""
    ctx.need("syscall injection")
    inj = ctx.inj
    assert inj is not None
    vmas = procfs.maps(ctx.child)
    trio = vdso.areas(vmas)
    if not trio:
        raise Missing("the child has no vDSO mappings")
    temp = libc.free_area([(v.start, v.end) for v in vmas], vdso.span(trio))
    try:
        want = vdso.move_together(inj, trio, temp)
    except vdso.MoveError as e:
        why = " (the vDSO is sealed: CONFIG_MSEAL_SYSTEM_MAPPINGS)" \
            if e.errno == errno.EPERM else ""
        raise Missing(f"mremap of {e.area} failed: {_errno_text(e)}{why}") from None
    moved = {v.path: v.start for v in vdso.areas(procfs.maps(ctx.child))}
    if moved != want:
        raise Missing(f"after mremap the vDSO areas are at {moved}, not {want}")


def probe_seccomp(ctx: _Ctx) -> None:
    """Install an allow-all filter in the child and read it back, as a dump of one does."""
    ctx.need("syscall injection")
    inj = ctx.inj
    assert inj is not None
    prog_at = ctx.scratch + 256
    inj.write(prog_at, _BPF_ALLOW)
    inj.write(ctx.scratch, (1).to_bytes(2, "little") + b"\0" * 6 + prog_at.to_bytes(8, "little"))
    try:
        # Lets a filter in without privileges. Unpassed arguments would be left-over registers.
        inj.call("prctl", libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        inj.call("seccomp", libc.SECCOMP_SET_MODE_FILTER, 0, ctx.scratch)
    except OSError as e:
        raise Missing(f"installing a seccomp filter by injection failed: {e}") from None
    try:
        progs = ptrace.seccomp_filters(ctx.child)
    except OSError as e:
        why = ""
        if e.errno == errno.EACCES:
            why = " (needs CAP_SYS_ADMIN and ckpt itself outside seccomp)"
        raise Missing(f"PTRACE_SECCOMP_GET_FILTER failed: {_errno_text(e)}{why}; processes "
                      "with seccomp filters cannot be dumped") from None
    if progs != [_BPF_ALLOW]:
        raise Missing(f"PTRACE_SECCOMP_GET_FILTER returned {len(progs)} filters, not the one "
                      "just installed")


def probe_pidfd_signal(ctx: _Ctx) -> None:
    """Kill the child through its pidfd, as a dump kills the process it saved."""
    if ctx.pidfd < 0:
        ctx.pidfd = libc.pidfd_open(ctx.child)
    try:
        libc.pidfd_send_signal(ctx.pidfd, libc.SIGKILL)
    except OSError as e:
        raise Missing(f"pidfd_send_signal failed: {_errno_text(e)}") from None


def _free_pid() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
    except (OSError, ValueError):
        pid_max = 32768
    low = max(300, pid_max // 2)
    for _ in range(1000):
        pid = low + int.from_bytes(os.urandom(4), "little") % (pid_max - low)
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise Missing("found no free PID to try clone3 with set_tid")


def probe_clone3(ctx: _Ctx) -> None:
    """A child under a chosen PID, created as a restore creates one; it exits at once."""
    last: OSError | None = None
    for _ in range(5):
        pid = _free_pid()
        try:
            child = libc.clone3_with_pid(pid)
        except OSError as e:
            last = e
            if e.errno == errno.EEXIST:  # taken in the meantime
                continue
            break
        if child == 0:  # the raw-forked child: nothing but _exit
            os._exit(0)
        _, status = os.waitpid(child, 0)
        if child != pid:
            raise Missing(f"clone3 with set_tid={pid} created PID {child}")
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise Missing(f"the clone3 child ended with status {status:#x}")
        return
    assert last is not None
    why = ""
    if last.errno == errno.EPERM:
        why = _cr_capable_hint()
    elif last.errno == errno.ENOSYS:
        why = " (needs Linux 5.3, set_tid 5.5)"
    elif last.errno == errno.EINVAL:
        why = " (set_tid needs Linux 5.5)"
    raise Missing(f"clone3 with set_tid failed: {_errno_text(last)}{why}")


# (name shown when it fails, function, needs the child)
PROBES: list[tuple[str, Callable[[_Ctx], None], bool]] = [
    ("kernel version", probe_kernel, False),
    ("ptrace", probe_seize, True),
    ("PTRACE_GETREGS", probe_regs, True),
    ("NT_X86_XSTATE regset", probe_xstate, True),
    ("PTRACE_GETSIGMASK/SETSIGMASK", probe_sigmask, True),
    ("PTRACE_GET_RSEQ_CONFIGURATION", probe_rseq, True),
    ("get_robust_list/prlimit64", probe_robust_rlimit, True),
    ("syscall injection", probe_inject, True),
    ("PTRACE_PEEKSIGINFO", probe_peeksiginfo, True),
    ("process_vm_readv", probe_vm_readv, True),
    ("/proc/PID/pagemap", probe_pagemap, True),
    ("/proc/PID/map_files", probe_map_files, True),
    ("/proc/PID files", probe_proc_files, True),
    ("pidfd_open/pidfd_getfd", probe_pidfd, True),
    ("kcmp", probe_kcmp, True),
    ("tee on pipes", probe_tee, True),
    ("rseq re-registration", probe_rseq_register, True),
    ("PR_SET_MM_MAP", probe_mm_map, True),
    ("vDSO mremap", probe_vdso_mremap, True),
    ("seccomp filter dump", probe_seccomp, True),
    ("pidfd_send_signal", probe_pidfd_signal, True),
    ("clone3 with set_tid", probe_clone3, False),
]


def _cleanup(ctx: _Ctx) -> None:
    if ctx.inj is not None:
        ctx.inj.close()
    if ctx.child:
        try:
            os.kill(ctx.child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                os.waitpid(ctx.child, ptrace.__WALL)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        ctx.child = 0
    for fd in (ctx.pidfd, ctx.pipe_r, ctx.pipe_w, ctx.exe_fd):
        if fd >= 0:
            os.close(fd)
    if ctx.shm:
        libc.syscall("munmap", ctx.shm, libc.PAGE_SIZE)


def probe_all(verbose: bool = False) -> list[tuple[str, str]]:
    """Run every probe; return (probe, why) for each one that failed."""
    ctx = _Ctx()
    failures: list[tuple[str, str]] = []
    try:
        try:
            _fork_child(ctx)
        except OSError as e:
            return [("fork", f"cannot fork a child to probe: {e}")]
        for name, fn, needs_child in PROBES:
            t0 = time.perf_counter()
            try:
                if needs_child and ctx.child == 0:
                    raise Skipped("not probed: no child")
                fn(ctx)
            except (Missing, Skipped) as e:
                failures.append((name, str(e)))
                ctx.failed.add(name)
            except procfs.ProcessGone as e:
                failures.append((name, f"the probe child vanished: {e}"))
                ctx.failed.add(name)
            except OSError as e:
                failures.append((name, f"unexpected error: {e}"))
                ctx.failed.add(name)
            if verbose:
                state = "FAILED" if name in ctx.failed else "ok"
                print(f"{name:32} {state:6} {1000 * (time.perf_counter() - t0):7.2f} ms",
                      file=sys.stderr)
    finally:
        _cleanup(ctx)
    return failures


def _soft_dirty() -> str | None:
    """None if the kernel tracks soft-dirty pages, else what incremental dumps do instead."""
    try:
        if pagemap.probe().soft_dirty:
            return None
    except OSError as e:
        return f"cannot probe ({e.strerror}); incremental dumps compare page digests"
    return "not in this kernel (CONFIG_MEM_SOFT_DIRTY); incremental dumps compare page digests"


def _timer_ids() -> str | None:
    try:
        libc.prctl(libc.PR_TIMER_CREATE_RESTORE_IDS, 2)  # _GET
    except OSError:
        return ("PR_TIMER_CREATE_RESTORE_IDS missing (Linux 6.15); POSIX timers get their "
                "IDs back by being created in order")
    return None


NOTES: list[str] = []  # what probes found missing but worked around

OPTIONAL: list[tuple[str, Callable[[], str | None]]] = [
    ("soft-dirty page tracking", _soft_dirty),
    ("POSIX timer IDs", _timer_ids),
]
