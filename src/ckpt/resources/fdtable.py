"""A new process's fd table, put in place with few injected syscalls.

ckpt holds one fd of its own per open file description (files.RestoreFiles). A new
process gets its fds over a unix socket it inherited from ckpt: ckpt sends them with
SCM_RIGHTS, up to 253 in one message, and one injected ``recvmsg`` installs them, each
at the lowest free number, in order. So the numbers are planned first (``plan``, pure):
a free number below a wanted one that is not wanted itself gets a placeholder, closed
afterwards; fds beyond a gap too wide to be worth filling come in at low free numbers
and are moved to theirs by ``dup3``. N fds cost about N / 253 injected syscalls, plus
one per run of holes; nobody holds them twice: ckpt has its one fd per description,
the process its own table.

The fds a process already holds and keeps (``kept``: a process cloned from its restored
parent has its parent's table) are left alone; whatever else it holds is closed.
"""

from __future__ import annotations

import ctypes
import os
import struct

from ..errors import RestoreError
from ..kernel import libc, procfs
from ..kernel.inject import Injector
from ..kernel.record import dataclass, field

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MAX_FD = 0xFFFFFFFF  # close_range's "to the end"
CAP_SYS_RESOURCE = 24
RLIMIT_NOFILE = 7  # through libc.prlimit: the resource module is one more import for a dump
RESERVE = 64  # fds of ckpt's own during a restore (images, log, pipes, pidfds)
GAP_FACTOR = 64  # placeholders that cost as much as one injected dup3 (measured: more)

# Where recvmsg's arguments go in the scratch area.
_IOV_AT, _BYTE_AT, _CONTROL_AT = 64, 96, 128
_CMSG = ctypes.sizeof(libc.CmsgHdr)


@dataclass(frozen=True)
class Want:
    """One fd of a process: its number there, ckpt's fd of its description, its flag."""

    fd: int
    source: int
    cloexec: bool


@dataclass
class Batch:
    """One SCM_RIGHTS message: the numbers its fds land at, ascending, and what is sent
    for each (a ``Want``, or None for a placeholder)."""

    cloexec: bool = False
    slots: list[int] = field(default_factory=list)
    wants: list[Want | None] = field(default_factory=list)


@dataclass
class Plan:
    """The injected steps that give one process its fds, in order."""

    sock: int  # where the socket is from the first step on
    sock_from: int | None  # the socket is moved there from this number first
    close_first: list[tuple[int, int]]  # ranges closed before any fd comes in
    batches: list[Batch]
    moves: list[tuple[int, Want]]  # (the number it came in at, the fd it goes to)
    close_after: list[tuple[int, int]]  # the placeholders and moved fds

    @property
    def syscalls(self) -> int:
        return (len(self.close_first) + len(self.batches) + len(self.moves)
                + len(self.close_after) + (self.sock_from is not None))


def reachable_limit() -> int:
    """The most open files ckpt can allow itself, and so its new processes while their
    fds come in: its hard RLIMIT_NOFILE, or the system's maximum with CAP_SYS_RESOURCE."""
    hard = libc.prlimit(0, RLIMIT_NOFILE)[1]
    if procfs.status(os.getpid()).cap_effective >> CAP_SYS_RESOURCE & 1:
        with open("/proc/sys/fs/nr_open") as f:
            hard = max(hard, int(f.read()))
    return hard


def raise_limit() -> int:
    """Raise ckpt's RLIMIT_NOFILE as far as it goes (``reachable_limit``); return it."""
    limit = reachable_limit()
    soft, hard = libc.prlimit(0, RLIMIT_NOFILE)
    if soft < limit:
        libc.prlimit(0, RLIMIT_NOFILE, (limit, max(hard, limit)))
    return limit


def limit_problem(tables: dict[int, list[int]], held: int, limit: int) -> str | None:
    """Why a restore allowed ``limit`` open files could not give the processes their fd
    numbers (``tables``: pid -> its fd numbers) while ckpt holds ``held`` fds for
    them; None when it can."""
    for pid, numbers in tables.items():
        top = max(numbers, default=-1)
        if top >= limit:
            return (f"process {pid} has fd {top}, beyond the {limit} open files a restore "
                    "can give a process")
    if held + RESERVE > limit:
        return (f"a restore would hold {held} fds at once for the open files of the tree, "
                f"beyond the {limit - RESERVE} it can")
    return None


