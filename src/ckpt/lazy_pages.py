"""The lazy-pages daemon (``ckpt lazy-pages -D DIR``, criu's ``lazy-pages``): it serves
the pages a ``ckpt restore --lazy-pages`` of the same images left out (pages/lazy.py),
on first touch and then all the rest, and exits once every page is in place.

Start-up: every image of DIR is checked against the inventory; each pages file is read
whole once, its CRC-32 compared, and the CRC-32 of each of its chunks (``CHUNK``
bytes) kept. Then it listens on ``lazy-pages.socket`` in the work folder for one
restore, which hands it one userfaultfd per process (with a pidfd, and the runs of
pages to serve; each run checked against the process's pagemap).

Serving: a page fault on a pending page fills the whole chunk of the pages file it
is in (read again, its CRC-32 compared with the one kept, then ``UFFDIO_COPY`` of each
run of the chunk); a fault elsewhere in a registered mapping (a page that was never
saved: zeros) gets ``UFFDIO_ZEROPAGE``. When no fault waits, the next pending chunk of
the next process is copied (round robin; ``CKPT_LAZY_BACKGROUND=0``, for tests: never,
the pages then come on touch only). A chunk whose bytes changed since start-up
kills its process with a message: it never runs on wrong memory. Events: a fork gives
the child's userfaultfd (the child needs what its parent still does), mremap moves
pending pages, munmap and madvise(DONTNEED) drop them; a page already there (EEXIST)
or gone (ENOENT) is skipped, a process gone (ESRCH, its pidfd) forgotten. A process
with nothing pending has its userfaultfd closed: its mappings are then plain memory.

A daemon that dies must not let the processes read zeros where their pages were to
come (the kernel would, once the last fd of a userfaultfd is closed): a keeper process,
forked at start-up, holds a copy of every userfaultfd (and pidfd) the daemon serves,
dropped when the daemon is done with it. Should the daemon die first (killed, or a
bug), the keeper kills the processes it has a pidfd of, with a message on stderr: a
child they forked after the restore too, its PID found at the fork event (which names
none) as its parent's one new child with registered mappings; one of two forks side by
side, not told apart, stays stuck on its next fault there until it is killed (criu's
daemon has that limit for every process), the keeper waiting for its address space to
go.
"""

from __future__ import annotations

import bisect
import errno
import os
import select
import socket

from .errors import CkptError, ImageError
from .images import ImageReader, crc32
from .kernel import interrupts, libc, uffd
from .kernel.libc import PAGE_SIZE as PAGE
from .log import logger
from .pages import fill, lazy
from .pages.buffer import BUF_SIZE, page_buffer
from .pages.stripes import Stripes, read_into

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

log = logger("ckpt.lazy-pages")

# Bytes of a pages file filled per fault, and checked as one: 1 MiB, as large as the
# page buffer, and where images.crc32 takes zlib-ng's CRC (the standard one, below it,
# is the daemon's main cost).
CHUNK = 1 << 20
assert BUF_SIZE % CHUNK == 0

Piece = list[int]  # [vaddr, length, offset in the pages file]


class LazyError(CkptError):
    pass


