"""PID namespaces as the kernel offers them: a fork that is PID 1 of a new namespace,
a /proc of its own for it, PIDs seen from either side, a pidfd's exit status, and the
minimal init (``become_reaper``) a namespace keeps as its PID 1.

The reaper is the init process turning itself into a few instructions: it maps one
page holding the code below, jumps there, unmaps everything else and loops in
``wait4``, reaping whatever the kernel gives it. When the child it was told of (the
restored root) is reaped, it exits with that child's exit code (128 + the signal if a
signal killed it): the kernel then kills whatever is left in the namespace. With a
notify fd it also writes the 4-byte wait status of each stop of that child there (a
shell job's Ctrl-Z). One page of memory, no file, no library.
"""

from __future__ import annotations

import _signal
import ctypes
import errno
import os
import struct

from . import interrupts, libc
from .nsenter import setns

CLONE_NEWPID = 0x20000000
CLONE_NEWNS = libc.CLONE_NEWNS
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SLAVE = 2, 4, 8, 1 << 19
WUNTRACED, WALL = 2, 0x40000000

PIDFD_INFO_PID, PIDFD_INFO_EXIT = 1 << 0, 1 << 3
_PIDFD_INFO_SIZE = 64  # struct pidfd_info, its first version
PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11  # _IOWR(0xFF, 11)


def fork_init(sibling: bool = False) -> int:
    """Fork: the child is PID 1 of a new PID namespace (0 returned there, its PID on
    this side here). This process's own children stay in its namespace: its
    pid_for_children is set back, so it may do this any number of times.
    ``sibling``: the child is this process's parent's child (CLONE_PARENT), not its own."""
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(CLONE_NEWPID)
        try:
            pid = interrupts.fork(_fork_sibling if sibling else os.fork)
        finally:
            if os.getpid() != 1:  # the parent (the child is 1, and in the new namespace)
                setns(own, CLONE_NEWPID)
        return pid
    finally:
        os.close(own)


def _fork_sibling() -> int:
    """``os.fork`` with CLONE_PARENT: Python's own fork steps (its locks, ``at_fork``
    hooks, the child's interpreter state) around a clone3, so the child may run any
    Python code, as after ``os.fork``."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    try:
        args = libc.CloneArgs(flags=libc.CLONE_PARENT)  # exit signal: this process's own
        pid = libc.syscall("clone3", ctypes.addressof(args), ctypes.sizeof(args))
    except BaseException:
        api.PyOS_AfterFork_Parent()
        raise
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        api.PyOS_AfterFork_Parent()
    return pid


def mount_own_proc() -> None:
    """In a process of a new PID namespace: a mount namespace of its own, a copy of
    this one (same mounts, same propagation), where /proc shows its PID namespace;
    the new /proc is kept from propagating back (the old /proc becomes a slave)."""
    libc.unshare(CLONE_NEWNS)
    libc.mount("none", "/proc", None, MS_SLAVE)
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def ns_pids(pid: int | str) -> list[int]:
    """``pid``'s PID in each namespace it is in, from the one of this /proc down to its
    own (``NSpid`` of /proc/PID/status)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"NSpid:"):
                return [int(x) for x in line.split()[1:]]
    raise OSError(errno.ENOENT, f"process {pid} shows no NSpid")


def pidfd_pid(pidfd: int) -> int:
    """The PID, as this process's /proc shows it, of the process behind ``pidfd``."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    raise OSError(errno.ESRCH, "pidfd shows no PID")


def pidfd_exit_status(pidfd: int) -> int | None:
    """The wait status of the reaped process behind ``pidfd`` (PIDFD_INFO_EXIT, Linux
    6.15); None when this kernel keeps none or it has not exited."""
    buf = ctypes.create_string_buffer(struct.pack("<Q", PIDFD_INFO_EXIT).ljust(
        _PIDFD_INFO_SIZE, b"\0"))
    try:
        libc.syscall("ioctl", pidfd, PIDFD_GET_INFO, ctypes.addressof(buf))
    except OSError:
        return None
    mask = struct.unpack_from("<Q", buf.raw, 0)[0]
    if not mask & PIDFD_INFO_EXIT:
        return None
    return struct.unpack_from("<i", buf.raw, 60)[0]  # exit_code


def exit_code_status(code: int) -> int:
    """The wait status the reaper's exit ``code`` stands for (128 + N: killed by N)."""
    if 128 < code < 128 + _signal.NSIG:
        return code - 128
    return (code & 0xFF) << 8


