"""Terminals: a shell job's fds on the user's terminal, pseudo-terminal pairs made
inside the tree (made again with their settings, owner, queued bytes and
controlling terminals), slaves whose master was closed, and ``/dev/tty``.

A process of a shell job (``-j``) keeps fds on the user's terminal, outside the
tree; at restore with ``-j`` they point to the terminal ckpt runs on, as in criu,
and that terminal gets the job's settings (termios, window size: a full-screen
program comes back in its raw mode) just before the job runs again.

A tree that made its own pseudo-terminal pair (both the ``/dev/ptmx`` master and
the ``/dev/pts/N`` slave inside, like ``script`` or a terminal multiplexer) gets
a new pair with the same settings (termios, window size, packet mode, lock), the
slave's owner and mode, and the bytes queued in it both ways (pty_queue.py); the
session whose controlling terminal the slave was gets the new slave as its
controlling terminal, with the same foreground process group. A slave whose
master was closed (``/dev/pts/N (deleted)``, hung up) comes back as the slave of a
new pair whose master is closed at once.

A container's console is a pty slave whose master is outside the tree (runc hands
it to its console socket). Dumped with ``orphan_pts_master`` (criu's RPC option),
its settings, owner, mode and the bytes typed and not read yet are saved; the
restore makes a new pair in the tree's devpts, gives its slave to the processes
(the session's controlling terminal again) and hands its master to the caller
(criu's orphan-pts-master notification: runc passes it to its new console socket).
What the container wrote and the console's reader had not read stays in the old
pair, for whoever holds its master.

``/dev/tty`` stands for the controlling terminal of whoever opened it. It must be
its session's terminal (an inner pty's slave, or with ``-j`` the user's); the
first restored process holding it opens ``/dev/tty`` itself (inside.py), so it is
the new terminal, and the others share that file. One passed in a message not
received yet is queued again as a real ``/dev/tty`` of the new terminal (a child of
ckpt makes it its controlling terminal for the time of the open).
"""

from __future__ import annotations

import _signal
import base64
import binascii
import errno
import fcntl
import os
import stat as st_mod
import struct
import termios
from contextlib import contextmanager

from ..errors import ImageError, RestoreError, UnsupportedError
from ..kernel import interrupts, libc, treeroot
from ..kernel.inject import InjectionError, Injector
from ..log import logger
from ..schema import (
    B64,
    BOOL,
    PATH,
    U8,
    U16,
    U32,
    U64,
    UID,
    Hex,
    Int,
    List,
    Opt,
    Str,
    Tup,
    refuse,
)
from . import pty_queue
from .chrdev import TTY_MAJORS
from .filekind import (
    Description,
    DumpCtx,
    FileKind,
    ImageRefs,
    OpenFd,
    RestoreCtx,
    TaskFd,
    close_quietly,
)
from .inside import OpenedInside

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

log = logger("ckpt.tty")

TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TIOCSCTTY = 0x540E
TIOCGSID = 0x5429
TIOCGPTLCK = 0x80045439
TIOCGDEV = 0x80045432
TIOCEXCL, TIOCGEXCL = 0x540C, 0x80045440
TIOCGETD, N_TTY = 0x5424, 0  # a terminal's line discipline
TIOCGLCKTRMIOS, TIOCSLCKTRMIOS = 0x5456, 0x5457
KERNEL_TERMIOS = 36  # the kernel's struct termios: 4 flags, the line, 19 control chars
DEV_TTY_RDEV = os.makedev(5, 0)
PTMX_RDEV = os.makedev(5, 2)
PTS_MAJORS = range(136, 144)


def restorer_terminal() -> int:
    """An fd of ckpt's terminal (stdin, stdout or stderr, else /dev/tty)."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return fd
        except OSError:
            continue
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise RestoreError("restoring a shell job (-j) needs a terminal, and ckpt has "
                           "none (stdin, stdout, stderr and /dev/tty)") from None


def pts_index(rdev: int) -> int | None:
    """N of /dev/pts/N for a pty slave's device number, else None."""
    if os.major(rdev) not in PTS_MAJORS:
        return None
    return (os.major(rdev) - PTS_MAJORS.start) * 256 + os.minor(rdev)


