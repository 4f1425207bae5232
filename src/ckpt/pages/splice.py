"""Page data the process moves itself: a loop in its parking area (kernel/inject.py,
PARK_AREA) makes a pipe and ``vmsplice``s runs of its own memory into it; ckpt takes
the read end (``pidfd_getfd``) and ``splice``s it into the pages file. No page is
copied through ckpt's memory, and one round trip moves every run of a process (the
loop waits on the pipe, not on ckpt): criu's way, without a compiled parasite.

The pages file keeps its CRC-32 (docs/image-format.md): a thread of ckpt's reads
each piece back from the file, hot in the CPU cache, while the next is spliced.

Only into a pages file on tmpfs: there, against ``process_vm_readv`` and a write, it
took a third less CPU and time (1 GiB); into ext4 the splice took twice the system
time of the write (1.2-1.5 s against 0.6 s for 1 GiB), and the copy stays.

Should ckpt die while the loop runs, the process holds the pipe's read end too, so
that the loop never meets a pipe without readers (whose SIGPIPE goes to the whole
process): it waits, parked, on the full pipe; ckpt/recovery.py (the dump's guard at
once, or the next ckpt) finds where it stopped, closes the pipe's fds it still
holds (``inject.splice_fds_open``) and gives it its own registers back. A dump that
fails closes them the same way before it lets the process go. Either way the
process's fd table is as it was.
"""

from __future__ import annotations

import errno
import os
import select
import struct

from .. import progress
from ..images import RawWriter, crc32
from ..kernel import interrupts, libc, pipesize
from ..kernel.inject import SPLICE_HEAD, Injector, splice_fds_open
from ..log import logger
from .buffer import spare_buffer

log = logger("ckpt.pages")

# The pipe's size, the largest that can be had first: the process fills it when it
# runs, and ckpt drains it whether it runs or not. With fs.pipe-max-size's default of
# 1 MiB, every MiB waited for the process to be scheduled again (1 GiB at a load
# average of 20: 18 s, against 10-12 s with 64 MiB).
PIPE_SIZES = (64 << 20, 16 << 20, 4 << 20, 1 << 20)
PIECE = 4 << 20  # spliced at a time (then read back for the checksum, hot in the cache)
_RUN = struct.Struct("<QQ")
_WAIT_MS = 50  # between looks at the process while the pipe is empty (a stop, a death)


class NoPipe(OSError):
    """The process could not make the pipe (its fd table full...): ``runs`` (address,
    bytes) are still to be copied, another way."""

    def __init__(self, err: int, msg: str, runs: list[tuple[int, int]]):
        super().__init__(err, msg)
        self.runs = runs


