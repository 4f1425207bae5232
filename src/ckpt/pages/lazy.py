"""Lazy restore (criu's ``--lazy-pages``), the restore's side: which saved pages a
restored process gets on first touch instead of at once, and their hand-over to the
``ckpt lazy-pages`` daemon (lazy_pages.py), which fills them through userfaultfd.

A page is served lazily when it is one of the process's own pages (its pagemap, not in
parent images, not compressed) in a private anonymous mapping that is mapped anew (not
kept from the parent it is cloned from), readable, not locked, and no child cloned
from it inherits it (a child's copy is made at its clone, before any fault could fill
the parent's). The other pages are written at once, as without ``--lazy-pages``.

Each process with lazy pages gets one userfaultfd, made in it by an injected
``userfaultfd()`` and taken by ckpt with ``pidfd_getfd`` (its number there closed
again): ckpt asks for the features (fork, mremap, munmap, madvise events) and registers
the mappings that hold lazy pages, once the process's children are cloned, then sends
the fd, a pidfd and the runs ``[vaddr, length, offset in its pages file]`` to the
daemon, which acknowledges each. From then on nothing in ckpt reads or writes those
ranges: a fault there waits for the daemon.

Protocol: a SOCK_SEQPACKET unix socket ``lazy-pages.socket`` in the daemon's work
folder; each message one JSON object. restore: ``{"inventory": CRC}``; daemon:
``{"ok": true, "chunk": BYTES, "crcs": {PAGES FILE: [CRC-32 of each chunk]}}`` (or
``{"error": TEXT}``): the restore checks the pages it writes itself against those, the
daemon having checked each file whole against the inventory; then per process restore:
``{"pid", "file", "runs"}`` with [userfaultfd, pidfd] as SCM_RIGHTS, daemon:
``{"ok": true}``; at the end restore: ``{"done": N}`` once the processes run.
"""

from __future__ import annotations

import json
import os
import socket
import struct

from ..errors import ImageError, RestoreError
from ..images import crc32
from ..kernel import libc, uffd
from ..kernel.inject import Injector
from ..kernel.libc import PAGE_SIZE as PAGE
from ..kernel.record import dataclass, field
from . import fill
from .buffer import BUF_SIZE, Buffer, page_buffer
from .forked import Spans
from .stripes import read_into

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

SOCKET = "lazy-pages.socket"
FEATURES = uffd.EVENT_FORK | uffd.EVENT_REMAP | uffd.EVENT_REMOVE | uffd.EVENT_UNMAP | \
    uffd.THREAD_ID
MAX_MSG = 1 << 24  # a message: runs of a fragmented heap, the CRC-32s of every chunk

Run = tuple[int, int, int]  # (address, length, offset in the pages file)


def eligible(v: dict[str, Any]) -> bool:
    """Whether mapping ``v`` may have its pages served lazily."""
    return (v["kind"] == "anon" and not v["shared"] and bool(v["prot"])
            and "lo" not in v["flags"] and "ghost" not in v)


def lazy_spans(fresh: list[tuple[int, int]], keep: list[list[int]]) -> list[tuple[int, int]]:
    """Sorted ``fresh`` spans (eligible mappings mapped anew) without the page runs
    ``keep`` (``[vaddr, npages]``: pages children inherit)."""
    held: list[tuple[int, int]] = []  # the union (children's runs overlap each other)
    for a, b in sorted((int(v), int(v) + int(n) * PAGE) for v, n in keep):
        if held and a <= held[-1][1]:
            held[-1] = (held[-1][0], max(held[-1][1], b))
        else:
            held.append((a, b))
    out: list[tuple[int, int]] = []
    j = 0
    for s, e in sorted(fresh):
        cur = s
        while j < len(held) and held[j][1] <= cur:
            j += 1
        k = j
        while cur < e and k < len(held) and held[k][0] < e:
            a, b = held[k]
            if a > cur:
                out.append((cur, a))
            cur = max(cur, b)
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


@dataclass
class Split:
    """A process's pagemap cut in two: written now, and served later."""

    eager: list[Run] = field(default_factory=list)
    lazy: list[Run] = field(default_factory=list)


def split(pagemap: list[list[int]], spans: list[tuple[int, int]]) -> Split:
    """The runs of ``pagemap`` (``[vaddr, npages]``, in file order) inside ``spans``
    (sorted, disjoint) are lazy, the rest eager; each with its offset in the file."""
    where = Spans(spans)
    out = Split()
    off = 0
    for vaddr, npages in pagemap:
        a, b = vaddr, vaddr + npages * PAGE
        cur = a
        for s, e in where.clip(a, b):
            if s > cur:
                out.eager.append((cur, s - cur, off + cur - a))
            out.lazy.append((s, e - s, off + s - a))
            cur = e
        if cur < b:
            out.eager.append((cur, b - cur, off + cur - a))
        off += b - a
    return out


@dataclass
class _Pending:
    file: str
    runs: list[Run]
    ranges: list[tuple[int, int]]  # mappings to register


def send(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], fds, socket.MSG_NOSIGNAL)
    else:
        sock.send(data, socket.MSG_NOSIGNAL)