def _settings(fd: int) -> dict[str, Any]:
    try:
        attrs = termios.tcgetattr(fd)
    except termios.error as e:  # (a line discipline without termios, N_NULL's)
        raise UnsupportedError(f"a terminal's settings cannot be read (tcgetattr: "
                               f"{e.args[-1]}); its line discipline is not N_TTY?") from None
    cc = [c if isinstance(c, int) else c[0] for c in attrs[6]]
    winsize = struct.unpack("4H", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return {"termios": attrs[:6] + [cc], "winsize": list(winsize)}


def _apply_settings(fd: int, desc: Description) -> None:
    termios.tcsetattr(fd, termios.TCSANOW, desc["termios"])
    winsize = struct.pack("4H", *desc["winsize"])
    if fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8) != winsize:  # else no SIGWINCH
        fcntl.ioctl(fd, termios.TIOCSWINSZ, winsize)


@contextmanager
def _job_terminal() -> Iterator[int]:
    """ckpt's terminal, which stands for a shell job's (``restorer_terminal``), with
    SIGTTOU ignored: ckpt may change its settings even from a background process
    group (the kernel would stop it otherwise)."""
    fd = restorer_terminal()
    old = _signal.signal(_signal.SIGTTOU, _signal.SIG_IGN)
    try:
        yield fd
    finally:
        _signal.signal(_signal.SIGTTOU, old)
        if fd > 2:
            os.close(fd)


