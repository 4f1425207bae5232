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

Every ``FLUSH_EVERY`` bytes, ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the
disk write of what was written, so that the fsync before the processes are let go or
killed has little left to wait for (on tmpfs it does nothing).
"""

from __future__ import annotations

import os

from ..images import RawWriter, crc32
from ..kernel import interrupts, libc
from .buffer import Buffer, ring

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

FLUSH_EVERY = 16 << 20
SYNC_FILE_RANGE_WRITE = 2


class WriteBehind:
    """Appends page data to the pages file ``out`` from a thread of its own (module
    doc); ``size`` counts what was handed over: the offset of the next write.

    The thread starts once a buffer's worth of data was handed over: until then each
    write is done in the caller's thread (no thread, nor its imports, for a small
    dump)."""

    def __init__(self, out: RawWriter):
        self.out = out
        self.buffers = ring()
        self.current = 0
        self._queued: list[tuple[str, Any]] = []  # until the thread starts
        self._todo: Any = None  # the thread's queue.SimpleQueue of (kind, item)
        self._free: Any = None  # and of the buffers it gives back
        self._thread: Any = None
        self._error: OSError | None = None
        self._written = self._flushed = out.size

    @property
    def size(self) -> int:
        return self.out.size

    @property
    def buffer(self) -> Buffer:
        """The buffer to fill now."""
        return self.buffers[self.current]

    def write_behind(self, data: memoryview) -> int:
        """Queue ``data``, a view of ``buffer``, which must not change until
        ``next_buffer`` gave it back; return its offset in the file."""
        self._raise()
        off = self.out.size
        self.out.crc = crc32(data, self.out.crc)  # now, while it is in the cache
        self.out.size += len(data)
        self._put(("data", data))
        return off

    def next_buffer(self) -> Buffer:
        """Hand the current buffer over; return a free one (its writes are done). Until
        a buffer's worth of data was handed over, it is written here, in the caller's
        thread, and the same buffer comes back: the few runs of pages of a small
        process cost no thread, nor a wait for it at each run."""
        if self._thread is None:
            if self.out.size < len(self.buffer.view):
                self.drain()
                return self.buffer
            self._start()
        self._put(("free", self.current))
        self.current = self._free.get()
        self._raise()
        return self.buffer

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data`` (of any buffer) after what is queued."""
        self.drain()
        return self.out.write(data)

    def drain(self) -> None:
        """Wait until every queued write is done."""
        if self._thread is None:
            for kind, item in self._queued:
                self._do(kind, item)
            self._queued.clear()
        elif self._thread.is_alive():
            import threading

            done = threading.Event()
            self._todo.put(("mark", done))
            done.wait()
        self._raise()

    def finish(self) -> None:
        """Write what is queued and end the thread."""
        if self._thread is None:
            self.drain()
        elif self._thread.is_alive():
            self._todo.put(("end", None))
            self._thread.join()
        self._raise()

    def _put(self, entry: tuple[str, Any]) -> None:
        if self._todo is None:
            self._queued.append(entry)
        else:
            self._todo.put(entry)

    def _start(self) -> None:
        import queue
        import threading

        self._todo, self._free = queue.SimpleQueue(), queue.SimpleQueue()
        for i in range(len(self.buffers)):
            if i != self.current:
                self._free.put(i)
        for entry in self._queued:
            self._todo.put(entry)
        self._queued.clear()
        self._thread = threading.Thread(target=self._run, name="ckpt-pages", daemon=True)
        with interrupts.held():  # kept by the thread: ckpt's signals go to its main thread
            self._thread.start()

    def _run(self) -> None:
        while True:
            kind, item = self._todo.get()
            if kind == "end":
                return
            self._do(kind, item)

    def _do(self, kind: str, item: Any) -> None:
        """One entry of the queue (in the thread, or in the caller's before it starts)."""
        if kind == "free":
            self._free.put(item)
        elif kind == "mark":
            item.set()
        elif self._error is None:
            try:
                done = 0
                while done < len(item):
                    done += os.write(self.out.fd, item[done:])
                self._written += done
                if self._written - self._flushed >= FLUSH_EVERY:
                    self._start_writeback()
            except OSError as e:
                self._error = e
            except Exception as e:  # never a thread that ends and leaves the copy waiting
                self._error = OSError(f"writing {self.out.name}: {e!r}")

    def _start_writeback(self) -> None:
        start_writeback(self.out.fd, self._flushed, self._written - self._flushed)
        self._flushed = self._written

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

    def finish(self) -> None:
        """Nothing is queued: every write was done at once."""
