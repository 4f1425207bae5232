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
import queue
import threading
from typing import Any

from ..images import RawWriter, crc32
from ..kernel import libc
from .buffer import Buffer, ring

FLUSH_EVERY = 16 << 20
SYNC_FILE_RANGE_WRITE = 2


class WriteBehind:
    """Appends page data to the pages file ``out`` from a thread of its own (module
    doc); ``size`` counts what was handed over: the offset of the next write."""

    def __init__(self, out: RawWriter):
        self.out = out
        self.buffers = ring()
        self.current = 0
        self._todo: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(1, len(self.buffers)):
            self._free.put(i)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="ckpt-pages", daemon=True)
        self._thread.start()

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
        self._todo.put(("data", data))
        return off

    def next_buffer(self) -> Buffer:
        """Hand the current buffer over; return a free one (its writes are done)."""
        self._todo.put(("free", self.current))
        self.current = self._free.get()
        self._raise()
        return self.buffer

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data`` (of any buffer) after what is queued."""
        self.drain()
        return self.out.write(data)

    def drain(self) -> None:
        """Wait until every queued write is done."""
        if self._thread.is_alive():
            done = threading.Event()
            self._todo.put(("mark", done))
            done.wait()
        self._raise()

    def finish(self) -> None:
        """Write what is queued and end the thread."""
        if self._thread.is_alive():
            self._todo.put(("end", None))
            self._thread.join()
        self._raise()

    def _run(self) -> None:
        fd = self.out.fd
        written = flushed = self.out.size
        while True:
            kind, item = self._todo.get()
            if kind == "end":
                return
            if kind == "free":
                self._free.put(item)
            elif kind == "mark":
                item.set()
            elif self._error is None:
                try:
                    done = 0
                    while done < len(item):
                        done += os.write(fd, item[done:])
                    written += done
                    if written - flushed >= FLUSH_EVERY:
                        libc.syscall("sync_file_range", fd, flushed, written - flushed,
                                     SYNC_FILE_RANGE_WRITE)
                        flushed = written
                except OSError as e:
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


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
