"""Typed ctypes bindings for the raw Linux syscalls ckpt needs (x86_64).

This module knows nothing of checkpoints: it only turns syscalls into Python
functions that raise ``OSError`` with the right errno.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

if os.uname().machine != "x86_64":  # pragma: no cover - other arches are future work
    raise ImportError(f"ckpt supports x86_64 only, not {os.uname().machine}")

# The C library already loaded in this process (ctypes.util.find_library would run
# ldconfig, a process of its own, at every start).
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long] * 7

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# x86_64 syscall numbers.
NR = {
    "read": 0, "write": 1, "open": 2, "close": 3, "lseek": 8, "mmap": 9, "ioctl": 16,
    "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13,
    "rt_sigprocmask": 14, "pread64": 17, "mremap": 25, "madvise": 28,
    "dup2": 33, "nanosleep": 35, "getitimer": 36, "setitimer": 38,
    "pause": 34, "getpid": 39, "socket": 41, "connect": 42, "sendmsg": 46, "recvmsg": 47,
    "socketpair": 53,
    "shutdown": 48, "listen": 50, "getsockopt": 55, "wait4": 61, "kill": 62, "fcntl": 72,
    "flock": 73, "chdir": 80,
    "fchdir": 81, "umask": 95, "setgroups": 116, "setresuid": 117,
    "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "capget": 125, "capset": 126,
    "getpriority": 140, "setpriority": 141, "sched_setattr": 314, "sched_getattr": 315,
    "membarrier": 324, "rt_sigqueueinfo": 129, "sigaltstack": 131,
    "personality": 135, "chroot": 161, "setpgid": 109, "setsid": 112,
    "rt_sigtimedwait": 128, "prctl": 157,
    "arch_prctl": 158, "gettid": 186, "timer_create": 222, "timer_settime": 223,
    "timer_gettime": 224, "timer_delete": 226,
    "restart_syscall": 219, "set_tid_address": 218, "clock_nanosleep": 230, "exit_group": 231,
    "tgkill": 234, "tkill": 200,
    "openat": 257, "set_robust_list": 273, "get_robust_list": 274,
    "tee": 276, "dup3": 292, "rt_tgsigqueueinfo": 297, "prlimit64": 302,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "seccomp": 317, "rseq": 334, "pidfd_send_signal": 424,
    "setns": 308, "unshare": 272, "umount2": 166, "pivot_root": 155, "open_tree": 428,
    "openat2": 437,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "pidfd_open": 434, "clone3": 435, "close_range": 436, "pidfd_getfd": 438,
    "process_mrelease": 448,
    "mlock": 149, "mlock2": 325, "mlockall": 151, "mseal": 462, "ioprio_set": 251,
    "ioprio_get": 252, "mbind": 237, "set_mempolicy": 238, "get_mempolicy": 239,
    "io_setup": 206, "userfaultfd": 323, "io_getevents": 208, "io_submit": 209, "shmat": 30,
    "fchownat": 260, "sync_file_range": 277, "pipe2": 293, "vmsplice": 278, "splice": 275,
    "statx": 332, "add_key": 248, "keyctl": 250, "modify_ldt": 154,
}
SYSCALL_NAMES = {v: k for k, v in NR.items()}

# mmap / mremap
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_GROWSDOWN, MAP_NORESERVE, MAP_FIXED_NOREPLACE = 0x100, 0x4000, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2

# prctl
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
PR_SET_NAME = 15
PR_GET_SECCOMP = 21
PR_SET_MM = 35
PR_SET_MM_MAP = 14
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39
PR_GET_TID_ADDRESS = 40
PR_TIMER_CREATE_RESTORE_IDS = 77  # Linux 6.15: timer_create takes the wanted ID

# signals
NSIG = 64
SIGKILL, SIGSTOP, SIGTRAP, SIGCHLD = 9, 19, 5, 17

# clone
CLONE_VM = 0x100
CLONE_FS = 0x200
CLONE_FILES = 0x400
CLONE_SIGHAND = 0x800
CLONE_PIDFD = 0x1000
CLONE_THREAD = 0x10000
CLONE_SYSVSEM = 0x40000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_PARENT = 0x8000
CLONE_CLEAR_SIGHAND = 0x100000000  # clone3: the child's handled signals back to the default

# kcmp
KCMP_FILE, KCMP_VM = 0, 1

# sockets: SCM_RIGHTS
SOL_SOCKET, SCM_RIGHTS = 1, 1
MSG_CTRUNC, MSG_DONTWAIT, MSG_CMSG_CLOEXEC = 0x8, 0x40, 0x40000000
SCM_MAX_FD = 253  # fds in one SCM_RIGHTS message
AF_UNIX, SOCK_SEQPACKET, SOCK_CLOEXEC = 1, 5, 0o2000000

# seccomp
SECCOMP_SET_MODE_STRICT, SECCOMP_SET_MODE_FILTER = 0, 1
SECCOMP_FILTER_FLAG_TSYNC = 1

# rseq
RSEQ_FLAG_UNREGISTER = 1

# splice
SPLICE_F_NONBLOCK = 2
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032

# errno values of interrupted syscalls, as seen by a tracer
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516


def _check(res: int, what: str) -> int:
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return res


def syscall(name: str, *args: int) -> int:
    """Call syscall ``name`` with up to six integer arguments; raise OSError on failure."""
    padded = list(args) + [0] * (6 - len(args))
    return _check(_syscall(NR[name], *padded), name)


SIG_BLOCK, SIG_SETMASK = 0, 2


def sigprocmask(how: int, mask: int) -> int:
    """rt_sigprocmask of the calling thread with a 64-bit ``mask``; the old mask. Unlike
    Python's ``signal.pthread_sigmask`` it reaches the two signals glibc keeps for itself
    (32 and 33), which a new process of a restore must have blocked too."""
    new, old = ctypes.c_uint64(mask), ctypes.c_uint64()
    syscall("rt_sigprocmask", how, ctypes.addressof(new), ctypes.addressof(old), 8)
    return old.value


def getsockopt(fd: int, level: int, opt: int, size: int, optlen: int,
               data: bytes = b"") -> tuple[bytes, int]:
    """getsockopt into a buffer of ``size`` bytes, passing ``optlen`` as the length: for
    options whose length counts no bytes (SO_GET_FILTER counts instructions), or that
    read what the buffer holds first (``data``: MCAST_MSFILTER's group), which
    socket.getsockopt cannot do. (The buffer, the length the kernel gave back.)"""
    buf = ctypes.create_string_buffer(data, size)
    length = ctypes.c_uint32(optlen)
    syscall("getsockopt", fd, level, opt, ctypes.addressof(buf), ctypes.addressof(length))
    return buf.raw, length.value


AT_EMPTY_PATH = 0x1000
_EMPTY = ctypes.create_string_buffer(b"")


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", AT_EMPTY_PATH): the owner of the very file ``fd`` is open on,
    an ``O_PATH`` fd of a symbolic link or device node too (fchown refuses those)."""
    syscall("fchownat", fd, ctypes.addressof(_EMPTY), uid, gid, AT_EMPTY_PATH)


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_uint64), ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_uint64), ("msg_iovlen", ctypes.c_uint64),
        ("msg_control", ctypes.c_uint64), ("msg_controllen", ctypes.c_uint64),
        ("msg_flags", ctypes.c_int32),
    ]