def recv(sock: socket.socket, what: str) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the fds that came with it; (None, []) at the end of the stream."""
    data, fds, _, _ = socket.recv_fds(sock, MAX_MSG, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
    except ValueError as e:
        for fd in fds:
            os.close(fd)
        raise RestoreError(f"{what}: malformed message ({e})") from None
    return obj, fds


class Handover:
    """A restore's connection to the lazy-pages daemon, made before anything is
    created: no daemon, no restore."""

    def __init__(self, work_dir: str, inventory_crc: int):
        self.path = os.path.join(work_dir, SOCKET)
        self.pending: dict[int, _Pending] = {}
        self.given = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(30)
            self.sock.connect(self.path)
        except OSError as e:
            self.sock.close()
            raise RestoreError(f"--lazy-pages: no lazy-pages daemon at {self.path} "
                               f"({e.strerror or e}); start `ckpt lazy-pages -D DIR` on the "
                               "same images first") from None
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                     struct.calcsize("3i"))
        uid = struct.unpack("3i", creds)[1]
        if uid not in (0, os.geteuid()):
            self.sock.close()
            raise RestoreError(f"--lazy-pages: the daemon at {self.path} runs as user {uid}, "
                               "not as root")
        reply = self._ask({"inventory": inventory_crc}, [], "the images")
        self.chunk = int(reply.get("chunk", 0))
        self.crcs: dict[str, list[int]] = reply.get("crcs", {})

    def write_eager(self, pid: int, source: fill.PagesFile, name: str, runs: list[Run]
                    ) -> None:
        """The pages of ``runs`` not left to the daemon, from the page data ``source``
        (whose first file is ``name``), into process ``pid``: read a chunk at a time,
        each checked against the CRC-32 the daemon found for it (it checked the whole
        data against the inventory)."""
        crcs = self.crcs.get(name)
        if crcs is None or self.chunk <= 0 or BUF_SIZE % self.chunk:
            raise RestoreError(f"--lazy-pages: the daemon has no checksums of {name}")
        buf = page_buffer()
        window = (-1, -1)  # logical bytes in the buffer
        for vaddr, length, off in runs:
            end = off + length
            while off < end:
                if not window[0] <= off < window[1]:
                    window = self._read(source, name, crcs, buf, off - off % self.chunk)
                n = min(end, window[1]) - off
                fill.write_pieces(pid, buf.addr + off - window[0], [(vaddr, n)])
                vaddr, off = vaddr + n, off + n

    def _read(self, source: fill.PagesFile, name: str, crcs: list[int], buf: Buffer,
              start: int) -> tuple[int, int]:
        """The chunks of the data from ``start``, a buffer of them, each checked."""
        want = min(BUF_SIZE, source.size - start)
        read_into([p.fd for p in source.parts], source.layout, buf.view, want, start, name)
        for at in range(0, want, self.chunk):
            c = (start + at) // self.chunk
            if c >= len(crcs) or crc32(buf.view[at:min(want, at + self.chunk)]) != crcs[c]:
                raise ImageError(f"{name}: the page data at offset {start + at} is not what "
                                 "the lazy-pages daemon checked (checksum mismatch)")
        return start, start + want

    def _ask(self, obj: dict[str, Any], fds: list[int], what: str) -> dict[str, Any]:
        try:
            send(self.sock, obj, fds)
            reply, got = recv(self.sock, "the lazy-pages daemon")
        except OSError as e:
            raise RestoreError(f"--lazy-pages: the lazy-pages daemon is gone ({e.strerror or e})"
                               ) from None
        for fd in got:
            os.close(fd)
        if reply is None:
            raise RestoreError("--lazy-pages: the lazy-pages daemon is gone")
        if not reply.get("ok"):
            raise RestoreError(f"--lazy-pages: the lazy-pages daemon refused {what}: "
                               f"{reply.get('error', reply)}")
        return reply

    def plan(self, pid: int, file: str, runs: list[Run], ranges: list[tuple[int, int]]) -> None:
        """Pages of ``pid`` (in its pages file ``file``) left to the daemon, in the
        mappings ``ranges``."""
        if runs:
            self.pending[pid] = _Pending(file, runs, ranges)

    def give(self, pid: int, inj: Injector) -> None:
        """Once ``pid``'s children are cloned: its userfaultfd, made in it through
        ``inj`` and taken by ckpt, registered and handed to the daemon."""
        p = self.pending.pop(pid, None)
        if p is None:
            return
        pidfd = libc.pidfd_open(pid)
        fd = -1
        try:
            try:
                theirs = inj.call("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as e:
                raise RestoreError(f"--lazy-pages: process {pid}: userfaultfd() failed: "
                                   f"{os.strerror(e.errno or 0)}") from None
            try:
                fd = libc.pidfd_getfd(pidfd, theirs)
            finally:
                inj.call("close", theirs)
            try:
                uffd.handshake(fd, FEATURES)
                for start, end in p.ranges:
                    uffd.register(fd, start, end - start)
            except OSError as e:
                raise RestoreError(f"--lazy-pages: process {pid}: {e.strerror or e}") from None
            self._ask({"pid": pid, "file": p.file, "runs": [list(r) for r in p.runs]},
                      [fd, pidfd], f"process {pid}")
            self.given += 1
        finally:
            if fd >= 0:
                os.close(fd)
            os.close(pidfd)

    def done(self) -> None:
        """The processes run: the daemon goes on alone."""
        try:
            send(self.sock, {"done": self.given})
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def pages_in(runs: list[Run]) -> int:
    return sum(length for _, length, _ in runs) // PAGE