class PagesData:
    """The page data of one process (one pages file, or stripes over several:
    pages.stripes), each file checked whole at start-up; each chunk's CRC-32 kept to
    check it again when it is read to be copied."""

    def __init__(self, images: ImageReader, name: str, layout: Stripes):
        self.name = name
        self.path = images.path(name)
        self.layout = layout
        self.fds: list[int] = []
        try:
            for part in layout.names:
                try:
                    self.fds.append(os.open(images.path(part), os.O_RDONLY | os.O_CLOEXEC))
                except OSError as e:
                    raise ImageError(f"{images.path(part)}: cannot be read ({e.strerror})"
                                     ) from None
            self._check(images)
        except BaseException:
            self.close()
            raise

    def _check(self, images: ImageReader) -> None:
        sizes = []
        for part, fd in zip(self.layout.names, self.fds, strict=True):
            size = os.fstat(fd).st_size
            expected = images.files.get(part)
            if expected is None or size != expected["size"]:
                raise ImageError(f"{images.path(part)}: truncated or changed: {size} bytes, "
                                 f"the inventory says {expected and expected['size']}")
            sizes.append(size)
        self.size = sum(sizes)
        if self.layout.sizes(self.size) != sizes:
            raise ImageError(f"{self.path}: its stripes hold {sizes} bytes, not what "
                             "mm-PID.json's stripes give")
        view = page_buffer().view
        self.crcs: list[int] = []
        totals = [0] * len(self.fds)
        for off in range(0, self.size, CHUNK):
            want = min(CHUNK, self.size - off)
            at = 0
            for index, _foff, n in self._read(view, off):
                totals[index] = crc32(view[at:at + n], totals[index], fast=True)
                at += n
            self.crcs.append(crc32(view[:want]))
        for part, total in zip(self.layout.names, totals, strict=True):
            if total != images.files[part]["crc32"]:
                raise ImageError(f"{images.path(part)}: corrupted (checksum mismatch)")

    def _read(self, view: memoryview, off: int) -> list[tuple[int, int, int]]:
        return read_into(self.fds, self.layout, view, min(CHUNK, self.size - off), off,
                         self.path)

    def chunk(self, index: int, view: memoryview) -> None:
        """Chunk ``index`` into ``view``, checked; ImageError if it changed."""
        self._read(view, index * CHUNK)
        got = min(CHUNK, self.size - index * CHUNK)
        if crc32(view[:got]) != self.crcs[index]:
            raise ImageError(f"{self.path}: the page data at offset {index * CHUNK} changed "
                             "since the daemon checked it (checksum mismatch)")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _layouts(images: ImageReader) -> dict[str, Stripes]:
    """The page data of each process of ``images``, by its first file's name: how its
    files lie (pages.stripes, from its ``mm-PID.json``)."""
    out: dict[str, Stripes] = {}
    for name in sorted(images.files):
        pid = name[6:-4]
        if not (fill.is_pages(name) and pid.isdigit()):
            continue
        layout = Stripes([name])
        mm_name = f"mm-{pid}.json"
        if mm_name in images.files:
            mm = images.load_json(mm_name)
            try:
                if mm.get("pages_file") == name and mm.get("stripes") is not None:
                    layout = Stripes.of(mm)
                    why = layout.check(int(pid), mm)
                    if why is not None:
                        raise ImageError(f"{images.path(mm_name)}: stripes: {why}")
            except (AttributeError, KeyError, TypeError, ValueError):
                raise ImageError(f"{images.path(mm_name)}: malformed stripes") from None
        out[name] = layout
    return out


