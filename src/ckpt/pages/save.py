"""Saving the pages of a (pre-)dump: for each process, the pages chosen (select.py) are
copied from its memory to the image file (written behind the copy, behind.py) or the
page server through reused buffers, and those left in the parent images recorded as
runs."""

from __future__ import annotations

import errno
import os

from .. import progress
from ..images import ImageWriter, RawWriter
from ..kernel import libc, pagemap
from ..kernel.libc import PAGE_SIZE as PAGE
from ..kernel.record import dataclass
from ..log import logger
from . import forked, select, stripes
from .behind import WriteBehind, WriteThrough
from .buffer import BUF_SIZE, Buffer, page_buffer
from .parent import ParentImages, ParentMm
from .runs import Runs
from .select import DIGEST_SIZE, PARENT, SAVE, Cover, runs_of
from .tracking import clear_soft_dirty, start_time, tracking_method

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from ..kernel.inject import Injector
    from .splice import SplicedPages

log = logger("ckpt.pages")

# Pagemap entries read at once (16 MiB of address space): the pagemap of 256 MiB takes
# 7 ms or more to read, while the write behind, out of buffers, waited; 16 MiB's take
# less than the buffers queued for it.
CHUNK_PAGES = 1 << 12
BIG_MAPPING = 1 << 30  # bytes: a mapping this big has its pagemap read where it holds pages


SPLICE_ENV = "CKPT_SPLICE_PAGES"  # "1": a big process moves its own pages (can_splice)

class DumpMemory:
    """The memory side of one dump or pre-dump: its parent, and how it tracks memory."""

    def __init__(self, images_dir: str, prev: str | None, track_mem: bool, will_run: bool):
        self.parent = ParentImages(images_dir, prev) if prev else None
        self.compress = False  # page data through zstd (compressed.py)
        self.method = tracking_method()
        self.record: str | None = None
        if track_mem:
            if not will_run:
                log.info("--track-mem: the processes do not survive this dump; nothing to track")
            elif self.method is None:
                log.warning("--track-mem: soft-dirty tracking is not available on this kernel "
                            "(CONFIG_MEM_SOFT_DIRTY); the next dump will save every page")
            else:
                self.record = self.method
                log.info("--track-mem: memory changes are tracked by %s", self.method)
        self.own_pages = 0
        self.parent_pages = 0
        self.inherited_pages = 0  # shared with the parent process (pages.forked)

    @classmethod
    def plain(cls) -> DumpMemory:
        """A dump that neither has a parent nor tracks memory."""
        return cls("", None, track_mem=False, will_run=False)

    def task(self, pid: int, fork: ForkParent | None = None) -> TaskPages:
        started = start_time(pid)
        parent: ParentMm | None = None
        if self.parent is not None:
            parent, why = self.parent.task(pid, started)
            if parent is None:
                log.warning("process %d: %s; saving every page (full dump)", pid, why)
            else:
                log.info("process %d: pages unchanged since %s are left there (%s)", pid,
                         self.parent.dir, parent.method)
        return TaskPages(self, pid, started, parent, fork)

    def parent_link(self) -> dict[str, Any] | None:
        """The inventory's ``parent``: only when some page was left in the parent."""
        if self.parent is None:
            return None
        if not self.parent.used:
            log.warning("no page was left in %s: these images do not depend on it",
                        self.parent.dir)
            return None
        return {"dir": self.parent.rel, "crc32": self.parent.crc32}


def _same_runs(flags: bytes) -> list[tuple[int, int, int]]:
    """``(first, count, value)`` of each run of equal bytes in ``flags`` (0s and 1s)."""
    return sorted((first, count, value) for value in (0, 1)
                  for first, count in runs_of(flags, value))


class CopyStopped(Exception):
    """The copy of a process's pages was stopped from another thread (the dump failed)."""


@dataclass
class ForkParent:
    """The parent process of a process a dump saves, whose memory the child may share
    since a fork (pages.forked): its PID and its saved mappings, sorted."""

    pid: int
    vmas: list[dict[str, Any]]


@dataclass
class _Chunk:
    """Pages of one mapping chosen while the process is frozen, copied then or later."""

    lo: int  # the address of the first page
    pages: bytes | bytearray  # per page: the selection (by digest), else the status
    cover: Cover  # what the parent has (by digest only)
    anon: bool
    readable: bool  # by process_vm_readv, else through /proc/PID/mem
    elsewhere: bytes  # per page: mapped by another process too (select.mapped_elsewhere)
    by_digest: bool