def _dump_master(f: OpenFd, desc: Description) -> None:
    """A master's pair: settings, the slave's owner and mode, packet mode, lock,
    exclusive mode, locked settings, and the bytes queued both ways."""
    index = struct.unpack("I", fcntl.ioctl(f.dup, TIOCGPTN, b"\0" * 4))[0]
    locked = struct.unpack("i", fcntl.ioctl(f.dup, TIOCGPTLCK, b"\0" * 4))[0]
    slave = fcntl.ioctl(f.dup, TIOCGPTPEER,
                        os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        for end, fd in (("slave", slave), ("master", f.dup)):
            ldisc = struct.unpack("i", fcntl.ioctl(fd, TIOCGETD, b"\0" * 4))[0]
            if ldisc != N_TTY:  # SLIP, PPP, N_NULL...: a new pair has N_TTY
                raise UnsupportedError(f"{f.where}: the {end} of /dev/pts/{index} has line "
                                       f"discipline {ldisc} (TIOCSETD), not N_TTY; not "
                                       "supported")
        st = os.fstat(slave)
        desc.update(pty="master", index=index, **_settings(slave),
                    owner=[st.st_uid, st.st_gid], mode=st_mod.S_IMODE(st.st_mode),
                    packet=pty_queue.packet_mode(f.dup), locked=bool(locked))
        if struct.unpack("i", fcntl.ioctl(slave, TIOCGEXCL, b"\0" * 4))[0]:
            desc["exclusive"] = True  # TIOCEXCL: no more opens of it (but by root)
        locked_bits = fcntl.ioctl(slave, TIOCGLCKTRMIOS, b"\0" * KERNEL_TERMIOS)
        if any(locked_bits):  # settings no one but root may change (TIOCSLCKTRMIOS)
            desc["locked_termios"] = locked_bits.hex()
        typed = pty_queue.take_input(slave)  # first: its echo goes to the master
        written = pty_queue.take_output(f.dup)
    finally:
        os.close(slave)
    desc.update(input=base64.b64encode(typed).decode(),
                output=base64.b64encode(written).decode())


def _queued(desc: Description, key: str) -> bytes:
    try:
        return base64.b64decode(desc.get(key, ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ImageError(f"files.json: the {key} bytes of /dev/pts/{desc.get('index')} are "
                         "not base64") from None


class Terminals(FileKind):
    KIND = "tty"
    # its own fields in files.json
    SCHEMA = {
        "path": PATH, "rdev": Tup(U32, U32), "dev": U64,
        "pty": Opt(Str(choices=("master", "slave"))), "index": Opt(Int(0, 1 << 20)),
        "termios": Opt(Tup(U32, U32, U32, U32, U32, U32, List(U8, max=64))),
        "winsize": Opt(Tup(U16, U16, U16, U16)),
        "owner": Opt(Tup(UID, UID)), "mode": Opt(Int(0, 0o7777)),
        "packet": Opt(BOOL), "locked": Opt(BOOL), "exclusive": Opt(BOOL),
        "locked_termios": Opt(Hex(KERNEL_TERMIOS)),
        "input": Opt(B64(1 << 20)), "output": Opt(B64(1 << 20)),
        "internal": Opt(BOOL), "deleted": Opt(BOOL), "ctty": Opt(BOOL), "real": Opt(U32),
        "orphan": Opt(BOOL),
    }

    @classmethod
    def check_image(cls, desc: Description, where: str, refs: ImageRefs) -> None:
        """What the restore reads of a terminal, there: a pty end's index (of a slave of
        the tree's own pair, or a console's), /dev/tty's terminal; a master's or a
        console's settings, owner and mode (a new pair gets them); settings of the
        kernel's size (tcsetattr takes NCCS control characters)."""
        ctty = desc.get("ctty")
        if "index" not in desc and ("pty" in desc or (
                not ctty and (desc.get("internal") or desc.get("orphan")))):
            raise refuse(where, "index", "missing, but it is a pty's end")
        if ctty and "real" not in desc:
            raise refuse(where, "real", "missing, but it is /dev/tty")
        if desc.get("pty") == "master" or desc.get("orphan"):
            for name in ("termios", "winsize", "owner", "mode"):
                if name not in desc:
                    raise refuse(where, name, "missing, but a new pty pair gets it")
        if "termios" in desc and "winsize" not in desc:
            raise refuse(where, "winsize", "missing, but the terminal's settings are saved")
        if "termios" in desc and len(desc["termios"][6]) != termios.NCCS:
            raise refuse(where, "termios", f"{len(desc['termios'][6])} control characters, "
                         f"not {termios.NCCS}")

    @classmethod
    def held_at_restore(cls, desc: Description) -> int:
        return 3  # a pty pair made for one end: master and slave, and the end handed out

    def __init__(self) -> None:
        super().__init__()
        self._terminals: list[tuple[OpenFd, Description]] = []  # dump: those not masters
        self._slaves: dict[int, int] = {}  # dump, orphan_pts: index -> ckpt's fd of a slave
        self._hand_over: Any = None  # restore: ctx.orphan_pts
        self._pairs: dict[int, tuple[int, int]] = {}  # restore: old index -> (master, slave)
        self._ctty = OpenedInside()  # restore: /dev/tty, opened by the processes
        self._job_settings: Description | None = None  # a shell job's terminal, as saved
        self._job_tty_was: list[Any] | None = None  # ckpt's terminal before the job's
        self._job_ctty = -1  # restore: ckpt's terminal, for a job's session leader

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        return st_mod.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in TTY_MAJORS

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        ma, mi = desc["rdev"]
        return [f"tty[{os.makedev(ma, mi):x}:{desc['dev']:x}]"]

    @classmethod
    def borrowed(cls, desc: Description) -> bool:
        return (desc.get("pty") != "master" and not desc.get("internal")
                and not desc.get("deleted") and not desc.get("orphan"))  # the user's

    def lent(self, fid: str, desc: Description) -> bool:
        """/dev/tty the restored process opened itself is its own description."""
        return self.borrowed(desc) and fid not in self._ctty

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        st = f.st
        desc: Description = {"path": f.link, "rdev": [os.major(st.st_rdev),
                                                       os.minor(st.st_rdev)],
                             "dev": st.st_dev}
        if st.st_rdev == PTMX_RDEV:
            _dump_master(f, desc)
            ctx.images.need("tty")
            return desc
        if st.st_rdev == DEV_TTY_RDEV:
            try:
                real = struct.unpack("I", fcntl.ioctl(f.dup, TIOCGDEV, b"\0" * 4))[0]
            except OSError as e:
                raise UnsupportedError(f"{f.where}: /dev/tty whose terminal is gone "
                                       f"({e.strerror}); not supported") from None
            desc.update(ctty=True, real=real)
        index = pts_index(st.st_rdev)
        if index is not None:
            desc.update(pty="slave", index=index)
            if f.link.endswith(" (deleted)"):  # its master was closed: hung up
                desc["deleted"] = True
            elif ctx.orphan_pts and index not in self._slaves:  # its master may be outside
                self._slaves[index] = os.dup(f.dup)
        if not desc.get("deleted") and not desc.get("ctty") and ctx.shell_job:
            try:
                desc.update(_settings(f.dup))  # the job's terminal, as the job left it
            except OSError:
                pass
        if desc.keys() & {"ctty", "deleted", "termios"}:
            ctx.images.need("tty")
        self._terminals.append((f, desc))
        return desc

    def after_dump(self, ctx: DumpCtx, tasks: list[dict[str, Any]]) -> None:
        """Once every fd is known: a pty slave whose master is in the tree is part of an
        inner pair; /dev/tty must be its session's terminal; any other terminal is the
        user's, which needs ``-j``. A session leader's controlling terminal must be an
        inner pty (or none)."""
        masters = {d["index"] for d in self.descriptions.values() if d.get("pty") == "master"}
        consoles = self._consoles(ctx, masters)
        for f, desc in self._terminals:
            if desc.get("ctty"):
                real = pts_index(desc["real"])
                desc["internal"] = real in masters or real in consoles
                _check_ctty(f, desc, tasks, desc["internal"])
            else:
                desc["internal"] = (desc.get("pty") == "slave" and not desc.get("deleted")
                                    and desc["index"] in masters)
                if (desc.get("pty") == "slave" and not desc.get("deleted")
                        and desc["index"] in consoles):
                    desc.update(consoles[desc["index"]], orphan=True)
                    ctx.images.need("orphan-pts")
            if self.borrowed(desc) and not ctx.shell_job:
                raise UnsupportedError(f"{f.where} is the terminal {desc['path']}; dump it "
                                       "as a shell job with -j (--shell-job)")
        for t in tasks:
            if "ctty" not in t or pts_index(t["ctty"]) in masters | consoles.keys():
                continue
            if not ctx.shell_job:  # the user's terminal, the session's own (pty.fork())
                raise UnsupportedError(
                    f"process {t['pid']} leads a session whose controlling terminal "
                    f"{os.major(t['ctty'])}:{os.minor(t['ctty'])} is outside the dumped "
                    "tree; dump it as a shell job with -j (--shell-job)")
            ctx.images.need("job-ctty")

    def _consoles(self, ctx: DumpCtx, masters: set[int]) -> dict[int, Description]:
        """With ``orphan_pts``: the ptys whose slave is in the tree and master outside,
        by index, with what the restore gives their new pair; at most one (runc's
        console)."""
        found: dict[int, Description] = {}
        try:
            for index, slave in self._slaves.items():
                if index in masters:
                    continue
                st = os.fstat(slave)
                found[index] = {**_settings(slave), "owner": [st.st_uid, st.st_gid],
                                "mode": st_mod.S_IMODE(st.st_mode),
                                "input": base64.b64encode(pty_queue.take_input(slave)).decode()}
        finally:
            close_quietly(set(self._slaves.values()))
            self._slaves.clear()
        if len(found) > 1:
            raise UnsupportedError(
                "the tree holds several terminals whose master is outside it ("
                + ", ".join(f"/dev/pts/{i}" for i in sorted(found))
                + "); ckpt hands over one (criu's orphan_pts_master)")
        return found

    def before_restore(self, ctx: RestoreCtx) -> None:
        """A console (a pty whose master was outside the tree) needs someone to take
        its new master."""
        self._hand_over = ctx.orphan_pts
        if ctx.orphan_pts is None and any(d.get("orphan") for d in self.descriptions.values()):
            raise RestoreError("the image holds a terminal whose master was outside the "
                               "tree (a container's console): restore it through a runtime "
                               "that takes its new master (criu's orphan_pts_master: "
                               "runc restore --console-socket)")

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        """ckpt's fd for ``desc``; for /dev/tty a stand-in: the terminal it will stand for,
        until its process opens /dev/tty itself (``restore_in_task``)."""
        if desc.get("pty") == "master":
            return os.dup(self._pair(desc["index"])[0])
        if desc.get("deleted"):
            return _hung_up_slave(desc)
        if desc.get("ctty") and desc.get("internal"):
            return _dev_tty_of(self._pair(_index(desc["real"]))[1], desc["flags"])
        if desc.get("internal") or desc.get("orphan"):
            master = self._pair(desc["index"])[0]
            return fcntl.ioctl(master, TIOCGPTPEER, (desc["flags"] & (
                os.O_ACCMODE | os.O_NONBLOCK)) | os.O_NOCTTY)
        if not ctx.shell_job:
            raise RestoreError(f"the image holds the terminal {desc['path']}: restore it "
                               "as a shell job with -j (--shell-job)")
        if "termios" in desc and self._job_settings is None:
            self._job_settings = desc
        with _job_terminal() as tty:
            if desc.get("ctty"):
                own = _own_dev_tty(tty, desc["flags"])
                if own is not None:
                    return own
            return _with_mode(tty, desc["flags"])

    def restore_in_task(self, ctx: RestoreCtx, pid: int, inj: Injector, scratch: int,
                        fds: list[TaskFd]) -> None:
        """/dev/tty opened by the process itself: its session's terminal, now the new one."""
        for t in fds:
            if not t.desc.get("ctty"):
                continue
            flags = (t.desc["flags"] & (os.O_ACCMODE | os.O_NONBLOCK)) | os.O_NOCTTY

            def open_inside(flags: int = flags) -> int:
                inj.write(scratch, b"/dev/tty\0")
                return inj.call("open", scratch, flags | os.O_CLOEXEC)

            try:
                self._ctty.place(pid, inj, t, open_inside)
            except InjectionError as e:
                if e.errno != errno.ENXIO or t.desc.get("internal"):
                    raise RestoreError(f"process {pid} fd {t.fd}: cannot open /dev/tty "
                                       f"again: {os.strerror(e.errno)}") from None
                log.info("process %d fd %d: /dev/tty is ckpt's terminal (the restored "
                         "session has no controlling terminal)", pid, t.fd)

    def _pair(self, index: int) -> tuple[int, int]:
        """(master, slave) fds in ckpt of the new pair standing for old pair ``index``."""
        if index not in self._pairs:
            master_desc = next((d for d in self.descriptions.values()
                                if d.get("pty") == "master" and d["index"] == index), None)
            if master_desc is None:
                self._pairs[index] = self._console(index)
                return self._pairs[index]
            typed, written = _queued(master_desc, "input"), _queued(master_desc, "output")
            master, slave = _new_pair()
            self._pairs[index] = (master, slave)
            _apply_settings(slave, master_desc)
            if "owner" in master_desc:
                os.fchown(slave, *master_desc["owner"])
                os.fchmod(slave, master_desc["mode"])
            pty_queue.set_packet_mode(master, bool(master_desc.get("packet")))
            pty_queue.put_input(slave, typed, master_desc["termios"])
            pty_queue.put_output(master, written)
            if master_desc.get("locked"):
                fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 1))
            if "locked_termios" in master_desc:
                fcntl.ioctl(slave, TIOCSLCKTRMIOS, bytes.fromhex(master_desc["locked_termios"]))
            if master_desc.get("exclusive"):  # ckpt's own opens of it pass (root's)
                fcntl.ioctl(slave, TIOCEXCL)
        return self._pairs[index]

    def _console(self, index: int) -> tuple[int, int]:
        """A new pair for the console ``index``, its master handed over (``_consoles``)."""
        desc = next((d for d in self.descriptions.values()
                     if d.get("orphan") and d["index"] == index), None)
        if desc is None:
            raise RestoreError(f"the image has no master for /dev/pts/{index}")
        master, slave = _new_pair(index)
        try:
            _apply_settings(slave, desc)
            os.fchown(slave, *desc["owner"])
            os.fchmod(slave, desc["mode"])
            pty_queue.put_input(slave, _queued(desc, "input"), desc["termios"])
            self._hand_over(master)
        except BaseException:
            close_quietly({master, slave})
            raise
        return master, slave

    def controlling_slave(self, task: dict[str, Any], shell_job: bool) -> int | None:
        """For a session leader: ckpt's fd of the terminal to make its controlling
        terminal again (TIOCSCTTY): an inner pty's new slave, or with -j, when it led the
        session of the user's terminal (a program started on a pty of its own, as
        ``pty.fork`` does), the terminal ckpt runs on."""
        if "ctty" not in task:
            return None
        index = pts_index(task["ctty"])
        if index is not None and any(d.get("index") == index and (
                d.get("pty") == "master" or d.get("orphan"))
                for d in self.descriptions.values()):
            return self._pair(index)[1]
        if not shell_job:
            raise RestoreError(f"process {task['pid']} led a session on the user's terminal: "
                               "restore it as a shell job with -j (--shell-job)")
        if self._job_ctty < 0:
            self._job_ctty = _free_job_terminal(task["pid"])
        return self._job_ctty

    def lend_to_job(self) -> None:
        """Just before a shell job runs again: give ckpt's terminal the job's settings
        (termios, window size) as the job left its own; ``take_back`` undoes it."""
        saved = self._job_settings
        if saved is None:  # no fd on it, or every one replaced (--inherit-fd)
            return
        with _job_terminal() as tty:
            self._job_tty_was = termios.tcgetattr(tty)
            try:
                _apply_settings(tty, saved)
            except (OSError, termios.error) as e:
                raise RestoreError(f"cannot give the terminal the job's settings: {e}"
                                   ) from None

    def take_back(self) -> None:
        """After a failed restore: ckpt's terminal as it was before ``lend_to_job``."""
        if self._job_tty_was is None:
            return
        with _job_terminal() as tty:
            try:
                termios.tcsetattr(tty, termios.TCSANOW, self._job_tty_was)
            except (OSError, termios.error):
                pass
        self._job_tty_was = None

    def close(self) -> None:
        close_quietly({fd for pair in self._pairs.values() for fd in pair} | {self._job_ctty})
        self._job_ctty = -1
        self._pairs.clear()
        close_quietly(set(self._slaves.values()))
        self._slaves.clear()


# Pairs made while the tree's mounts are built, for a bind mount of their slave (runc's
# /dev/console over the container's /dev/pts/0): devpts index -> ckpt's master. The
# restore of that pty takes it (``_new_pair``); what is left is closed (``drop_early``).
_early: dict[int, int] = {}


def make_early(ptmx: str, index: int) -> None:
    """Make pty ``index`` of the devpts whose ``ptmx`` is given, so that its slave can be
    bound before the tree's files are restored."""
    held: list[int] = []
    try:
        while index not in _early:
            master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            got = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
            if got == index:
                fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
                _early[index] = master
            else:
                held.append(master)
                if got > index or len(held) > 64:
                    raise RestoreError(f"cannot make /dev/pts/{index} again in {ptmx} "
                                       f"(got /dev/pts/{got})")
    except OSError as e:
        raise RestoreError(f"cannot make /dev/pts/{index} in {ptmx}: {e.strerror}") from None
    finally:
        close_quietly(held)


def drop_early() -> None:
    close_quietly(set(_early.values()))
    _early.clear()


def _new_pair(index: int | None = None) -> tuple[int, int]:
    """A new pty pair: (master, slave) fds of ckpt's, unlocked; pty ``index`` if it was
    made early, else the next one of the tree's devpts."""
    if index in _early:
        master = _early.pop(index)
    else:
        master = os.open(treeroot.path("/dev/ptmx"), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def _hung_up_slave(desc: Description) -> int:
    """A slave whose master is closed: hung up, its /dev/pts name gone, as at dump."""
    master, slave = _new_pair()
    os.close(slave)
    try:
        return fcntl.ioctl(master, TIOCGPTPEER,
                           (desc["flags"] & (os.O_ACCMODE | os.O_NONBLOCK)) | os.O_NOCTTY)
    finally:
        os.close(master)


def _dev_tty_of(slave: int, flags: int) -> int:
    """A ``/dev/tty`` file standing for the new pair's ``slave`` (not a dup of the slave:
    a /dev/tty passed in a queued message is received as /dev/tty), opened by a child
    of ckpt leading a session of its own whose controlling terminal the slave is for
    that time; the child dies, and the slave is free for the restored session."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = interrupts.fork()
    if pid == 0:  # the child: simple calls, out by os._exit
        try:
            os.close(r)
            os.setsid()
            fcntl.ioctl(slave, TIOCSCTTY, 0)
            fd = os.open("/dev/tty", (flags & os.O_ACCMODE) | os.O_NOCTTY)
            os.write(w, b"%d" % fd)
            while True:
                _signal.pause()
        finally:
            os._exit(1)
    try:
        os.close(w)
        said = os.read(r, 16)  # once the child has it (b"" if it died)
        os.close(r)
        if not said:
            raise RestoreError("a child of ckpt could not open /dev/tty on the new terminal "
                               f"/dev/pts/{pts_index(os.fstat(slave).st_rdev)}")
        holder = libc.pidfd_open(pid)
        try:
            return libc.pidfd_getfd(holder, int(said))
        finally:
            os.close(holder)
    finally:
        os.kill(pid, _signal.SIGKILL)
        os.waitpid(pid, 0)


def _own_dev_tty(tty: int, flags: int) -> int | None:
    """ckpt's own ``/dev/tty`` if it stands for ``tty`` (the job's terminal), else None."""
    try:
        fd = os.open("/dev/tty", (flags & os.O_ACCMODE) | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        real = struct.unpack("I", fcntl.ioctl(fd, TIOCGDEV, b"\0" * 4))[0]
    except OSError:
        real = -1
    if real != os.fstat(tty).st_rdev:
        os.close(fd)
        return None
    return fd


def _index(rdev: int) -> int:
    index = pts_index(rdev)
    if index is None:
        raise ImageError(f"files.json: /dev/tty stands for {rdev:#x}, not a pty slave")
    return index


def _check_ctty(f: OpenFd, desc: Description, tasks: list[dict[str, Any]],
                internal: bool) -> None:
    """/dev/tty must stand for its holder's session's terminal: the restored process
    reopens /dev/tty, which is then its session's terminal (an inner pty's new slave,
    or with -j the terminal ckpt runs on)."""
    real = desc["real"]
    me = next((t for t in tasks if t["pid"] == f.pid), None)
    if me is None:  # passed in a message not received yet: some session's terminal
        if not internal or any(t.get("ctty") == real for t in tasks):
            return
        raise UnsupportedError(f"{f.where}: a /dev/tty standing for the terminal "
                               f"{os.major(real)}:{os.minor(real)}, which no session of the "
                               "tree has as its controlling terminal; not supported")
    leader = next((t for t in tasks if t["pid"] == me["sid"]), None)
    if (leader.get("ctty") == real) if leader is not None else not internal:
        return
    raise UnsupportedError(f"{f.where}: /dev/tty there is the terminal {os.major(real)}:"
                           f"{os.minor(real)}, which is not its session's controlling "
                           "terminal any more; not supported")


def _with_mode(tty: int, flags: int) -> int:
    """ckpt's terminal for a job's fd, with the access mode the job's fd had: a dup
    would carry ckpt's own (read-only for a stdin given as ``< /dev/pts/N``)."""
    mode = flags & os.O_ACCMODE
    if fcntl.fcntl(tty, fcntl.F_GETFL) & os.O_ACCMODE == mode:
        return os.dup(tty)
    try:
        return os.open(f"/proc/self/fd/{tty}", mode | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise RestoreError(f"cannot open ckpt's terminal {os.ttyname(tty)} again with the "
                           f"access mode the job had: {e.strerror}") from None


def _free_job_terminal(pid: int) -> int:
    """A dup of ckpt's terminal for process ``pid``, which led the session of a shell
    job's terminal, to take it as its controlling terminal. When it is the controlling
    terminal of a session ckpt leads (ckpt started on it as the job was), ckpt lets it
    go; of another session (ckpt runs from a shell on it), the restored session could
    not take it: refused."""
    with _job_terminal() as tty:
        try:
            sid = struct.unpack("i", fcntl.ioctl(tty, TIOCGSID, b"\0" * 4))[0]
        except OSError:  # ENOTTY: not ckpt's controlling terminal
            return os.dup(tty)
        if sid == os.getpid():
            old = _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)  # sent to its foreground
            try:
                fcntl.ioctl(tty, termios.TIOCNOTTY)
            finally:
                _signal.signal(_signal.SIGHUP, old)
            return os.dup(tty)
        raise RestoreError(
            f"process {pid} led the session of its terminal, and the terminal ckpt runs on "
            f"({os.ttyname(tty)}) is the controlling terminal of session {sid} (ckpt's "
            "shell?): restore it with -j from a terminal that no session holds")


def acquire_controlling(slave: int) -> None:
    """In a fresh session leader: make ``slave`` its controlling terminal. The
    terminal's foreground group becomes the leader's own."""
    fcntl.ioctl(slave, TIOCSCTTY, 0)