class Proc:
    """One restored address space and its userfaultfd: the pieces still to copy, by
    chunk of its pages file."""

    def __init__(self, pid: int, fd: int, pidfd: int, data: PagesData,
                 pending: dict[int, list[Piece]]):
        self.pid = pid  # 0: a child forked after the restore, whose PID the event omits
        self.fd = fd
        self.pidfd = pidfd
        self.data = data
        self.pending = pending
        self.order = sorted(pending)  # background copy: chunks in file order
        self.cursor = 0
        self.bad: set[int] = set()  # chunks that changed, of a process it could not kill
        self.index: list[tuple[int, int, int]] = []  # (vaddr, end, chunk), sorted
        self.starts: list[int] = []
        self.reindex()

    @classmethod
    def from_runs(cls, pid: int, fd: int, pidfd: int, data: PagesData,
                  runs: list[tuple[int, int, int]]) -> Proc:
        pending: dict[int, list[Piece]] = {}
        for vaddr, length, off in runs:
            while length:
                c = off // CHUNK
                n = min(length, (c + 1) * CHUNK - off)
                pending.setdefault(c, []).append([vaddr, n, off])
                vaddr, length, off = vaddr + n, length - n, off + n
        return cls(pid, fd, pidfd, data, pending)

    def reindex(self) -> None:
        self.index = sorted((v, v + n, c) for c, ps in self.pending.items() for v, n, _ in ps)
        self.starts = [v for v, _, _ in self.index]

    def chunk_at(self, addr: int) -> int | None:
        """The pending chunk that holds page ``addr``, if any."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.index[i][1] and self.index[i][2] in self.pending:
            return self.index[i][2]
        return None

    def next_chunk(self) -> int | None:
        for _ in range(2):  # once more from the start: chunks put back (EAGAIN)
            while self.cursor < len(self.order):
                c = self.order[self.cursor]
                if c in self.pending and c not in self.bad:
                    return c
                self.cursor += 1
            self.order, self.cursor = sorted(set(self.pending) - self.bad), 0
        return None

    @property
    def todo(self) -> bool:
        """Pages still to copy (bad chunks are not: they kill who touches them)."""
        return len(self.pending) > len(self.bad)

    def cut(self, start: int, end: int, moved: int | None = None) -> None:
        """Pending pages in [start, end) dropped (munmap, MADV_DONTNEED), or moved to
        ``moved`` (mremap)."""
        for c in list(self.pending):
            out: list[Piece] = []
            for v, n, off in self.pending[c]:
                a, b = max(v, start), min(v + n, end)
                if a >= b:
                    out.append([v, n, off])
                    continue
                if v < a:
                    out.append([v, a - v, off])
                if moved is not None:
                    out.append([moved + a - start, b - a, off + a - v])
                if b < v + n:
                    out.append([b, v + n - b, off + b - v])
            if out:
                self.pending[c] = out
            else:
                del self.pending[c]
        self.reindex()

    def fork(self, fd: int) -> Proc:
        """The child of a fork: it needs what its parent still does."""
        return Proc(0, fd, -1, self.data,
                    {c: [list(p) for p in ps] for c, ps in self.pending.items()})

    def close(self) -> None:
        os.close(self.fd)
        if self.pidfd >= 0:
            os.close(self.pidfd)


class _Gone(Exception):
    """The address space is gone (ESRCH)."""


class _Busy(Exception):
    """Its layout is changing (EAGAIN): read its events, then copy again."""


class Daemon:
    """One run of the daemon: images checked, one restore served."""

    def __init__(self, images_dir: str, work_dir: str):
        self.images = ImageReader(images_dir)
        self.images.verify(later=fill.is_pages)  # the pages files: PagesData
        self.data: dict[str, PagesData] = {}
        for name, layout in _layouts(self.images).items():
            self.data[name] = PagesData(self.images, name, layout)
        self.path = os.path.join(work_dir, lazy.SOCKET)
        self.ep = select.epoll()
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.procs: dict[int, Proc] = {}  # by userfaultfd
        self.by_pidfd: dict[int, Proc] = {}
        self.done = False
        self.failures = 0
        self.copied = 0
        self.faults = 0
        self.buf = bytearray(uffd.MSG_SIZE * 64)
        self.rr = 0
        self.keeper: Keeper | None = None
        self.background = os.environ.get("CKPT_LAZY_BACKGROUND") != "0"

    # ------------------------------------------------------------ set-up

    def listen(self) -> None:
        if len(self.path.encode()) > 107:
            raise LazyError(f"{self.path}: the path is too long for a unix socket")
        if os.path.lexists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # a dead daemon's
            else:
                raise LazyError(f"{self.path}: another lazy-pages daemon listens there")
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o077)
            try:
                s.bind(self.path)
            finally:
                os.umask(old)
            s.listen(1)
        except OSError as e:
            s.close()
            raise LazyError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        self.listener = s
        self.ep.register(s.fileno(), select.EPOLLIN)
        self.keeper = Keeper()
        log.info("listening on %s (%d pages files, %d bytes checked)", self.path,
                 len(self.data), sum(d.size for d in self.data.values()))

    def close(self) -> None:
        """Everything let go; the keeper told to end when every process was served or
        is gone, else left to kill those still waiting (see the module's docstring)."""
        self._stop_listening()
        if self.conn is not None:
            self.conn.close()
        clean = not self.procs
        for p in self.procs.values():
            p.close()
        self.procs.clear()
        for d in self.data.values():
            d.close()
        self.ep.close()
        if self.keeper is not None:
            if clean:
                self.keeper.end()
            else:
                self.keeper.abandon()

    def _stop_listening(self) -> None:
        if self.listener is not None:
            self.ep.unregister(self.listener.fileno())
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        while self.listener is not None or self.conn is not None or self.procs:
            busy = self.background and any(p.todo for p in self.procs.values())
            events = self.ep.poll(0 if busy else -1)
            for fd, _ in events:
                self._dispatch(fd)
            if not events and busy:
                self._push()
            self._retire()
        log.info("done: %d faults served, %d bytes copied", self.faults, self.copied)
        return 1 if self.failures else 0

    def _dispatch(self, fd: int) -> None:
        if self.listener is not None and fd == self.listener.fileno():
            conn, _ = self.listener.accept()
            self._stop_listening()  # one restore
            self.conn = conn
            self.ep.register(conn.fileno(), select.EPOLLIN)
        elif self.conn is not None and fd == self.conn.fileno():
            self._from_restore()
        elif fd in self.by_pidfd:
            p = self.by_pidfd[fd]
            log.info("process %d exited", p.pid)
            self._forget(p)
        elif fd in self.procs:
            self._messages(self.procs[fd])

    def _retire(self) -> None:
        """Every process with nothing left pending: its userfaultfd closed (after its
        last events: a fork there gives a child to serve)."""
        for p in [p for p in self.procs.values() if not p.pending]:
            if p.fd in self.procs:
                self._messages(p)
            if not p.pending and p.fd in self.procs:
                log.info("process %d: every page in place", p.pid)
                self._forget(p)

    def _forget(self, p: Proc) -> None:
        if self.keeper is not None:
            self.keeper.drop(p.fd)
        self.procs.pop(p.fd, None)
        self.ep.unregister(p.fd)
        if p.pidfd >= 0:
            self.by_pidfd.pop(p.pidfd, None)
            self.ep.unregister(p.pidfd)
        p.close()

    # ------------------------------------------------------------ the restore

    def _from_restore(self) -> None:
        assert self.conn is not None
        try:
            msg, fds = lazy.recv(self.conn, "the restore")
        except (CkptError, OSError) as e:
            log.error("%s", e)
            msg, fds = None, []
        if msg is None:
            if not self.done:
                log.warning("the restore ended before its processes ran (it failed or was "
                            "killed): serving what it handed over until those exit")
                self.failures += 1
            self.ep.unregister(self.conn.fileno())
            self.conn.close()
            self.conn = None
            return
        try:
            reply = self._handle(msg, fds)
        except CkptError as e:
            for fd in fds:
                os.close(fd)
            log.error("%s", e)
            reply = {"error": str(e)}
        if reply:  # "done" has none
            try:
                lazy.send(self.conn, reply)
            except OSError:
                pass

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if "inventory" in msg:
            if msg["inventory"] != self.images.crc32:
                raise LazyError(f"the restore's images are not those of {self.images.dir} "
                                "(their inventories differ)")
            return {"ok": True, "chunk": CHUNK,
                    "crcs": {name: d.crcs for name, d in self.data.items()}}
        if "done" in msg:
            self.done = True
            log.info("the restore handed over %s processes; they run", msg["done"])
            return {}
        if "pid" not in msg or len(fds) != 2:
            raise LazyError(f"unexpected message from the restore: {sorted(msg)}")
        pid, name = msg["pid"], msg.get("file")
        data = self.data.get(name) if isinstance(name, str) else None
        runs = self._check_runs(pid, name, data, msg.get("runs"))
        assert data is not None
        uffd.set_nonblocking(fds[0])
        p = Proc.from_runs(pid, fds[0], fds[1], data, runs)
        self._add(p)
        self.by_pidfd[p.pidfd] = p
        self.ep.register(p.pidfd, select.EPOLLIN)
        log.info("process %d: %d pages to serve from %s", pid, lazy.pages_in(runs), name)
        return {"ok": True}

    def _check_runs(self, pid: Any, name: Any, data: PagesData | None,
                    runs: Any) -> list[tuple[int, int, int]]:
        """The runs of a handed-over process, each inside its pagemap at its offset."""
        if not isinstance(pid, int) or data is None:
            raise LazyError(f"process {pid}: no pages file {name!r} in the images")
        mm_name = f"mm-{pid}.json"
        if mm_name not in self.images.files:
            raise LazyError(f"process {pid} is not in the images")
        mm = self.images.load_json(mm_name)
        if mm.get("pages_file") != name or mm.get("pages_compression"):
            raise LazyError(f"process {pid}: its pages are not {name} uncompressed")
        saved: list[tuple[int, int, int]] = []  # (vaddr, end, offset)
        off = 0
        for vaddr, npages in mm.get("pagemap", []):
            saved.append((vaddr, vaddr + npages * PAGE, off))
            off += npages * PAGE
        saved.sort()
        starts = [s for s, _, _ in saved]
        out: list[tuple[int, int, int]] = []
        for run in runs if isinstance(runs, list) else [None]:
            if (not isinstance(run, list) or len(run) != 3
                    or not all(isinstance(x, int) and x >= 0 and x % PAGE == 0 for x in run)
                    or not run[1]):
                raise LazyError(f"process {pid}: malformed run {run!r}")
            vaddr, length, off = run
            i = bisect.bisect_right(starts, vaddr) - 1
            if (i < 0 or vaddr + length > saved[i][1]
                    or off != saved[i][2] + vaddr - saved[i][0] or off + length > data.size):
                raise LazyError(f"process {pid}: run {vaddr:#x}+{length:#x} at {off} is not "
                                f"in its pagemap")
            out.append((vaddr, length, off))
        return out

    def _add(self, p: Proc) -> None:
        if self.keeper is not None:
            self.keeper.hold(p.fd, [p.fd] + ([p.pidfd] if p.pidfd >= 0 else []))
        self.procs[p.fd] = p
        self.ep.register(p.fd, select.EPOLLIN)

    # ------------------------------------------------------------ faults and events

    def _messages(self, p: Proc) -> None:
        while p.fd in self.procs:
            msgs = uffd.read_msgs(p.fd, self.buf)
            if not msgs:
                return
            for m in msgs:
                if m.event == uffd.PAGEFAULT:
                    self._fault(p, m.address & ~(PAGE - 1), m.tid)
                elif m.event == uffd.FORK:
                    uffd.set_nonblocking(m.fd)
                    child = p.fork(m.fd)
                    child.pid, child.pidfd = self._forked_child(p)
                    self._add(child)
                    if child.pidfd >= 0:
                        self.by_pidfd[child.pidfd] = child
                        self.ep.register(child.pidfd, select.EPOLLIN)
                    log.info("process %d forked%s: its child is served too", p.pid,
                             f" {child.pid}" if child.pid else "")
                elif m.event == uffd.REMAP:
                    log.debug("process %d: mremap %#x+%#x to %#x", p.pid, m.start, m.length,
                              m.to)
                    p.cut(m.start, m.start + m.length, moved=m.to)
                elif m.event in (uffd.REMOVE, uffd.UNMAP):
                    log.debug("process %d: %s %#x-%#x", p.pid,
                              "munmap" if m.event == uffd.UNMAP else "madvise", m.start, m.end)
                    p.cut(m.start, m.end)

    def _forked_child(self, p: Proc) -> tuple[int, int]:
        """The PID, and a pidfd, of the child whose fork event ``p`` just gave (the event
        names none, and comes before the fork links the child to its parent: looked for
        up to 0.2 s): its one new child whose mappings are registered with a userfaultfd
        (smaps' ``um``), the others being served already or done; (0, -1) if none or
        several (forks side by side), as before: such a child is not killed by the
        keeper should the daemon die, and waits on its next fault."""
        import time
        known = {q.pid for q in self.procs.values()}
        deadline = time.monotonic() + 0.2
        while True:  # the event comes before the fork links the child to its parent
            found = []
            try:
                for tid in os.listdir(f"/proc/{p.pid}/task"):
                    with open(f"/proc/{p.pid}/task/{tid}/children") as f:
                        found += [int(c) for c in f.read().split() if int(c) not in known]
            except OSError:
                return 0, -1
            found = [c for c in found if _registered(c)]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if len(found) != 1:
            return 0, -1
        try:
            return found[0], libc.pidfd_open(found[0])
        except OSError:
            return 0, -1

    def _fault(self, p: Proc, addr: int, tid: int) -> None:
        self.faults += 1
        c = p.chunk_at(addr)
        if c is not None and c in p.bad:
            self._corrupt(p, c, tid, None)
        elif c is not None:
            self._serve(p, c, tid)
            if p.fd in self.procs:  # its page came earlier, or the copy must wait
                _wake(p.fd, addr)
            return
        if p.fd not in self.procs:
            return
        try:  # a page never saved: zeros (or it came meanwhile: wake the thread)
            uffd.zeropage(p.fd, addr, PAGE)
        except OSError as e:
            if e.errno == errno.EEXIST:
                _wake(p.fd, addr)
            elif e.errno == errno.ESRCH:
                self._forget(p)
            elif e.errno == errno.EAGAIN:
                _wake(p.fd, addr)  # the thread faults again once the layout settles

    def _push(self) -> None:
        """One pending chunk of the next process with any, copied in the background."""
        procs = [p for p in self.procs.values() if p.todo]
        if not procs:
            return
        self.rr = (self.rr + 1) % len(procs)
        p = procs[self.rr]
        c = p.next_chunk()
        if c is not None:
            self._serve(p, c, 0)

    def _serve(self, p: Proc, c: int, tid: int) -> None:
        """Chunk ``c`` of ``p``'s pages file, checked, copied into its pending pieces."""
        buf = page_buffer()
        try:
            p.data.chunk(c, buf.view)
        except ImageError as e:
            self._corrupt(p, c, tid, e)
            return
        pieces = p.pending.pop(c)
        base = c * CHUNK
        for i, (vaddr, length, off) in enumerate(pieces):
            try:
                self._copy(p, vaddr, buf.addr + off - base, length)
            except _Gone:
                log.info("process %d is gone", p.pid)
                self._forget(p)
                return
            except _Busy as busy:
                done = busy.args[0]
                rest = [[vaddr + done, length - done, off + done]] if done < length else []
                p.pending[c] = rest + [list(x) for x in pieces[i + 1:]]
                return

    def _copy(self, p: Proc, dst: int, src: int, length: int) -> None:
        done = 0
        while done < length:
            try:
                n = uffd.copy(p.fd, dst + done, src + done, length - done)
                self.copied += n
                done += n
            except uffd.CopyError as e:
                done += e.copied
                self.copied += e.copied
                if e.errno == errno.EEXIST:
                    done += PAGE  # there already: touched, or filled meanwhile
                elif e.errno == errno.ESRCH:
                    raise _Gone() from None
                elif e.errno == errno.EAGAIN:
                    raise _Busy(done) from None
                elif e.errno in (errno.ENOENT, errno.EFAULT, errno.EINVAL):
                    return  # unmapped or moved: its event says where
                else:
                    raise

    def _corrupt(self, p: Proc, c: int, tid: int, e: ImageError | None) -> None:
        """Changed page data: the process is killed, never run on it. A child forked
        after the restore (no pidfd) is killed when one of its threads touches the
        chunk: until then the chunk stays pending, never copied."""
        if e is not None:
            self.failures += 1
            log.error("%s", e)
        if p.pidfd < 0 and not tid:
            p.bad.add(c)
            return
        log.error("process %d killed: its pages in %s changed", p.pid or tid, p.data.path)
        try:
            if p.pidfd >= 0:
                libc.pidfd_send_signal(p.pidfd, libc.SIGKILL)
            else:
                os.kill(tid, libc.SIGKILL)
        except OSError:
            pass
        self._forget(p)


class Keeper:
    """The daemon's end of the keeper process (see the module's docstring)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = interrupts.fork()
        if self.pid == 0:  # a fork Python does not know of: simple code, out by os._exit
            status = 1
            try:
                _only(theirs.fileno())
                _keep(theirs)
                status = 0
            finally:
                os._exit(status)
        theirs.close()
        self.sock = ours

    def hold(self, key: int, fds: list[int]) -> None:
        socket.send_fds(self.sock, [f"hold {key}".encode()], fds, socket.MSG_NOSIGNAL)

    def drop(self, key: int) -> None:
        self.sock.send(f"drop {key}".encode(), socket.MSG_NOSIGNAL)

    def end(self) -> None:
        """The daemon is done: the keeper lets go of everything and exits, reaped."""
        try:
            self.sock.send(b"end", socket.MSG_NOSIGNAL)
        except OSError:
            pass
        self.abandon()

    def abandon(self, wait: float = 5.0) -> None:
        """The daemon leaves: the keeper, on its own, is reaped if it ends in time."""
        import time
        self.sock.close()
        deadline = time.monotonic() + wait
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)


def _only(keep: int) -> None:
    """The keeper holds nothing of the daemon's but ``keep`` and stderr: not the images,
    the socket, nor the daemon's stdout (whose reader waits for its end)."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _keep(sock: socket.socket) -> None:
    """The keeper: hold the fds until told to drop them; the daemon gone before "end",
    kill the processes left waiting on it (see the module's docstring)."""
    import signal
    import time
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the daemon's terminal or group: the daemon's
    held: dict[str, list[int]] = {}
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 64, 2)
        except OSError:
            data, fds = b"", []
        if data == b"end":
            return
        if not data:
            break
        op, key = data.decode().split()
        if op == "hold":
            held[key] = fds
        else:
            for fd in held.pop(key, []):
                os.close(fd)
    stuck = []
    for fds in held.values():
        if len(fds) > 1:
            pid = _pid_of(fds[1])  # before the kill: -1 once it is reaped
            try:
                libc.pidfd_send_signal(fds[1], libc.SIGKILL)
                os.write(2, f"ckpt lazy-pages: the daemon died; process {pid} killed: its "
                         "pages can no longer come\n".encode())
            except OSError:
                pass
        else:
            stuck.append(fds[0])
    while stuck:  # their address spaces, until they are gone
        time.sleep(1)
        stuck = [fd for fd in stuck if not _gone(fd)]