class SplicedPages:
    """Runs of one frozen process's memory (``add``), moved by the process itself into
    ``out`` once enough are queued or at ``flush``. ``inj`` is parked with the splice
    loop (``Injector.splice_loop``); ``scratch`` (address, size) holds its block."""

    def __init__(self, inj: Injector, scratch: tuple[int, int], out: RawWriter):
        loop = inj.splice_loop
        assert loop is not None
        self.inj = inj
        self.loop = loop
        self.block = scratch[0]
        self.capacity = (scratch[1] - SPLICE_HEAD) // _RUN.size
        self.out = out
        self.runs: list[tuple[int, int]] = []  # (address, bytes)
        self.queued = 0

    @property
    def full(self) -> bool:
        """No room for another run: ``flush`` first."""
        return len(self.runs) == self.capacity

    def add(self, addr: int, length: int) -> None:
        """Queue ``length`` bytes of the process's memory from ``addr`` (not ``full``)."""
        if self.runs and self.runs[-1][0] + self.runs[-1][1] == addr:
            self.runs[-1] = (self.runs[-1][0], self.runs[-1][1] + length)
        else:
            assert not self.full
            self.runs.append((addr, length))
        self.queued += length

    def flush(self) -> None:
        """Move every queued run into the pages file, in order."""
        if not self.runs:
            return
        runs, total = self.runs, self.queued
        self.runs, self.queued = [], 0
        inj, pid = self.inj, self.inj.pid
        log.debug("process %d: moving %d bytes of its memory in %d runs", pid, total, len(runs))
        inj.write(self.block, struct.pack("<iiQQQ", -1, -1, len(runs), 0, 0)
                  + b"".join(_RUN.pack(a, n) for a, n in runs))
        moved = 0
        try:
            res = inj.start_code(self.loop, self.block)
            if res < 0:
                raise NoPipe(-res, f"process {pid}: pipe2: {os.strerror(-res)}", runs)
            moved = self._take(total)
        finally:
            where = inj.end_code()
            self._close_left(where)
        result, done = struct.unpack("<qQ", inj.read(self.block + 16, 16))
        if result < 0:
            raise OSError(-result, f"process {pid}: vmsplice of its run at "
                                   f"{runs[done][0]:#x}: {os.strerror(-result)}")
        if moved != total:
            raise OSError(errno.EIO, f"process {pid}: {moved} bytes of its memory came "
                                     f"through the pipe, not {total}")
        log.info("process %d: moved %d bytes of its memory in %d runs into %s itself",
                 pid, total, len(runs), self.out.name)

    def _close_left(self, where: int) -> None:
        """Close what the loop, stopped at ``where``, left of its pipe in the process."""
        fds = struct.unpack("<ii", self.inj.read(self.block, 8))
        for fd in splice_fds_open(where, fds):
            self.inj.call("close", fd)

    def _take(self, total: int) -> int:
        """Splice what the pipe brings into the pages file until the loop closes it;
        the bytes taken."""
        inj = self.inj
        fds = struct.unpack("<ii", inj.read(self.block, 8))
        pidfd = libc.pidfd_open(inj.pid)
        try:
            rfd = libc.pidfd_getfd(pidfd, fds[0])
        finally:
            os.close(pidfd)
        checker = _Checker(self.out)
        try:
            pipesize.resize(rfd, PIPE_SIZES)
            inj.run_code()
            poll = select.poll()
            poll.register(rfd, select.POLLIN)
            out = self.out
            while True:
                if not poll.poll(_WAIT_MS):
                    inj.code_stopped()  # stopped by a signal meanwhile: let it go on
                    continue
                n = os.splice(rfd, out.fd, PIECE)
                if n == 0:  # the loop closed the pipe
                    break
                out.size += n
                checker.written(out.size)
                progress.advance(n)
        finally:
            os.close(rfd)
            checker.finish()
        return self.out.size - checker.start


class _Checker:
    """The CRC-32 of what is spliced into ``out`` from its size on, read back by a thread
    of its own a buffer at a time (``written`` tells it how far the file is written);
    ``finish`` waits for it and sets ``out.crc``."""

    def __init__(self, out: RawWriter):
        import queue
        import threading

        self.out = out
        self.start = out.size
        self.crc = out.crc
        self.error: OSError | None = None
        self.todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="ckpt-crc", daemon=True)
        with interrupts.held():  # kept by the thread: ckpt's signals go to its main thread
            self.thread.start()

    def written(self, end: int) -> None:
        self.todo.put(end)

    def finish(self) -> None:
        self.todo.put(None)
        interrupts.join(self.thread)
        if self.error is not None:
            raise self.error
        self.out.crc = self.crc

    def _run(self) -> None:
        buf = spare_buffer().view
        pos = end = self.start
        while True:
            item = self.todo.get()
            last = item is None
            if item is not None:
                end = item
            try:
                while self.error is None and (end - pos >= len(buf) or (last and end > pos)):
                    got = os.preadv(self.out.fd, [buf[:min(end - pos, len(buf))]], pos)
                    if got <= 0:
                        raise OSError(errno.EIO, f"{self.out.name}: short read back")
                    self.crc = crc32(buf[:got], self.crc, fast=True)
                    pos += got
            except OSError as e:
                self.error = e
            if last:
                return