class CmsgHdr(ctypes.Structure):
    _fields_ = [("cmsg_len", ctypes.c_uint64), ("cmsg_level", ctypes.c_int32),
                ("cmsg_type", ctypes.c_int32)]


def socketpair(kind: int) -> tuple[int, int]:
    """A pair of connected unix sockets of ``kind`` (SOCK_SEQPACKET...), close-on-exec:
    without the socket modules (_socket alone is a library to load)."""
    fds = (ctypes.c_int * 2)()
    syscall("socketpair", AF_UNIX, kind | SOCK_CLOEXEC, 0, ctypes.addressof(fds))
    return fds[0], fds[1]


def send_fds(sock: int, fds: list[int]) -> None:
    """Send one zero byte carrying ``fds`` (SCM_RIGHTS) on the socket ``sock``."""
    head = ctypes.sizeof(CmsgHdr)
    control = ctypes.create_string_buffer(head + (4 * len(fds) + 7) // 8 * 8)
    cmsg = CmsgHdr.from_buffer(control)
    cmsg.cmsg_len, cmsg.cmsg_level, cmsg.cmsg_type = head + 4 * len(fds), SOL_SOCKET, SCM_RIGHTS
    struct.pack_into(f"{len(fds)}i", control, head, *fds)
    byte = ctypes.create_string_buffer(1)
    iov = IOVec(ctypes.addressof(byte), 1)
    msg = MsgHdr(msg_iov=ctypes.addressof(iov), msg_iovlen=1,
                 msg_control=ctypes.addressof(control), msg_controllen=len(control))
    syscall("sendmsg", sock, ctypes.addressof(msg), 0)


class CloneArgs(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64), ("pidfd", ctypes.c_uint64),
        ("child_tid", ctypes.c_uint64), ("parent_tid", ctypes.c_uint64),
        ("exit_signal", ctypes.c_uint64), ("stack", ctypes.c_uint64),
        ("stack_size", ctypes.c_uint64), ("tls", ctypes.c_uint64),
        ("set_tid", ctypes.c_uint64), ("set_tid_size", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
    ]


class RLimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]


