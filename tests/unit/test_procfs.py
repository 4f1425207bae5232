"""The /proc parsers on fixture text (as this kernel prints it), no process needed."""

from __future__ import annotations

import os

import pytest

from ckpt.kernel import procfs


def _stat_line(comm: bytes) -> bytes:
    rest = (b"S 12208 12208 3954 0 -1 4194560 1745 36 0 0 2 1 0 0 20 0 3 0 48697 16035840 "
            b"3224 18446744073709551615 94273937436672 94273937437013 140729734584352 0 0 0 0 "
            b"16781312 2 0 0 0 17 0 0 0 0 0 0 94273937448368 94273937448984 94274878066688 "
            b"140729734589066 140729734589119 140729734589119 140729734590417 0\n")
    return b"12211 (" + comm + b") " + rest


@pytest.mark.parametrize("comm", [b"python", b"a b", b"a\xffb) (x", b") (", b"((x))",
                                  b"\xff\xfe", b"tab\tnl\nend"])
def test_stat_any_comm(comm: bytes) -> None:
    """The comm may hold any byte, ") (" included; fields after it stay in place, and the
    name comes back byte for byte through os.fsencode."""
    st = procfs.parse_stat(_stat_line(comm))
    assert os.fsencode(st.comm) == comm
    assert (st.pid, st.state, st.ppid, st.pgid, st.sid) == (12211, "S", 12208, 12208, 3954)
    assert st.tty_nr == 0 and st.tpgid == -1
    assert st.num_threads == 3
    assert st.start_time == 48697
    assert (st.start_code, st.end_code, st.start_stack) == (
        94273937436672, 94273937437013, 140729734584352)
    assert (st.start_data, st.end_data, st.start_brk) == (
        94273937448368, 94273937448984, 94274878066688)
    assert (st.arg_start, st.arg_end, st.env_start, st.env_end) == (
        140729734589066, 140729734589119, 140729734589119, 140729734590417)
    assert st.exit_code == 0


@pytest.mark.parametrize("raw, name", [(b"sleep\n", "sleep"), (b"a\xffb) (x\n", "a\udcffb) (x"),
                                       (b"ends with nl\n\n", "ends with nl\n"), (b"", "")])
def test_comm(raw: bytes, name: str) -> None:
    assert procfs.parse_comm(raw) == name


STATUS = b"""Name:\tpython
Umask:\t0027
State:\tT (stopped)
Tgid:\t12211
Pid:\t12211
PPid:\t12208
TracerPid:\t4321
Uid:\t1000\t1001\t1002\t1003
Gid:\t100\t101\t102\t103
FDSize:\t256
Groups:\t4 24 27\x20
Threads:\t2
SigQ:\t0/96365
SigPnd:\t0000000000000100
ShdPnd:\t0000000000000800
SigBlk:\t0000000000000a00
SigIgn:\t0000000001001000
SigCgt:\t0000000000000002
CapInh:\t0000000000000000
CapPrm:\t000001fffeffffff
CapEff:\t000001fffeffffff
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
"""


def test_status() -> None:
    st = procfs.parse_status(STATUS)
    assert st.state == "T" and st.tracer_pid == 4321
    assert st.uids == [1000, 1001, 1002, 1003] and st.gids == [100, 101, 102, 103]
    assert st.groups == [4, 24, 27]
    assert st.umask == 0o027
    assert st.no_new_privs == 1 and st.seccomp == 2
    assert (st.sig_pending, st.shared_pending, st.sig_blocked) == (0x100, 0x800, 0xA00)
    assert (st.sig_ignored, st.sig_caught) == (0x1001000, 0x2)
    assert st.cap_effective == 0x1FFFEFFFFFF
    assert st.threads == 2


def test_status_no_groups_and_a_name_with_colons() -> None:
    raw = STATUS.replace(b"Groups:\t4 24 27 ", b"Groups:\t ").replace(
        b"Name:\tpython", b"Name:\ta:b\\xff")
    st = procfs.parse_status(raw)
    assert st.groups == [] and st.umask == 0o027


