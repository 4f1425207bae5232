"""Which pages a (pre-)dump saves, which it leaves in its parent images, and, at
restore, where each page of a chain of image folders is.

A dump or pre-dump given ``--prev-images-dir`` (its *parent*) saves only the
pages that changed since the parent was taken, or that the parent does not
have; the others are recorded as ``in_parent`` (runs of ``[vaddr, npages]``)
and a restore reads them from the parent's pages file, or from its parent's,
and so on. Two ways tell a page that did not change:

* **soft-dirty** (``CONFIG_MEM_SOFT_DIRTY``): the parent cleared the
  soft-dirty bits (``echo 4 > /proc/PID/clear_refs``) once it had chosen its
  pages, still frozen; a page whose pagemap bit 55 is still clear was not
  written since.
  Only the last ``--track-mem`` dump of a process may serve as the parent:
  ckpt keeps the token of the last clear in ``/run/ckpt/soft-dirty/PID``,
  and a parent whose token is not the current one (another dump cleared the
  bits since, or failed after clearing them) gives a full dump.
* **digest** (kernels without soft-dirty): the parent recorded a SHA-256
  (first 16 bytes) of every page it has (``digests-PID.img``); the dump
  hashes every page and leaves in the parent those whose digest is the same.
  A dump reads every page while the process is frozen, but writes or sends
  only the changed ones. It does not depend on what happened in between.

A pre-dump only chooses its pages while the processes are frozen, and copies
them once they run again (``PreDumpTask``): a page written meanwhile is
soft-dirty again, or its digest is that of the bytes saved, not of what it
holds at the next dump, so the next dump saves it again either way.

Either way a page is left in the parent only if the parent has that address
in a mapping of the same identity (kind, path, shared, file offset at that
address). Shared anonymous memory is never left in a parent: a dump saves it
whole, a pre-dump not at all. ``CKPT_TRACK_MEM=soft-dirty|digest`` forces a
method (for tests); with ``soft-dirty`` on a kernel without it, ``--track-mem``
has no effect and the next dump is full.

Page data goes from the target to one reused buffer (``process_vm_readv``,
or ``/proc/PID/mem`` for unreadable mappings) and from there to the image
file or the page server: it never becomes Python objects.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import hashlib
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from . import faults
from .errors import DumpError, ImageError
from .images import ImageReader, ImageWriter
from .kernel import libc

log = logging.getLogger("ckpt.pages")

PAGE = libc.PAGE_SIZE
DIGEST_SIZE = 16
ZERO_DIGEST = hashlib.sha256(bytes(PAGE)).digest()[:DIGEST_SIZE]
CHUNK_PAGES = 1 << 16  # pagemap entries read at once (256 MiB of address space)
STATE_DIR = "/run/ckpt/soft-dirty"

# pagemap, byte 7 (bits 56-63): 0x80 present, 0x40 swapped, 0x20 file page or shared anon.
# Selection: 1 = the page's data belongs in the image.
_ANON_SEL = bytes(1 if b & 0xC0 else 0 for b in range(256))
_COW_SEL = bytes(1 if (b & 0x40) or (b & 0x80 and not b & 0x20) else 0 for b in range(256))
# An anonymous mapping showing a page that is not anonymous (the huge zero page, a special
# mapping's page): saved, never left in a parent.
_ODD = bytes(1 if b & 0x80 and b & 0x20 else 0 for b in range(256))
# pagemap byte 6 (bits 48-55): bit 55 is soft-dirty.
_DIRTY = bytes(1 if b & 0x80 else 0 for b in range(256))
# code = sel | cover<<1 | dirty<<2 | odd<<3  ->  0 not saved, 1 saved here, 2 in the parent
_STATUS = bytes((0 if not c & 1 else 2 if (c & 2 and not c & 12) else 1) for c in range(256))
_RUN = {1: re.compile(b"\x01+"), 2: re.compile(b"\x02+")}


# ---------------------------------------------------------------- kernel probes

_probed: dict[str, Any] = {}


def _pagemap_entry(addr: int) -> int:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(struct.unpack("<Q", os.pread(fd, 8, addr // PAGE * 8))[0])
    finally:
        os.close(fd)


def _probe() -> dict[str, Any]:
    """Soft-dirty support and the zero page's frame, seen on a page of ckpt's own."""
    if not _probed:
        addr = libc.anon_buffer(2 * PAGE)
        try:
            ctypes.memset(addr, 1, 1)  # written: soft-dirty if the kernel tracks it
            _probed["soft_dirty"] = bool(_pagemap_entry(addr) >> 55 & 1)
            ctypes.c_char.from_address(addr + PAGE).value  # noqa: B018  (read: the zero page)
            e = _pagemap_entry(addr + PAGE)
            pfn = e & ((1 << 55) - 1)
            _probed["zero_pfn"] = pfn if e >> 63 and pfn else None  # no PFNs without CAP_SYS_ADMIN
        finally:
            libc.syscall("munmap", addr, 2 * PAGE)
    return _probed


def soft_dirty_available() -> bool:
    return bool(_probe()["soft_dirty"]) and os.environ.get("CKPT_TRACK_MEM") != "digest"


def tracking_method() -> str | None:
    """How this ckpt tracks memory: ``soft-dirty``, ``digest`` or None (nothing works)."""
    forced = os.environ.get("CKPT_TRACK_MEM", "")
    if forced == "digest":
        return "digest"
    if soft_dirty_available():
        return "soft-dirty"
    return None if forced == "soft-dirty" else "digest"


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started (a PID reused differs)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise DumpError(f"process {pid} exited during the dump") from None
    return int(raw[raw.rindex(b")") + 2:].split()[19])


# ---------------------------------------------------------------- soft-dirty state

def _state_path(pid: int) -> str:
    return os.path.join(os.environ.get("CKPT_STATE_DIR", STATE_DIR), str(pid))


def current_token(pid: int, started: int) -> str | None:
    """The token of the last soft-dirty clear ckpt did on this process, if any."""
    try:
        with open(_state_path(pid)) as f:
            when, token = f.read().split()
    except (OSError, ValueError):
        return None
    return token if int(when) == started else None


def clear_soft_dirty(pid: int, started: int, token: str) -> bool:
    """Clear the soft-dirty bits of a frozen process and remember ``token`` as the last clear."""
    path = _state_path(pid)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.unlink(path)  # first: a failure below leaves no token, so no stale parent
        except FileNotFoundError:
            pass
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("4")
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{started} {token}\n")
        os.rename(tmp, path)
    except OSError as e:
        log.warning("process %d: cannot clear its soft-dirty bits (%s); the next dump will "
                    "save every page", pid, e)
        return False
    return True


# ---------------------------------------------------------------- the parent (dump side)

def _merge_runs(*lists: list[list[int]]) -> list[tuple[int, int]]:
    """Runs ``[vaddr, npages]`` of several disjoint lists, as sorted, merged [start, end)."""
    spans = sorted((int(a), int(a) + int(n) * PAGE) for runs in lists for a, n in runs)
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            if s < out[-1][1]:
                raise ValueError(f"page runs overlap at {s:#x}")
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two mapping entries (``mm-PID.json`` vmas) show the same memory at an
    address both cover: same kind, path, sharing, and file offset at that address."""
    if (a["kind"], a["path"], a["shared"]) != (b["kind"], b["path"], b["shared"]):
        return False
    return a["kind"] != "file" or a["offset"] - a["start"] == b["offset"] - b["start"]