RLIM_INFINITY = 0xFFFFFFFFFFFFFFFF


CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None
          ) -> None:
    _check(_libc.mount(source.encode(), os.fsencode(target),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {target}")


def clone3_with_pid(pid: int | list[int], sibling: bool = False, flags: int = 0,
                    blocked: bool = False) -> int:
    """Fork this process so that the child gets PID ``pid`` (or the set_tid array
    ``pid``: its PID in a new PID namespace first, CLONE_NEWPID in ``flags``); 0 in
    the child. ``sibling``: the child is our parent's child (CLONE_PARENT), not ours.
    ``flags``: more clone flags (CLONE_FILES, CLONE_FS: what the child shares).
    ``blocked``: the child is born with every signal blocked (ours are blocked around
    the call, and back after it in this process): a signal sent to the PID it takes,
    whose owner-to-be someone may know already, waits instead of killing it.

    Runs without Python's fork hooks: the child must only do simple work and
    must leave through ``os._exit``.
    """
    pids = pid if isinstance(pid, list) else [pid]
    tid = (ctypes.c_int * len(pids))(*pids)
    args = CloneArgs(flags=flags | (CLONE_PARENT if sibling else 0),
                     exit_signal=0 if sibling else SIGCHLD,
                     set_tid=ctypes.addressof(tid), set_tid_size=len(pids))
    if not blocked:
        return syscall("clone3", ctypes.addressof(args), ctypes.sizeof(args))
    mask = sigprocmask(SIG_BLOCK, (1 << 64) - 1)
    child = -1
    try:
        child = syscall("clone3", ctypes.addressof(args), ctypes.sizeof(args))
        return child
    finally:
        if child != 0:
            sigprocmask(SIG_SETMASK, mask)


def pidfd_open(pid: int) -> int:
    return syscall("pidfd_open", pid, 0)


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """Duplicate fd ``targetfd`` of the process behind ``pidfd`` into this process."""
    return syscall("pidfd_getfd", pidfd, targetfd, 0)


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    syscall("pidfd_send_signal", pidfd, sig, 0, 0)


def process_mrelease(pidfd: int) -> None:
    """Free the memory of the killed process behind ``pidfd`` now, in this thread,
    alongside its own exit (Linux 5.15)."""
    syscall("process_mrelease", pidfd, 0)


def kcmp_file(pid1: int, pid2: int, fd1: int, fd2: int) -> int:
    """0 when both fds refer to one open file description."""
    return syscall("kcmp", pid1, pid2, KCMP_FILE, fd1, fd2)


def kcmp_vm(pid1: int, pid2: int) -> bool:
    """Whether two processes share one address space (vfork, CLONE_VM)."""
    return syscall("kcmp", pid1, pid2, KCMP_VM, 0, 0) == 0


def process_vm_readv(pid: int, local: int, remote: int, length: int) -> int:
    """Copy ``length`` bytes at ``remote`` in ``pid`` to the local address ``local``."""
    lv = IOVec(local, length)
    rv = IOVec(remote, length)
    return syscall("process_vm_readv", pid, ctypes.addressof(lv), 1, ctypes.addressof(rv), 1, 0)


def process_vm_writev(pid: int, local: int, remote: int, length: int) -> int:
    lv = IOVec(local, length)
    rv = IOVec(remote, length)
    return syscall("process_vm_writev", pid, ctypes.addressof(lv), 1, ctypes.addressof(rv), 1, 0)


def get_robust_list(pid: int) -> tuple[int, int]:
    head = ctypes.c_uint64()
    size = ctypes.c_uint64()
    syscall("get_robust_list", pid, ctypes.addressof(head), ctypes.addressof(size))
    return head.value, size.value


def prlimit(pid: int, resource: int, new: tuple[int, int] | None = None) -> tuple[int, int]:
    old = RLimit()
    if new is None:
        syscall("prlimit64", pid, resource, 0, ctypes.addressof(old))
    else:
        nl = RLimit(*new)
        syscall("prlimit64", pid, resource, ctypes.addressof(nl), ctypes.addressof(old))
    return old.cur, old.max


def tee(fd_in: int, fd_out: int, length: int, flags: int = SPLICE_F_NONBLOCK) -> int:
    return syscall("tee", fd_in, fd_out, length, flags)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return syscall("prctl", option, arg2, arg3, arg4, arg5)


AT_SYSINFO_EHDR = 33  # auxiliary vector: where this process's vDSO starts


def getauxval(kind: int) -> int:
    """An entry of this process's auxiliary vector (0 when it has none)."""
    _libc.getauxval.restype = ctypes.c_ulong
    _libc.getauxval.argtypes = [ctypes.c_ulong]
    return int(_libc.getauxval(kind))


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]


TMPFS_MAGIC = 0x01021994
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]


