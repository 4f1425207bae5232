"""Page data written behind the copy: while ckpt reads the next buffer of pages from a
process (and checksums it, hot in the CPU cache), a thread of its own writes the last
one to the pages file, and has the kernel start writing it to disk.

The copy and the write to the file each cost about as much as the other; one after
the other, a dump of 1 GiB took twice ``dd``'s time. With buffers in flight they
overlap (both are system calls, which run without the interpreter's lock). Page data
still never becomes a Python object: the thread is handed views of the buffers.

The caller fills ``buffer``, hands views of it to ``write_behind``, then
``next_buffer`` gives it another of the ring (pages.buffer) whose writes are done.
``write`` (data of any buffer) first waits for what is queued, so that the file keeps
its order. An error of the thread (ENOSPC...) is raised by the next call, and every
call after it.

Big page data goes to two files, in stripes (pages.stripes), each written by a thread
of its own: one tmpfs file takes one thread's writes at the speed of ``dd``, two files
twice that. A buffer is free again once every thread is done with its part of it.

Once the data is in stripes, the writers also read it: ``read_behind`` queues runs of
a frozen process's memory, which each writer copies (process_vm_readv) into a buffer of
its own, checksums and writes, for the runs of its stripes. The copy from the process
was the long pole (1 GiB: the copy thread 0.66 s of CPU, each writer 0.25 s): now each
of two threads reads, checksums and writes half, on its own core, from its own cache.
Each file's CRC is computed by its writer, in the file's order.

Every ``FLUSH_EVERY`` bytes, ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the
disk write of what was written, so that the fsync before the processes are let go or
killed has little left to wait for (on tmpfs it does nothing).
"""

from __future__ import annotations

import errno
import os

from ..images import RawWriter, crc32
from ..kernel import interrupts, libc
from . import stripes
from .buffer import Buffer, ring, writer_buffer
from .stripes import Stripes

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

FLUSH_EVERY = 16 << 20
SYNC_FILE_RANGE_WRITE = 2


# Runs queued by ``read_behind`` and not yet written, at most (then the caller waits).
READS_IN_FLIGHT = 6


class _Writer:
    """One file of the page data and the thread writing it, in the order of its queue."""

    def __init__(self, out: RawWriter):
        self.out = out
        self.buffer: Buffer | None = None  # its own, for the runs it reads (read_behind)
        self.todo: Any = None  # queue.SimpleQueue of (kind, item), once the thread runs
        self.thread: Any = None
        self.written = self.flushed = out.size