def _registered(pid: int) -> bool:
    """Whether a mapping of ``pid`` is registered with a userfaultfd for missing pages."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            return any(line.startswith("VmFlags:") and " um" in line for line in f)
    except OSError:
        return False


def _pid_of(pidfd: int) -> str:
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            return next((line.split()[1] for line in f if line.startswith("Pid:")), "?")
    except OSError:
        return "?"


def _gone(fd: int) -> bool:
    """Whether the address space of userfaultfd ``fd`` is gone (an ioctl on a page no
    one maps: ESRCH then, ENOENT or EINVAL before)."""
    try:
        uffd.zeropage(fd, 0, PAGE)
    except OSError as e:
        return e.errno == errno.ESRCH
    return False


def _wake(fd: int, addr: int) -> None:
    try:
        uffd.wake(fd, addr, PAGE)
    except OSError:
        pass


def serve(images_dir: str, work_dir: str,
          ready: Callable[[str], None] | None = None) -> int:
    """Check the images, listen for one restore, serve it to the end; the exit status
    (1 when a process was killed for changed page data or the restore failed)."""
    daemon = Daemon(images_dir, work_dir)
    try:
        daemon.listen()
        if ready is not None:
            ready(daemon.path)
        return daemon.run()
    finally:
        daemon.close()