def fs_type(fd: int) -> int:
    """The magic number of the file system ``fd`` is on (statfs's f_type); 0 if unknown."""
    buf = ctypes.create_string_buffer(120)  # struct statfs; f_type is its first field
    if _libc.fstatfs(fd, buf) != 0:
        return 0
    return ctypes.c_long.from_buffer(buf).value


def anon_buffer(size: int) -> int:
    """Map ``size`` bytes of private anonymous memory in this process; return its address."""
    addr = _libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return addr


class PrctlMmMap(ctypes.Structure):
    """struct prctl_mm_map (include/uapi/linux/prctl.h), for PR_SET_MM_MAP."""

    _fields_ = [(n, ctypes.c_uint64) for n in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
        "start_stack", "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


TASK_SIZE = 0x7FFFFFFFF000  # the top of x86_64 user space (4-level page tables)


def free_area(ranges: list[tuple[int, int]], size: int, hint: int = 0x100000000000) -> int:
    """A page-aligned address from ``hint`` on where ``size`` bytes overlap none of
    ``ranges``; raises OSError(ENOMEM) if user space has no such gap."""
    addr = hint
    for s, e in sorted(ranges):
        if e <= addr:
            continue
        if s >= addr + size:
            break
        addr = (e + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if addr + size > TASK_SIZE:
        raise OSError(12, f"no free range of {size} bytes in the address space")
    return addr


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data of file ``fd`` up to ``size``, holes left out
    (SEEK_DATA/SEEK_HOLE); the whole of it where the file system cannot tell."""
    out: list[tuple[int, int]] = []
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole up to the end
                break
            return [(0, size)]
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.append((start, end - start))
        off = end
    return out
