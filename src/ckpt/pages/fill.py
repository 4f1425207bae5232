"""At restore, page data read once: ckpt reads each pages file in order through its
reused buffers, checksums what it read while it is still in the CPU cache, and writes it
into the restored process with ``process_vm_writev`` (no injected call, no fd in the
process, no second read of the file to check it first). A long run of pages is shared
by two threads of ckpt's, each reading, checksumming and writing a buffer at a time
(the kernel giving the process its fresh pages is the larger part of the work); the
checksums of the buffers are joined in the order of the file.

The images are untrusted: a pages file's CRC-32 is compared when its last byte has
been read, and a mismatch raises ImageError while the process is still ckpt's,
stopped, never run; the restore then kills the tree it made (``Restore.undo``).
Only a pages file whose data is written in the order of the file is checked on the
way; one read otherwise (an image whose runs are out of order) is read again whole
to check it before the restore goes on, and so is a pages file no process read.
Parent images of an incremental dump are checked whole before anything is created
(``chain.Chain``): a process takes only some of their pages.
"""

from __future__ import annotations

import ctypes
import os

from .. import progress
from ..errors import ImageError, RestoreError
from ..images import ImageReader, crc32, crc32_combiner
from ..kernel import libc
from .buffer import BUF_SIZE, Buffer, page_buffer, ring, spare_buffer
from .stripes import Stripes, read_full

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterable

_IOV_MAX = 1024  # remote pieces one process_vm_writev takes
_PARALLEL_FROM = 4 * BUF_SIZE  # bytes of one write done by several threads (``_parallel``)
_WORKERS = 2  # threads reading, checksumming and writing buffers at once (one per CPU here)
_AHEAD = 16 << 20  # bytes of a file asked of the disk ahead of the reads (readahead)

Run = tuple[int, int]  # (address in the process, length)


def is_pages(name: str) -> bool:
    """Whether image ``name`` is a pages file, whose checksum ``Fill`` checks on the way."""
    return name.startswith("pages-") and name.endswith(".img")


class _Part:
    """One file of a process's page data, read from its start: what was read so far is
    checksummed, unless a read out of order (or ``crc`` None: its checksum was compared
    already) stops that."""

    def __init__(self, path: str, size: int, crc: int | None):
        self.path = path
        self.size = size
        self.crc = crc  # the inventory's; None: checked already
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"{path}: cannot be read ({e.strerror})") from None
        self.pos = 0  # checksummed up to here
        self.sum = 0
        self.in_order = crc is not None
        self._ahead = 0  # readahead asked up to here
        if self.in_order:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_end(self, off: int, want: int) -> None:
        if off + want > self.size:
            raise ImageError(f"{self.path}: the page data ends at {self.size}, before "
                             f"offset {off + want}")

    def read(self, view: memoryview, want: int, off: int) -> int:
        """Bytes [off, +want) of the file into ``view``, checksummed when in order (the
        bytes before ``off`` not read yet are read and checksummed first)."""
        self.check_end(off, want)
        self.catch_up(off)
        if self.in_order and off + want > self._ahead and self._ahead < self.size:
            self._ahead = off + want + _AHEAD
            os.posix_fadvise(self.fd, off + want, _AHEAD, os.POSIX_FADV_WILLNEED)
        got = read_full(self.fd, view, want, off, self.path)
        if self.in_order and off == self.pos:
            self.sum = crc32(view[:got], self.sum, fast=self.size > BUF_SIZE)
            self.pos += got
        return got

    def catch_up(self, off: int) -> None:
        """A read at ``off`` beyond the checksummed part: the bytes between are read and
        checksummed; before it: the file is checked whole at ``finish``."""
        if not self.in_order or off == self.pos:
            return
        if off < self.pos:
            self.in_order = False
            return
        view = spare_buffer().view
        while self.pos < off:
            self.read(view, min(BUF_SIZE, off - self.pos), self.pos)

    def finish(self, reader: ImageReader, name: str) -> None:
        """Check the checksum: the rest of the file read on, or all of it again if it was
        read out of order."""
        if self.crc is None:
            return
        if not self.in_order:
            self.close()
            reader.verify_file(name)
            return
        view = spare_buffer().view
        while self.pos < self.size:
            self.read(view, min(BUF_SIZE, self.size - self.pos), self.pos)
        self.close()
        if self.sum != self.crc:
            raise ImageError(f"{self.path}: corrupted (checksum mismatch)")