class WriteBehind:
    """Appends page data to the pages file ``out`` from a thread of its own (module
    doc); ``size`` counts what was handed over: the logical offset of the next write.

    ``more`` (None: one file) makes file ``i`` of the data's stripes (pages.stripes):
    once the data passes ``stripes.FROM`` bytes, it is cut in stripes over that many
    files, each written by a thread of its own.

    The threads start once a buffer's worth of data was handed over: until then each
    write is done in the caller's thread (no thread, nor its imports, for a small
    dump)."""

    def __init__(self, out: RawWriter, more: Callable[[int], RawWriter] | None = None):
        self.out = out
        self.policy = Stripes.policy() if more is not None else None
        self.more = more
        self.layout = Stripes([out.name])
        self.writers = [_Writer(out)]
        self.logical = out.size
        self.buffers = ring()
        self.current = 0
        self._queued: list[tuple[int, str, Any]] = []  # until the threads start
        self._free: Any = None  # the threads' queue.SimpleQueue of the buffers they are done with
        self._owed: dict[int, int] = {}  # buffer -> threads still to be done with it
        self._slots: Any = None  # threading.Semaphore of READS_IN_FLIGHT (read_behind)
        self._started = False
        self._error: OSError | None = None

    @property
    def size(self) -> int:
        self._sync()
        return self.logical

    def _sync(self) -> None:
        """In one file, the logical offset is the file's size, which pages.splice moves
        on too (its runs go to ``out`` directly; it never stripes: ``one_file``)."""
        if not self.layout.striped:
            self.logical = self.out.size

    @property
    def buffer(self) -> Buffer:
        """The buffer to fill now."""
        return self.buffers[self.current]

    def one_file(self) -> None:
        """Never stripes: the page data goes to ``out`` alone (pages.splice writes it)."""
        self.policy = None

    def room(self) -> int:
        """Bytes the next write may hold without crossing into another stripe (or into
        the stripes): a buffer filled with at most that much goes to one thread."""
        self._sync()
        if self.policy is None:
            return 1 << 62
        if not self.layout.striped:
            return self.policy[0] - self.logical if self.logical < self.policy[0] else 1 << 62
        return self.layout.size - (self.logical - self.layout.start) % self.layout.size

    def _pieces(self, length: int) -> list[tuple[int, int, int]]:
        """Where the next ``length`` bytes go (``Stripes.locate``), the stripes' files made
        when the data passes ``stripes.FROM``."""
        if (self.more is not None and self.policy is not None and not self.layout.striped
                and self.logical + length > self.policy[0]):
            outs = [self.out] + [self.more(i) for i in range(1, stripes.COUNT)]
            self.layout = Stripes([o.name for o in outs], *self.policy)
            for out in outs[1:]:
                self.writers.append(_Writer(out))
                if self._started:
                    self._start_writer(self.writers[-1])
        return self.layout.locate(self.logical, length)

    def write_behind(self, data: memoryview) -> int:
        """Queue ``data``, a view of ``buffer``, which must not change until
        ``next_buffer`` gave it back; return its logical offset."""
        self._raise()
        self._sync()
        off = self.logical
        at = 0
        for index, foff, n in self._pieces(len(data)):
            out, piece = self.writers[index].out, data[at:at + n]
            assert foff == out.size
            out.size += n
            # checksummed by the writer (pieces cut by stripes: zlib-ng whatever their size)
            self._put(index, ("data", (piece, self.layout.striped)))
            at += n
        self.logical += len(data)
        return off

    def can_read_behind(self) -> bool:
        """Whether ``read_behind`` takes runs now: the threads run and the data is in
        stripes, or goes in stripes from the next byte."""
        return (self._started and self.more is not None and self.policy is not None
                and (self.layout.striped or self.logical >= self.policy[0]))

    def read_behind(self, pid: int, vaddr: int, length: int) -> int:
        """Queue ``length`` bytes of frozen process ``pid``'s memory from ``vaddr``
        (every byte readable by process_vm_readv), read and written by the writers of
        their stripes (``can_read_behind``); return their logical offset. Waits while
        READS_IN_FLIGHT runs are queued."""
        self._raise()
        off = self.logical
        at = 0
        for index, foff, n in self._pieces(length):
            out = self.writers[index].out
            assert foff == out.size
            out.size += n
            self._slots.acquire()
            self._put(index, ("read", (pid, vaddr + at, n)))
            at += n
        self.logical += length
        return off

    def next_buffer(self) -> Buffer:
        """Hand the current buffer over; return a free one (its writes are done). Until
        a buffer's worth of data was handed over, it is written here, in the caller's
        thread, and the same buffer comes back: the few runs of pages of a small
        process cost no thread, nor a wait for it at each run."""
        if not self._started:
            if self.logical < len(self.buffer.view):
                self.drain()
                return self.buffer
            self._start()
        self._owed[self.current] = len(self.writers)
        for index in range(len(self.writers)):
            self._put(index, ("free", self.current))
        while True:
            got = self._free.get()
            self._owed[got] -= 1
            if not self._owed[got]:
                break
        self.current = got
        self._raise()
        return self.buffer

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data`` (of any buffer) after what is queued; its logical offset."""
        self.drain()
        self._sync()
        off = self.logical
        view = memoryview(data)
        at = 0
        for index, _foff, n in self._pieces(len(view)):
            self.writers[index].out.write(view[at:at + n])
            at += n
        self.logical += len(view)
        return off

    def drain(self) -> None:
        """Wait until every queued write is done."""
        if not self._started:
            for index, kind, item in self._queued:
                self._do(self.writers[index], kind, item)
            self._queued.clear()
        else:
            import threading

            marks = []
            for w in self.writers:
                if w.thread.is_alive():
                    marks.append(threading.Event())
                    w.todo.put(("mark", marks[-1]))
            for done in marks:
                done.wait()
        self._raise()

    def finish(self) -> None:
        """Write what is queued and end the threads."""
        if not self._started:
            self.drain()
            return
        for w in self.writers:
            if w.thread.is_alive():
                w.todo.put(("end", None))
        for w in self.writers:
            interrupts.join(w.thread)
        self._raise()

    def _put(self, index: int, entry: tuple[str, Any]) -> None:
        if not self._started:
            self._queued.append((index, *entry))
        else:
            self.writers[index].todo.put(entry)

    def _start(self) -> None:
        import queue
        import threading

        self._free = queue.SimpleQueue()
        self._slots = threading.Semaphore(READS_IN_FLIGHT)
        self._started = True
        for w in self.writers:
            self._start_writer(w)
        for i in range(len(self.buffers)):
            if i != self.current:
                self._owed[i] = 1
                self._free.put(i)
        for index, kind, item in self._queued:
            self.writers[index].todo.put((kind, item))
        self._queued.clear()

    def _start_writer(self, w: _Writer) -> None:
        import queue
        import threading

        w.todo = queue.SimpleQueue()
        w.buffer = writer_buffer(self.writers.index(w))  # mapped now, touched if used
        w.thread = threading.Thread(target=self._run, args=(w,), name="ckpt-pages",
                                    daemon=True)
        with interrupts.held():  # kept by the thread: ckpt's signals go to its main thread
            w.thread.start()

    def _run(self, w: _Writer) -> None:
        while True:
            kind, item = w.todo.get()
            if kind == "end":
                return
            self._do(w, kind, item)

    def _do(self, w: _Writer, kind: str, item: Any) -> None:
        """One entry of a writer's queue (in its thread, or in the caller's before the
        threads start)."""
        if kind == "free":
            self._free.put(item)
        elif kind == "mark":
            item.set()
        elif self._error is None:
            try:
                if kind == "read":
                    self._read_and_write(w, *item)
                else:
                    data, fast = item
                    w.out.crc = crc32(data, w.out.crc, fast=fast)
                    self._write_out(w, data)
            except OSError as e:
                self._error = e
            except Exception as e:  # never a thread that ends and leaves the copy waiting
                self._error = OSError(f"writing {w.out.name}: {e!r}")
            finally:
                if kind == "read":
                    self._slots.release()
        elif kind == "read":  # skipped after an error: its slot is free again
            self._slots.release()

    def _read_and_write(self, w: _Writer, pid: int, vaddr: int, length: int) -> None:
        """A run of ``read_behind``: through the writer's own buffer, a piece at a time."""
        assert w.buffer is not None
        addr, view = w.buffer.addr, w.buffer.view
        done = 0
        while done < length:
            k = min(length - done, len(view))
            got = 0
            while got < k:
                n = libc.process_vm_readv(pid, addr + got, vaddr + done + got, k - got)
                if n <= 0:
                    raise OSError(errno.EIO, f"short read of process {pid} memory at "
                                  f"{vaddr + done + got:#x}")
                got += n
            piece = view[:k]
            w.out.crc = crc32(piece, w.out.crc, fast=True)
            self._write_out(w, piece)
            done += k

    @staticmethod
    def _write_out(w: _Writer, data: memoryview) -> None:
        done = 0
        while done < len(data):
            done += os.write(w.out.fd, data[done:])
        w.written += done
        if w.written - w.flushed >= FLUSH_EVERY:
            start_writeback(w.out.fd, w.flushed, w.written - w.flushed)
            w.flushed = w.written

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing ``length`` bytes of file ``fd`` from ``offset`` to
    disk: a hint, whose failure (a file system that does not take it) changes nothing."""
    try:
        libc.syscall("sync_file_range", fd, offset, length, SYNC_FILE_RANGE_WRITE)
    except OSError:
        pass


class WriteThrough:
    """The same calls, each done at once, in the caller's thread, through one buffer:
    for writers that are not a local pages file (a page server, a zstd stream)."""

    def __init__(self, out: Any, buffer: Buffer):
        self.out = out
        self.buffer = buffer

    @property
    def size(self) -> int:
        return int(self.out.size)

    def write_behind(self, data: memoryview) -> int:
        return int(self.out.write(data))

    def write(self, data: bytes | memoryview) -> int:
        return int(self.out.write(data))

    def next_buffer(self) -> Buffer:
        return self.buffer

    def room(self) -> int:
        return 1 << 62

    def finish(self) -> None:
        """Nothing is queued: every write was done at once."""