class TaskPages:
    """Saves the pages of one process: what ``select`` chooses, read from its memory
    into the buffer and written out; the runs saved and those left in the parent."""

    def __init__(self, ctx: DumpMemory, pid: int, started: int, parent: ParentMm | None,
                 fork: ForkParent | None = None):
        self.ctx = ctx
        self.pid = pid
        self.started = started
        self.parent = parent
        self.compare = parent.method if parent is not None else None
        self.record = ctx.record
        self.token = os.urandom(8).hex() if self.record == "soft-dirty" else None
        self.zero_pfn = pagemap.probe().zero_pfn
        self.own = Runs()
        self.in_parent = Runs()
        self.fork = fork
        self.inherited = Runs()  # the pages of the parent process, as its own are
        self._digests: Any = None  # the digests file's writer
        self.deferred = False  # copy after the process runs again (a pre-dump)
        self.stopped = False  # set from another thread: the copy ends at the next buffer
        self.skipped = 0  # pages a deferred copy could not read (their mapping changed)
        self._chunks: list[_Chunk] = []
        self._dbuf = bytearray()
        self.fds: list[int] = []
        self.sink: WriteBehind | WriteThrough | None = None
        self.spliced: SplicedPages | None = None  # runs the process moves itself
        self.layout: stripes.Stripes | None = None  # of the page data, once it is written

    def begin(self, images: ImageWriter, pages: Any, deferred: bool = False) -> None:
        """Open the process's pagemap and memory; ``pages`` is the pages file's writer
        (``sink`` writes to it; page data from elsewhere goes through ``sink.write``).
        ``deferred``: copy the pages chosen only in ``copy_deferred``."""
        pid = self.pid
        self.pagemap_fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(self.pagemap_fd)
        self.mem_fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(self.mem_fd)
        if self.fork is not None:
            self.fork_pagemap = os.open(f"/proc/{self.fork.pid}/pagemap",
                                        os.O_RDONLY | os.O_CLOEXEC)
            self.fds.append(self.fork_pagemap)
        self.pages = pages
        self.images = images
        self.deferred = deferred
        self.buf_pages = BUF_SIZE // PAGE
        if not deferred:
            self._open_sink()
        if self.record == "digest":
            self._digests = images.raw(f"digests-{pid}.img")

    def _open_sink(self) -> None:
        """Start writing to ``pages`` (a write behind starts a thread: one process at a
        time, as the ring of buffers is one)."""
        pid, images = self.pid, self.images
        self.sink = sink_for(self.pages, lambda i: images.raw(stripes.stripe_name(pid, i)))
        self._use(self.sink.buffer)

    def can_splice(self) -> bool:
        """Whether the process may move its own pages (pages/splice.py): asked for with
        CKPT_SPLICE_PAGES=1 (on an idle machine the copy was faster: 1 GiB to tmpfs in
        0.61 s against 0.70 s, the splice's read-back for the CRC being a second pass
        over the file; under load the splice was faster), a dump (not a pre-dump: the
        process runs when they are copied) into a local pages file on tmpfs, pages not
        hashed (digest tracking reads every page)."""
        return (os.environ.get(SPLICE_ENV) == "1"
                and not self.deferred and isinstance(self.sink, WriteBehind)
                and "digest" not in (self.compare, self.record)
                and libc.fs_type(self.sink.out.fd) == libc.TMPFS_MAGIC)

    def splice_with(self, inj: Injector, scratch: tuple[int, int]) -> None:
        """From now on, the readable pages are moved by the process itself, through
        ``inj`` (parked with the splice loop), its block in ``scratch``."""
        assert self.can_splice() and isinstance(self.sink, WriteBehind)
        from .splice import SplicedPages  # here: only big dumps splice

        self.sink.one_file()  # the process writes into the first file
        self.spliced = SplicedPages(inj, scratch, self.sink.out)

    def flush_spliced(self) -> None:
        """Move the runs queued for the process to move (``splice_with``) into the file,
        after what was written before them."""
        if self.spliced is not None and self.spliced.runs:
            assert self.sink is not None
            self.sink.drain()
            from .splice import NoPipe

            try:
                self.spliced.flush()
            except NoPipe as e:  # copied by ckpt, as if never queued
                log.info("%s: its pages are copied by ckpt", e)
                self.spliced = None
                for vaddr, length in e.runs:  # recorded in ``own`` when queued
                    self._copy_run(vaddr, length // PAGE, False, b"", record=False)

    def _use(self, buf: Buffer) -> None:
        self.buf_addr = buf.addr
        self.view = buf.view

    def flush(self) -> None:
        """Every page handed over is in the file (or raise what kept it out)."""
        if self.sink is not None:
            self.sink.finish()

    def close(self) -> None:
        if self.sink is not None:
            try:
                self.sink.finish()
            except OSError:
                pass  # raised by ``flush``, on a way that did not fail already
            if isinstance(self.sink, WriteBehind):
                self.layout = self.sink.layout
            self.sink = None
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    def save_vma(self, entry: dict[str, Any], readable: bool) -> None:
        """Save the pages of one mapping (an ``mm-PID.json`` vma entry), in address order;
        its guard pages go in the entry's ``guards`` (runs of [address, pages]).

        Which pages is decided now, from the pagemap (the process is frozen); they
        are copied now too, or, when ``deferred``, by ``copy_deferred`` once the
        process runs again (a pre-dump).
        """
        kind = entry["kind"]
        anon = kind == "anon"
        trackable = anon or (kind == "file" and not entry["shared"])
        start, end = entry["start"], entry["end"]
        shared = (forked.overlaps(self.fork.vmas, entry)
                  if self.fork is not None and forked.private(entry) else [])
        for lo, hi in self._windows(start, end):
            raw = pagemap.read(self.pagemap_fd, self.pid, lo, (hi - lo) // PAGE)
            for first, count in runs_of(select.guards(raw), SAVE):
                entry.setdefault("guards", []).append([lo + first * PAGE, count])
            sel = select.selected(raw, kind, self.zero_pfn)
            if 1 in sel and shared:
                self._leave_inherited(lo, hi, raw, sel, shared)
            if 1 not in sel:
                continue
            elsewhere = select.mapped_elsewhere(raw) if readable else b""
            cover = (self.parent.cover(entry, lo, hi)
                     if self.parent is not None and trackable else [])
            if self.compare == "digest" or self.record == "digest":
                chunk = _Chunk(lo, sel, cover, anon, readable, elsewhere, by_digest=True)
            else:
                status = select.soft_dirty_status(
                    raw, sel, lo, cover if self.compare == "soft-dirty" else [], anon)
                chunk = _Chunk(lo, status, [], anon, readable, elsewhere, by_digest=False)
            if self.deferred:
                self._chunks.append(chunk)
            else:
                self._copy(chunk)

    def _windows(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The pieces [lo, hi) of the mapping [start, end) whose pagemap is read, of
        CHUNK_PAGES each: all of it, or, for a big one, only where it holds pages
        (mariadbd reserves 8 TiB it never touches: its whole pagemap took 145 s)."""
        held = (pagemap.held(self.pagemap_fd, start, end)
                if end - start >= BIG_MAPPING else None)
        spans = [(start, end)] if held is None else held
        for a, b in spans:
            for lo in range(a, b, CHUNK_PAGES * PAGE):
                yield lo, min(b, lo + CHUNK_PAGES * PAGE)

    def _leave_inherited(self, lo: int, hi: int, raw: bytes, sel: bytearray,
                         shared: list[tuple[int, int, dict[str, Any]]]) -> None:
        """Take out of ``sel`` the pages of [lo, hi) at the very frame the parent process
        has there, in a mapping of the same origin (``shared``): recorded ``inherited``."""
        assert self.fork is not None
        for a, b, _pv in shared:
            a, b = max(a, lo), min(b, hi)
            if a >= b:
                continue
            i, j = (a - lo) // PAGE, (b - lo) // PAGE
            if 1 not in sel[i:j]:
                continue
            theirs = pagemap.read(self.fork_pagemap, self.fork.pid, a, j - i)
            same = forked.same_frames(raw[i * pagemap.ENTRY:j * pagemap.ENTRY], theirs)
            both = (int.from_bytes(sel[i:j], "little")
                    & int.from_bytes(same, "little")).to_bytes(j - i, "little")
            for first, count in runs_of(both, SAVE):
                self.inherited.add(a + first * PAGE, count)
                sel[i + first:i + first + count] = bytes(count)
                self.ctx.inherited_pages += count

    def copy_deferred(self) -> None:
        """Copy what ``save_vma`` chose while the process was frozen."""
        self._open_sink()
        for chunk in self._chunks:
            self._copy(chunk)
        self._chunks.clear()
        self.flush()
        if self.skipped:
            log.info("process %d: %d pages were unmapped before they could be copied; "
                     "left out", self.pid, self.skipped)

    def _copy(self, chunk: _Chunk) -> None:
        if chunk.by_digest:
            self._by_digest(chunk)
            return
        lo, status = chunk.lo, chunk.pages
        for first, count in runs_of(status, PARENT):
            self.in_parent.add(lo + first * PAGE, count)
        for first, npages in runs_of(status, SAVE):
            vaddr = lo + first * PAGE
            if self.spliced is not None and chunk.readable and self.spliced.full:
                self.flush_spliced()
            if self.spliced is not None and chunk.readable:
                self.spliced.add(vaddr, npages * PAGE)
                self.own.add(vaddr, npages)
                self.ctx.own_pages += npages
                continue
            self.flush_spliced()
            self._copy_run(vaddr, npages, chunk.readable,
                           chunk.elsewhere[first:first + npages])

    def _copy_run(self, vaddr: int, npages: int, readable: bool, elsewhere: bytes,
                  record: bool = True) -> None:
        """Copy ``npages`` pages from ``vaddr`` through the buffers (``_read``); pages not
        ``readable``, or mapped ``elsewhere`` too (a mask, or empty), through
        /proc/PID/mem; ``record``: in ``own`` (else they are already). Once the page
        data is in stripes, the pages of a frozen process readable by process_vm_readv
        are read by the stripes' writers themselves (WriteBehind.read_behind)."""
        done = 0
        direct = (readable and 1 not in elsewhere and not self.deferred
                  and isinstance(self.sink, WriteBehind))
        while done < npages:
            if direct and self.sink.can_read_behind():
                k = min(self.buf_pages, npages - done)
                self.sink.read_behind(self.pid, vaddr + done * PAGE, k * PAGE)
                progress.advance(k * PAGE)
                if record:
                    self.own.add(vaddr + done * PAGE, k)
                    self.ctx.own_pages += k
                if self.stopped:
                    raise CopyStopped(f"process {self.pid}: the copy of its pages was stopped")
                done += k
                continue
            k = min(self.buf_pages, npages - done, max(1, self.sink.room() // PAGE))
            valid = self._read(vaddr + done * PAGE, k, readable, elsewhere[done:done + k])
            if valid is None:
                self._write(vaddr + done * PAGE, 0, k, record)
            else:
                for r, count in runs_of(valid, SAVE):
                    self._write(vaddr + done * PAGE, r, count, record)
            self._next_buffer()
            done += k

    def _next_buffer(self) -> None:
        """The buffer handed over, go on with a free one, unless the copy was stopped."""
        self._use(self.sink.next_buffer())
        if self.stopped:
            raise CopyStopped(f"process {self.pid}: the copy of its pages was stopped")

    def _write(self, vaddr: int, first: int, count: int, record: bool = True) -> None:
        """Write ``count`` pages of the buffer from page ``first``: target pages at
        ``vaddr + first * PAGE`` on, recorded in ``own`` (unless not ``record``)."""
        self.sink.write_behind(self.view[first * PAGE:(first + count) * PAGE])
        progress.advance(count * PAGE)
        if record:
            self.own.add(vaddr + first * PAGE, count)
            self.ctx.own_pages += count

    def _read(self, vaddr: int, npages: int, readable: bool, elsewhere: bytes
              ) -> bytes | None:
        """Target memory [vaddr, +npages) into the buffer (at most its size): by
        ``process_vm_readv`` when ``readable``, but the pages another process maps too
        (``elsewhere``), which go through /proc/PID/mem: a dump must leave the pages a
        tree shares copy-on-write shared (select.mapped_elsewhere says why).

        Returns None when every page was read. A deferred copy (the process runs)
        may find a mapping gone or changed: the pages it cannot read are skipped,
        and then the result is a 0/1 mask of the pages read.
        """
        if not readable or 1 not in elsewhere:
            return self._read_run(vaddr, 0, npages, readable)
        if 0 not in elsewhere:
            return self._read_run(vaddr, 0, npages, False)
        masks = [(first, count, self._read_run(vaddr, first, count, by_vm == 0))
                 for first, count, by_vm in _same_runs(elsewhere)]
        if all(m is None for _, _, m in masks):
            return None
        out = bytearray(b"\x01") * npages
        for first, count, m in masks:
            if m is not None:
                out[first:first + count] = m
        return bytes(out)

    def _read_run(self, vaddr: int, first: int, npages: int, by_vm: bool) -> bytes | None:
        """Pages [first, +npages) of the ones ``_read`` reads from ``vaddr`` (into the
        buffer at page ``first``), all by one method; None or the mask of those read."""
        start = vaddr + first * PAGE
        base = first * PAGE
        length = npages * PAGE
        done = 0
        mask: bytearray | None = None
        while done < length:
            try:
                if by_vm:
                    got = libc.process_vm_readv(self.pid, self.buf_addr + base + done,
                                                start + done, length - done)
                else:
                    got = os.preadv(self.mem_fd, [self.view[base + done:base + length]],
                                    start + done)
            except OSError as e:
                if not self.deferred or e.errno not in (errno.EFAULT, errno.EIO, errno.ENOMEM):
                    raise
                got = 0
            if got > 0:
                done += got
                continue
            if not self.deferred:
                raise OSError(errno.EIO, f"short read of process {self.pid} memory at "
                              f"{start + done:#x}")
            if mask is None:
                mask = bytearray(b"\x01") * npages
            mask[done // PAGE] = 0  # that page (even if partly read) is left out
            self.skipped += 1
            done = (done // PAGE + 1) * PAGE
        return None if mask is None else bytes(mask)

    def _by_digest(self, chunk: _Chunk) -> None:
        """Hash every selected page: the same digest as the parent's leaves it there, an
        all-zero anonymous page is not saved at all; the rest is written.

        Per buffer of pages: the digests in one comprehension, compared with the
        parent's in another; runs found by regex. A digest is always that of the
        bytes saved (or left in the parent), even when the process runs meanwhile.
        """
        lo, sel = chunk.lo, chunk.pages
        if self.compare == "digest" and chunk.cover:
            assert self.parent is not None and self.parent.digests is not None
            theirs = select.parent_digests(lo, len(sel), chunk.cover, self.parent.digests)
        else:
            theirs = [None] * len(sel)
        for start, count in runs_of(sel, SAVE):
            i, end = start, start + count
            while i < end:
                k = min(self.buf_pages, end - i)
                valid = self._read(lo + i * PAGE, k, chunk.readable, chunk.elsewhere[i:i + k])
                digests = self._hash(k)
                status = select.digest_status(digests, theirs[i:i + k], chunk.anon, valid)
                for r, n in runs_of(status, PARENT):
                    self.in_parent.add(lo + (i + r) * PAGE, n)
                for r, n in runs_of(status, SAVE):
                    self._write(lo + i * PAGE, r, n)
                if self._digests is not None:
                    if 0 in status:
                        digests = [dg for dg, st in zip(digests, status, strict=True) if st]
                    self._dbuf += b"".join(digests)
                    if len(self._dbuf) >= 1 << 16:
                        self._digests.write(self._dbuf)
                        self._dbuf.clear()
                self._next_buffer()
                i += k

    def _hash(self, k: int) -> list[bytes]:
        """The digests of the first ``k`` pages of the buffer (threads do not help:
        measured, hashlib's GIL release does not pay on 4 KiB pages)."""
        import hashlib  # here: only incremental dumps hash pages

        sha, view = hashlib.sha256, self.view
        return [sha(view[x:x + PAGE]).digest()[:DIGEST_SIZE] for x in range(0, k * PAGE, PAGE)]

    def finish(self) -> dict[str, Any]:
        """The fields this adds to ``mm-PID.json``: ``pagemap`` (the runs saved here),
        ``in_parent``, ``inherited`` (the parent process's), ``start_time``, ``tracking``."""
        if self._digests is not None and self._dbuf:
            self._digests.write(self._dbuf)
            self._dbuf.clear()
        nparent = self.in_parent.pages
        self.ctx.parent_pages += nparent
        if nparent and self.ctx.parent is not None:
            self.ctx.parent.used = True
        tracking: dict[str, Any] | None = None
        if self.record == "soft-dirty":
            tracking = {"method": "soft-dirty", "token": self.token}
        elif self.record == "digest":
            tracking = {"method": "digest", "file": f"digests-{self.pid}.img"}
        out = {"pagemap": self.own.runs, "in_parent": self.in_parent.runs,
               "inherited": self.inherited.runs,
               "start_time": self.started, "tracking": tracking}
        if isinstance(self.sink, WriteBehind):
            self.layout = self.sink.layout
        if self.layout is not None and self.layout.striped:
            self.images.need(stripes.FEATURE)
            out["stripes"] = self.layout.field()
        return out

    def after_pages(self) -> None:
        """Once every page of the process is read (still frozen): clear soft-dirty bits."""
        if self.record == "soft-dirty":
            assert self.token is not None
            clear_soft_dirty(self.pid, self.started, self.token)


def sink_for(pages: Any, more: Callable[[int], RawWriter] | None = None
             ) -> WriteBehind | WriteThrough:
    """How page data reaches ``pages``: a local pages file is written behind the copy
    (big data in stripes over files ``more`` makes, pages.stripes); a page server's or
    a zstd stream's writer, at once through one buffer."""
    if isinstance(pages, RawWriter):
        return WriteBehind(pages, more)
    return WriteThrough(pages, page_buffer())