def test_status_of_a_zombie() -> None:
    """A zombie's status has no Umask line (nor Uid... on some kernels)."""
    raw = b"Name:\tsh\nState:\tZ (zombie)\nTgid:\t5\nPid:\t5\nPPid:\t1\nTracerPid:\t0\n"
    st = procfs.parse_status(raw)
    assert st.state == "Z" and st.umask is None and st.uids == []


COMMON = b"pos:\t12345\nflags:\t02106002\nmnt_id:\t17\nino:\t1038\n"


def test_fdinfo_regular_file() -> None:
    """flags are octal with O_CLOEXEC (0o2000000); pos may be past 2**32."""
    info = procfs.parse_fdinfo(COMMON.replace(b"12345", b"5000000000") + b"other:\t1\n")
    assert info.pos == 5000000000
    assert info.flags == 0o2106002
    assert info.flags & os.O_APPEND and info.flags & os.O_NONBLOCK
    assert (info.mnt_id, info.ino) == (17, 1038)
    assert info.eventfd_count is None and info.sigmask is None and info.timerfd is None
    assert info.epoll == [] and info.inotify == [] and info.fanotify is None
    assert info.other == {"other": "1"} and info.locks == []


def test_fdinfo_locks() -> None:
    """fdinfo's "lock:" lines, as Linux prints them; a form not known is kept unparsed."""
    info = procfs.parse_fdinfo(
        COMMON + b"lock:\t1: POSIX  ADVISORY  WRITE 14400 fe:00:2148834 0 9\n"
        b"lock:\t2: OFDLCK ADVISORY  READ -1 fe:00:2148834 500 EOF\n"
        b"lock:\t3: FLOCK  ADVISORY  WRITE 77 103:0a:12 0 EOF\n"
        b"lock:\t4: LEASE  BREAKING  UNLCK 77 103:0a:12 0 EOF\n"
        b"lock:\t5: POSIX  *NOINODE* WRITE 7 <none>:0 0 EOF\n")
    posix, ofd, flock, lease = info.locks
    assert posix == procfs.FileLock("POSIX", "ADVISORY", "WRITE", 14400, 0xfe, 0, 2148834, 0, 9)
    assert (ofd.kind, ofd.type, ofd.pid, ofd.start, ofd.end) == ("OFDLCK", "READ", -1, 500, None)
    assert (flock.kind, flock.major, flock.minor, flock.ino) == ("FLOCK", 0x103, 0xa, 12)
    assert (lease.kind, lease.state, lease.type) == ("LEASE", "BREAKING", "UNLCK")
    assert info.unparsed == ["lock:\t5: POSIX  *NOINODE* WRITE 7 <none>:0 0 EOF"]
    assert "lock" not in info.other


def test_proc_locks_waiters() -> None:
    """/proc/locks: a request blocked behind a lock is marked as waiting."""
    locks = procfs.parse_locks(b"1: FLOCK  ADVISORY  WRITE 12 fe:00:5 0 EOF\n"
                               b"1: -> FLOCK  ADVISORY  WRITE 13 fe:00:5 0 EOF\n"
                               b"2: LEASE  BREAKER   READ 14 fe:00:6 0 EOF\n")
    assert [(lk.pid, lk.waiting, lk.state) for lk in locks] == [
        (12, False, "ADVISORY"), (13, True, "ADVISORY"), (14, False, "BREAKER")]


def test_fdinfo_eventfd() -> None:
    info = procfs.parse_fdinfo(COMMON + b"eventfd-count:                5\neventfd-id: 1\n"
                               b"eventfd-semaphore: 1\n")
    assert info.eventfd_count == 5 and info.eventfd_semaphore is True
    old = procfs.parse_fdinfo(COMMON + b"eventfd-count: ffffffff\n")  # before Linux 6.6
    assert old.eventfd_count == 0xFFFFFFFF and old.eventfd_semaphore is None