class PagesFile:
    """The page data of one process, in one file or striped over several (pages.stripes,
    ``layout``), read by logical offsets; each file checksummed as it is read in order."""

    def __init__(self, path: str, parts: list[_Part], layout: Stripes):
        self.path = path  # the first file's
        self.parts = parts
        self.layout = layout

    @classmethod
    def one(cls, path: str, size: int, crc: int | None) -> PagesFile:
        """Page data in the one file at ``path``."""
        return cls(path, [_Part(path, size, crc)], Stripes([os.path.basename(path)]))

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def write(self, pid: int, off: int, runs: list[Run]) -> None:
        """The page data from logical offset ``off`` on, into the ``runs`` of process
        ``pid`` one after the other: a buffer at a time, written into as many runs (or
        parts of them) as it holds with one call."""
        total = sum(n for _, n in runs)
        chunks = _pieces(runs, total)
        if total >= _PARALLEL_FROM and (crc32_combiner() is not None
                                        or not any(p.in_order for p in self.parts)):
            self._parallel(pid, off, chunks)
            return
        buf = page_buffer()
        done = 0
        for pieces, want in chunks:
            at = 0
            for index, foff, n in self.layout.locate(off + done, want):
                at += self.parts[index].read(buf.view[at:], n, foff)
            write_pieces(pid, buf.addr, pieces)
            done += want
            progress.advance(want)

    def _plan(self, off: int, chunks: list[tuple[list[Run], int]]
              ) -> list[tuple[list[tuple[int, int, int, bool]], list[Run], int]]:
        """Each chunk's reads ``(file, offset, length, summed)``: summed when it comes next
        in its file, which is then read in order (a file's gap before the first of its
        reads is read here, before any worker starts; a later gap, or a read back, leaves
        the file to be checked whole at its end)."""
        at = {i: p.pos for i, p in enumerate(self.parts)}
        first = set(range(len(self.parts)))
        jobs = []
        for pieces, want in chunks:
            reads = []
            for index, foff, n in self.layout.locate(off, want):
                part = self.parts[index]
                part.check_end(foff, n)
                if index in first and part.in_order and foff > part.pos:
                    part.catch_up(foff)
                    at[index] = part.pos
                first.discard(index)
                summed = part.in_order and foff == at[index]
                if summed:
                    at[index] += n
                elif part.in_order:
                    part.in_order = False
                reads.append((index, foff, n, summed))
            jobs.append((reads, pieces, want))
            off += want
        for index, part in enumerate(self.parts):  # asked of the disk before the reads
            reads_of = [(foff, n) for reads, _, _ in jobs for i, foff, n, _ in reads
                        if i == index]
            if reads_of and part.in_order:
                os.posix_fadvise(part.fd, reads_of[0][0], sum(n for _, n in reads_of),
                                 os.POSIX_FADV_WILLNEED)
        return jobs

    def _parallel(self, pid: int, off: int, chunks: list[tuple[list[Run], int]]) -> None:
        """``write`` by ``_WORKERS`` threads of ckpt's, each reading a buffer of the data,
        checksumming it while it is in its CPU's cache and writing it into the process
        (all mostly in the kernel, which lets go of the interpreter's lock; faulting in
        the process's fresh pages is most of the work); the buffers' checksums are
        joined here in the order of each file (zlib-ng's crc32_combine). The first failure
        stops the others and is raised here."""
        from _queue import SimpleQueue  # (the queue module would import threading)
        from _thread import start_new_thread
        combine = crc32_combiner()
        plan = self._plan(off, chunks)
        fds = [p.fd for p in self.parts]
        paths = [p.path for p in self.parts]
        jobs: SimpleQueue[int | None] = SimpleQueue()
        done: SimpleQueue[tuple[int, list[int]] | None] = SimpleQueue()  # (k, crcs)
        failed: list[BaseException] = []

        def worker(buf: Buffer) -> None:
            while (k := jobs.get()) is not None:
                reads, pieces, _want = plan[k]
                crcs: list[int] = []
                if not failed:
                    try:
                        at = 0
                        for index, foff, n, summed in reads:
                            read_full(fds[index], buf.view[at:], n, foff, paths[index])
                            crcs.append(crc32(buf.view[at:at + n], 0, fast=True) if summed else 0)
                            at += n
                        write_pieces(pid, buf.addr, pieces)
                    except BaseException as e:
                        failed.append(e)
                done.put((k, crcs))
            done.put(None)  # its last word

        for k in range(len(plan)):
            jobs.put(k)
        for buf in ring()[:_WORKERS]:
            jobs.put(None)
            start_new_thread(worker, (buf,))
        results: dict[int, list[int]] = {}
        next_k, running = 0, _WORKERS
        try:
            while running:
                item = done.get()
                if item is None:
                    running -= 1
                    continue
                results[item[0]] = item[1]
                while next_k in results and not failed:
                    crcs = results.pop(next_k)
                    reads, _pieces_of, want = plan[next_k]
                    for (index, _foff, n, summed), crc in zip(reads, crcs, strict=True):
                        if summed:
                            part = self.parts[index]
                            part.sum = combine(part.sum, crc, n)
                            part.pos += n
                    progress.advance(want)
                    next_k += 1
        finally:
            if running:  # interrupted: the workers stop at their next buffer
                failed.append(RestoreError("interrupted"))
                while running:
                    if done.get() is None:
                        running -= 1
        if failed:
            raise failed[0]

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of the file, or fewer at its end, checksummed: the
        compressed stream of a compressed pages file (never striped), for zstd to read."""
        part = self.parts[0]
        data = os.pread(part.fd, min(size, part.size - part.pos), part.pos)
        part.sum = crc32(data, part.sum)
        part.pos += len(data)
        return data

    def finish(self, reader: ImageReader, names: dict[str, str]) -> None:
        """Check the checksum of each of its files (``names``: by path, those to check)."""
        for part in self.parts:
            if part.path in names:
                part.finish(reader, names[part.path])
            part.close()


def _pieces(runs: list[Run], total: int) -> list[tuple[list[Run], int]]:
    """The ``total`` bytes of ``runs`` cut in buffers: for each, the pieces of ``runs`` it
    holds and its length."""
    out: list[tuple[list[Run], int]] = []
    i, addr, left = 0, 0, 0
    done = 0
    while done < total:
        want = min(BUF_SIZE, total - done)
        pieces: list[Run] = []
        at = 0
        while at < want:
            if not left:
                addr, left = runs[i]
                i += 1
            n = min(left, want - at)
            pieces.append((addr, n))
            addr, left, at = addr + n, left - n, at + n
        out.append((pieces, want))
        done += want
    return out


def write_pieces(pid: int, local: int, pieces: list[Run]) -> None:
    """The bytes at ``local`` into ``pieces`` of process ``pid``, in order."""
    for i in range(0, len(pieces), _IOV_MAX):
        part = pieces[i:i + _IOV_MAX]
        total = sum(n for _, n in part)
        lv = libc.IOVec(local, total)
        rv = (libc.IOVec * len(part))(*[libc.IOVec(a, n) for a, n in part])
        try:
            done = libc.syscall("process_vm_writev", pid, ctypes.addressof(lv), 1,
                                ctypes.addressof(rv), len(part), 0)
        except OSError as e:
            raise RestoreError(f"process {pid}: cannot write its pages at "
                               f"{part[0][0]:#x}: {e.strerror}") from None
        if done != total:
            raise RestoreError(f"process {pid}: short write of its pages at "
                               f"{part[0][0]:#x} ({done} of {total} bytes)")
        local += total


class Fill:
    """The pages files of one restore, each opened once and checksummed as it is read."""

    def __init__(self, images: ImageReader, deferred: Iterable[str]):
        self.images = images
        self.deferred = set(deferred)  # the pages files whose checksum is still to check
        self.open: dict[str, PagesFile] = {}  # by absolute path

    def file(self, path: str, layout: Stripes | None = None) -> PagesFile:
        """The page data whose first file is at ``path`` (``layout``: its files, by
        default that one alone): one of the folder's, checksummed on the way, or a
        parent's, checked already."""
        path = os.path.abspath(path)
        f = self.open.get(path)
        if f is None:
            folder = os.path.dirname(path)
            names = layout.names if layout is not None else [os.path.basename(path)]
            parts = []
            try:
                for name in names:
                    parts.append(self._part(os.path.join(folder, name)))
            except BaseException:
                for part in parts:
                    part.close()
                raise
            f = self.open[path] = PagesFile(path, parts, layout or Stripes(names))
        return f

    def _part(self, path: str) -> _Part:
        name = self._own_name(path)
        info = self.images.files.get(name) if name else None
        crc = int(info["crc32"]) if name in self.deferred and info else None
        size = int(info["size"]) if info else os.stat(path).st_size
        return _Part(path, size, crc)

    def _own_name(self, path: str) -> str | None:
        folder, name = os.path.split(path)
        return name if folder == os.path.abspath(self.images.dir) else None

    def vouched(self, path: str) -> None:
        """The page data at ``path`` (the folder's; opened with ``file``) was checked
        whole by the lazy-pages daemon, which gave the CRC-32 of each of its chunks: the
        restore checks what it reads of it against those (pages.lazy), not its files
        again."""
        f = self.open.get(os.path.abspath(path))
        for part in f.parts if f is not None else []:
            name = self._own_name(part.path)
            if name is not None:
                self.deferred.discard(name)

    def done(self, path: str) -> None:
        """Every page the restore takes from the page data at ``path`` is in place:
        check the checksum of each of its files."""
        f = self.open.get(os.path.abspath(path))
        if f is None:
            return
        names = {}
        for part in f.parts:
            name = self._own_name(part.path)
            if name is not None and name in self.deferred:
                names[part.path] = name
                self.deferred.discard(name)
        f.finish(self.images, names)

    def finish(self) -> None:
        """Every pages file no process read whole: checked now, before anything runs."""
        for name in sorted(self.deferred):
            self.images.verify_file(name)
        self.deferred.clear()
        self.close()

    def close(self) -> None:
        for f in self.open.values():
            f.close()
        self.open.clear()
