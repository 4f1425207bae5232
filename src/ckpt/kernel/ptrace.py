"""ptrace requests, the x86_64 register set, and waiting for ptrace-stops."""

from __future__ import annotations

import ctypes
import errno
import os

from .libc import _check
from .libc import syscall as raw_syscall
from .record import dataclass

PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_SECCOMP_GET_FILTER = 0x420C
PTRACE_SECCOMP_GET_METADATA = 0x420D
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F
PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG = 0x4210
PTRACE_GET_THREAD_AREA, PTRACE_SET_THREAD_AREA = 25, 26
# The GDT's TLS entries (set_thread_area), 3 per thread, and what the kernel gives for an
# empty one (struct user_desc: entry, base, limit, flags with read_exec_only and
# seg_not_present set)
GDT_TLS_ENTRIES = (12, 13, 14)
_EMPTY_TLS_FLAGS = 0x28
PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG = 0x4211

PTRACE_PEEKSIGINFO_SHARED = 1
PTRACE_EVENT_STOP = 128
PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACEFORK = 2
PTRACE_O_TRACECLONE = 8
PTRACE_O_SUSPEND_SECCOMP = 0x200000
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_CLONE = 3
SYSCALL_STOP = 0x80 | 5  # the stop signal of a syscall stop, with PTRACE_O_TRACESYSGOOD
# What every tracee of ckpt gets: injected syscalls run from syscall stop to syscall
# stop (kernel/inject.py), told apart from signals by TRACESYSGOOD.
INJECT_OPTIONS = PTRACE_O_TRACESYSGOOD
STOP_SIGNALS = (19, 20, 21, 22)  # SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU: group-stop signals

NT_X86_XSTATE = 0x202
NT_386_IOPERM = 0x201
_ESRCH = 3
__WALL = 0x40000000

# The interpreter's lock is held, not released, during a ptrace request and a wait
# for a stop that has come already: each takes microseconds, and while a dump's thread
# copies pages it would take the lock at every release, the dump's thread then waiting
# for it back at each of its thousands of requests (3-5 times the time of thread
# states with the copy running).
_held = ctypes.PyDLL("libc.so.6", use_errno=True)
_ptrace = _held.ptrace
_waitpid_now = _held.waitpid
_waitpid_now.restype = ctypes.c_int
_waitpid_now.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

REG_NAMES = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
    "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
    "fs_base", "gs_base", "ds", "es", "fs", "gs",
)


class UserRegs(ctypes.Structure):
    """struct user_regs_struct (x86_64)."""

    _fields_ = [(n, ctypes.c_uint64) for n in REG_NAMES]

    def to_dict(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in REG_NAMES}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> UserRegs:
        return cls(**{n: d[n] & 0xFFFFFFFFFFFFFFFF for n in REG_NAMES})

    def copy(self) -> UserRegs:
        return UserRegs.from_buffer_copy(self)