def runs(numbers: list[int]) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of consecutive numbers in sorted ``numbers``."""
    out: list[tuple[int, int]] = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def complement(occupied: list[int]) -> list[tuple[int, int]]:
    """``(first, last)`` ranges of every fd number not in sorted ``occupied``."""
    out: list[tuple[int, int]] = []
    nxt = 0
    for n in occupied:
        if n > nxt:
            out.append((nxt, n - 1))
        nxt = n + 1
    out.append((nxt, MAX_FD))
    return out


def _free(occupied: list[int]) -> Iterator[int]:
    """The numbers not in sorted ``occupied``, ascending."""
    n, i = 0, 0
    while True:
        while i < len(occupied) and occupied[i] < n:
            i += 1
        if i < len(occupied) and occupied[i] == n:
            n += 1
            continue
        yield n
        n += 1


def plan(wants: list[Want], kept: set[int], sock: int) -> Plan:
    """How to give a process the fds ``wants``, when it holds ``kept`` already (left
    alone) and the socket at ``sock`` (anything else it holds is closed)."""
    import _bisect  # here: few commands bisect (start-up)
    numbers = {w.fd for w in wants}
    if len(numbers) != len(wants) or numbers & kept:
        raise ValueError("an fd number is wanted twice")
    taken = numbers | kept
    sock_from = None
    if sock in taken:
        sock_from = sock
        sock = next(n for n in _free(sorted(taken | {sock})))
    occupied = sorted(kept | {sock})
    todo = sorted(wants, key=lambda w: w.fd)
    sends: list[tuple[int, Want | None]] = []
    moves: list[tuple[int, Want]] = []
    free = _free(occupied)
    slot = next(free)
    i = 0
    while i < len(todo):
        w = todo[i]
        if slot == w.fd:
            sends.append((slot, w))
            i += 1
            slot = next(free)
            continue
        # Free numbers below the next wanted one: fill them, or move the rest in.
        between = _bisect.bisect_left(occupied, w.fd) - _bisect.bisect_left(occupied, slot)
        if w.fd - slot - between <= GAP_FACTOR * (len(todo) - i):
            while slot < w.fd:
                sends.append((slot, None))
                slot = next(free)
            continue
        for w in todo[i:]:  # each lands below todo[i].fd: never on a wanted number
            sends.append((slot, w))
            moves.append((slot, w))
            slot = next(free)
        break
    moved = {s for s, _ in moves}
    return Plan(sock, sock_from, complement(occupied), _batches(sends, moved), moves,
                runs(sorted(s for s, w in sends if w is None or s in moved)))


def _batches(sends: list[tuple[int, Want | None]], moved: set[int]) -> list[Batch]:
    """``sends`` cut into messages of at most 253 fds, each with one close-on-exec flag
    for the fds that land at their own number (placeholders and moved ones do not care)."""
    out: list[Batch] = []
    cur: Batch | None = None
    flag: bool | None = None
    for slot, w in sends:
        exact = w is not None and slot not in moved
        if (cur is None or len(cur.slots) >= libc.SCM_MAX_FD
                or (exact and flag is not None and w.cloexec != flag)):
            cur = Batch()
            out.append(cur)
            flag = None
        if exact and flag is None:
            flag = cur.cloexec = w.cloexec
        cur.slots.append(slot)
        cur.wants.append(w)
    return out


class FdSender:
    """The socket pair of one restore: ckpt's end sends, the new processes' end (which
    each of them inherits) receives."""

    def __init__(self) -> None:
        # raw fds: the socket module's import (its enums made from _socket's constants,
        # selectors) cost a restore about 3 ms, and _socket's library 0.5, for a pair
        # and sendmsg
        self.ours, self.theirs = libc.socketpair(libc.SOCK_SEQPACKET)
        self.placeholder = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self.sent = 0

    def close(self) -> None:
        """Close the pair and the placeholder, once (a failed restore closes it again)."""
        fds = (self.ours, self.theirs, self.placeholder)
        self.ours = self.theirs = self.placeholder = -1  # first: a cut close is not redone
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def install(self, inj: Injector, scratch: int, sock: int, wants: list[Want],
                kept: set[int] | frozenset[int] = frozenset()) -> int:
        """Give the process ``inj`` runs in the fds ``wants``, keeping ``kept``, through
        the socket it holds at ``sock``; return where the socket is now."""
        p = plan(wants, set(kept), sock)
        if p.sock_from is not None:
            inj.later("dup3", p.sock_from, p.sock, os.O_CLOEXEC)
        for first, last in p.close_first:
            inj.later("close_range", first, last, 0)
        for batch in p.batches:  # one message (most): received with the calls after it
            self._pass(inj, scratch, p.sock, batch, queued=len(p.batches) == 1)
        for slot, w in p.moves:
            inj.later("dup3", slot, w.fd, os.O_CLOEXEC if w.cloexec else 0)
        for first, last in p.close_after:
            inj.later("close_range", first, last, 0)
        return p.sock

    def lend(self, inj: Injector, scratch: int, sock: int, source: int) -> int:
        """Pass ckpt's fd ``source`` into the process at its lowest free number, which
        is returned: the caller uses it and closes it."""
        libc.send_fds(self.ours, [source])
        return self._receive(inj, scratch, sock, 1, os.O_CLOEXEC)[0]

    def _pass(self, inj: Injector, scratch: int, sock: int, batch: Batch,
              queued: bool = False) -> None:
        """Send one message, received in the process at once, or with the next round trip
        (``queued``: the calls queued after it run before its numbers are checked)."""
        sources = [self.placeholder if w is None else w.source for w in batch.wants]
        libc.send_fds(self.ours, sources)
        cloexec = os.O_CLOEXEC if batch.cloexec else 0

        def check(got: list[int]) -> None:
            if got != batch.slots:
                raise RestoreError(f"process {inj.pid}: fds came in at {_shown(got)} instead "
                                   f"of {_shown(batch.slots)}")

        if queued:
            self._receive_later(inj, sock, len(sources), cloexec, check)
        else:
            check(self._receive(inj, scratch, sock, len(sources), cloexec))
        self.sent += len(sources)

    def _receive(self, inj: Injector, scratch: int, sock: int, count: int,
                 cloexec: int) -> list[int]:
        """Receive one message of ``count`` fds in the process; the numbers they got."""
        inj.write(scratch, _header(scratch, count))
        inj.call("recvmsg", sock, scratch, _recv_flags(cloexec))
        return _received(inj, scratch, count)

    def _receive_later(self, inj: Injector, sock: int, count: int, cloexec: int,
                       check: Callable[[list[int]], None]) -> None:
        """``_receive`` queued (Injector.later): its header and buffers go with the batch,
        ``check`` gets the numbers once it ran."""
        inj.later("recvmsg", sock, 0, _recv_flags(cloexec), data=lambda at: _header(at, count),
                  data_at=1, then=lambda _, at: check(_received(inj, at, count)))


def _header(at: int, count: int) -> bytes:
    """A msghdr for ``count`` fds placed at ``at``, its iovec and buffers after it."""
    space = _CMSG + (count * 4 + 7) // 8 * 8
    hdr = libc.MsgHdr(msg_iov=at + _IOV_AT, msg_iovlen=1, msg_control=at + _CONTROL_AT,
                      msg_controllen=space)
    iov = libc.IOVec(at + _BYTE_AT, 1)
    return (bytes(hdr).ljust(_IOV_AT, b"\0") + bytes(iov)).ljust(_CONTROL_AT + space, b"\0")


def _recv_flags(cloexec: int) -> int:
    return libc.MSG_DONTWAIT | (libc.MSG_CMSG_CLOEXEC if cloexec else 0)


def _received(inj: Injector, at: int, count: int) -> list[int]:
    """The numbers of the ``count`` fds a recvmsg with the header at ``at`` received."""
    back = libc.MsgHdr.from_buffer_copy(inj.read(at, ctypes.sizeof(libc.MsgHdr)))
    control = inj.read(at + _CONTROL_AT, _CMSG + count * 4)
    cmsg = libc.CmsgHdr.from_buffer_copy(control)
    n = (cmsg.cmsg_len - _CMSG) // 4 if back.msg_controllen >= _CMSG else 0
    if back.msg_flags & libc.MSG_CTRUNC or n != count or (
            cmsg.cmsg_level, cmsg.cmsg_type) != (libc.SOL_SOCKET, libc.SCM_RIGHTS):
        limit = libc.prlimit(inj.pid, 7)[0]  # RLIMIT_NOFILE
        raise RestoreError(f"process {inj.pid}: {count} fds sent, {n} received (its "
                           f"limit of open files is {limit})")
    return list(struct.unpack(f"{count}i", control[_CMSG:]))


def _shown(numbers: list[int]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs(numbers))