class ParentMm:
    """What the parent images have of one process: its mappings and pages (own or in
    its own parent, in address order), and how it tracked memory."""

    def __init__(self, mm: dict[str, Any], digests: bytes | None, where: str):
        self.where = where
        self.start_time = mm.get("start_time")
        self.vmas = sorted(mm["vmas"], key=lambda v: v["start"])
        self.vma_starts = [v["start"] for v in self.vmas]
        try:
            spans = _merge_runs(mm.get("pagemap", []), mm.get("in_parent", []))
        except ValueError as e:
            raise ImageError(f"{where}: {e}") from None
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]
        self.index: list[int] = []
        n = 0
        for s, e in spans:
            self.index.append(n)
            n += (e - s) // PAGE
        self.npages = n
        tracking = mm.get("tracking") or {}
        self.method: str | None = tracking.get("method")
        self.token: str | None = tracking.get("token")
        self.digests = digests
        if self.method == "digest" and (digests is None or len(digests) != n * DIGEST_SIZE):
            raise ImageError(f"{where}: {n} pages but "
                             f"{0 if digests is None else len(digests) // DIGEST_SIZE} digests")

    def cover(self, entry: dict[str, Any], lo: int, hi: int) -> list[tuple[int, int, int]]:
        """``(start, end, page index)`` of what the parent has in [lo, hi) in mappings of
        the same identity as ``entry``; the index counts pages in address order."""
        out: list[tuple[int, int, int]] = []
        i = max(0, bisect.bisect_right(self.vma_starts, lo) - 1)
        while i < len(self.vmas) and self.vmas[i]["start"] < hi:
            pv = self.vmas[i]
            i += 1
            a, b = max(lo, pv["start"]), min(hi, pv["end"])
            if a >= b or not same_identity(pv, entry):
                continue
            j = max(0, bisect.bisect_right(self.starts, a) - 1)
            while j < len(self.starts) and self.starts[j] < b:
                x, y = max(a, self.starts[j]), min(b, self.ends[j])
                if x < y:
                    out.append((x, y, self.index[j] + (x - self.starts[j]) // PAGE))
                j += 1
        return out


class ParentImages:
    """The images given with ``--prev-images-dir`` (relative to the dump's folder)."""

    def __init__(self, images_dir: str, rel: str):
        self.rel = rel
        self.dir = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(images_dir, rel))
        if os.path.realpath(self.dir) == os.path.realpath(images_dir):
            raise DumpError(f"--prev-images-dir {rel} is the images folder itself")
        if not os.path.isdir(self.dir):
            raise DumpError(f"--prev-images-dir: {self.dir} does not exist")
        self.reader = ImageReader(self.dir)  # format, version and the inventory's checksum
        self.crc32 = self.reader.crc32
        self.used = False
        self.tasks: dict[int, ParentMm] = {}
        for t in self.reader.inventory.get("tasks", []):
            name = f"mm-{t['pid']}.json"
            if t.get("zombie") or name not in self.reader.files:
                continue
            mm = self.reader.load_json(name)
            tracking = mm.get("tracking") or {}
            digests = None
            if tracking.get("method") == "digest":
                digests = self._load_raw(tracking.get("file", ""))
            self.tasks[int(t["pid"])] = ParentMm(mm, digests, self.reader.path(name))

    def _load_raw(self, name: str) -> bytes:
        """A small raw file of the parent (digests), checked against its inventory."""
        meta = self.reader.files.get(name)
        path = self.reader.path(name)
        if meta is None:
            raise ImageError(f"{path}: not listed in the inventory")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageError(f"{path}: missing from the image folder") from None
        if len(data) != meta["size"] or zlib.crc32(data) != meta["crc32"]:
            raise ImageError(f"{path}: corrupted (size or checksum differs from the inventory)")
        return data

    def task(self, pid: int, started: int) -> tuple[ParentMm | None, str]:
        """The parent's record of process ``pid``, or None and why it cannot be used."""
        p = self.tasks.get(pid)
        if p is None:
            return None, f"it is not in the parent images {self.dir} (a new process)"
        if p.start_time != started:
            return None, f"the parent images {self.dir} hold another process of that PID"
        if p.method is None:
            return None, f"the parent images {self.dir} were taken without --track-mem"
        if p.method == "soft-dirty":
            if not soft_dirty_available():
                return None, "soft-dirty tracking is not available (CONFIG_MEM_SOFT_DIRTY)"
            if p.token is None or current_token(pid, started) != p.token:
                return None, (f"its soft-dirty bits were cleared again after {self.dir} was "
                              "taken (by another dump, or one that failed)")
        elif p.method != "digest":
            return None, f"the parent images {self.dir} use an unknown tracking {p.method!r}"
        return p, ""


# ---------------------------------------------------------------- saving pages (dump side)

class DumpMemory:
    """The memory side of one dump or pre-dump: its parent, and how it tracks memory."""

    def __init__(self, images_dir: str, prev: str | None, track_mem: bool, will_run: bool):
        self.parent = ParentImages(images_dir, prev) if prev else None
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

    @classmethod
    def plain(cls) -> DumpMemory:
        """A dump that neither has a parent nor tracks memory."""
        return cls("", None, track_mem=False, will_run=False)

    def task(self, pid: int) -> TaskPages:
        started = start_time(pid)
        parent: ParentMm | None = None
        if self.parent is not None:
            parent, why = self.parent.task(pid, started)
            if parent is None:
                log.warning("process %d: %s; saving every page (full dump)", pid, why)
            else:
                log.info("process %d: pages unchanged since %s are left there (%s)", pid,
                         self.parent.dir, parent.method)
        return TaskPages(self, pid, started, parent)

    def parent_link(self) -> dict[str, Any] | None:
        """The inventory's ``parent``: only when some page was left in the parent."""
        if self.parent is None:
            return None
        if not self.parent.used:
            log.warning("no page was left in %s: these images do not depend on it",
                        self.parent.dir)
            return None
        return {"dir": self.parent.rel, "crc32": self.parent.crc32}


class _Runs:
    """A list of ``[vaddr, npages]`` runs, merging a run that continues the last one."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []

    def add(self, vaddr: int, npages: int) -> None:
        if self.runs and self.runs[-1][0] + self.runs[-1][1] * PAGE == vaddr:
            self.runs[-1][1] += npages
        else:
            self.runs.append([vaddr, npages])


class TaskPages:
    """Saves the pages of one process: selection, comparison with the parent, writing."""

    def __init__(self, ctx: DumpMemory, pid: int, started: int, parent: ParentMm | None):
        self.ctx = ctx
        self.pid = pid
        self.started = started
        self.parent = parent
        self.compare = parent.method if parent is not None else None
        self.record = ctx.record
        self.token = os.urandom(8).hex() if self.record == "soft-dirty" else None
        self.zero_pfn = _probe()["zero_pfn"]
        self.own = _Runs()
        self.in_parent = _Runs()
        self._digests: Any = None  # the digests file's writer
        self.deferred = False  # copy after the process runs again (a pre-dump)
        self.skipped = 0  # pages a deferred copy could not read (their mapping changed)
        self._jobs: list[tuple[Any, ...]] = []
        self._dbuf = bytearray()

    def begin(self, images: ImageWriter, pagemap_fd: int, mem_fd: int, pages: Any,
              buf_addr: int, buf_view: memoryview) -> None:
        """Where to read from and write to: the pagemap and /proc/PID/mem fds, the
        pages file's writer, and the reused buffer."""
        self.pagemap_fd = pagemap_fd
        self.mem_fd = mem_fd
        self.pages = pages
        self.buf_addr = buf_addr
        self.view = buf_view
        self.buf_pages = len(buf_view) // PAGE
        if self.record == "digest":
            self._digests = images.raw(f"digests-{self.pid}.img")

    # -- selection

    def _pagemap(self, start: int, npages: int) -> bytes:
        raw = os.pread(self.pagemap_fd, npages * 8, start // PAGE * 8)
        if len(raw) != npages * 8:
            raise OSError(errno.EIO, f"short read of process {self.pid} pagemap at {start:#x}")
        return raw

    def _selected(self, raw: bytes, kind: str) -> bytearray:
        """1 for each page whose data belongs in the image, by the pagemap alone.

        ``anon``: present or swapped, but not the zero page (a page never written
        reads as zeros again from a fresh mapping). Private ``file``: the process's
        own copies (present anonymous pages, or swapped). Other kinds: as ``file``.
        """
        sel = bytearray(raw[7::8].translate(_ANON_SEL if kind == "anon" else _COW_SEL))
        if kind == "anon" and self.zero_pfn is not None:
            key = struct.pack("<Q", self.zero_pfn)[:6]
            high = self.zero_pfn >> 48
            pos = raw.find(key)
            while pos >= 0:
                if pos % 8 == 0 and raw[pos + 6] & 0x7F == high and raw[pos + 7] & 0xE0 == 0x80:
                    sel[pos // 8] = 0
                pos = raw.find(key, pos + 1)
        return sel

    def save_vma(self, entry: dict[str, Any], readable: bool) -> None:
        """Save the pages of one mapping (an ``mm-PID.json`` vma entry), in address order.

        Which pages is decided now, from the pagemap (the process is frozen); they
        are copied now too, or, when ``deferred``, by ``copy_deferred`` once the
        process runs again (a pre-dump).
        """
        kind = entry["kind"]
        trackable = kind == "anon" or (kind == "file" and not entry["shared"])
        start, end = entry["start"], entry["end"]
        for lo in range(start, end, CHUNK_PAGES * PAGE):
            hi = min(end, lo + CHUNK_PAGES * PAGE)
            n = (hi - lo) // PAGE
            raw = self._pagemap(lo, n)
            sel = self._selected(raw, kind)
            if 1 not in sel:
                continue
            cover = (self.parent.cover(entry, lo, hi)
                     if self.parent is not None and trackable else [])
            if self.compare == "digest" or self.record == "digest":
                job = ("digest", lo, sel, cover, kind == "anon", readable)
            else:
                if cover and self.compare == "soft-dirty":
                    status = split_soft_dirty(raw, sel, _cover_mask(lo, n, cover),
                                              kind == "anon")
                else:
                    status = bytes(sel)
                job = ("copy", lo, status, readable)
            if self.deferred:
                self._jobs.append(job)
            else:
                self._run(job)

    def copy_deferred(self) -> None:
        """Copy what ``save_vma`` chose while the process was frozen."""
        for job in self._jobs:
            self._run(job)
        self._jobs.clear()
        if self.skipped:
            log.info("process %d: %d pages were unmapped before they could be copied; "
                     "left out", self.pid, self.skipped)

    def _run(self, job: tuple[Any, ...]) -> None:
        if job[0] == "digest":
            self._by_digest(*job[1:])
            return
        _, lo, status, readable = job
        for m in _RUN[2].finditer(status):
            self.in_parent.add(lo + m.start() * PAGE, m.end() - m.start())
        for m in _RUN[1].finditer(status):
            vaddr, npages = lo + m.start() * PAGE, m.end() - m.start()
            done = 0
            while done < npages:
                k = min(self.buf_pages, npages - done)
                valid = self._read(vaddr + done * PAGE, k, readable)
                if valid is None:
                    self._write(vaddr + done * PAGE, 0, k)
                else:
                    for r in _RUN[1].finditer(valid):
                        self._write(vaddr + done * PAGE, r.start(), r.end() - r.start())
                done += k

    def _write(self, vaddr: int, first: int, count: int) -> None:
        """Write ``count`` pages of the buffer from page ``first``: target pages at
        ``vaddr + first * PAGE`` on."""
        self.pages.write(self.view[first * PAGE:(first + count) * PAGE])
        first_run = not self.own.runs
        self.own.add(vaddr + first * PAGE, count)
        self.ctx.own_pages += count
        if first_run and not self.deferred:
            faults.point("dump.task.pages")

    # -- reading and writing

    def _read(self, vaddr: int, npages: int, readable: bool) -> bytes | None:
        """Target memory [vaddr, +npages) into the buffer (at most its size).

        Returns None when every page was read. A deferred copy (the process runs)
        may find a mapping gone or changed: the pages it cannot read are skipped,
        and then the result is a 0/1 mask of the pages read.
        """
        length = npages * PAGE
        done = 0
        mask: bytearray | None = None
        while done < length:
            try:
                if readable:
                    got = libc.process_vm_readv(self.pid, self.buf_addr + done, vaddr + done,
                                                length - done)
                else:
                    got = os.preadv(self.mem_fd, [self.view[done:length]], vaddr + done)
            except OSError as e:
                if not self.deferred or e.errno not in (errno.EFAULT, errno.EIO, errno.ENOMEM):
                    raise
                got = 0
            if got > 0:
                done += got
                continue
            if not self.deferred:
                raise OSError(errno.EIO, f"short read of process {self.pid} memory at "
                              f"{vaddr + done:#x}")
            if mask is None:
                mask = bytearray(b"\x01") * npages
            mask[done // PAGE] = 0  # that page (even if partly read) is left out
            self.skipped += 1
            done = (done // PAGE + 1) * PAGE
        return None if mask is None else bytes(mask)

    def _by_digest(self, lo: int, sel: bytearray, cover: list[tuple[int, int, int]],
                   anon: bool, readable: bool) -> None:
        """Hash every selected page: the same digest as the parent's leaves it there, an
        all-zero anonymous page is not saved at all; the rest is written.

        Per buffer of pages: the digests in one comprehension, compared with the
        parent's in another; runs found by regex. A digest is always that of the
        bytes saved (or left in the parent), even when the process runs meanwhile.
        """
        n = len(sel)
        theirs: list[bytes | None] = [None] * n
        if self.compare == "digest" and cover:
            assert self.parent is not None and self.parent.digests is not None
            d = self.parent.digests
            for a, b, idx in cover:
                first, count = (a - lo) // PAGE, (b - a) // PAGE
                theirs[first:first + count] = [
                    d[x:x + DIGEST_SIZE]
                    for x in range(idx * DIGEST_SIZE, (idx + count) * DIGEST_SIZE, DIGEST_SIZE)]
        zero = ZERO_DIGEST if anon else None
        for m in _RUN[1].finditer(sel):
            i = m.start()
            while i < m.end():
                k = min(self.buf_pages, m.end() - i)
                valid = self._read(lo + i * PAGE, k, readable)
                digests = self._hash(k)
                status = bytes([0 if dg == zero else 2 if dg == t else 1
                                for dg, t in zip(digests, theirs[i:i + k], strict=True)])
                if valid is not None:
                    status = bytes(st if ok else 0 for st, ok in zip(status, valid, strict=True))
                for r in _RUN[2].finditer(status):
                    self.in_parent.add(lo + (i + r.start()) * PAGE, r.end() - r.start())
                for r in _RUN[1].finditer(status):
                    self._write(lo + i * PAGE, r.start(), r.end() - r.start())
                if self._digests is not None:
                    if 0 in status:
                        digests = [dg for dg, st in zip(digests, status, strict=True) if st]
                    self._dbuf += b"".join(digests)
                    if len(self._dbuf) >= 1 << 16:
                        self._digests.write(self._dbuf)
                        self._dbuf.clear()
                i += k

    def _hash(self, k: int) -> list[bytes]:
        """The digests of the first ``k`` pages of the buffer (threads do not help:
        measured, hashlib's GIL release does not pay on 4 KiB pages)."""
        sha, view = hashlib.sha256, self.view
        return [sha(view[x:x + PAGE]).digest()[:DIGEST_SIZE] for x in range(0, k * PAGE, PAGE)]

    def finish(self) -> dict[str, Any]:
        """The fields this adds to ``mm-PID.json``."""
        if self._digests is not None and self._dbuf:
            self._digests.write(self._dbuf)
            self._dbuf.clear()
        nparent = sum(n for _, n in self.in_parent.runs)
        self.ctx.parent_pages += nparent
        if nparent and self.ctx.parent is not None:
            self.ctx.parent.used = True
        tracking: dict[str, Any] | None = None
        if self.record == "soft-dirty":
            tracking = {"method": "soft-dirty", "token": self.token}
        elif self.record == "digest":
            tracking = {"method": "digest", "file": f"digests-{self.pid}.img"}
        return {"in_parent": self.in_parent.runs, "start_time": self.started,
                "tracking": tracking}

    def after_pages(self) -> None:
        """Once every page of the process is read (still frozen): clear soft-dirty bits."""
        if self.record == "soft-dirty":
            assert self.token is not None
            clear_soft_dirty(self.pid, self.started, self.token)


def _cover_mask(lo: int, n: int, cover: list[tuple[int, int, int]]) -> bytearray:
    mask = bytearray(n)
    for a, b, _idx in cover:
        mask[(a - lo) // PAGE:(b - lo) // PAGE] = b"\x01" * ((b - a) // PAGE)
    return mask


def split_soft_dirty(raw: bytes, sel: bytes | bytearray, cover: bytes | bytearray,
                     anon: bool) -> bytes:
    """Per page: 0 not saved, 1 saved here, 2 left in the parent.

    ``raw`` is the pagemap (8 bytes a page), ``sel`` the selected pages (0/1),
    ``cover`` (0/1) what the parent has in a mapping of the same identity. A page
    goes to the parent when it is selected, covered, not soft-dirty (bit 55) and,
    in an anonymous mapping, not a non-anonymous page (the huge zero page).
    The four masks are combined as big integers, one byte a page: no Python loop.
    """
    n = len(sel)
    code = int.from_bytes(sel, "little")
    code |= int.from_bytes(cover, "little") << 1
    code |= int.from_bytes(raw[6::8].translate(_DIRTY), "little") << 2
    if anon:
        code |= int.from_bytes(raw[7::8].translate(_ODD), "little") << 3
    return code.to_bytes(n, "little").translate(_STATUS)


# ---------------------------------------------------------------- pre-dump

class PreDumpTask:
    """One process of a pre-dump: ``plan`` while it is frozen, ``copy`` once it runs.

    Mappings are listed as a dump lists them (what identity needs) and the pages
    to save chosen from the pagemap while the process is frozen; soft-dirty bits
    are cleared then too (``TaskPages.after_pages``). The pages are copied after
    the process is let go: a page written meanwhile is soft-dirty again, or its
    digest is that of the bytes saved, so the next dump saves it again either
    way. Shared memory is not saved: the final dump saves it whole.
    """

    def __init__(self, pid: int, tp: TaskPages):
        self.pid = pid
        self.tp = tp
        self.vmas: list[dict[str, Any]] = []
        self.fds: list[int] = []

    def plan(self, vmas: list[Any], classify: Any, prot: Any, images: ImageWriter,
             buf_addr: int, buf_view: memoryview) -> None:
        pid = self.pid
        pages = images.raw(f"pages-{pid}.img")
        self.fds.append(os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC))
        self.fds.append(os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC))
        self.tp.begin(images, self.fds[0], self.fds[1], pages, buf_addr, buf_view)
        self.tp.deferred = True
        for v in vmas:
            kind = classify(v)
            if kind == "skip":
                continue
            entry = {"start": v.start, "end": v.end, "prot": prot(v.perms), "shared": v.shared,
                     "kind": kind, "path": v.path, "offset": v.offset, "flags": v.flags}
            self.vmas.append(entry)
            if kind in ("vdso", "shmem") or v.shared:
                continue
            self.tp.save_vma(entry, "r" in v.perms)

    def copy(self) -> dict[str, Any]:
        """Copy the pages; return ``mm-PID.json``'s content."""
        try:
            self.tp.copy_deferred()
        finally:
            self.close()
        return {"vmas": self.vmas, "pagemap": self.tp.own.runs, "shmem": [],
                "pages_file": f"pages-{self.pid}.img", **self.tp.finish()}

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


# ---------------------------------------------------------------- the chain (restore side)

@dataclass
class Segment:
    """Pages [start, end) of a process, at ``offset`` in the raw file ``path``."""

    start: int
    end: int
    path: str
    offset: int


class Chain:
    """An image folder and its parents, each checked before anything is restored."""

    MAX_DEPTH = 256

    def __init__(self, images: ImageReader):
        self.readers = [images]
        seen = {os.path.realpath(images.dir)}
        cur = images
        while True:
            link = cur.inventory.get("parent")
            if not link:
                break
            rel = str(link.get("dir", ""))
            path = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(cur.dir, rel))
            what = f"the parent images of {cur.dir}"
            if os.path.realpath(path) in seen or len(self.readers) > self.MAX_DEPTH:
                raise ImageError(f"{cur.path('inventory.json')}: the chain of parent images "
                                 f"loops back to {path}")
            seen.add(os.path.realpath(path))
            if not os.path.isdir(path):
                raise ImageError(f"{path}: {what} are missing")
            try:
                parent = ImageReader(path)
            except ImageError as e:
                raise ImageError(f"{e} ({what})") from None
            if parent.crc32 != link.get("crc32"):
                raise ImageError(
                    f"{parent.path('inventory.json')}: {what} changed since they were "
                    f"dumped (inventory checksum {parent.crc32}, {cur.dir} was made on "
                    f"{link.get('crc32')})")
            try:
                parent.verify()
            except ImageError as e:
                raise ImageError(f"{e} ({what})") from None
            self.readers.append(parent)
            cur = parent

    @property
    def depth(self) -> int:
        return len(self.readers) - 1

    def segments(self, pid: int, mm: dict[str, Any]) -> list[Segment] | None:
        """Where each saved page of ``pid`` is, in address order; None when every page
        is in the folder's own pages file (no ``in_parent``)."""
        if not mm.get("in_parent"):
            return None
        return _merge_segments(self._resolve(0, pid, mm))

    def _resolve(self, level: int, pid: int, mm: dict[str, Any]) -> list[Segment]:
        reader = self.readers[level]
        path = os.path.abspath(reader.path(mm["pages_file"]))
        segs: list[Segment] = []
        off = 0
        for vaddr, npages in mm["pagemap"]:
            segs.append(Segment(vaddr, vaddr + npages * PAGE, path, off))
            off += npages * PAGE
        wanted = mm.get("in_parent") or []
        if wanted:
            name = f"mm-{pid}.json"
            if level + 1 >= len(self.readers):
                raise ImageError(f"{reader.path(name)}: pages in the parent images, but "
                                 f"{reader.dir} has no parent")
            parent = self.readers[level + 1]
            if name not in parent.files:
                raise ImageError(f"{reader.path(name)}: pages in the parent images, but "
                                 f"{parent.dir} has no process {pid}")
            theirs = self._resolve(level + 1, pid, parent.load_json(name))
            segs += _take(wanted, theirs, reader.path(name), parent.dir)
        segs.sort(key=lambda s: s.start)
        return segs


def _take(wanted: list[list[int]], theirs: list[Segment], where: str,
          parent_dir: str) -> list[Segment]:
    """The parts of ``theirs`` (sorted) that the runs ``wanted`` (sorted) ask for."""
    out: list[Segment] = []
    starts = [s.start for s in theirs]
    for vaddr, npages in wanted:
        a, b = vaddr, vaddr + npages * PAGE
        j = max(0, bisect.bisect_right(starts, a) - 1)
        pos = a
        while pos < b:
            if j >= len(theirs) or theirs[j].start > pos:
                raise ImageError(f"{where}: page {pos:#x} is said to be in the parent images, "
                                 f"but {parent_dir} does not have it")
            s = theirs[j]
            if s.end <= pos:
                j += 1
                continue
            e = min(b, s.end)
            out.append(Segment(pos, e, s.path, s.offset + pos - s.start))
            pos = e
            j += 1
    return out


def _merge_segments(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        last = out[-1] if out else None
        if (last is not None and last.end == s.start and last.path == s.path
                and last.offset + (last.end - last.start) == s.offset):
            last.end = s.end
        else:
            out.append(Segment(s.start, s.end, s.path, s.offset))
    return out
