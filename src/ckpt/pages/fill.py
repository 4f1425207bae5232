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
from .buffer import BUF_SIZE, Buffer, page_buffer, ring

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


class PagesFile:
    """One pages file, read from its start: what was read so far is checksummed, unless a
    read out of order (or ``checked``: its checksum was compared already) stops that."""

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

    def write(self, pid: int, off: int, runs: list[Run]) -> None:
        """The file's bytes from ``off`` on, into the ``runs`` of process ``pid`` one after
        the other: a buffer of the file at a time, written into as many runs (or parts of
        them) as it holds with one call."""
        if off != self.pos:
            self._out_of_order(off)
        total = sum(n for _, n in runs)
        if total >= _PARALLEL_FROM and (not self.in_order or crc32_combiner() is not None):
            self._parallel(pid, off, _pieces(runs, total))
            return
        buf = page_buffer()
        done = 0
        for pieces, want in _pieces(runs, total):
            got = self._read(buf.view, want, off + done)
            write_pieces(pid, buf.addr, pieces)
            done += got
            progress.advance(got)

    def _parallel(self, pid: int, off: int, chunks: list[tuple[list[Run], int]]) -> None:
        """``write`` by ``_WORKERS`` threads of ckpt's, each reading a buffer of the file,
        checksumming it while it is in its CPU's cache and writing it into the process
        (all mostly in the kernel, which lets go of the interpreter's lock; faulting in
        the process's fresh pages is most of the work); the buffers' checksums are
        joined here in the order of the file (zlib-ng's crc32_combine). The first failure
        stops the others and is raised here."""
        from _queue import SimpleQueue  # (the queue module would import threading)
        from _thread import start_new_thread
        summed = self.in_order and off == self.pos
        combine = crc32_combiner()
        if summed:
            os.posix_fadvise(self.fd, off, sum(n for _, n in chunks), os.POSIX_FADV_WILLNEED)
        jobs: SimpleQueue[tuple[int, int, list[Run], int] | None] = SimpleQueue()
        done: SimpleQueue[tuple[int, int, int] | None] = SimpleQueue()  # (k, crc, length)
        failed: list[BaseException] = []

        def worker(buf: Buffer) -> None:
            while (job := jobs.get()) is not None:
                k, at, pieces, want = job
                crc = 0
                if not failed:
                    try:
                        got = read_full(self.fd, buf.view, want, at, self.path)
                        crc = crc32(buf.view[:got], 0) if summed else 0
                        write_pieces(pid, buf.addr, pieces)
                    except BaseException as e:
                        failed.append(e)
                done.put((k, crc, want))
            done.put(None)  # its last word

        at = off
        for k, (pieces, want) in enumerate(chunks):
            if at + want > self.size:
                raise ImageError(f"{self.path}: the page data ends at {self.size}, before "
                                 f"offset {at + want}")
            jobs.put((k, at, pieces, want))
            at += want
        for buf in ring()[:_WORKERS]:
            jobs.put(None)
            start_new_thread(worker, (buf,))
        crcs: dict[int, tuple[int, int]] = {}
        next_k, running = 0, _WORKERS
        try:
            while running:
                item = done.get()
                if item is None:
                    running -= 1
                    continue
                k, crc, want = item
                crcs[k] = (crc, want)
                while next_k in crcs and not failed:
                    crc, want = crcs.pop(next_k)
                    if summed:
                        self.sum = combine(self.sum, crc, want)
                        self.pos += want
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

    def _read(self, view: memoryview, want: int, off: int) -> int:
        """Bytes [off, +want) of the file into ``view``, checksummed when in order."""
        if off + want > self.size:
            raise ImageError(f"{self.path}: the page data ends at {self.size}, before "
                             f"offset {off + want}")
        if self.in_order and off + want > self._ahead and self._ahead < self.size:
            self._ahead = off + want + _AHEAD
            os.posix_fadvise(self.fd, off + want, _AHEAD, os.POSIX_FADV_WILLNEED)
        got = read_full(self.fd, view, want, off, self.path)
        if self.in_order and off == self.pos:
            self.sum = crc32(view[:got], self.sum)
            self.pos += got
        return got

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of the file, or fewer at its end, checksummed: the
        compressed stream of a compressed pages file, for zstd to read."""
        data = os.pread(self.fd, min(size, self.size - self.pos), self.pos)
        self.sum = crc32(data, self.sum)
        self.pos += len(data)
        return data

    def _out_of_order(self, off: int) -> None:
        """A read at ``off`` beyond the checksummed part: the bytes between are read and
        checksummed; before it: the file is checked whole at ``finish``."""
        if not self.in_order:
            return
        if off < self.pos:
            self.in_order = False
            return
        view = page_buffer().view
        while self.pos < off:
            self._read(view, min(BUF_SIZE, off - self.pos), self.pos)

    def finish(self, reader: ImageReader, name: str) -> None:
        """Check the checksum: the rest of the file read on, or all of it again if it was
        read out of order."""
        if self.crc is None:
            return
        if not self.in_order:
            self.close()
            reader.verify_file(name)
            return
        view = page_buffer().view
        while self.pos < self.size:
            self._read(view, min(BUF_SIZE, self.size - self.pos), self.pos)
        self.close()
        if self.sum != self.crc:
            raise ImageError(f"{self.path}: corrupted (checksum mismatch)")


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


def read_full(fd: int, view: memoryview, want: int, off: int, path: str) -> int:
    """Bytes [off, +want) of file ``fd`` (at ``path``) into ``view``; ImageError if it
    ends before."""
    got = 0
    while got < want:
        n = os.preadv(fd, [view[got:want]], off + got)
        if n <= 0:
            raise ImageError(f"{path}: short read at offset {off + got}")
        got += n
    return got


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

    def file(self, path: str) -> PagesFile:
        """The pages file at ``path``: one of the folder's, checksummed on the way, or a
        parent's, checked already."""
        path = os.path.abspath(path)
        f = self.open.get(path)
        if f is None:
            name = self._own_name(path)
            info = self.images.files.get(name) if name else None
            crc = int(info["crc32"]) if name in self.deferred and info else None
            size = int(info["size"]) if info else os.stat(path).st_size
            f = self.open[path] = PagesFile(path, size, crc)
        return f

    def _own_name(self, path: str) -> str | None:
        folder, name = os.path.split(path)
        return name if folder == os.path.abspath(self.images.dir) else None

    def vouched(self, path: str) -> None:
        """``path`` (one of the folder's) was checked whole by the lazy-pages daemon,
        which gave the CRC-32 of each of its chunks: the restore checks what it reads of
        it against those (pages.lazy), not the whole file again."""
        name = self._own_name(os.path.abspath(path))
        if name is not None:
            self.deferred.discard(name)

    def done(self, path: str) -> None:
        """Every page the restore takes from ``path`` is in place: check its checksum."""
        path = os.path.abspath(path)
        f = self.open.get(path)
        name = self._own_name(path)
        if f is None or name is None or name not in self.deferred:
            return
        f.finish(self.images, name)
        self.deferred.discard(name)

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
