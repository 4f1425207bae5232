"""State checks in the style of CRIU's zdtm tests, one line of a table per case.

Each case runs one of the small C programs of tests/zdtm/ with a mode: it sets some
state up, prints "ready", is dumped (killed) and restored, then gets SIGTERM, checks
every piece of that state itself and prints "PASS" or "FAIL: why". A case whose state
ckpt refuses by design asserts the refusal instead: the dump fails naming it, and the
process, left running untouched, still passes its checks.

The ``zdtm`` column names the CRIU tests whose kind of state a case covers (the
programs are ours). docs/zdtm-inventory.md lists every CRIU static test with what
became of it here. A case that fails for a known cause in another helper's area is a
strict xfail naming the area and the cause: it turns red once fixed, and the mark must go.

Some cases run as criu's zdtm.py runs every test in its other modes: after pre-dumps
(``--pre``), their pages sent to a page server, or restored lazily (``--lazy-pages``).
A local sweep runs every case so: CKPT_ZDTM_SWEEP="pre lazy page-server" (any of
them; "user" runs each program as a user of no one's, as zdtm.py does, and then the
cases that need root fail at their set-up), and CKPT_ZDTM_ROUNDS=N dumps and restores
each N times in a row.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ckpt_helpers import (
    TESTS,
    Builder,
    Output,
    Proc,
    Procs,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
    scaled,
)
from real_helpers import tree

ZDTM = TESTS / "zdtm"
VERDICT = r"^(PASS|FAIL: .*|SETUP: .*)$"


@dataclass(frozen=True)
class Case:
    """One state check: a program of tests/zdtm/ in one mode."""

    id: str
    prog: str
    mode: str
    zdtm: str  # the CRIU tests of the same kind of state
    dump: tuple[str, ...] = ()  # extra flags of the dump
    restore: tuple[str, ...] = ()  # extra flags of the restore
    refuse: str = ""  # a regex of the dump's refusal, when ckpt refuses this by design
    libs: tuple[str, ...] = ()  # extra gcc flags (libraries)
    timeout: float = 30.0
    leave_running: bool = False  # dumped with -R (the process goes on), not restored
    pre_dumps: int = 0  # pre-dumps (--track-mem, each the parent of the next) first
    page_server: bool = False  # its pages sent by the dump to a ckpt page-server
    lazy: bool = False  # restored with --lazy-pages, served by a ckpt lazy-pages
    user: bool = False  # run as a user of no one's, not root


def C(id: str, prog: str, mode: str = "", zdtm: str = "", **kw: object) -> Case:  # noqa: N802
    return Case(id, prog, mode or id, zdtm or id, **kw)  # type: ignore[arg-type]


def R(case: Case) -> Case:  # noqa: N802
    """``case`` dumped with -R: the state must be as it was for the process going on."""
    return replace(case, id=f"{case.id}-R", leave_running=True)


def PRE(case: Case) -> Case:  # noqa: N802
    """``case`` pre-dumped twice before its dump (criu's zdtm.py --pre 2)."""
    return replace(case, id=f"{case.id}-pre", pre_dumps=2)


def PS(case: Case) -> Case:  # noqa: N802
    """``case`` whose dump sends its pages to a page server (zdtm.py --page-server)."""
    return replace(case, id=f"{case.id}-ps", page_server=True)


def LAZY(case: Case) -> Case:  # noqa: N802
    """``case`` restored lazily (zdtm.py --lazy-pages)."""
    return replace(case, id=f"{case.id}-lazy", lazy=True)


def xfail(case: Case, area: str, why: str) -> object:
    """A known failure in ``area`` (the helper working on it), cause ``why``; strict."""
    return pytest.param(case, id=case.id, marks=pytest.mark.xfail(
        strict=True, reason=f"[{area}] {why}"))


PT = ("-pthread",)
RT = ("-pthread", "-lrt")
LOCKS = ("--file-locks",)
TCP = ("--tcp-established",)

CASES: list[Case | object] = [
    # ---------------------------------------------------------------- tasks and trees
    C("busyloop", "task", zdtm="busyloop00"),
    C("sleeping", "task", zdtm="sleeping00"),
    C("pid", "task", zdtm="pid00"),
    C("pstree", "task", zdtm="pstree"),
    C("sessions", "task", zdtm="session00 session01 session02 session03"),
    C("wait", "task", zdtm="wait00"),
    C("zombies", "task", zdtm="zombie00"),
    C("zombie-pgid", "task", zdtm="zombie01"),
    C("helper-zombie", "task", zdtm="helper_zombie_child"),
    C("helper-zombie-user", "task", "helper-zombie", zdtm="(the same as another user: its "
      "zombie too, which it can kill(2))", user=True),
    C("stopped", "task", zdtm="stopped"),
    C("stopped-kill", "task", zdtm="stopped01"),
    C("stopped-tkill", "task", zdtm="stopped02"),
    C("stopped-both", "task", zdtm="stopped12"),
    C("stopped-tstp", "task", zdtm="stopped03"),
    C("stopped-ttin", "task", zdtm="stopped04"),
    C("vfork", "task", zdtm="vfork00", refuse=r"shares its memory with its child .*vfork"),
    C("caps", "task", zdtm="caps00"),
    C("caps-ambient", "task", zdtm="caps01"),
    C("xids", "task", zdtm="xids00"),
    C("fs-ids", "task", zdtm="xids00 (setfsuid, setfsgid; securebits, locked)"),
    C("groups", "task", zdtm="groups"),
    C("massive-groups", "task", zdtm="(massive_groups: 900 supplementary groups)"),
    C("rlimits", "task", zdtm="rlimits00"),
    C("sched-prio", "task", zdtm="sched_prio00"),
    C("sched-policy", "task", zdtm="sched_policy00"),
    C("pdeath-sig", "task", zdtm="pdeath_sig"),
    C("selfexe", "task", zdtm="selfexe00"),
    C("cmdline-env", "task", zdtm="cmdlinenv00 env00"),
    C("umask", "task", zdtm="umask00"),
    C("uptime-grow", "task", zdtm="uptime_grow"),
    C("oom-score-adj", "task", zdtm="oom_score_adj"),
    C("loginuid", "task", zdtm="loginuid"),
    C("dumpable0", "task", zdtm="dumpable01"),
    C("dumpable1", "task", zdtm="dumpable02"),
    C("thp-disable", "task", zdtm="thp_disable"),
    C("subreaper-existing", "task", zdtm="child_subreaper_existing_child"),
    C("subreaper-reparent", "task", zdtm="child_subreaper child_subreaper_and_reparent"),
    C("membarrier", "task", zdtm="membarrier"),
    C("ioprio", "task", zdtm="(ionice: I/O priorities)"),
    C("coredump-filter", "task", zdtm="(/proc/PID/coredump_filter)"),
    C("exit-signal", "task", zdtm="(clone children with another exit signal)"),
    C("mempolicy", "task", zdtm="(set_mempolicy, mbind)", libs=PT),
    C("session-keyring", "task", zdtm="(keyctl session keyrings)", libs=PT),
    C("keyring-user", "task", zdtm="(an unprivileged user's session keyring)"),
    C("keyring-process", "task", zdtm="(a process keyring, keyctl @p)",
      refuse=r"process \d+ has a process keyring"),
    C("keyring-logon", "task", zdtm="(a logon key in a session keyring)", libs=PT,
      refuse=r"holds a key 'zdtm:pass' of type 'logon'"),
    # ---------------------------------------------------------------- signals and timers
    C("handlers", "sig", zdtm="sigaction masks (every zdtm test's handlers)"),
    C("sigpending", "sig", zdtm="sigpending"),
    C("siginfo-queued", "sig", zdtm="sigpending (whole siginfos of the sender's choice, for "
      "threads and the process; a zombie's SIGCHLD)", libs=PT),
    C("sigaltstack", "sig", zdtm="sigaltstack"),
    C("sigtrap", "sig", zdtm="sigtrap sigtrap01"),
    C("altstack-onstack", "sig", zdtm="sigaltstack (a thread asleep in its handler on it)",
      libs=RT),
    C("read-norestart", "sig", zdtm="(a read asleep, a handler without SA_RESTART)", libs=RT),
    C("temp-masks", "sig", zdtm="(sigsuspend, ppoll: the mask before the temporary one)",
      libs=RT),
    C("itimers", "sig", zdtm="timers"),
    C("itimer-oneshot", "sig", zdtm="timers01"),
    C("posix-timers", "sig", zdtm="posix_timers", libs=RT),
    C("sigev-thread", "sig", zdtm="posix_timers (SIGEV_THREAD: glibc's timer thread)", libs=RT),
    C("ptraced", "sig", zdtm="ptrace_sig", refuse=r"traced"),
    # ---------------------------------------------------------------- threads, CPU state
    C("threads", "thr", zdtm="pthread00 pthread01", libs=RT),
    C("thread-pending", "thr", zdtm="pthread02 sigpending (per thread)", libs=RT),
    C("thread-knobs", "thr", zdtm="(each thread's name, nice, affinity, timer slack, policy, "
      "I/O priority)", libs=RT),
    R(C("thread-knobs", "thr", zdtm="(the same, -R)", libs=RT)),
    C("futex", "thr", zdtm="futex", libs=RT),
    C("blocked-calls", "thr", zdtm="(futex, poll, select, epoll_wait, sigtimedwait, sleeps, "
      "recv and accept with a timeout, asleep across the dump)", libs=RT),
    C("robust-list", "thr", zdtm="futex-rl", libs=RT),
    C("blocked-waits", "thr", zdtm="(reads of eventfd, inotify, signalfd, timerfd; msgrcv, "
      "mq_receive, a full pipe, UDP recv, accept, a FIFO's open, F_SETLKW, epoll_wait, "
      "asleep across the dump)", libs=RT, dump=LOCKS, restore=LOCKS),
    R(C("blocked-waits", "thr", zdtm="(the same, -R)", libs=RT, dump=LOCKS)),
    C("thread-creds", "thr", zdtm="thread_different_uid_gid different_creds", libs=RT),
    C("dead-thread-timer", "thr", zdtm="(dead_thread_posix_timer: its thread exited)",
      libs=RT),
    C("thread-timers", "thr", zdtm="pthread_timers pthread_timers_h leader_posix_timer",
      libs=RT),
    C("zombie-leader", "thr", zdtm="zombie_leader", libs=RT, refuse=r"zombie leader"),
    C("sse", "thr", zdtm="sse00 sse20", libs=RT),
    C("avx", "thr", zdtm="fpu02 (xstate)", libs=RT),
    C("avx512", "thr", zdtm="fpu02 (AVX-512: zmm0-31, opmask registers)", libs=RT),
    C("x87", "thr", zdtm="fpu00 fpu01", libs=RT),
    C("mmx", "thr", zdtm="mmx00", libs=RT),
    C("fpu-thread", "thr", zdtm="fpu03", libs=RT),
    C("vdso", "thr", zdtm="vdso00 vdso01 vdso02 vdso-proxy", libs=RT),
    C("rseq", "thr", zdtm="rseq00", libs=RT),
    C("red-zone", "thr", zdtm="transition/stack (the leader and a thread spinning on data "
      "in their red zone, the 128 bytes under %rsp)", libs=RT),
    R(C("red-zone", "thr", zdtm="(the same, -R)", libs=RT)),
    PRE(C("red-zone", "thr", zdtm="(the same, pre-dumped)", libs=RT)),
    C("ldt", "thr", zdtm="(x86 LDT entries of every kind, modify_ldt: Wine, DOSEMU; %gs and "
      "a thread's %es on them; a child's own table, a child without one)", libs=RT),
    R(C("ldt", "thr", zdtm="(the same, -R)", libs=RT)),
    # ---------------------------------------------------------------- memory
    C("mappings", "mem", zdtm="maps00 maps01 maps_file_prot write_read (mapped)"),
    C("mprotect", "mem", zdtm="mprotect00"),
    C("madvise", "mem", zdtm="maps02"),
    C("madvise-access", "mem", zdtm="maps02"),
    C("mlock", "mem", zdtm="mlock_setuid (as root)"),
    C("mlock-setuid", "mem", zdtm="mlock_setuid"),
    C("growsdown", "mem", zdtm="grow_map grow_map02 grow_map03"),
    C("high-map", "mem", zdtm="maps03"),
    C("guard-pages", "mem", zdtm="maps12"),
    C("droppable", "mem", zdtm="maps11"),
    C("many-maps", "mem", zdtm="maps04 maps05"),
    C("past-eof", "mem", zdtm="maps06"),
    C("heap", "mem", zdtm="brk (every test's heap)"),
    C("touch-later", "mem", zdtm="mem-touch"),
    C("noreserve", "mem", zdtm="(MAP_NORESERVE: sanitizers' shadow, heap reserves)"),
    C("secretmem", "mem", zdtm="(memfd_secret)", refuse=r"memfd_secret"),
    C("mlockall-future", "mem", zdtm="(mlockall MCL_FUTURE)"),
    C("mlockall-onfault", "mem", zdtm="(mlockall MCL_FUTURE|MCL_ONFAULT)"),
    C("cow-anon", "mem", zdtm="cow00"),
    C("cow-file", "mem", zdtm="cow01"),
    C("cow-reserved", "mem", zdtm="cow02 (protections differ between parent and child)"),
    C("shared-anon", "mem", zdtm="maps01 shm-mp (anonymous)"),
    C("shared-anon-split", "mem", zdtm="maps01 (pieces of one shared object, moved by "
      "mremap)"),
    C("shared-devzero", "mem", zdtm="maps01 (MAP_SHARED of /dev/zero)"),
    C("memfd", "mem", zdtm="memfd00 memfd01 shmemfd shmemfd-priv"),
    C("memfd-sealed", "mem", zdtm="memfd02 memfd03"),
    C("memfd-mapped-only", "mem", zdtm="memfd04 memfd05"),
    # ---------------------------------------------------------------- files
    C("fd-table", "fds", zdtm="fd fd01 fd_offset file_shared file_append file_cloexec"),
    C("fd-rare-flags", "fds", zdtm="write_read10 file_append (O_DIRECT, O_SYNC, O_DSYNC, "
      "O_NOATIME)"),
    C("fd-high", "fds", zdtm="fd01 (fds up to the raised RLIMIT_NOFILE)"),
    C("write-read", "fds", zdtm="write_read00 write_read01 write_read02 write_read10"),
    C("file-attr", "fds", zdtm="file_attr link10 mtime_mmap"),
    C("unlinked", "fds", zdtm="unlink_fstat00 unlink_regular00"),
    C("unlinked-two-fds", "fds", zdtm="unlink_fstat02"),
    C("unlinked-over", "fds", zdtm="unlink_fstat01 unlink_fstat01+"),
    C("unlinked-written", "fds", zdtm="unlink_fstat03"),
    C("unlinked-mmap", "fds", zdtm="unlink_mmap00 unlink_mmap01 unlink_mmap02"),
    C("ghost-holes", "fds", zdtm="ghost_holes00 ghost_holes01 ghost_holes02 ghost_multi_hole00"),
    C("ghost-large", "fds", zdtm="unlink_largefile unlink_multiple_largefiles "
      "ghost_holes_large00 ghost_multi_hole01"),
    C("rmdir-open", "fds", zdtm="rmdir_open unlink_fstat04"),
    C("cwd-removed", "fds", zdtm="cwd01 unlink_fstat041"),
    C("cwd", "fds", zdtm="cwd00 cwd02"),
    C("dir-position", "fds", zdtm="(a directory read half-way: readdir, getdents64; ext4, "
      "tmpfs)"),
    C("chroot", "fds", zdtm="chroot chroot-file"),
    C("fifo", "fds", zdtm="fifo"),
    C("fifo-ro", "fds", zdtm="fifo_ro"),
    C("fifo-wronly", "fds", zdtm="fifo_wronly"),
    C("fifo-unlinked", "fds", zdtm="unlink_fifo fifo-ghost"),
    C("fifo-unlinked-ro", "fds", zdtm="unlink_fifo_wronly"),
    C("fifo-pair", "fds", zdtm="fifo-rowo-pair"),
    C("pipe", "fds", zdtm="pipe00"),
    C("pipe-big", "fds", zdtm="pipe01"),
    C("pipe-nonblock", "fds", zdtm="pipe02"),
    C("pipe-packet", "fds", zdtm="pipe03"),
    C("pipe-reopened", "fds", zdtm="(a pipe opened again through /proc/self/fd: read-write, "
      "read-only)"),
    C("file-fown", "fds", zdtm="file_fown"),
    C("file-owners", "fds", zdtm="file_fown (F_SETOWN_EX: a thread, the process group; a "
      "socket)", libs=PT),
    C("proc-self", "fds", zdtm="proc-self"),
    C("proc-child", "fds", zdtm="child_opened_proc"),
    C("proc-init", "fds", zdtm="pid_file", refuse=r"/proc/1"),
    C("proc-dead", "fds", zdtm="remap_dead_pid remap_dead_pid_root", refuse=r"/proc"),
    C("proc-dead-cwd", "fds", zdtm="unhashed_proc", refuse=r"/proc"),
    C("opath", "fds", zdtm="opath_file symlink"),
    C("opath-deleted-link", "fds", zdtm="symlink01"),
    C("devices", "fds", zdtm="(character devices of every test)"),
    C("devices-deleted", "fds", zdtm="deleted_dev"),
    C("devices-stateful", "fds", zdtm="(a FUSE daemon's /dev/fuse, a tap attached by "
      "TUNSETIFF: refused, as criu does)", refuse=r"/dev/(fuse is the channel|net/tun is "
      "attached)"),
    C("devices-stateless", "fds", zdtm="(a TUN/TAP file attached to nothing, /dev/kvm)"),
    C("kmsg-readers", "fds", zdtm="(/dev/kmsg readers, one caught up and one behind: dmesg -w, "
      "journald)"),
    C("pidfd", "fds", zdtm="pidfd_self pidfd_child pidfd_kill"),
    C("pidfd-zombie", "fds", zdtm="pidfd_diffdead"),
    C("pidfd-dead", "fds", zdtm="pidfd_dead", refuse=r"pidfd"),
    C("pidfd-thread", "fds", zdtm="pidfd_of_thread", libs=PT, refuse=r"pidfd"),
    C("fd-from-pidfd", "fds", zdtm="fd_from_pidfd", libs=PT),
    C("ghost-limit", "fds", "ghost-holes", zdtm="ghost_holes_large01", dump=("--ghost-limit", "4K"),
      refuse=r"ghost"),
    # ---------------------------------------------------------------- event files, locks
    C("eventfd", "evfd", zdtm="eventfs00"),
    C("signalfd", "evfd", zdtm="signalfd00"),
    C("timerfd", "evfd", zdtm="timerfd"),
    C("timerfd-abs", "evfd", zdtm="timerfd (absolute: TFD_TIMER_ABSTIME, CANCEL_ON_SET; "
      "a POSIX timer with TIMER_ABSTIME)", libs=RT),
    C("epoll", "evfd", zdtm="epoll"),
    C("epoll-moved", "evfd", zdtm="epoll01"),
    C("epoll-oneshot", "evfd", zdtm="(EPOLLONESHOT watches that fired, not re-armed yet)"),
    C("epoll-nested", "evfd", zdtm="epoll01 (an epoll in an epoll, a file under two fds, "
      "a set shared with a child)"),
    C("epoll-exclusive", "evfd", zdtm="(EPOLLEXCLUSIVE, EPOLLPRI|EPOLLRDHUP|EPOLLET watches)"),
    C("poll", "evfd", zdtm="poll"),
    C("inotify", "evfd", zdtm="inotify00 inotify01 inotify_irmap inotify_system"),
    C("inotify-removed", "evfd", zdtm="inotify02 inotify04 inotify_system_nodel"),
    C("fanotify", "evfd", zdtm="fanotify00"),
    C("locks", "evfd", zdtm="file_locks00 file_locks01 file_locks02 file_locks03 "
      "file_locks06 file_locks07 file_locks08", dump=LOCKS, restore=LOCKS),
    C("locks-shared", "evfd", zdtm="file_locks04 file_locks05", dump=LOCKS, restore=LOCKS),
    C("lease-read", "evfd", zdtm="file_lease00 file_lease02", dump=LOCKS, restore=LOCKS),
    C("lease-write", "evfd", zdtm="file_lease01 file_lease03 file_lease04", dump=LOCKS,
      restore=LOCKS),
    C("lease-broken", "evfd", zdtm="file_lease05 (leases being broken)", dump=LOCKS,
      restore=LOCKS),
    C("locks-no-flag", "evfd", zdtm="file_locks00_fail", refuse=r"--file-locks"),
    # ---------------------------------------------------------------- sockets
    C("unix-pair", "sock", zdtm="sockets_spair sockets00 socket_queues"),
    C("unix-pair-seqpacket", "sock",
      zdtm="sockets_spair_seqpacket sockets00-seqpacket socket_queues_seqpacket"),
    C("unix-pair-dgram", "sock", zdtm="sockets_dgram socket_dgram_data"),
    C("unix-listen", "sock", zdtm="sockets01 sockets02 sk-unix-listen01 sk-unix-rel"),
    C("unix-listen-seqpacket", "sock",
      zdtm="sockets01-seqpacket sockets02-seqpacket sk-unix-rel-seqpacket"),
    C("unix-listen-abstract", "sock", zdtm="sockets03 sk-unix-listen02"),
    # The bytes wait in the server's end, which only accept() reaches, and no accept is
    # undone: a failed (or -R) dump could not leave the connection pending (as criu).
    C("unix-unaccepted", "sock", zdtm="sk-unix-listen03 sk-unix-listen04 socket_close_data",
      refuse=r"sent data on its connection to .* not accepted yet; ckpt cannot read them"),
    C("unix-dgram", "sock", zdtm="socket_snd_addr sk-unix01"),
    C("unix-dgram-abstract", "sock", zdtm="sockets03-seqpacket (abstract) sk-unix01-seqpacket"),
    C("unix-unconnected", "sock", zdtm="sk-unix-unconn sk-unix-unconn-seqpacket unbound_sock"),
    C("unix-shutdown", "sock", zdtm="socket_close_data01 (shutdown)"),
    C("unix-oob", "sock", zdtm="(an out-of-band byte at its mark, MSG_OOB)",
      refuse=r"an out-of-band byte \(send with MSG_OOB\) waits in its queue"),
    C("unix-oob-read", "sock", zdtm="(out-of-band bytes read already, or inline)"),
    C("unix-deleted", "sock", zdtm="deleted_unix_sock del_standalone_un"),
    C("unix-deleted-dgram", "sock",
      zdtm="del_standalone_un_seqpacket sk-unix-dgram-ghost deleted_standalone_unix"),
    C("fifo-over-socket", "sock", zdtm="fifo_upon_unix_socket00"),
    C("fifo-over-socket-relative", "sock", zdtm="fifo_upon_unix_socket01"),
    C("scm-rights", "sock", zdtm="scm00 scm02 scm03 scm03-seqpacket scm04 scm05 scm06 scm09"),
    C("scm-rights-kept", "sock", zdtm="scm01"),
    C("peercred", "sock", zdtm="sock_peercred"),
    C("tcp-listen", "sock", zdtm="socket_listen socket-tcp-listen"),
    C("tcp6-listen", "sock", zdtm="socket_listen6"),
    C("tcp4v6-listen", "sock", zdtm="socket_listen4v6"),
    C("udp", "sock", zdtm="socket_udp socket_udp-broadcast"),
    C("udp-connected", "sock", zdtm="socket_udp_shutdown socket_udp-corked (connected)"),
    C("udp6", "sock", zdtm="socket6_udp"),
    C("udplite", "sock", zdtm="socket_udplite"),
    C("udp-corked", "sock", zdtm="socket_udp-corked (UDP_CORK, nothing held yet)"),
    C("udp-corked-data", "sock", zdtm="socket_udp-corked (a piece held in the cork)",
      refuse=r"corked \(UDP_CORK\) with data not sent yet"),
    C("udp-queued", "sock", zdtm="socket_udp (queued)"),
    C("udp-sources", "sock", zdtm="socket_udp (queued from two senders, one closed; "
      "IP_PKTINFO destinations)"),
    C("multicast", "sock", zdtm="(IP_ADD_MEMBERSHIP, source filters, IPV6_JOIN_GROUP)"),
    C("sock-opts", "sock", zdtm="sock_opts00 sock_opts01 sock_opts02 sock_ip_opts00 "
      "sock_ip_opts01 sock_tcp_opts00 sock_tcp_opts01 sk-freebind socket-tcp-keepalive "
      "socket-linger"),
    C("sock-opts6", "sock", zdtm="sk-freebind-false (IPv6 options)"),
    C("sock-filter", "sock", zdtm="sock_filter00"),
    C("sock-filter-locked", "sock", zdtm="sock_filter01"),
    C("netlink", "sock", zdtm="sk-netlink"),
    C("netlink-groups", "sock", zdtm="sk-netlink (groups joined, port ids)"),
    C("packet", "sock", zdtm="packet_sock packet_sock_mmap packet_sock_spkt"),
    C("raw", "sock", zdtm="socket-raw"),
    # ---------------------------------------------------------------- TCP connections
    C("tcp", "tcp", zdtm="socket-tcp socket-tcp-local", dump=TCP, restore=TCP),
    C("tcp6", "tcp", zdtm="socket-tcp6 socket-tcp6-local", dump=TCP, restore=TCP),
    C("tcp4v6", "tcp", zdtm="socket-tcp4v6 socket-tcp4v6-local", dump=TCP, restore=TCP),
    C("tcpbuf", "tcp", zdtm="socket-tcpbuf socket-tcpbuf-local", dump=TCP, restore=TCP),
    C("tcpbuf6", "tcp", zdtm="socket-tcpbuf6 socket-tcpbuf6-local", dump=TCP, restore=TCP),
    C("tcp-unconn", "tcp", zdtm="socket-tcp-unconn socket-tcp6-unconn", dump=TCP, restore=TCP),
    xfail(C("tcp-reset", "tcp", zdtm="socket-tcp-reseted socket-tcp-closed", dump=TCP,
            restore=TCP), "tcp2", "a TCP socket whose connection was reset (state CLOSE) is "
          "refused at dump"),
    C("tcp-oob", "tcp", zdtm="(urgent data at its mark, MSG_OOB)", dump=TCP,
      refuse=r"with an out-of-band byte \(MSG_OOB, urgent data\) not read yet"),
    C("tcp-oob-read", "tcp", zdtm="(urgent data read already, or inline)", dump=TCP,
      restore=TCP),
    C("tcp-syn-sent", "tcp", zdtm="socket-tcp-syn-sent", dump=TCP, restore=TCP),
    C("tcp6-syn-sent", "tcp", zdtm="socket-tcp6-syn-sent", dump=TCP, restore=TCP),
    C("tcp-reuseport", "tcp", zdtm="socket-tcp-reuseport", dump=TCP, restore=TCP),
    C("tcp-small-bufs", "tcp", zdtm="(small SO_RCVBUF/SO_SNDBUF, both full)", dump=TCP,
      restore=TCP),
    C("tcp-shut-rd", "tcp", zdtm="(shutdown(SHUT_RD) on a connection)", dump=TCP,
      restore=TCP),
    C("tcp6-shut-rd", "tcp", zdtm="(IPv6, shutdown(SHUT_RD))", dump=TCP, restore=TCP),
    C("tcp-unaccepted", "tcp", zdtm="(a connection from the process, not accepted yet)",
      dump=TCP, restore=TCP),
    C("tcp6-unaccepted", "tcp", zdtm="(IPv6, not accepted yet)", dump=TCP, restore=TCP),
    C("tcp4v6-unaccepted", "tcp", zdtm="(IPv4 to an IPv6 listener, not accepted yet)",
      dump=TCP, restore=TCP),
    C("tcp-closed", "tcp", zdtm="socket-tcp-closed", dump=TCP, restore=TCP),
    C("tcp6-closed", "tcp", zdtm="socket-tcp6-closed", dump=TCP, restore=TCP),
    C("tcp4v6-closed", "tcp", zdtm="socket-tcp4v6-closed", dump=TCP, restore=TCP),
    C("tcp-conn-opts", "tcp", zdtm="sock_tcp_opts00 sock_tcp_opts01 socket-tcp-keepalive "
      "(on a connection)", dump=TCP, restore=TCP),
    C("tcp6-conn-opts", "tcp", zdtm="sock_tcp_opts00 (IPv6, on a connection)", dump=TCP,
      restore=TCP),
    C("tcp-no-flag", "tcp", zdtm="(criu refuses too)", refuse=r"--tcp-established"),
    C("tcp-close", "tcp", zdtm="socket-tcp-close0 socket-tcp-close1 socket-tcp-close2",
      dump=(*TCP, "--tcp-close"), restore=("--tcp-close",)),
    C("tcp-dump-close", "tcp", "tcp-close", zdtm="socket-dump-tcp-close",
      dump=("--tcp-close",), restore=("--tcp-close",)),
    C("tcp-skip-in-flight", "tcp", zdtm="socket-tcp-skip-in-flight",
      dump=(*TCP, "--skip-in-flight"), restore=TCP),
    # ---------------------------------------------------------------- IPC, kernel memory
    C("sysv-shm", "ipc", zdtm="shm shm-unaligned", libs=RT),
    C("sysv-shm-child", "ipc", zdtm="shm-mp", libs=RT),
    C("sysv-sem-msg", "ipc", zdtm="sem msgque", libs=RT),
    C("sysv-sem-undo", "ipc", zdtm="sem (SEM_UNDO)", libs=RT),
    C("posix-sem", "ipc", zdtm="posix_sem", libs=RT),
    C("shared-waits", "ipc", zdtm="futex shm-mp (processes asleep on a shared futex, a "
      "process-shared semaphore, mutex and condition variable)", libs=RT),
    C("posix-mq", "ipc", zdtm="(POSIX message queues)", libs=RT),
    C("posix-mq-notify", "ipc", zdtm="(mq_notify)", libs=RT, refuse=r"mq_notify"),
    C("aio", "ipc", zdtm="aio00 aio01 socket_aio", libs=RT),
    C("io-uring", "ipc", zdtm="(io_uring)", libs=RT, refuse=r"io_uring"),
    C("uffd", "ipc", zdtm="uffd-events", libs=RT, refuse=r"userfaultfd"),
    # ---------------------------------------------------------------- terminals, seccomp, knobs
    C("pty", "misc", zdtm="pty00 pty01 tty00", libs=PT),
    C("pty-session", "misc", zdtm="pty02 pty03 tty02 tty03 session (with a terminal)", libs=PT),
    C("pty-hungup", "misc", zdtm="pty04", libs=PT),
    C("pty-split", "misc", zdtm="pty01 (ends in two processes)", libs=PT),
    C("pty-modes", "misc", zdtm="(TIOCPKT, TIOCEXCL, TIOCSLCKTRMIOS, every termios field)",
      libs=PT),
    C("seccomp-strict", "misc", zdtm="seccomp_strict", libs=PT),
    C("seccomp-filter", "misc", zdtm="seccomp_filter seccomp_filter_inheritance "
      "seccomp_no_new_privs", libs=PT),
    C("seccomp-tsync", "misc", zdtm="seccomp_filter_tsync seccomp_filter_threads", libs=PT),
    C("mntns-child", "misc", zdtm="mapfile_priv (a child's own mount namespace)", libs=PT,
      refuse=r"process \d+ is in mnt namespace"),
    C("landlock", "misc", zdtm="(landlock_restrict_self)", refuse=r"Landlock domain"),
    C("proc-views", "views", zdtm="(what /proc and syscalls show of a process with common "
      "state, line by line)", libs=RT),
    C("knobs", "misc", zdtm="cpu-affinity0 (personality, name, no_new_privs, timer slack)",
      libs=PT),
    C("knobs-more", "misc", zdtm="(KSM for all memory, MDWE, SCHED_RESET_ON_FORK, "
      "PR_MCE_KILL)", libs=PT),
    # ---------------------------------------------------------------- changing as dumped
    C("thread-bomb", "trans", zdtm="transition/thread-bomb", libs=PT),
    C("fork-churn", "trans", zdtm="transition/fork transition/fork2 transition/pid_reuse",
      libs=PT),
    C("maps-churn", "trans", zdtm="transition/maps007 transition/maps_newpage", libs=PT),
    C("pipe-ring", "trans", zdtm="transition/pipe_loop00", libs=PT),
    C("pipe-shared", "trans", zdtm="transition/pipe_shared00 (three writers, one reader)",
      libs=PT),
    C("fifo-ring", "trans", zdtm="transition/fifo_loop transition/fifo_dyn", libs=PT),
    C("socket-ring", "trans", zdtm="transition/socket_loop00 transition/unix_sock", libs=PT),
    C("file-read", "trans", zdtm="transition/file_read", libs=PT),
    C("shmem-turns", "trans", zdtm="transition/shmem transition/maps008", libs=PT),
    C("aio-churn", "trans", zdtm="transition/file_aio", libs=PT),
    C("ipc-churn", "trans", zdtm="transition/ipc", libs=PT),
    C("epoll-churn", "trans", zdtm="transition/epoll", libs=PT),
    C("netlink-churn", "trans", zdtm="transition/netlink00 (asking every millisecond)",
      libs=PT),
    C("rseq-churn", "trans", zdtm="transition/rseq01 transition/rseq02 (stopped inside "
      "rseq critical sections)", libs=PT),
    R(C("rseq-churn", "trans", zdtm="(the same, -R)", libs=PT)),
    C("rseq-spin", "trans", zdtm="transition/rseq03 (spinning inside an rseq critical "
      "section, which must still be named when it goes on)", libs=PT),
    R(C("rseq-spin", "trans", zdtm="(the same, -R)", libs=PT)),
    R(C("maps-churn", "trans", zdtm="(the same, -R)", libs=PT)),
    R(C("pipe-ring", "trans", zdtm="(the same, -R)", libs=PT)),
    # ---------------------------------------------------------------- zdtm.py's other modes
    C("waits-again", "thr", zdtm="(poll without a timeout, FUTEX_WAIT_BITSET, sem_timedwait, "
      "an absolute clock_nanosleep, asleep across the dump)", libs=RT),
    PRE(C("waits-again", "thr", zdtm="(the same, through two pre-dumps: each lets them go "
          "on, restarted)", libs=RT)),
    R(C("waits-again", "thr", zdtm="(the same, -R)", libs=RT)),
    PRE(C("mappings", "mem", zdtm="(pre-dumped: zdtm.py --pre 2)")),
    PRE(C("cow-anon", "mem", zdtm="(pre-dumped)")),
    PRE(C("shared-anon", "mem", zdtm="(pre-dumped)")),
    PRE(C("memfd", "mem", zdtm="(pre-dumped)")),
    PRE(C("growsdown", "mem", zdtm="(pre-dumped)")),
    PRE(C("sysv-shm", "ipc", zdtm="(pre-dumped)", libs=RT)),
    PRE(C("threads", "thr", zdtm="(pre-dumped)", libs=RT)),
    PRE(C("maps-churn", "trans", zdtm="(pre-dumped while its mappings change)", libs=PT)),
    PRE(C("shmem-turns", "trans", zdtm="(pre-dumped while its shared memory changes)",
          libs=PT)),
    PS(C("mappings", "mem", zdtm="(pages to a page server: zdtm.py --page-server)")),
    PS(C("cow-anon", "mem", zdtm="(pages to a page server)")),
    PS(C("shared-anon-split", "mem", zdtm="(pages to a page server)")),
    PS(C("memfd-mapped-only", "mem", zdtm="(pages to a page server)")),
    PS(PRE(C("cow-anon", "mem", zdtm="(pre-dumped, pages to a page server)"))),
    LAZY(C("mappings", "mem", zdtm="(restored lazily: zdtm.py --lazy-pages)")),
    LAZY(C("cow-anon", "mem", zdtm="(restored lazily)")),
    LAZY(C("cow-file", "mem", zdtm="(restored lazily)")),
    LAZY(C("shared-anon", "mem", zdtm="(restored lazily)")),
    LAZY(C("growsdown", "mem", zdtm="(restored lazily)")),
    LAZY(C("guard-pages", "mem", zdtm="(restored lazily)")),
    LAZY(C("madvise", "mem", zdtm="(restored lazily)")),
    LAZY(C("threads", "thr", zdtm="(restored lazily)", libs=RT)),
    LAZY(PRE(C("cow-anon", "mem", zdtm="(pre-dumped, restored lazily)"))),
]


JOBS = int(os.environ.get("CKPT_ZDTM_JOBS", "3"))
SWEEP = set(os.environ.get("CKPT_ZDTM_SWEEP", "").split())
ROUNDS = int(os.environ.get("CKPT_ZDTM_ROUNDS", "1"))


def _param(c: Case | object) -> object:
    return c if not isinstance(c, Case) else pytest.param(c, id=c.id)


def _cases() -> list[object]:
    return [_param(c) for c in CASES]


class CaseProcs(Procs):
    """The processes of one case; its clean-up kills only them (other cases run beside
    it, their processes also pytest's children)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.daemons: list[subprocess.Popen[str]] = []  # page servers, lazy-pages

    def cleanup(self) -> None:
        self.kill_tracked()
        for d in self.daemons:
            if d.poll() is None:
                d.kill()
            d.communicate()

    def daemon(self, *args: str | Path) -> tuple[subprocess.Popen[str], str]:
        """``ckpt ARGS`` in the background, and the first line it printed."""
        d = subprocess.Popen([*ckpt_cmd(), *map(str, args)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.daemons.append(d)
        assert d.stdout is not None
        return d, d.stdout.readline().strip()


def dumped_pids(images: Path) -> list[int]:
    """Every process of the dumped tree, from its inventory."""
    inventory = json.loads((images / "inventory.json").read_text())
    return [t["pid"] for t in inventory["tasks"]]


def swept(case: Case) -> Case:
    """``case`` in the modes CKPT_ZDTM_SWEEP asks for (a case dumped and restored)."""
    if case.refuse or case.leave_running:
        return case
    return replace(case, pre_dumps=case.pre_dumps or 2 * ("pre" in SWEEP),
                   page_server=case.page_server or "page-server" in SWEEP,
                   lazy=case.lazy or "lazy" in SWEEP)


def run_case(case: Case, exe: Path, tmp_path: Path) -> None:
    """Start the case's program, dump and restore it (or see the dump refused), and ask
    it for its verdict; any failure raises."""
    case = swept(case)
    procs = CaseProcs(tmp_path)
    images = tmp_path / "images"
    pids: list[int] = []
    try:
        _run(case, exe, procs, tmp_path, images, pids)
    finally:
        kill_restored(exe, descendants(pids))
        procs.cleanup()


def descendants(pids: list[int]) -> list[int]:
    """``pids`` and every live descendant of theirs, parents first (a dump refused where
    it should not be leaves the root's children running, not in any list)."""
    return list(dict.fromkeys(p for pid in pids for p in tree(pid)))


def _run(case: Case, exe: Path, procs: CaseProcs, tmp_path: Path, images: Path,
         pids: list[int]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    argv: list[str | Path] = [exe, case.mode]
    if "user" in SWEEP or case.user:
        argv = as_user(argv, work)
    target = procs.start(argv, cwd=work)
    pids.append(target.pid)
    out = target.out
    first = out.wait_line(r"^(ready|SETUP: .*|FAIL: .*)$", timeout=case.timeout)
    assert first == "ready", f"set-up failed: {first}"
    if case.refuse:
        err = ckpt_fails("dump", "-t", target.pid, "-D", images, *case.dump,
                         timeout=case.timeout)
        assert re.search(case.refuse, err), err
        assert is_alive(target.pid) or len(os.listdir(f"/proc/{target.pid}/task")) > 1, \
            "the refused dump killed the process"  # (a zombie leader's threads run on)
        assert proc_status(target.pid)["TracerPid"] == "0", "left traced"
        assert not (images / "inventory.json").exists()
    elif case.leave_running:
        ckpt_ok("dump", "-t", target.pid, "-D", images, "-R", *case.dump,
                timeout=case.timeout)
        assert is_alive(target.pid), "the -R dump killed the process"
        assert proc_status(target.pid)["TracerPid"] == "0", "left traced"
    else:
        for n in range(ROUNDS):
            target = dump_and_restore(case, procs, target, tmp_path / f"images{n or ''}",
                                      pids)
    check_verdict(case, procs, target.pid, out)


def as_user(argv: list[str | Path], work: Path) -> list[str | Path]:
    """``argv`` run as a user and group of no one's (zdtm.py runs its tests so, unless
    they need root), in ``work``, which it may write (the folders above it, root's,
    only readable)."""
    for d in work.parents:
        if str(d) in ("/", "/tmp"):
            break
        os.chmod(d, 0o755)
    os.chmod(work, 0o777)
    return ["setpriv", "--reuid=18943", "--regid=58467", "--clear-groups", *argv]


def dump_and_restore(case: Case, procs: CaseProcs, target: Proc, images: Path,
                     pids: list[int]) -> Proc:
    """Dump ``target`` (killed) and restore it, in the case's modes; the restored one."""
    flags = [*pre_dumps(case, target.pid, images), *case.dump]
    with page_server(case, procs, images) as sent:
        dump_and_check_dead(procs, target, images.with_name(f"{images.name}-local")
                            if sent else images, *flags, *sent, timeout=case.timeout)
    pids += [p for p in dumped_pids(images) if p not in pids]
    for pid in pids:  # re-parented to pytest (a subreaper): reap them
        procs.wait_gone(pid)
    lazy: list[str] = []
    if case.lazy:
        _, line = procs.daemon("lazy-pages", "-D", images, "-v4", "-o", "lazy.log")
        assert line.startswith("ckpt lazy-pages: listening"), line
        lazy.append("--lazy-pages")
    return restore_detached(procs, target.pid, target.out, images, "-v4", "-o",
                            "restore.log", *case.restore, *lazy, timeout=case.timeout)


def pre_dumps(case: Case, pid: int, images: Path) -> list[str]:
    """Run the case's pre-dumps of ``pid`` (which goes on) into folders beside
    ``images``; the dump's flags that make the last one its parent."""
    parent: list[str] = []
    for k in range(case.pre_dumps):
        folder = images.with_name(f"{images.name}-pre{k}")
        ckpt_ok("pre-dump", "-t", pid, "-D", folder, "--track-mem", *parent,
                *[f for f in case.dump if f != "--tcp-close"], timeout=case.timeout)
        assert is_alive(pid), "the pre-dump killed the process"
        parent = ["--track-mem", "--prev-images-dir", f"../{folder.name}"]
    return parent


@contextmanager
def page_server(case: Case, procs: CaseProcs, images: Path) -> Iterator[list[str]]:
    """For a case whose pages go to a page server: one writing into ``images``, and the
    dump's flags that send them there (none otherwise); it must end well after."""
    if not case.page_server:
        yield []
        return
    server, line = procs.daemon("page-server", "-D", images, "--address", "127.0.0.1",
                                "--port", "0")
    assert line.startswith("ckpt page-server: listening on 127.0.0.1:"), line
    yield ["--page-server", "--address", "127.0.0.1", "--port", line.rsplit(":", 1)[1]]
    _, err = server.communicate(timeout=scaled(case.timeout))
    assert server.returncode == 0, f"page server: {err}"


def check_verdict(case: Case, procs: Procs, pid: int, out: Output) -> None:
    """SIGTERM makes the program check its state: it must say PASS and exit 0."""
    start = len(out.lines())
    os.kill(pid, signal.SIGTERM)
    verdict = out.wait_line(VERDICT, timeout=case.timeout, start=start)
    assert verdict == "PASS", verdict
    code = procs.wait_gone(pid, timeout=case.timeout)
    assert code in (0, None), f"exited with {code} after PASS"


def kill_restored(exe: Path, pids: list[int]) -> None:
    """Kill what is left of a restored tree (its processes deeper than the root reach
    pytest only as their parents die)."""
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/exe") != str(exe):
                continue
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:  # gone, or not our child (its parent reaps it)
            pass


@pytest.fixture(scope="session")
def outcomes(request: pytest.FixtureRequest, build: Builder,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, BaseException | None]:
    """Every selected case run once, JOBS at a time (each is mostly waiting on ckpt);
    each test then reports its own case's outcome."""
    cases = [item.callspec.params["case"] for item in request.session.items
             if getattr(item, "originalname", "") == "test_zdtm"]
    exes = {c.id: build(c.prog, where=ZDTM, extra=c.libs) for c in cases}
    tmp_path_factory.getbasetemp()  # made once, before the workers ask for folders in it

    def one(case: Case) -> BaseException | None:
        try:
            run_case(case, exes[case.id], tmp_path_factory.mktemp(case.id))
        except BaseException as e:  # reported by the case's own test
            return e
        return None

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        return dict(zip([c.id for c in cases], pool.map(one, cases), strict=True))


@pytest.mark.parametrize("case", _cases())
def test_zdtm(case: Case, outcomes: dict[str, BaseException | None]) -> None:
    error = outcomes[case.id]
    if error is not None:
        raise error