# The reaper's code, position-independent (as -> ld -Ttext=0 -> objcopy -O binary):
#     lea rsp, [page+0x1000]                  ; its stack: the end of its page
#     munmap(0, page)
#     munmap(page+0x1000, 0x7ffffffff000 - (page+0x1000))
#   again:
#     eax = wait4(-1, &STATUS, FLAGS, NULL)
#     if eax == -ECHILD: exit_group(255)      ; cannot happen: the root is its child
#     if eax != ROOT: goto again
#     if (STATUS & 0xff) == 0x7f: write(NOTIFY, &STATUS, 4); goto again   ; stopped
#     exit_group(STATUS & 0x7f ? 128 + (STATUS & 0x7f) : (STATUS >> 8) & 0xff)
_REAPER_CODE = bytes.fromhex(
    "488d25f90f000031ff488d35f0ffffffb80b0000000f05488d3de20f000048be00f0ffffff7f0000"
    "4829feb80b0000000f05bfffffffff488d35c20700008b15c80700004531d2b83d0000000f0583f8"
    "f674573b05ab07000075d78b3d9f07000089f981e1ff00000083f97f751b8b3d94070000488d3585"
    "070000ba04000000b8010000000f05eba989f883e07f74070580000000eb0a89f8c1e80825ff0000"
    "0089c7b8e70000000f05bfff000000b8e70000000f05")
REAPER_NAME = "ckpt-init"  # its comm
_DATA = 0x800  # STATUS, ROOT, NOTIFY, FLAGS: four 32-bit words
_RSEQ_SIG = 0x53053053
_ARCH_GET_FS = 0x1003


def _unregister_rseq() -> None:
    """glibc registered an rseq area in this thread's TLS, which the reaper unmaps: the
    kernel would write to it at the next preemption and kill the process."""
    so = ctypes.CDLL("libc.so.6")
    try:
        offset = ctypes.c_ssize_t.in_dll(so, "__rseq_offset").value
        size = ctypes.c_uint.in_dll(so, "__rseq_size").value
    except ValueError:
        return  # a C library without rseq
    if not size:
        return  # not registered (glibc.pthread.rseq=0)
    fs = ctypes.c_ulong(0)
    libc.syscall("arch_prctl", _ARCH_GET_FS, ctypes.addressof(fs))
    for length in sorted({32, size, (size + 31) & ~31}):
        try:
            libc.syscall("rseq", fs.value + offset, length, libc.RSEQ_FLAG_UNREGISTER,
                         _RSEQ_SIG)
            return
        except OSError:
            continue
    raise OSError(errno.EINVAL, "cannot unregister this thread's rseq area")


def become_reaper(root: int, notify_fd: int = -1) -> None:
    """Turn this (single-threaded, PID 1) process into the reaper described above for
    the child ``root``; never returns. Every fd but ``notify_fd`` is closed, every
    signal's action is the default (ignored by an init, but SIGKILL from outside)."""
    page = libc.syscall("mmap", 0, libc.PAGE_SIZE,
                        libc.PROT_READ | libc.PROT_WRITE | libc.PROT_EXEC,
                        libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1, 0)
    flags = WALL | (WUNTRACED if notify_fd >= 0 else 0)
    ctypes.memmove(page, _REAPER_CODE, len(_REAPER_CODE))
    ctypes.memmove(page + _DATA, struct.pack("<iiiI", 0, root, notify_fd, flags), 16)
    os.chdir("/")
    name = ctypes.create_string_buffer(REAPER_NAME.encode())
    libc.prctl(libc.PR_SET_NAME, ctypes.addressof(name))
    libc.prctl(libc.PR_SET_PDEATHSIG, 0)
    for sig in range(1, _signal.NSIG):
        if sig not in (_signal.SIGKILL, _signal.SIGSTOP):
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # the signals of the threads library
    _unregister_rseq()
    if notify_fd > 0:
        os.closerange(0, notify_fd)
    os.closerange(notify_fd + 1 if notify_fd >= 0 else 0, 1 << 20)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    ctypes.CFUNCTYPE(None)(page)()
    raise AssertionError("the reaper returned")  # pragma: no cover