class RseqConfig(ctypes.Structure):
    _fields_ = [("rseq_abi_pointer", ctypes.c_uint64), ("rseq_abi_size", ctypes.c_uint32),
                ("signature", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class DispatchConfig(ctypes.Structure):
    """struct ptrace_sud_config: a thread's syscall user dispatch (mode 1: on)."""
    _fields_ = [("mode", ctypes.c_uint64), ("selector", ctypes.c_uint64),
                ("offset", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class PeekSigInfoArgs(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("nr", ctypes.c_int32)]


SIGINFO_SIZE = 128


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    ctypes.set_errno(0)
    res = _ptrace(request, pid, addr, data)
    if res == -1 and ctypes.get_errno() != 0:
        _check(-1, f"ptrace({request:#x}, {pid})")
    return res


def seize(pid: int, options: int = 0) -> None:
    ptrace(PTRACE_SEIZE, pid, 0, options)


def set_options(pid: int, options: int) -> None:
    ptrace(PTRACE_SETOPTIONS, pid, 0, options)


def interrupt(pid: int) -> None:
    ptrace(PTRACE_INTERRUPT, pid)


def detach(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_DETACH, pid, 0, sig)


def cont(pid: int, sig: int = 0) -> None:
    ptrace(PTRACE_CONT, pid, 0, sig)


def singlestep(pid: int) -> None:
    ptrace(PTRACE_SINGLESTEP, pid, 0, 0)


def syscall(pid: int, sig: int = 0) -> None:
    """Resume ``pid`` up to its next syscall entry or exit (PTRACE_SYSCALL)."""
    ptrace(PTRACE_SYSCALL, pid, 0, sig)


def get_regs(pid: int) -> UserRegs:
    regs = UserRegs()
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
    return regs


def set_regs(pid: int, regs: UserRegs) -> None:
    ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def get_xstate(pid: int, size: int = 4096) -> bytes:
    """The full FPU/SSE/AVX state (NT_X86_XSTATE), as the kernel lays it out."""
    buf = ctypes.create_string_buffer(size)
    iov = _IOVec(ctypes.addressof(buf), size)
    ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, ctypes.addressof(iov))
    return buf.raw[: iov.iov_len]


def has_io_bitmap(pid: int) -> bool:
    """Whether thread ``pid`` has I/O port permissions of its own (``ioperm``): the kernel
    gives its bitmap as NT_386_IOPERM, or fails with ENXIO when it has none (always, on
    a kernel without ioperm: CONFIG_X86_IOPL_IOPERM unset); a kernel without that
    regset (EINVAL, ENODEV) has no ioperm either."""
    word = ctypes.c_uint64()
    iov = _IOVec(ctypes.addressof(word), 8)
    try:
        ptrace(PTRACE_GETREGSET, pid, NT_386_IOPERM, ctypes.addressof(iov))
    except OSError as e:
        if e.errno == _ESRCH:
            raise
        return False
    return True


def set_xstate(pid: int, data: bytes) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    iov = _IOVec(ctypes.addressof(buf), len(data))
    ptrace(PTRACE_SETREGSET, pid, NT_X86_XSTATE, ctypes.addressof(iov))


def get_sigmask(pid: int) -> int:
    mask = ctypes.c_uint64()
    ptrace(PTRACE_GETSIGMASK, pid, 8, ctypes.addressof(mask))
    return mask.value


def set_sigmask(pid: int, mask: int) -> None:
    m = ctypes.c_uint64(mask)
    ptrace(PTRACE_SETSIGMASK, pid, 8, ctypes.addressof(m))


def get_rseq(pid: int) -> RseqConfig:
    conf = RseqConfig()
    ptrace(PTRACE_GET_RSEQ_CONFIGURATION, pid, ctypes.sizeof(conf), ctypes.addressof(conf))
    return conf


def get_dispatch(tid: int) -> DispatchConfig | None:
    """Stopped thread ``tid``'s syscall user dispatch (PR_SET_SYSCALL_USER_DISPATCH),
    None when off (or on a kernel without it, before 5.19)."""
    conf = DispatchConfig()
    try:
        ptrace(PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, tid, ctypes.sizeof(conf),
               ctypes.addressof(conf))
    except OSError as e:
        if e.errno in (errno.EIO, errno.EINVAL):  # an older kernel: none
            return None
        raise
    return conf if conf.mode else None


def set_dispatch(tid: int, conf: DispatchConfig) -> None:
    """Give stopped thread ``tid`` the syscall user dispatch ``conf`` (mode 0: off)."""
    ptrace(PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG, tid, ctypes.sizeof(conf),
           ctypes.addressof(conf))


def get_tls(tid: int) -> list[list[int]]:
    """Stopped thread ``tid``'s GDT TLS entries that are not empty, each as [entry, base,
    limit, flags] (struct user_desc); none where the kernel has no 32-bit emulation."""
    out = []
    desc = (ctypes.c_uint32 * 4)()
    for entry in GDT_TLS_ENTRIES:
        try:
            ptrace(PTRACE_GET_THREAD_AREA, tid, entry, ctypes.addressof(desc))
        except OSError as e:
            if e.errno == errno.EIO:  # a kernel without CONFIG_IA32_EMULATION
                return []
            raise
        if list(desc[1:]) != [0, 0, _EMPTY_TLS_FLAGS]:
            out.append([entry, desc[1], desc[2], desc[3]])
    return out


def set_tls(tid: int, entry: int, base: int, limit: int, flags: int) -> None:
    """Set GDT TLS entry ``entry`` of stopped thread ``tid`` (set_thread_area's)."""
    desc = (ctypes.c_uint32 * 4)(entry, base, limit, flags)
    ptrace(PTRACE_SET_THREAD_AREA, tid, entry, ctypes.addressof(desc))


def peek_siginfo(pid: int, shared: bool) -> list[bytes]:
    """Every queued signal of ``pid`` (its own queue, or the process-wide one), as raw siginfo."""
    out: list[bytes] = []
    batch = 32
    buf = ctypes.create_string_buffer(SIGINFO_SIZE * batch)
    while True:
        args = PeekSigInfoArgs(len(out), PTRACE_PEEKSIGINFO_SHARED if shared else 0, batch)
        n = ptrace(PTRACE_PEEKSIGINFO, pid, ctypes.addressof(args), ctypes.addressof(buf))
        for i in range(n):
            out.append(buf.raw[i * SIGINFO_SIZE:(i + 1) * SIGINFO_SIZE])
        if n < batch:
            return out


def seccomp_filters(pid: int) -> list[bytes]:
    """The target's seccomp BPF programs, newest first (index 0 is the last installed)."""
    progs: list[bytes] = []
    index = 0
    while True:
        try:
            count = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, 0)
        except OSError as e:
            if e.errno == 2:  # ENOENT: no more filters
                return progs
            if e.errno == 22 and index > 0:  # EINVAL: filter mode without filter
                return progs
            raise
        buf = ctypes.create_string_buffer(count * 8)
        ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, ctypes.addressof(buf))
        progs.append(buf.raw)
        index += 1


class _SeccompMetadata(ctypes.Structure):
    _fields_ = [("filter_off", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def seccomp_flags(pid: int, index: int) -> int:
    """The flags filter ``index`` (0 = newest) was installed with that the kernel keeps
    (SECCOMP_FILTER_FLAG_LOG)."""
    md = _SeccompMetadata(index, 0)
    ptrace(PTRACE_SECCOMP_GET_METADATA, pid, ctypes.sizeof(md), ctypes.addressof(md))
    return md.flags


@dataclass
class Stop:
    """What ``waitpid`` reported for a traced task."""

    pid: int
    status: int

    @property
    def exited(self) -> bool:
        return os.WIFEXITED(self.status) or os.WIFSIGNALED(self.status)

    @property
    def stopsig(self) -> int:
        return os.WSTOPSIG(self.status) if os.WIFSTOPPED(self.status) else 0

    @property
    def event(self) -> int:
        return self.status >> 16

    def describe(self) -> str:
        if os.WIFEXITED(self.status):
            return f"exited with status {os.WEXITSTATUS(self.status)}"
        if os.WIFSIGNALED(self.status):
            import signal  # here: its enums cost every command start-up time
            return f"killed by {signal.Signals(os.WTERMSIG(self.status)).name}"
        return f"stopped by signal {self.stopsig} event {self.event}"


def trap_stop_all(tids: list[int]) -> None:
    """Take each of ``tids``, stopped tracees of a seize at any ptrace stop, to a plain
    trap stop (PTRACE_EVENT_STOP), one round trip for them all: the stop inside
    get_signal, from which a detached task goes through the kernel's syscall-restart
    logic (a syscall-exit stop skips it when no signal is pending). The trap comes
    before any signal (get_signal's order); a signal reported first all the same is
    sent again (tkill: the thread is ckpt's tracee, its TID is not reused), not lost."""
    for tid in tids:
        interrupt(tid)
        cont(tid, 0)
    for tid in tids:
        while True:
            stop = wait_stop(tid)
            if stop.exited:
                from .procfs import ProcessGone
                raise ProcessGone(tid, f"died while being let go: {stop.describe()}")
            if stop.event == PTRACE_EVENT_STOP:
                break
            if stop.event == 0 and 0 < stop.stopsig <= 64:  # a signal, not a syscall stop
                raw_syscall("tkill", tid, stop.stopsig)
            cont(tid, 0)


def wait_stop(pid: int) -> Stop:
    """Wait for the next ptrace-stop (or death) of ``pid``: one that came already is
    taken with the interpreter's lock held (see ``_held``)."""
    status = ctypes.c_int()
    if _waitpid_now(pid, ctypes.byref(status), __WALL | os.WNOHANG) == pid:
        return Stop(pid, status.value)
    while True:
        try:
            wpid, status = os.waitpid(pid, __WALL)
        except InterruptedError:
            continue
        return Stop(wpid, status)


def poll_stop(pid: int) -> Stop | None:
    """The next ptrace-stop (or death) of ``pid`` if there is one now, else None."""
    while True:
        try:
            wpid, status = os.waitpid(pid, __WALL | os.WNOHANG)
        except InterruptedError:
            continue
        return Stop(wpid, status) if wpid else None