def test_fdinfo_signalfd() -> None:
    assert procfs.parse_fdinfo(COMMON + b"sigmask:\t0000000000000200\n").sigmask == 0x200


def test_fdinfo_timerfd() -> None:
    info = procfs.parse_fdinfo(COMMON + b"clockid: 1\nticks: 7\nsettime flags: 03\n"
                               b"it_value: (4, 999981633)\nit_interval: (1, 0)\n")
    assert info.timerfd == procfs.TimerFdState(clockid=1, ticks=7, settime_flags=3,
                                               value_ns=4_999_981_633, interval_ns=1_000_000_000)


def test_fdinfo_epoll() -> None:
    info = procfs.parse_fdinfo(
        COMMON + b"tfd:        3 events:       19 data:                3  pos:0 ino:40e sdev:10\n"
        b"tfd:       12 events: 80000001 data: ffffffffffffffff  pos:0 ino:1a sdev:fe00001\n")
    assert info.epoll == [procfs.EpollWatch(3, 0x19, 3, 0x40E, 0, 0x10),
                          procfs.EpollWatch(12, 0x80000001, 2**64 - 1, 0x1A, 0xFE, 1)]
    assert info.unparsed == []


def test_fdinfo_inotify() -> None:
    info = procfs.parse_fdinfo(
        COMMON + b"inotify wd:1 ino:3f7e8 sdev:fe00000 mask:100 ignored_mask:0 "
        b"fhandle-bytes:8 fhandle-type:1 f_handle:e8f7030000000000\n"
        b"inotify wd:a ino:1 sdev:16 mask:80000fff ignored_mask:0\n"
        b"inotify wd:zz garbage\n")
    first, second = info.inotify
    assert (first.wd, first.mask) == (1, 0x100)
    assert first.inode == procfs.Inode(0x3F7E8, 254, 0, 1, bytes.fromhex("e8f7030000000000"))
    assert first.inode.dev == os.makedev(254, 0)
    assert (second.wd, second.mask, second.inode.handle) == (10, 0x80000FFF, None)
    assert info.unparsed == ["inotify wd:zz garbage"]


def test_fdinfo_fanotify() -> None:
    info = procfs.parse_fdinfo(
        COMMON + b"fanotify flags:10 event-flags:8000\n"
        b"fanotify mnt_id:1b mflags:0 mask:8 ignored_mask:0\n"
        b"fanotify ino:3f7e8 sdev:fe00000 mflags:40 mask:8 ignored_mask:2 fhandle-bytes:8 "
        b"fhandle-type:1 f_handle:e8f7030000000000\n"
        b"fanotify sdev:fe00001 mflags:0 mask:1 ignored_mask:0\n"
        b"fanotify mntns:5 mflags:0 mask:1 ignored_mask:0\n")
    group = info.fanotify
    assert group is not None and (group.flags, group.event_flags) == (0x10, 0x8000)
    mount, inode, fs = group.marks
    assert (mount.type, mount.mnt_id, mount.mask, mount.inode) == ("mount", 0x1B, 8, None)
    assert inode.type == "inode" and inode.inode == procfs.Inode(
        0x3F7E8, 254, 0, 1, bytes.fromhex("e8f7030000000000"))
    assert (inode.mflags, inode.mask, inode.ignored_mask) == (0x40, 8, 2)
    assert (fs.type, fs.major, fs.minor) == ("filesystem", 254, 1)
    assert info.unparsed == ["fanotify mntns:5 mflags:0 mask:1 ignored_mask:0"]


def test_fdinfo_inconsistent_handle_is_dropped() -> None:
    info = procfs.parse_fdinfo(COMMON + b"inotify wd:1 ino:2 sdev:3 mask:4 ignored_mask:0 "
                               b"fhandle-bytes:9 fhandle-type:1 f_handle:e8f7030000000000\n")
    assert info.inotify[0].inode.handle is None and info.inotify[0].inode.handle_type is None


