"""Memory: the mappings of a process, the pages that exist in them, and mm fields.

Dump: every mapping from /proc/PID/smaps; pagemap says which pages exist.
Which pages, and how they are copied (process_vm_readv, or pread on
/proc/PID/mem, into one reused buffer and straight to ``pages-PID.img``: they
never become Python objects), is the pages package's business, a layer below.
A pre-dump lists the mappings the same way, and copies the pages chosen while
the process was frozen once it runs again (``PreDumpTask``).

Restore: everything of the fresh child is unmapped but the vDSO trio and the
helper page, the vDSO is moved to its saved place, each mapping is recreated,
and ckpt writes its pages into it (pages.fill: each pages file read once, in
order, checksummed on the way, ``process_vm_writev``: no injected call). A process
cloned from its restored parent keeps the parts of its parent's memory it shared
at dump (pages.forked), copy-on-write: only what differs is changed.

A shared anonymous object (MAP_SHARED|MAP_ANONYMOUS, inherited across fork,
split by mprotect or munmap into mappings at different offsets) is saved
once, whole: its size and data by offset in the object, read from the object
itself through /proc/PID/map_files. At restore it is created once with that
size, and every mapping of it, in every process, maps it at its own offset.

Mappings of deleted files and of memfds map *ghost* objects (ghost.py): the
file is saved once per dump (whoever maps or holds it) and made once per
restore; every mapping, in every process, maps that one object again (a
private mapping's own pages are in the pages file, as for other files).
A mapped name removed while the file has other links (a named POSIX semaphore:
sem_open links the file it made under the name and removes its temporary name) is
saved as a link, by another name of the file (``deleted``: the removed one); the
restore maps it through the removed name made again for the moment, as an fd.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from .. import progress
from ..errors import DumpError, RestoreError, UnsupportedError
from ..images import ImageWriter
from ..kernel import interrupts, libc, procfs, treeroot, vdso
from ..kernel.inject import Injector
from ..log import logger
from ..pages import compressed, forked
from ..pages.buffer import BUF_SIZE, page_buffer
from ..pages.runs import merge_runs
from ..pages.stripes import Stripes
from ..schema import (
    BOOL,
    NAT,
    PATH,
    PID,
    S64,
    U64,
    U64_MAX,
    Bad,
    Hex,
    Int,
    List,
    Null,
    Obj,
    Opt,
    Str,
    Tup,
    refuse,
)
from . import aio, ghost, nspids, numa

# locks.py and sysv.py (with kernel/sysvipc.py) are imported where a tree has file locks or
# SysV segments (the dump imports them anyway): a restore of most trees needs neither.

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from typing import Any

    from ..pages import fill  # the restore's page reading: a dump does not import it
    from ..pages.chain import Segment
    from ..pages.fill import PagesFile
    from ..pages.lazy import Handover
    from ..pages.save import TaskPages  # the dump's: a restore does not import it

    Lend = Callable[[int], int]  # ckpt's fd -> its number in the target

_PATHS_ROOM = 16 << 10  # scratch bytes for the paths of files opened in one round trip

log = logger("ckpt.mem")

TASK_SIZE = libc.TASK_SIZE
PAGE = libc.PAGE_SIZE


# VmFlags that are restored with madvise, and their MADV_ values: DONTFORK, DONTDUMP,
# WIPEONFORK, HUGEPAGE, NOHUGEPAGE, MERGEABLE, SEQUENTIAL, RANDOM (DOFORK, DODUMP,
# KEEPONFORK, NORMAL: the defaults).
_MADVISE = {"dc": 10, "dd": 16, "wf": 18, "hg": 14, "nh": 15, "mg": 12, "sr": 2, "rr": 1}
MADV_GUARD_INSTALL = 102
MLOCK_ONFAULT = 1
MCL_FUTURE, MCL_ONFAULT = 2, 4
# VmFlags of a range registered with a userfaultfd (missing, write-protect, minor).
_USERFAULT = ("um", "uw", "ui")
MADV_DONTNEED = 4

# ---------------------------------------------------------------- what mm-PID.json holds
# (docs/image-format.md); ``check_image`` says how the fields go together.
KINDS = ("vdso", "anon", "file", "shmem", "aio", "sysv")
ADDR = Int(0, TASK_SIZE, PAGE)  # page aligned, in user space
RUN = Tup(ADDR, Int(1, TASK_SIZE // PAGE))  # [address, pages]
VMA = Obj(
    start=ADDR, end=ADDR, prot=Int(0, 7), shared=BOOL, kind=Str(choices=KINDS),
    path=Str(), offset=Int(0, U64_MAX, PAGE), flags=List(Str(2), max=64),
    guards=Opt(List(RUN)),
    aio=Opt(aio.SCHEMA),
    shmid=Opt(Int(0, (1 << 31) - 1)),
    file=Opt(Obj(size=NAT, mtime_ns=S64)),
    ghost=Opt(ghost.SCHEMA),
    deleted=Opt(PATH),  # a file mapped through a removed name of it (ghost.as_deleted)
    shmem_id=Opt(U64), shmem_owner=Opt(PID),
    mempolicy=Opt(numa.SCHEMA),  # its own NUMA policy (mbind)
)
SHMEM = Obj(id=U64, size=Int(0, 1 << 56, PAGE), pages_off=NAT,
            runs=List(Tup(Int(0, 1 << 56, PAGE), Int(1, 1 << 44))))
TRACKING = Obj(method=Str(choices=("soft-dirty", "digest")),
               token=Opt(Str(64, pattern="[0-9a-f]+")),
               file=Opt(Str(pattern=r"digests-[0-9]+\.img")))
# A pre-dump's: the mappings and the pages only.
PAGES_ONLY = Obj(
    vmas=List(VMA, max=1 << 20), pagemap=List(RUN), in_parent=List(RUN),
    inherited=Opt(List(RUN)),  # pages kept from the parent process (pages.forked)
    start_time=Opt(NAT), tracking=Null(TRACKING), pages_file=Str(pattern=r"pages-[0-9]+\.img"),
    shmem=List(SHMEM),
    # its page data in stripes over several files (pages.stripes), checked by pages_size
    stripes=Opt(Obj({"files": List(Str(pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*"), max=16),
                     "from": NAT, "size": Int(1, 1 << 40)})),
)
_MM_ADDR = Int(0, TASK_SIZE)
SCHEMA = PAGES_ONLY.extend(
    exe=PATH, exe_ghost=Opt(ghost.SCHEMA), auxv=Hex(4096),
    brk=_MM_ADDR, start_code=_MM_ADDR, end_code=_MM_ADDR, start_data=_MM_ADDR,
    end_data=_MM_ADDR, start_brk=_MM_ADDR, start_stack=_MM_ADDR, arg_start=_MM_ADDR,
    arg_end=_MM_ADDR, env_start=_MM_ADDR, env_end=_MM_ADDR,
    pages_compression=Opt(Str(choices=(compressed.METHOD,))),  # the pages file's (--compress)
    lock_future=Opt(Int(MCL_FUTURE, MCL_FUTURE | MCL_ONFAULT)),  # mlockall(MCL_FUTURE)
)
# Fields only mappings of some kinds have, and must.
_KIND_FIELDS = {"aio": {"aio"}, "sysv": {"shmid"}, "shmem": {"shmem_id", "shmem_owner"}}
_ANY_KIND_FIELDS = {"guards"}


def _prot(perms: str) -> int:
    return ((libc.PROT_READ if perms[0] == "r" else 0)
            | (libc.PROT_WRITE if perms[1] == "w" else 0)
            | (libc.PROT_EXEC if perms[2] == "x" else 0))


def classify(v: procfs.Vma, pid: int) -> str:
    """The kind of a mapping: vdso, anon, file, shmem; raise for what ckpt cannot save."""
    if v.path in vdso.NAMES:
        return "vdso"
    if v.path == "[vsyscall]":
        return "skip"
    where = f"process {pid} mapping {v.start:#x}-{v.end:#x} {v.path or '(anonymous)'}"
    if v.path.startswith("anon_inode:[io_uring]"):
        raise UnsupportedError(f"{where}: the rings of an io_uring instance; io_uring is "
                               "not supported")
    if any(f in v.flags for f in _USERFAULT):
        raise UnsupportedError(f"{where}: registered with a userfaultfd; userfaultfd is "
                               "not supported")
    if "ht" in v.flags:
        raise UnsupportedError(f"{where}: hugetlbfs mappings are not supported yet")
    if "io" in v.flags or "pf" in v.flags:
        raise UnsupportedError(f"{where}: device (I/O or PFN) mappings are not supported")
    if ghost.is_secretmem(v.path, int(v.dev.split(":")[0], 16)):
        raise UnsupportedError(f"{where}: {ghost.SECRETMEM_REFUSAL}")
    if v.shared and (v.path == "/dev/zero (deleted)" or v.path == "/dev/zero" and v.inode == 0):
        return "shmem"
    if v.shared:
        from . import sysv
        if sysv.is_attachment(v.path):
            return "sysv"
    if not v.path or v.path.startswith("["):
        return "anon"
    if aio.is_ring(v.path) and v.shared:
        return "aio"
    if v.path.startswith("/"):
        return "file"
    if v.path.startswith("socket:["):
        raise UnsupportedError(f"{where}: memory of a socket (a packet socket's ring, "
                               "PACKET_RX_RING or PACKET_TX_RING, as tcpdump maps it; an "
                               "AF_XDP ring; TCP zero-copy receive); not supported")
    raise UnsupportedError(f"{where}: a kind of mapping ckpt does not know; not supported")


def _entry(v: procfs.Vma, kind: str) -> dict[str, Any]:
    """The ``mm-PID.json`` entry of a mapping of that kind (what identity needs)."""
    return {"start": v.start, "end": v.end, "prot": _prot(v.perms), "shared": v.shared,
            "kind": kind, "path": v.path, "offset": v.offset, "flags": v.flags}


def _file_id(path: str) -> dict[str, int]:
    st = treeroot.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _shmem_data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """Page-aligned (start, end) of the data of a shared anonymous object, merged."""
    ranges: list[tuple[int, int]] = []
    for off, length in libc.data_ranges(fd, size):
        start = off & ~(PAGE - 1)
        end = min((off + length + PAGE - 1) & ~(PAGE - 1), size)
        if ranges and start <= ranges[-1][1]:
            start = ranges.pop()[0]
        ranges.append((start, end))
    return ranges


def _dump_shmem(fd: int, ino: int, size: int, pages: Any) -> dict[str, Any]:
    """Save the data of one whole shared anonymous object, by its file offsets.

    ``fd`` is the object itself (opened through /proc/PID/map_files), so every
    page of it is read, whichever mapping (of whichever process) shows it, or
    none: its size is the object's (set by the mmap that created it), not that
    of one of its mappings.
    """
    size = (size + PAGE - 1) & ~(PAGE - 1)
    obj: dict[str, Any] = {"id": ino, "size": size, "pages_off": pages.size, "runs": []}
    buf = page_buffer()
    for s, e in _shmem_data_ranges(fd, size):
        obj["runs"].append([s, (e - s) // PAGE])
        done = s
        while done < e:
            got = os.preadv(fd, [buf.view[:min(BUF_SIZE, e - done)]], done)
            if got <= 0:
                raise OSError(5, f"short read of shared memory object {ino} at {done:#x}")
            pages.write(buf.view[:got])
            done += got
    return obj


class MemoryDump:
    """The mappings and pages of one frozen process, saved in two steps, so that the
    pages can be copied while the dump goes on with the process's other state.

    Created: every mapping is described (what identity needs; a deleted file's
    content saved), with ``vmas`` read before any injection. ``start``: the pages are
    copied by a thread of its own (system calls that run without the interpreter's
    lock, alongside the injected calls that read the task's state, which are mostly
    waits). ``finish``: wait for the copy, then what needs an injected call (``brk``).
    Without ``start``, ``finish`` copies in the caller's thread. ``cancel`` stops a
    copy under way (the dump failed elsewhere).

    ``compress``: the pages file is a zstd stream (pages/compressed.py).

    Which pages are saved, and which are left in the parent images of an
    incremental dump, is ``track``'s business (the pages package; by default:
    every page that exists, no parent).

    ``shmem_seen`` (shared by every task of one dump) maps the inode of each
    shared anonymous object to the task that saved it: the first to map it
    saves its size and all its data (``shmem``, by offset in the object),
    every mapping of it, in any task, only refers to it by ``shmem_id`` and
    maps it at its own ``offset``.
    """

    def __init__(self, pid: int, vmas: list[procfs.Vma], images: ImageWriter,
                 stat: procfs.Stat, shmem_seen: dict[int, int] | None = None,
                 track: TaskPages | None = None, compress: bool = False):
        self.pid = pid
        self.images = images
        self.stat = stat
        self.compress = compress
        self.vmas = vmas
        self.out_vmas: list[dict[str, Any]] = []
        # the size of its locked mappings (``_lock_future``)
        self.locked_kb = sum(v.end - v.start for v in vmas if "lo" in v.flags) // 1024
        self.owned: list[tuple[int, int, int]] = []  # (fd, inode, size) of objects saved here
        self.to_copy: list[tuple[dict[str, Any], bool]] = []  # (entry, readable)
        self.objects: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        pages: Any = images.raw(f"pages-{pid}.img")
        if compress:
            pages = compressed.ZstdWriter(pages)
            images.need(compressed.FEATURE)
        self.pages = pages
        if track is None:
            from ..pages.save import DumpMemory  # here: a restore does not import it
            track = DumpMemory.plain().task(pid)
        self.tp = track
        self.tp.begin(images, pages)
        try:
            self._describe(vmas, {} if shmem_seen is None else shmem_seen)
        except BaseException:
            self.close()
            raise

    def _describe(self, vmas: list[procfs.Vma], shmem_seen: dict[int, int]) -> None:
        pid, images = self.pid, self.images
        for v in vmas:
            kind = classify(v, pid)
            if kind == "skip":
                continue
            entry = _entry(v, kind)
            if kind == "aio":
                entry["aio"] = aio.dump(pid, v.start, v.end)
            if kind == "sysv":  # its contents: sysv.py, once per dump
                entry["shmid"] = v.inode
            if kind == "file":
                other = ghost.mapped_other_name(pid, v.start, v.end, v.path)
                obj = None if other else ghost.save_mapping(images, pid, v.start, v.end,
                                                            v.path)
                if obj is not None:  # a deleted file or a memfd: its content is saved
                    entry["ghost"] = obj
                else:
                    if other:  # a removed name of a file with other links
                        entry["path"], entry["deleted"] = other, v.path[:-len(ghost.DELETED)]
                        images.need("linked-mappings")
                    entry["file"] = _file_id(entry["path"])
            self.out_vmas.append(entry)
            if kind in ("vdso", "sysv") or (kind == "file" and v.shared):
                continue
            if kind == "shmem":
                fd = os.open(f"/proc/{pid}/map_files/{v.start:x}-{v.end:x}", os.O_RDONLY)
                st = os.fstat(fd)
                entry["shmem_id"] = st.st_ino
                if st.st_ino in shmem_seen:
                    os.close(fd)
                else:
                    shmem_seen[st.st_ino] = pid
                    self.owned.append((fd, st.st_ino, st.st_size))
                entry["shmem_owner"] = shmem_seen[st.st_ino]
                continue
            self.to_copy.append((entry, "r" in v.perms))

    def take_flags(self, flagged: list[procfs.Vma]) -> None:
        """The VmFlags of its mappings, ``flagged`` (from smaps), when they were made
        from /proc/PID/maps: smaps walks every page of the process (~25 ms a GiB), read
        while the pages are copied rather than before. Each mapping's flags go into it
        (and so into its entry); what they refuse is refused now."""
        if [(v.start, v.end) for v in flagged] != [(v.start, v.end) for v in self.vmas]:
            raise DumpError(f"process {self.pid}: its mappings changed while it was "
                            "frozen (maps and smaps differ)")
        for v, f in zip(self.vmas, flagged, strict=True):
            v.flags[:] = f.flags  # the very list its entry holds
            classify(v, self.pid)
        self.locked_kb = sum(v.end - v.start for v in self.vmas if "lo" in v.flags) // 1024

    def start(self) -> None:
        """Copy the pages in a thread of its own from now on."""
        import threading  # here: a restore does not need it

        self._thread = threading.Thread(target=self._copy_caught, name="ckpt-copy",
                                        daemon=True)
        # Started with the terminating signals blocked, which it keeps (and so does the
        # writer it starts): the kernel gives them to the dump's thread only, never
        # while that one has them held (in the middle of an injected call).
        with interrupts.held():
            self._thread.start()

    def _copy_caught(self) -> None:
        try:
            self._copy()
        except BaseException as e:  # raised by ``finish``, in the dump's thread
            self._error = e

    def _copy(self) -> None:
        for entry, readable in self.to_copy:
            self.tp.save_vma(entry, readable)
        self.tp.flush_spliced()
        # After every run of ``pagemap``, which must be one after the other in the file.
        self.objects = [_dump_shmem(fd, ino, size, self.tp.sink)
                        for fd, ino, size in self.owned]
        self.tp.flush()
        if self.compress:
            self.pages.finish()

    def can_splice(self) -> bool:
        """Whether the process may move its own pages into the pages file (pages/splice.py)."""
        return not self.compress and self.tp.can_splice()

    def cancel(self) -> None:
        """Stop a copy under way and release what it holds (the dump failed)."""
        self.tp.stopped = True
        self._join()
        self.close()

    def _join(self) -> None:
        if self._thread is not None:
            interrupts.join(self._thread)
            self._thread = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.tp.close()
        for fd, _ino, _size in self.owned:
            os.close(fd)

    def finish(self, inj: Injector, task_policy: dict[str, Any] | None = None,
               splice: bool = False) -> dict[str, Any]:
        """The ``mm-PID.json`` content, once every page is in the pages file.
        ``task_policy``: its first thread's NUMA policy (None: the default one), which
        mappings without a policy of their own show. ``splice``: the process moves its
        own pages (``inj`` is parked with the splice loop; pages/splice.py)."""
        try:
            # Read while the copy's threads run (numa_maps walks every page of the
            # process, as long again as smaps: ~20 ms a GiB), not after them.
            extras = self._extras(inj, task_policy)
            if self._thread is None:
                if splice and inj.splice_loop is not None and inj.scratch is not None:
                    self.tp.splice_with(inj, inj.scratch)
                self._copy()
            else:
                self._join()
                if self._error is not None:
                    raise self._error
        except BaseException:
            self.tp.stopped = True  # a copy under way ends before its files are closed
            self._join()
            raise
        finally:
            self.close()
        if any(e["kind"] in ("aio", "sysv") or "guards" in e or "sl" in e["flags"]
               for e in self.out_vmas):
            self.images.need("memory-kinds")
        stat = self.stat
        return {
            **extras,
            "vmas": self.out_vmas,
            **self.tp.finish(),  # pagemap, in_parent, start_time, tracking
            "shmem": self.objects,
            "pages_file": f"pages-{self.pid}.img",
            **({"pages_compression": compressed.METHOD} if self.compress else {}),
            "start_code": stat.start_code, "end_code": stat.end_code,
            "start_data": stat.start_data, "end_data": stat.end_data,
            "start_brk": stat.start_brk, "start_stack": stat.start_stack,
            "arg_start": stat.arg_start, "arg_end": stat.arg_end,
            "env_start": stat.env_start, "env_end": stat.env_end,
            **_lock_future(self.pid, self.locked_kb, inj),
        }

    def _extras(self, inj: Injector, task_policy: dict[str, Any] | None) -> dict[str, Any]:
        """What ``mm-PID.json`` holds beyond the mappings and pages: the executable (and
        its content, deleted), auxv, brk; the mappings' own NUMA policies go in their
        entries."""
        pid = self.pid
        policies = numa.mapping_policies(pid, task_policy)
        for e in self.out_vmas:
            if e["start"] in policies:
                e["mempolicy"] = policies[e["start"]]
                self.images.need("process-knobs")
        exe = procfs.exe(pid)
        exe_ghost = ghost.save_exe(self.images, pid, exe)  # a deleted (e.g. upgraded) binary
        return {
            **({"exe_ghost": exe_ghost} if exe_ghost is not None else {}),
            "exe": exe,
            "auxv": procfs.auxv(pid).hex(),
            "brk": inj.call("brk", 0),
        }


def _lock_future(pid: int, locked_kb: int, inj: Injector) -> dict[str, int]:
    """``lock_future``: the mlockall(MCL_FUTURE) flags of a process whose new mappings
    are locked (the kernel's mm->def_flags, which nothing in /proc shows), seen in the
    scratch area the dump mapped in it: locked (VmLck counts it beyond ``locked_kb``,
    its locked mappings before) when nothing else is. MCL_ONFAULT too when its
    VmFlags say lock-on-fault."""
    if inj.scratch is None:
        return {}
    if procfs.status(pid).locked_kb - locked_kb < inj.scratch[1] // 1024:
        return {}
    area = next((v for v in procfs.maps(pid, with_flags=True)
                 if v.start == inj.scratch[0]), None)
    onfault = area is not None and "lf" in area.flags
    return {"lock_future": MCL_FUTURE | (MCL_ONFAULT if onfault else 0)}


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

    def plan(self, vmas: list[procfs.Vma], images: ImageWriter) -> None:
        self.tp.begin(images, images.raw(f"pages-{self.pid}.img"), deferred=True)
        for v in vmas:
            kind = classify(v, self.pid)
            if kind == "skip":
                continue
            entry = _entry(v, kind)
            self.vmas.append(entry)
            if kind in ("vdso", "shmem") or v.shared:
                continue
            self.tp.save_vma(entry, "r" in v.perms)
        self.tp.after_pages()

    def copy(self) -> dict[str, Any]:
        """Copy the pages; return ``mm-PID.json``'s content."""
        try:
            self.tp.copy_deferred()
        finally:
            self.close()
        return {"vmas": self.vmas, "shmem": [], "pages_file": f"pages-{self.pid}.img",
                **self.tp.finish()}

    def close(self) -> None:
        self.tp.close()


# ---------------------------------------------------------------- restore

def check_files(mm: dict[str, Any]) -> None:
    """Refuse to restore when a mapped file is gone or changed since the dump.

    A file mapped privately must be as it was: its pages not saved are read from it. A
    file mapped shared only is the process's own store, as an open file is: what was
    written to it since (a JVM's hsperfdata after a ``dump -R``) is what the process
    sees, so only its size must be the same (a shorter file would fault)."""
    private: dict[str, bool] = {}
    for obj in [v["ghost"] for v in mm["vmas"] if "ghost" in v] + [mm.get("exe_ghost")]:
        if obj is not None:
            ghost.check(obj)  # a deleted file is made again in its directory
    files: dict[str, dict[str, int]] = {}
    for v in mm["vmas"]:
        if v["kind"] == "file" and "ghost" not in v:
            files.setdefault(v["path"], v["file"])
            private[v["path"]] = private.get(v["path"], False) or not v["shared"]
    for path, then in files.items():
        try:
            now = _file_id(path)
        except FileNotFoundError:
            raise RestoreError(f"mapped file {path} no longer exists") from None
        if now["size"] != then["size"] or (private[path] and now != then):
            raise RestoreError(f"mapped file {path} changed since the dump "
                               f"(size/mtime {now} vs {then})")


def takes_pages(v: dict[str, Any]) -> bool:
    """Whether the pages file may hold pages of mapping ``v``: private memory only. A
    shared file mapping's pages are the file's (a restore must never write into a
    file), shared anonymous and SysV memory are saved once as objects, the vDSO is the
    kernel's."""
    return v["kind"] in ("anon", "aio") or (v["kind"] == "file" and not v["shared"])


def pages_size(pid: int, mm: dict[str, Any], where: str, sizes: dict[str, int],
               absent: int | None = None) -> int | None:
    """The size of the page data of ``mm`` (``where``, checked by its schema), its files'
    ``sizes`` added (a file not listed: ``absent``; None: not known). Refuses stripes
    (pages.stripes) of other files than the process's, or whose files do not hold what
    the layout gives them for that size."""
    layout = Stripes.of(mm)
    why = layout.check(pid, mm)
    if why is None and layout.striped and "pages_compression" in mm:
        why = "compressed page data is one file"
    if why is not None:
        raise refuse(where, "stripes", why)
    got = [sizes.get(name, absent) for name in layout.names]
    if None in got:
        return None
    total = sum(got)  # type: ignore[arg-type]
    if layout.striped and layout.sizes(total) != got:
        raise refuse(where, "stripes", f"its files hold {got} bytes, where "
                     f"{layout.sizes(total)} would be")
    return total


def check_image(pid: int, mm: dict[str, Any], where: str, pages_size: int | None,
                pre_dump: bool = False) -> None:
    """Refuse what the schema of ``mm`` (``where``, checked already) cannot say: mappings
    that overlap, are out of order or lack their kind's fields; pages outside private
    mappings (``takes_pages``); a pages file of another size than ``pages_size``."""
    if mm["pages_file"] != f"pages-{pid}.img":
        raise refuse(where, "pages_file", f"is not pages-{pid}.img")
    tracking = mm["tracking"] or {}
    if tracking.get("file", f"digests-{pid}.img") != f"digests-{pid}.img":
        raise refuse(where, "tracking.file", f"is not digests-{pid}.img")
    prev = 0
    for i, v in enumerate(mm["vmas"]):
        at = f"vmas[{i}]"
        if v["start"] >= v["end"]:
            raise refuse(where, at + ".end", "not after its start")
        if v["start"] < prev:
            raise refuse(where, at + ".start", "overlaps the mapping before it or is out "
                         "of order")
        prev = v["end"]
        own = _KIND_FIELDS.get(v["kind"], set())
        others = set().union(*_KIND_FIELDS.values()) - own
        if others & v.keys():
            raise refuse(where, f"{at}.{sorted(others & v.keys())[0]}",
                         f"a {v['kind']} mapping has no such field")
        if not pre_dump and own - v.keys():
            raise refuse(where, f"{at}.{sorted(own - v.keys())[0]}", "missing")
        if v["kind"] == "file":
            try:
                PATH.check(v["path"])
            except Bad as e:
                raise refuse(where, at + ".path", e.message) from None
            if not pre_dump and ("file" in v) == ("ghost" in v):
                raise refuse(where, at + ".file", "a file mapping has file or ghost, "
                             "not both")
        elif v.keys() & {"file", "ghost"}:
            raise refuse(where, at + ".file", f"a {v['kind']} mapping has no file")
        if v["kind"] == "vdso" and v["path"] not in vdso.NAMES:
            raise refuse(where, at + ".path", f"{v['path']!r} is not a vDSO area")
        for j, (addr, npages) in enumerate(v.get("guards", [])):
            if addr < v["start"] or addr + npages * PAGE > v["end"]:
                raise refuse(where, f"{at}.guards[{j}]", "outside the mapping")
    paged = _spans([(v["start"], v["end"]) for v in mm["vmas"] if takes_pages(v)])
    _check_runs(mm["pagemap"], paged, where, "pagemap", ordered=False)
    _check_runs(mm["in_parent"], paged, where, "in_parent", ordered=True)
    size = sum(n for _, n in mm["pagemap"]) * PAGE
    for i, obj in enumerate(mm["shmem"]):
        at = f"shmem[{i}]"
        if obj["pages_off"] != size:
            raise refuse(where, at + ".pages_off", f"is not {size}, where the data before "
                         "it ends")
        end = 0
        for j, (off, npages) in enumerate(obj["runs"]):
            if off < end or off + npages * PAGE > obj["size"]:
                raise refuse(where, f"{at}.runs[{j}]", "out of order or past the object's "
                             "size")
            end = off + npages * PAGE
            size += npages * PAGE
    if pages_size is not None and size != pages_size and "pages_compression" not in mm:
        raise refuse(where, "pagemap", f"{size} bytes of pages, but {mm['pages_file']} "
                     f"holds {pages_size}")


def _spans(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` (sorted) with adjacent ones joined."""
    out: list[tuple[int, int]] = []
    for s, e in ranges:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _check_runs(runs: list[list[int]], spans: list[tuple[int, int]], where: str,
                field: str, ordered: bool) -> None:
    """Each run of pages lies inside one of ``spans``; in order, without overlap, if
    ``ordered``."""
    import _bisect  # here: few commands bisect (start-up)
    starts = [s for s, _ in spans]
    prev = 0
    for i, (addr, npages) in enumerate(runs):
        end = addr + npages * PAGE
        if ordered and addr < prev:
            raise refuse(where, f"{field}[{i}]", "overlaps the run before it or is out of "
                         "order")
        prev = end
        k = _bisect.bisect_right(starts, addr) - 1
        if k < 0 or end > spans[k][1]:
            raise refuse(where, f"{field}[{i}]", f"pages {addr:#x}-{end:#x} are not all in "
                         "private mappings (a restore writes pages only there, never into "
                         "a file)")


def free_area(ranges: list[tuple[int, int]], size: int) -> int:
    """A page-aligned address where ``size`` bytes overlap none of ``ranges``."""
    try:
        return libc.free_area(ranges, size)
    except OSError:
        raise RestoreError("no free address range for the restore helper") from None


def _unmap_all_except(inj: Injector, keep: list[tuple[int, int]]) -> None:
    """Unmap every gap between the ``keep`` ranges, from address 0 to TASK_SIZE."""
    cur = 0
    for s, e in sorted(keep) + [(TASK_SIZE, TASK_SIZE)]:
        if s > cur:
            inj.later("munmap", cur, s - cur)
        cur = max(cur, e)


def _move_vdso(inj: Injector, current: list[procfs.Vma], saved: list[dict[str, Any]],
               temp: int) -> int:
    """Move the vDSO trio to its saved addresses; return the saved vDSO's start."""
    cur = {v.path: v for v in vdso.areas(current)}
    want = {v["path"]: v for v in saved if v["kind"] == "vdso"}
    if set(cur) != set(want) or any(cur[n].size != want[n]["end"] - want[n]["start"]
                                     for n in cur):
        raise RestoreError("the vDSO of this kernel differs from the one in the image "
                           f"({sorted((n, v.size) for n, v in cur.items())} vs "
                           f"{sorted((n, v['end'] - v['start']) for n, v in want.items())}); "
                           "restore on the kernel the dump was taken on")
    if all(cur[n].start == want[n]["start"] for n in cur):
        return want["[vdso]"]["start"]
    # Through a temporary place, so no move lands on a part not yet moved.
    at = vdso.placed(list(cur.values()), temp)
    for moves in ({n: (v.start, at[n]) for n, v in cur.items()},
                  {n: (at[n], want[n]["start"]) for n in cur}):
        for n, (src, dest) in moves.items():
            inj.later("mremap", src, cur[n].size, cur[n].size,
                      libc.MREMAP_MAYMOVE | libc.MREMAP_FIXED, dest)
    return want["[vdso]"]["start"]


class _TargetFiles:
    """Files opened inside the target during restore, closed all at once."""

    def __init__(self, inj: Injector, scratch: int, lend: Lend | None = None):
        self.inj = inj
        self.scratch = scratch
        self.lend = lend  # passes one of ckpt's fds in, when the target cannot take it
        self.fds: dict[tuple[str, int], int] = {}

    def open(self, path: str, flags: int, key: tuple[str, int] | None = None) -> int:
        """A target fd of ``path`` (once per ``key``, by default the path and flags)."""
        key = key or (path, flags)
        if key not in self.fds:
            self.inj.write_string(self.scratch, path)
            try:
                self.fds[key] = self.inj.call("openat", -100, self.scratch, flags | os.O_CLOEXEC)
            except OSError as e:
                raise RestoreError(f"cannot open {path} in the restored process: "
                                   f"{os.strerror(e.errno)}") from None
        return self.fds[key]

    def open_all(self, wanted: list[tuple[str, int]]) -> None:
        """Target fds of every ``(path, flags)`` of ``wanted`` not open yet, opened in as
        few round trips as the scratch area allows (``open`` then finds them)."""
        todo = [k for k in dict.fromkeys(wanted) if k not in self.fds]
        while todo:
            keys: list[tuple[str, int]] = []
            names = b""
            while todo and len(names) + len(os.fsencode(todo[0][0])) < _PATHS_ROOM:
                keys.append(todo.pop(0))
                names += os.fsencode(keys[-1][0]) + b"\0"
            if not keys:  # a path longer than the room: alone
                self.open(*todo.pop(0))
                continue
            self.inj.write(self.scratch, names)
            calls, at = [], self.scratch
            for path, flags in keys:
                calls.append(("openat", (-100, at, flags | os.O_CLOEXEC)))
                at += len(os.fsencode(path)) + 1
            results = self.inj.raw_all(calls)
            for key, res in zip(keys, results, strict=True):
                if res >= 0:
                    self.fds[key] = res
            for (path, _), res in zip(keys, results, strict=True):
                if res < 0:
                    raise RestoreError(f"cannot open {path} in the restored process: "
                                       f"{os.strerror(-res)}")

    def ckpt_path(self, path: str, flags: int, key: tuple[str, int] | None = None) -> int:
        """A target fd of ``path`` as ckpt sees it (an image, a file of ckpt's /proc):
        opened by the target by its path, or, when the target has a root of its own (a
        container's, with its own /proc) where it is not, opened by ckpt and taken by
        the target."""
        if not treeroot.is_own():
            return self.open(path, flags, key)
        key = key or (path, flags)
        if key not in self.fds:
            own = os.open(path, flags | os.O_CLOEXEC)
            try:
                if self.take(own, key) is None:
                    raise RestoreError(f"the restored process cannot take ckpt's fd on {path}")
            finally:
                os.close(own)
        return self.fds[key]

    def take(self, fd: int, key: tuple[str, int]) -> int | None:
        """A target fd of ckpt's own ``fd``: the same open file (pidfd_getfd inside the
        target, which is still root), not a reopening of it; None where the kernel
        does not let the target reach ckpt (a Yama ptrace scope)."""
        if key not in self.fds and self.lend is not None and nspids.active():
            self.fds[key] = self.lend(fd)  # ckpt is not in the target's PID namespace
        if key not in self.fds:
            pidfd = self.inj.call("pidfd_open", os.getpid(), 0)
            try:
                self.fds[key] = self.inj.call("pidfd_getfd", pidfd, fd, 0)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EACCES):
                    raise RestoreError(f"cannot pass fd {fd} of ckpt to the restored "
                                       f"process: {os.strerror(e.errno)}") from None
                log.warning("the restored process cannot take ckpt's fd %d (%s): the memfd "
                            "is reopened instead, and cannot be executed (execveat)", fd,
                            os.strerror(e.errno))
                return None
            finally:
                self.inj.call("close", pidfd)
        return self.fds[key]

    def close_all(self) -> None:
        for fd in self.fds.values():
            self.inj.later("close", fd)
        self.fds.clear()


class _SharedObjects:
    """The shared anonymous objects of one restored task.

    Each object gets a target fd: a mapping of another task already restored
    (``shmem``, shared by every task of one restore), else a fresh object of
    the saved size, created by mapping it whole at a free place (``temp``) and
    opened through /proc/PID/map_files. Every mapping of the object is then
    an mmap of that fd at the mapping's own offset, and the saved data is
    read into a whole, writable view of the object by its offsets.
    """

    def __init__(self, pid: int, inj: Injector, files: _TargetFiles, mm: dict[str, Any],
                 shmem: dict[int, tuple[int, int, int]], occupied: list[tuple[int, int]]):
        self.pid = pid
        self.inj = inj
        self.files = files
        self.shmem = shmem
        self.occupied = occupied
        self.saved = {o["id"]: o for o in mm.get("shmem", [])}
        self.vmas = mm["vmas"]
        self.fds: dict[int, int] = {}
        self.views: dict[int, int] = {}  # id -> address of a whole, writable view
        self.temps: list[tuple[int, int]] = []

    def _size(self, sid: int) -> int:
        obj = self.saved.get(sid)
        if obj is not None:
            size = int(obj["size"])
        else:  # not saved here (an image without sizes): as far as the mappings reach
            size = max(v["offset"] + v["end"] - v["start"] for v in self.vmas
                       if v.get("shmem_id") == sid)
        return (size + PAGE - 1) & ~(PAGE - 1)

    def _temp(self, size: int, flags: int, fd: int) -> int:
        addr = free_area(self.occupied, size)
        self.occupied.append((addr, addr + size))
        self.inj.call("mmap", addr, size, libc.PROT_READ | libc.PROT_WRITE,
                      libc.MAP_SHARED | libc.MAP_FIXED | flags, fd, 0)
        self.temps.append((addr, size))
        return addr

    def fd(self, sid: int) -> int:
        if sid in self.fds:
            return self.fds[sid]
        if sid in self.shmem:
            opid, ostart, _oend = self.shmem[sid]
            fd = self.files.ckpt_path(_map_files(opid, ostart), os.O_RDWR)
        else:
            size = self._size(sid)
            addr = self._temp(size, libc.MAP_ANONYMOUS, -1)
            self.views[sid] = addr
            fd = self.files.ckpt_path(f"/proc/{self.pid}/map_files/{addr:x}-{addr + size:x}",
                                      os.O_RDWR)
        self.fds[sid] = fd
        if sid in self.saved and sid not in self.views:
            self.views[sid] = self._temp(self._size(sid), 0, fd)
        return fd

    def mapped(self, sid: int, start: int, end: int) -> None:
        """A mapping of ``sid`` is in place: later tasks can open the object through it."""
        self.shmem.setdefault(sid, (self.pid, start, end))

    def data_runs(self) -> list[tuple[int, int, int]]:
        """``(address in ckpt's view, length, offset in the pages file)`` of the saved
        data of the objects saved by this task (``--lazy-pages`` writes them so)."""
        out = []
        for sid, obj in self.saved.items():
            if sid not in self.views:
                self.fd(sid)
            off = obj["pages_off"]
            for obj_off, npages in obj["runs"]:
                out.append((self.views[sid] + obj_off, npages * PAGE, off))
                off += npages * PAGE
        return out

    def fill(self, pages: _PagesFile) -> None:
        """Read the saved data of the objects saved by this task into them."""
        for sid, obj in self.saved.items():
            if sid not in self.views:
                self.fd(sid)  # an object none of this task's mappings shows any more
            pages.into(obj["pages_off"], [(self.views[sid] + obj_off, npages * PAGE)
                                          for obj_off, npages in obj["runs"]])

    def unmap_temps(self) -> None:
        for addr, size in self.temps:
            self.inj.call("munmap", addr, size)
        self.temps.clear()


class _Ghosts:
    """The deleted files and memfds (ghost.py) mapped by one restored task.

    Each is one object for the whole restore. A target fd of it is opened
    through its first restored mapping (``shared``, as for shared anonymous
    objects), else through ckpt's fd of a description on it (``held``: its fd
    description made it already), else the object is made here, by ckpt, and
    opened through /proc/<ckpt>/fd.
    """

    def __init__(self, pid: int, files: _TargetFiles, images_dir: str,
                 shared: dict[Any, tuple[int, int, int]], held: dict[int, int]):
        self.pid = pid
        self.files = files
        self.images_dir = images_dir
        self.shared = shared
        self.held = held

    def fd(self, info: dict[str, Any], mode: int, shared_ro: bool = False) -> int:
        """A target fd of the object, to map with ``mode``; ``shared_ro``: for a shared
        mapping that may never write (no VM_MAYWRITE, as a write-sealed memfd's)."""
        key = f"ghost:{int(info['id'])}"
        if "memfd" in info and not shared_ro:  # the memfd itself (ghost.memfd)
            own = ghost.memfd(os.path.join(self.images_dir, ghost.DATA_FILE), info)
            if not fcntl.fcntl(own, fcntl.F_GETFL) & os.O_APPEND:  # else not mappable
                taken = self.files.take(own, (key, -1))
                if taken is not None:
                    return taken
        if key in self.shared:
            opid, ostart, _oend = self.shared[key]
            return self.files.ckpt_path(_map_files(opid, ostart), mode)
        held = self.held.get(int(info["id"]))
        if held is not None:
            return self.files.ckpt_path(f"/proc/{os.getpid()}/fd/{held}", mode)
        own = ghost.create(os.path.join(self.images_dir, ghost.DATA_FILE), info)
        try:
            return self.files.ckpt_path(f"/proc/{os.getpid()}/fd/{own}", mode, key=(key, mode))
        finally:
            os.close(own)  # a writer left open would keep an exe from being set (EACCES)

    def mapped(self, info: dict[str, Any], start: int, end: int) -> None:
        self.shared.setdefault(f"ghost:{int(info['id'])}", (self.pid, start, end))


def _map_files(pid: int, addr: int) -> str:
    """The /proc/PID/map_files path of the mapping of ``pid`` that holds ``addr``."""
    for v in procfs.maps(pid):
        if v.start <= addr < v.end:
            return f"/proc/{pid}/map_files/{v.start:x}-{v.end:x}"
    raise RestoreError(f"process {pid} no longer maps {addr:#x}, a shared memory object "
                       "other processes map too")


class _PagesFile:
    """The pages file of one restored process, read by ckpt and written into the process
    (pages.fill); through zstd when it is compressed."""

    def __init__(self, pid: int, source: PagesFile, compression: str | None):
        self.pid = pid
        self.source = source
        self.reader: compressed.ZstdReader | None = None
        if compression == compressed.METHOD:
            buf = page_buffer()
            self.reader = compressed.ZstdReader(source, buf.addr, buf.view)
        elif compression is not None:
            raise RestoreError(f"{os.path.basename(source.path)}: unknown compression "
                               f"{compression!r}")

    def into(self, off: int, runs: list[tuple[int, int]]) -> None:
        """The runs ``(vaddr, length)`` of the process, one after the other, from offset
        ``off`` of the page data."""
        if self.reader is None:
            self.source.write(self.pid, off, runs)
            return
        for vaddr, length in runs:
            self.reader.into_process(self.pid, vaddr, length, off)
            progress.advance(length)
            off += length

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def restore(pid: int, inj: Injector, mm: dict[str, Any], images_dir: str, helper: int,
            helper_size: int, shmem: dict[Any, tuple[int, int, int]] | None = None,
            segments: list[Segment] | None = None, parent: dict[str, Any] | None = None,
            held: dict[int, int] | None = None,
            file_locks: dict[int, dict[str, Any]] | None = None,
            lend: Lend | None = None, pages: fill.Fill | None = None,
            lazy: Handover | None = None, kids_inherit: list[list[int]] | None = None) -> None:
    """Replace the address space of stopped process ``pid`` with the saved one; ckpt
    writes its pages into it from ``pages``, the restore's pages files (pages.fill).

    ``lazy`` (``--lazy-pages``): the pages the lazy-pages daemon may serve are left out
    and planned for it (pages.lazy), but those in ``kids_inherit`` (``[vaddr, npages]``
    runs its children inherit from it: they must be there when they are cloned).

    ``file_locks`` maps the start of a file mapping to the lock held through it only
    (locks.py), taken again on the fd the mapping is made from.

    ``segments`` (pages.chain.Chain, for images with a parent) say in which file of the
    chain each page is; by default every page is in ``mm``'s own pages file.

    ``shmem`` (shared by every task of one restore) maps a shared anonymous
    object's id to (pid, start, end) of its first restored mapping; later
    tasks map that same object through /proc/PID/map_files. Ghost objects
    (deleted files, memfds) are in it too, as ``"ghost:ID"``; ``held`` maps a ghost's
    id to an fd of ckpt's on it (a description the restore holds), if any.

    ``parent``: the ``mm`` of the process ``pid`` was cloned from, its memory restored
    already (pages.forked): what it keeps of it stays, but the pages it must drop.
    ``lend``: passes one of ckpt's fds into the process (over the fd socket), returning
    its number there, for a process in a PID namespace where it cannot take it itself.
    """
    assert pages is not None
    _Rebuild(pid, inj, mm, images_dir, (helper, helper + helper_size),
             {} if shmem is None else shmem, segments, parent, held or {},
             file_locks or {}, lend, pages, lazy, kids_inherit or []).run()


class _Rebuild:
    """One address space rebuilt, in the steps of ``run``: everything unmapped but the
    helper area, the vDSO and what is kept from the parent; the vDSO moved to its saved
    place; each mapping (or its part not kept) made again; the pages the parent has and
    this process had not dropped; its own pages written into place
    by ckpt (pages.fill: read once, checked on the way, process_vm_writev); guard pages
    and locks last."""

    def __init__(self, pid: int, inj: Injector, mm: dict[str, Any], images_dir: str,
                 helper: tuple[int, int], shmem: dict[Any, tuple[int, int, int]],
                 segments: list[Segment] | None, parent: dict[str, Any] | None,
                 held: dict[int, int], file_locks: dict[int, dict[str, Any]],
                 lend: Lend | None, pages: fill.Fill, lazy: Handover | None = None,
                 kids_inherit: list[list[int]] | None = None):
        self.pid = pid
        self.pages = pages
        self.lazy = lazy
        self.kids_inherit = kids_inherit or []
        self.file_locks = file_locks
        self.inj = inj
        self.mm = mm
        self.images_dir = images_dir
        self.helper = helper
        self.shmem = shmem
        self.segments = segments
        self.parent = parent
        self.files = _TargetFiles(inj, helper[0], lend)
        self.ghosts = _Ghosts(pid, self.files, images_dir, shmem, held)
        self.to_protect: list[tuple[int, int, int]] = []  # (start, end, final prot)
        self.advice: list[tuple[int, int, int]] = []  # (madvise advice, start, end)
        if parent is None:
            self.pieces = [forked.Piece(v["start"], v["end"], v) for v in mm["vmas"]
                           if v["kind"] not in forked.NOT_MAPPED]
        else:
            self.pieces = forked.pieces(parent["vmas"], mm["vmas"], mm.get("inherited", []))
        self.own = forked.Spans(merge_runs(mm["pagemap"], mm.get("in_parent", [])))

    def run(self) -> None:
        inj, mm = self.inj, self.mm
        current = procfs.maps_named(self.pid, vdso.NAMES)
        areas = vdso.areas(current)
        keep = [self.helper] + [(v.start, v.end) for v in areas]
        keep += [(p.start, p.end) for p in self.pieces if p.parent is not None]
        _unmap_all_except(inj, keep)
        occupied = keep + [(v["start"], v["end"]) for v in mm["vmas"]]
        _move_vdso(inj, current, mm["vmas"], free_area(occupied, vdso.span(areas)))
        self.objects = _SharedObjects(self.pid, inj, self.files, mm, self.shmem, occupied)
        self.files.open_all([(p.vma["path"], _file_mode(p.vma)) for p in self.pieces
                             if p.parent is None and _plain_file(p.vma)])
        for p in self.pieces:
            if p.parent is None:
                self._map(p)
            else:
                self._keep(p)
        self._advise()
        for v in mm["vmas"]:
            if "mempolicy" in v:  # before its pages come, which it places
                numa.bind(inj, self.helper[0], v["start"], v["end"], v["mempolicy"])
        for v in mm["vmas"]:  # now that nothing else will be mapped where io_setup puts a ring
            if v["kind"] == "aio":
                aio.restore(inj, self.helper[0], v, self.files.open("/dev/null", os.O_WRONLY))
        self._drop_stale()
        inj.flush()  # every mapping in place before ckpt writes the pages
        self._write_pages()
        for start, end, prot in self.to_protect:
            inj.later("mprotect", start, end - start, prot)
        for v in mm["vmas"]:
            _guards_and_locks(inj, v)
        if "lock_future" in mm:  # last: what ckpt maps from now on is locked too
            inj.call("mlockall", mm["lock_future"])
        if "exe_ghost" in mm:
            exe_fd = self.ghosts.fd(mm["exe_ghost"], os.O_RDONLY)
        else:
            exe_fd = -1 if _same_exe(self.pid, mm["exe"]) else self.files.open(mm["exe"],
                                                                                os.O_RDONLY)
        _set_mm_map(inj, mm, self.helper[0], exe_fd)
        self.files.close_all()

    def _map(self, p: forked.Piece) -> None:
        """Map a mapping (or the part of it not kept from the parent) anew."""
        inj, v = self.inj, p.vma
        if v["kind"] == "sysv":  # never kept: a whole mapping
            _attach_sysv(inj, v)
            return
        length = p.end - p.start
        offset = v["offset"] + p.start - v["start"]
        prot = v["prot"]
        flags = libc.MAP_FIXED | (libc.MAP_SHARED if v["shared"] else libc.MAP_PRIVATE)
        if "gd" in v["flags"]:
            flags |= libc.MAP_GROWSDOWN
        if "nr" in v["flags"]:  # no swap reserved: a sparse area larger than memory maps
            flags |= libc.MAP_NORESERVE
        if not prot & libc.PROT_WRITE and self.own.clip(p.start, p.end):
            prot |= libc.PROT_WRITE  # while its pages are written in (private memory only)
            self.to_protect.append((p.start, p.end, v["prot"]))
        if v["kind"] == "shmem":
            sid = v["shmem_id"]
            inj.call("mmap", p.start, length, prot, flags, self.objects.fd(sid), offset)
            self.objects.mapped(sid, p.start, p.end)
        elif v["kind"] == "anon":
            inj.later("mmap", p.start, length, prot, flags | libc.MAP_ANONYMOUS, -1, 0)
        else:
            mode = _file_mode(v)
            if "ghost" in v:
                fd = self.ghosts.fd(v["ghost"], mode,
                                    shared_ro=v["shared"] and mode == os.O_RDONLY)
            elif "deleted" in v:
                fd = self._open_linked(v["path"], v["deleted"], mode)
            else:
                fd = self.files.open(v["path"], mode)
            if "ghost" in v:  # made now: a later mapping of it opens it through this one
                inj.call("mmap", p.start, length, prot, flags, fd, offset)
            else:
                inj.later("mmap", p.start, length, prot, flags, fd, offset)
            lock = self.file_locks.get(v["start"])
            if lock is not None and "ghost" not in v:
                from . import locks
                locks.take_mapped(inj, self.helper[0], self.pid, lock, fd, v["path"])
            if "ghost" in v:
                self.ghosts.mapped(v["ghost"], p.start, p.end)
        for flag, advice in _MADVISE.items():
            if flag in v["flags"]:
                self.advice.append((advice, p.start, p.end))

    def _advise(self) -> None:
        """The madvise flags of the mappings made anew, one call for each run of
        adjacent mappings with the same advice (a thread's stack and its guard), before
        their pages come (MADV_HUGEPAGE)."""
        for advice, start, end in _joined(self.advice):
            self.inj.later("madvise", start, end - start, advice, check=False)

    def _open_linked(self, path: str, deleted: str, mode: int) -> int:
        """A target fd of the file ``path`` through its removed name ``deleted`` made
        again for the moment (ghost.as_deleted): the mapping shows ``deleted (deleted)``
        as before."""
        key = (f"deleted:{deleted}", mode)
        if key in self.files.fds:
            return self.files.fds[key]
        try:
            own = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                named = ghost.as_deleted(own, deleted, os.O_RDONLY | os.O_CLOEXEC)
            finally:
                os.close(own)
        except OSError as e:
            raise RestoreError(f"cannot map {path} as {deleted}: {e.strerror}") from None
        try:
            return self.files.ckpt_path(f"/proc/{os.getpid()}/fd/{named}", mode, key=key)
        finally:
            os.close(named)

    def _keep(self, p: forked.Piece) -> None:
        """A part kept from the parent: its protection (writable while its own pages are
        written in), and the objects it shows, for later processes to find."""
        v, pv = p.vma, p.parent
        assert pv is not None
        prot = v["prot"]
        if forked.private(v) and self.own.clip(p.start, p.end):
            prot |= libc.PROT_WRITE
        if prot != pv["prot"]:
            self.inj.later("mprotect", p.start, p.end - p.start, prot)
        if prot != v["prot"]:
            self.to_protect.append((p.start, p.end, v["prot"]))
        if v["kind"] == "shmem":
            self.objects.mapped(v["shmem_id"], p.start, p.end)
        elif "ghost" in v:
            self.ghosts.mapped(v["ghost"], p.start, p.end)

    def _drop_stale(self) -> None:
        """In the kept parts, the pages the parent has data in and this process had not:
        dropped (MADV_DONTNEED), they read as zeros, or as their file, again."""
        if self.parent is None:
            return
        kept = [p for p in self.pieces if p.parent is not None]
        for start, end in forked.stale(_data(self.parent), _data(self.mm), kept):
            self.inj.later("madvise", start, end - start, MADV_DONTNEED)

    def _write_eager(self, source: PagesFile) -> None:
        """``--lazy-pages``: the pages the daemon cannot serve written now, the others
        planned for it with the mappings to register (pages.lazy)."""
        from ..pages import lazy  # only for --lazy-pages
        assert self.lazy is not None
        fresh = [(p.start, p.end) for p in self.pieces
                 if p.parent is None and lazy.eligible(p.vma)]
        spans = lazy.lazy_spans(fresh, self.kids_inherit)
        cut = lazy.split(self.mm["pagemap"], spans)
        self.lazy.write_eager(self.pid, source, self.mm["pages_file"],
                              cut.eager + self.objects.data_runs())
        self.pages.vouched(source.path)
        served = forked.Spans([(a, a + n) for a, n, _ in cut.lazy])
        ranges = [(s, e) for s, e in fresh if served.clip(s, e)]
        self.lazy.plan(self.pid, self.mm["pages_file"], cut.lazy, ranges)

    def _write_pages(self) -> None:
        """Its own pages, read by ckpt from the images and written into place, its pages
        file checksummed on the way (pages.fill)."""
        mm = self.mm
        path = os.path.join(os.path.abspath(self.images_dir), mm["pages_file"])
        pages = _PagesFile(self.pid, self.pages.file(path, Stripes.of(mm)),
                           mm.get("pages_compression"))
        try:
            if self.lazy is not None and self.segments is None and pages.reader is None:
                self._write_eager(pages.source)  # the shared objects' data too
            else:
                if self.segments is None:
                    pages.into(0, [(vaddr, npages * PAGE) for vaddr, npages in mm["pagemap"]])
                elif pages.reader is not None:
                    raise RestoreError(f"{mm['pages_file']}: compressed page data cannot "
                                       "have parent images")
                else:  # each page from the image of the chain that has it
                    for seg_path, layout, off, runs in _batches(self.segments):
                        self.pages.file(seg_path, layout).write(self.pid, off, runs)
                self.objects.fill(pages)
        finally:
            pages.close()
        self.pages.done(path)
        self.objects.unmap_temps()


def _file_mode(v: dict[str, Any]) -> int:
    """How a file mapping's file is opened: for writing if the mapping may write it."""
    return os.O_RDWR if (v["shared"] and "mw" in v["flags"]) else os.O_RDONLY


def _plain_file(v: dict[str, Any]) -> bool:
    """A mapping of a file opened by its path (not a ghost, nor by a removed name)."""
    return v["kind"] == "file" and "ghost" not in v and "deleted" not in v


def _joined(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``(key, start, end)`` ranges with those of one key that touch joined."""
    out: list[tuple[int, int, int]] = []
    for key, start, end in sorted(ranges):
        if out and out[-1][0] == key and out[-1][2] == start:
            out[-1] = (key, out[-1][1], end)
        else:
            out.append((key, start, end))
    return out


def _batches(segments: list[Segment]
             ) -> list[tuple[str, Stripes | None, int, list[tuple[int, int]]]]:
    """Segments that follow each other in one page data, as (its first file, its
    layout, logical offset, runs): one read and one write each, for as many as a buffer
    holds."""
    out: list[tuple[str, Stripes | None, int, list[tuple[int, int]]]] = []
    end = -1
    for seg in segments:
        length = seg.end - seg.start
        if out and out[-1][0] == seg.path and seg.offset == end:
            out[-1][3].append((seg.start, length))
        else:
            out.append((seg.path, seg.layout, seg.offset, [(seg.start, length)]))
        end = seg.offset + length
    return out


def _data(mm: dict[str, Any]) -> forked.Spans:
    """Where a restored process has data: its own pages, in parent images or inherited."""
    return forked.Spans(merge_runs(mm["pagemap"], mm.get("in_parent", []),
                                   mm.get("inherited", [])))


def check_inherited(parent: dict[str, Any] | None, mm: dict[str, Any]) -> str | None:
    """Why ``mm``'s pages inherited from its parent (``parent``'s mm, None for a process
    that has none in the tree) cannot be: checked before anything is created."""
    inherited = mm.get("inherited") or []
    if not inherited:
        return None
    if parent is None:
        return "pages are said to be its parent's, which is not restored with it"
    try:
        _data(mm)
    except ValueError as e:
        return str(e)
    return forked.check_inherited(parent["vmas"], mm["vmas"], inherited)


def seal(inj: Injector, mm: dict[str, Any]) -> None:
    """Seal the mappings that were sealed (mseal), once the process's children are cloned
    (a seal is copied to a child, which could not unmap what it has not) and nothing
    else changes them."""
    for v in mm["vmas"]:
        if "sl" in v["flags"] and v["kind"] != "vdso":
            try:
                inj.call("mseal", v["start"], v["end"] - v["start"], 0)
            except OSError as e:
                raise RestoreError(f"cannot seal the mapping at {v['start']:#x} (mseal): "
                                   f"{os.strerror(e.errno)}") from None


def _attach_sysv(inj: Injector, v: dict[str, Any]) -> None:
    """Attach the SysV segment of mapping ``v`` at its address (sysv.py made it)."""
    from . import sysv
    prot = v["prot"]
    flags = (0 if prot & libc.PROT_WRITE else sysv.SHM_RDONLY) \
        | (sysv.SHM_EXEC if prot & libc.PROT_EXEC else 0)
    try:
        at = inj.call("shmat", v["shmid"], v["start"], flags)
    except OSError as e:
        raise RestoreError(f"cannot attach SysV shared memory {v['shmid']} at "
                           f"{v['start']:#x}: {os.strerror(e.errno)}") from None
    if at != v["start"]:
        raise RestoreError(f"SysV shared memory {v['shmid']} attached at {at:#x}, not at "
                           f"{v['start']:#x}")
    given = libc.PROT_READ | (prot & (libc.PROT_WRITE | libc.PROT_EXEC))
    if prot != given:  # mprotect'ed after shmat (PROT_NONE, ...)
        inj.call("mprotect", v["start"], v["end"] - v["start"], prot)


def _guards_and_locks(inj: Injector, v: dict[str, Any]) -> None:
    """Once its pages are in: a mapping's guard pages installed again, then its lock
    (mlock, or mlock2 MLOCK_ONFAULT: only the pages present are locked, as before)."""
    for addr, npages in v.get("guards", []):
        try:
            inj.call("madvise", addr, npages * PAGE, MADV_GUARD_INSTALL)
        except OSError as e:
            raise RestoreError(f"cannot install guard pages at {addr:#x}: "
                               f"{os.strerror(e.errno)}") from None
    if "lo" in v["flags"]:
        length = v["end"] - v["start"]
        try:
            if "lf" in v["flags"]:
                inj.call("mlock2", v["start"], length, MLOCK_ONFAULT)
            else:
                inj.call("mlock", v["start"], length)
        except OSError as e:
            raise RestoreError(f"cannot lock the mapping at {v['start']:#x}: "
                               f"{os.strerror(e.errno)}") from None


def _same_exe(pid: int, path: str) -> bool:
    """Whether the child's exe already is ``path`` (a Python target restored by ckpt
    running on the same interpreter). The kernel refuses to replace an exe that is
    still mapped (EBUSY), and here there is nothing to replace."""
    try:
        return (os.readlink(f"/proc/{pid}/exe") == path
                and os.path.samestat(os.stat(f"/proc/{pid}/exe"), treeroot.stat(path)))
    except OSError:
        return False


def _set_mm_map(inj: Injector, mm: dict[str, Any], scratch: int, exe_fd: int) -> None:
    """Queued (``exe_fd`` is closed after it): the struct, with the auxiliary vector after
    it, goes with the batch."""
    auxv = bytes.fromhex(mm["auxv"])
    fields = {k: mm[k] for k in ("start_code", "end_code", "start_data", "end_data",
                                 "start_brk", "brk", "start_stack", "arg_start", "arg_end",
                                 "env_start", "env_end")}
    size = ctypes.sizeof(libc.PrctlMmMap)

    def data(at: int) -> bytes:
        return bytes(libc.PrctlMmMap(**fields, auxv=at + size, auxv_size=len(auxv),
                                     exe_fd=exe_fd & 0xFFFFFFFF)) + auxv  # -1: keep the exe

    inj.later("prctl", libc.PR_SET_MM, libc.PR_SET_MM_MAP, 0, size, 0, data=data, data_at=2,
              scratch=scratch, failed=lambda err: RestoreError(
                  f"prctl(PR_SET_MM_MAP) failed: {os.strerror(err)}"))


def summarize(mm: dict[str, Any]) -> dict[str, int]:
    """Runs, pages and bytes in the pages file of one process (shared objects too)."""
    runs = list(mm["pagemap"]) + [r for obj in mm.get("shmem", []) for r in obj["runs"]]
    pages = sum(n for _, n in runs)
    return {"runs": len(runs), "pages": pages, "bytes": pages * PAGE}