def test_maps_with_non_utf8_paths() -> None:
    raw = (b"55d0c0a00000-55d0c0a01000 r--p 00000000 fe:00 266000 /usr/bin/sleep\n"
           b"7f0000000000-7f0000002000 rw-s 00001000 fe:00 12 /tmp/caf\xe9 (deleted)\n"
           b"Size:                  8 kB\n"
           b"VmFlags: rd wr sh mr mw me ms sd\n"
           b"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
           b"7ffd00100000-7ffd00101000 rw-p 00000000 00:00 0 \n")
    sleep, mapped, stack, anon = procfs.parse_maps(raw)
    assert (sleep.start, sleep.end, sleep.perms, sleep.offset) == (0x55D0C0A00000,
                                                                   0x55D0C0A01000, "r--p", 0)
    assert (sleep.dev, sleep.inode, sleep.path) == ("fe:00", 266000, "/usr/bin/sleep")
    assert os.fsencode(mapped.path) == b"/tmp/caf\xe9 (deleted)"
    assert mapped.shared and mapped.offset == 0x1000 and mapped.size == 0x2000
    assert mapped.flags == ["rd", "wr", "sh", "mr", "mw", "me", "ms", "sd"]
    assert stack.path == "[stack]" and not stack.shared
    assert anon.path == "" and anon.flags == []


def test_posix_timers() -> None:
    raw = (b"ID: 0\nsignal: 14/00007f0000001234\nnotify: signal/pid.4242\nClockID: 1\n"
           b"ID: 3\nsignal: 34/0000000000000000\nnotify: thread/tid.4243\nClockID: 0\n")
    a, b = procfs.parse_timers(raw)
    assert a == procfs.PosixTimer(0, 14, 0x7F0000001234, "signal", False, 4242, 1)
    assert b == procfs.PosixTimer(3, 34, 0, "thread", True, 4243, 0)
    # a timer on the process's CPU-time clock: a negative clock ID
    cpu, = procfs.parse_timers(b"ID: 1\nsignal: 37/0\nnotify: signal/pid.9\nClockID: -6\n")
    assert cpu.clock == -6
    with pytest.raises(ValueError):
        procfs.parse_timers(b"ID: 0\nsignal: what\n")


def test_readers_say_process_gone() -> None:
    """Every reader raises ProcessGone for a PID nobody has (no FileNotFoundError)."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) - 1
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    readers = [procfs.status, procfs.stat, procfs.maps, procfs.fd_numbers, procfs.auxv,
               procfs.exe, procfs.cwd, procfs.root, procfs.personality, procfs.children,
               procfs.threads, procfs.posix_timers,
               lambda p: procfs.fd_link(p, 0), lambda p: procfs.fdinfo(p, 0),
               lambda p: procfs.thread_comm(p, p), lambda p: procfs.pagemap_flags(p, 0, 1)]
    for read in readers:
        with pytest.raises(procfs.ProcessGone):
            read(pid)


def test_closed_fd_is_gone() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(procfs.ProcessGone):
        procfs.fdinfo(os.getpid(), r)
    with pytest.raises(procfs.ProcessGone):
        procfs.fd_link(os.getpid(), r)


def test_own_vdso_image_is_what_the_vdso_mapping_holds() -> None:
    """vdso.own_image (through the auxiliary vector) reads the ELF image at the start of
    the [vdso] that /proc/self/maps shows, and a restore finds its syscall site in it."""
    from ckpt.kernel import inject, vdso
    (area,) = procfs.maps_named(os.getpid(), ("[vdso]",))
    with open("/proc/self/mem", "rb") as f:
        f.seek(area.start)
        whole = f.read(area.size)
    image = vdso.own_image()
    assert image[:4] == b"\x7fELF" and 0 < len(image) <= area.size
    assert whole.startswith(image) and len(image) == vdso.image_end(whole)
    assert inject.vdso_syscall_offset(image) == inject.vdso_syscall_offset(whole)
