"""Memory: the mappings of a process, the pages that exist in them, and mm fields.

Dump: every mapping from /proc/PID/smaps; pagemap says which pages exist.
Page data is copied by the kernel (process_vm_readv, or pread on
/proc/PID/mem) into one reused buffer and written straight to
``pages-PID.img``: it never becomes Python objects.

Restore: everything of the fresh child is unmapped but the vDSO trio and the
helper page, the vDSO is moved to its saved place, each mapping is recreated,
and the target itself reads its pages from the image file with injected
``pread64`` calls (page cache to its memory, no copy through ckpt).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import RestoreError, UnsupportedError
from ..images import ImageWriter, ctypes_view
from ..kernel import libc, procfs
from ..kernel.inject import Injector

log = logging.getLogger("ckpt.mem")

VDSO_NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]")
TASK_SIZE = 0x7FFFFFFFF000
BUF_SIZE = 32 << 20
PAGE = libc.PAGE_SIZE

# pagemap top byte: bit 7 present, bit 6 swapped, bit 5 file page / shared anon.
_ANON_PAGES = bytes(0x31 if b & 0xC0 else 0x30 for b in range(256))
_COW_PAGES = bytes(0x31 if (b & 0x40) or (b & 0x80 and not b & 0x20) else 0x30
                   for b in range(256))
_RUN_RE = re.compile(b"1+")

# VmFlags that are restored with madvise, and their MADV_ values.
_MADVISE = {"dc": 10, "dd": 16, "wf": 18, "hg": 14, "nh": 15}


@dataclass
class _Buffer:
    addr: int
    view: memoryview


_buffer: _Buffer | None = None


def _get_buffer() -> _Buffer:
    """One page-data buffer for the life of the process: fresh memory is slow to touch."""
    global _buffer
    if _buffer is None:
        addr = libc.anon_buffer(BUF_SIZE)
        _buffer = _Buffer(addr, ctypes_view(addr, BUF_SIZE))
    return _buffer


def _prot(perms: str) -> int:
    return ((libc.PROT_READ if perms[0] == "r" else 0)
            | (libc.PROT_WRITE if perms[1] == "w" else 0)
            | (libc.PROT_EXEC if perms[2] == "x" else 0))


def classify(v: procfs.Vma) -> str:
    """The kind of a mapping: vdso, anon, file, shmem; raise for what ckpt cannot save."""
    if v.path in VDSO_NAMES:
        return "vdso"
    if v.path == "[vsyscall]":
        return "skip"
    where = f"mapping {v.start:#x}-{v.end:#x} {v.path or '(anonymous)'}"
    if "ht" in v.flags:
        raise UnsupportedError(f"{where}: hugetlbfs mappings are not supported yet")
    if "io" in v.flags or "pf" in v.flags:
        raise UnsupportedError(f"{where}: device (I/O or PFN) mappings are not supported")
    if v.shared and (v.path == "/dev/zero (deleted)" or v.path == "/dev/zero" and v.inode == 0):
        return "shmem"
    if v.path.startswith(("/SYSV", "/memfd:")) or v.path.endswith(" (deleted)"):
        raise UnsupportedError(f"{where}: mappings of deleted files, memfd and SysV shared "
                               "memory are not supported yet")
    if not v.path or v.path.startswith("["):
        return "anon"
    if v.path.startswith("/"):
        return "file"
    raise UnsupportedError(f"{where}: unknown kind of mapping")


def _file_id(path: str) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _copy_out(pid: int, memfd: int, start: int, length: int, readable: bool,
              out: Any) -> None:
    """Copy target memory [start, start+length) to ``out`` through the reused buffer."""
    buf = _get_buffer()
    done = 0
    while done < length:
        n = min(BUF_SIZE, length - done)
        if readable:
            got = libc.process_vm_readv(pid, buf.addr, start + done, n)
        else:
            got = os.preadv(memfd, [buf.view[:n]], start + done)
        if got <= 0:
            raise OSError(5, f"short read of process {pid} memory at {start + done:#x}")
        out.write(buf.view[:got])
        done += got


def _shmem_data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """Offsets of the data (not holes) of a shared anonymous mapping."""
    ranges = []
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        ranges.append((start, end))
        off = end
    return ranges


def dump(pid: int, vmas: list[procfs.Vma], inj: Injector, images: ImageWriter,
         stat: procfs.Stat, shmem_seen: dict[int, int] | None = None) -> dict[str, Any]:
    """Save mappings and pages of ``pid``; ``vmas`` were read before any injection.

    ``shmem_seen`` (shared by every task of one dump) maps the inode of each
    shared anonymous object to the task that saved its pages: the others
    only refer to it.
    """
    if shmem_seen is None:
        shmem_seen = {}
    out_vmas: list[dict[str, Any]] = []
    runs: list[list[int]] = []
    pages = images.raw(f"pages-{pid}.img")
    pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    memfd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for v in vmas:
            kind = classify(v)
            if kind == "skip":
                continue
            entry: dict[str, Any] = {
                "start": v.start, "end": v.end, "prot": _prot(v.perms), "shared": v.shared,
                "kind": kind, "path": v.path, "offset": v.offset, "flags": v.flags,
            }
            if kind == "file":
                entry["file"] = _file_id(v.path)
            out_vmas.append(entry)
            if kind in ("vdso",) or (kind == "file" and v.shared):
                continue
            if kind == "shmem":
                fd = os.open(f"/proc/{pid}/map_files/{v.start:x}-{v.end:x}", os.O_RDONLY)
                try:
                    ino = os.fstat(fd).st_ino
                    entry["shmem_id"] = ino
                    if ino in shmem_seen:
                        entry["shmem_owner"] = shmem_seen[ino]
                        continue
                    shmem_seen[ino] = pid
                    entry["shmem_owner"] = pid
                    for s, e in _shmem_data_ranges(fd, v.size):
                        runs.append([v.start + s, (e - s) // PAGE])
                        _copy_out(pid, memfd, v.start + s, e - s, "r" in v.perms, pages)
                finally:
                    os.close(fd)
                continue
            flags = procfs.pagemap_flags(pid, v.start, v.size // PAGE, pagemap)
            table = _ANON_PAGES if kind == "anon" else _COW_PAGES
            for m in _RUN_RE.finditer(flags.translate(table)):
                start = v.start + m.start() * PAGE
                length = (m.end() - m.start()) * PAGE
                runs.append([start, length // PAGE])
                _copy_out(pid, memfd, start, length, "r" in v.perms, pages)
    finally:
        os.close(pagemap)
        os.close(memfd)

    return {
        "vmas": out_vmas,
        "pagemap": runs,
        "pages_file": f"pages-{pid}.img",
        "exe": procfs.exe(pid),
        "auxv": procfs.auxv(pid).hex(),
        "brk": inj.call("brk", 0),
        "start_code": stat.start_code, "end_code": stat.end_code,
        "start_data": stat.start_data, "end_data": stat.end_data,
        "start_brk": stat.start_brk, "start_stack": stat.start_stack,
        "arg_start": stat.arg_start, "arg_end": stat.arg_end,
        "env_start": stat.env_start, "env_end": stat.env_end,
    }


# ---------------------------------------------------------------- restore

def check_files(mm: dict[str, Any]) -> None:
    """Refuse to restore when a mapped file is gone or changed since the dump."""
    seen: set[str] = set()
    for v in mm["vmas"]:
        if v["kind"] != "file" or v["path"] in seen:
            continue
        seen.add(v["path"])
        try:
            now = _file_id(v["path"])
        except FileNotFoundError:
            raise RestoreError(f"mapped file {v['path']} no longer exists") from None
        if now != v["file"]:
            raise RestoreError(f"mapped file {v['path']} changed since the dump "
                               f"(size/mtime {now} vs {v['file']})")


def free_area(ranges: list[tuple[int, int]], size: int, hint: int = 0x100000000000) -> int:
    """A page-aligned address where ``size`` bytes overlap none of ``ranges``."""
    addr = hint
    for s, e in sorted(ranges):
        if e <= addr:
            continue
        if s >= addr + size:
            break
        addr = (e + PAGE - 1) & ~(PAGE - 1)
    if addr + size > TASK_SIZE:
        raise RestoreError("no free address range for the restore helper")
    return addr


def _unmap_all_except(inj: Injector, keep: list[tuple[int, int]]) -> None:
    """Unmap every gap between the ``keep`` ranges, from address 0 to TASK_SIZE."""
    cur = 0
    for s, e in sorted(keep) + [(TASK_SIZE, TASK_SIZE)]:
        if s > cur:
            inj.call("munmap", cur, s - cur)
        cur = max(cur, e)


def _move_vdso(inj: Injector, current: list[procfs.Vma], saved: list[dict[str, Any]],
               temp: int) -> int:
    """Move the vDSO trio to its saved addresses; return the saved vDSO's start."""
    cur = {v.path: v for v in current if v.path in VDSO_NAMES}
    want = {v["path"]: v for v in saved if v["kind"] == "vdso"}
    if set(cur) != set(want) or any(cur[n].size != want[n]["end"] - want[n]["start"]
                                     for n in cur):
        raise RestoreError("the vDSO of this kernel differs from the one in the image "
                           f"({sorted((n, v.size) for n, v in cur.items())} vs "
                           f"{sorted((n, v['end'] - v['start']) for n, v in want.items())}); "
                           "restore on the kernel the dump was taken on")
    if all(cur[n].start == want[n]["start"] for n in cur):
        return want["[vdso]"]["start"]
    base = min(v.start for v in cur.values())
    # Through a temporary place, so no move lands on a part not yet moved.
    for v in cur.values():
        inj.call("mremap", v.start, v.size, v.size, libc.MREMAP_MAYMOVE | libc.MREMAP_FIXED,
                 temp + v.start - base)
    for n, v in cur.items():
        inj.call("mremap", temp + v.start - base, v.size, v.size,
                 libc.MREMAP_MAYMOVE | libc.MREMAP_FIXED, want[n]["start"])
    return want["[vdso]"]["start"]


class _TargetFiles:
    """Files opened inside the target during restore, closed all at once."""

    def __init__(self, inj: Injector, scratch: int):
        self.inj = inj
        self.scratch = scratch
        self.fds: dict[tuple[str, int], int] = {}

    def open(self, path: str, flags: int) -> int:
        key = (path, flags)
        if key not in self.fds:
            self.inj.write_string(self.scratch, path)
            try:
                self.fds[key] = self.inj.call("openat", -100, self.scratch, flags | os.O_CLOEXEC)
            except OSError as e:
                raise RestoreError(f"cannot open {path} in the restored process: "
                                   f"{os.strerror(e.errno)}") from None
        return self.fds[key]

    def close_all(self) -> None:
        for fd in self.fds.values():
            self.inj.call("close", fd)
        self.fds.clear()


def restore(pid: int, inj: Injector, mm: dict[str, Any], images_dir: str, helper: int,
            helper_size: int, shmem: dict[int, tuple[int, int, int]] | None = None) -> None:
    """Replace the address space of stopped child ``pid`` with the saved one.

    ``shmem`` (shared by every task of one restore) maps a shared anonymous
    object's id to (pid, start, end) of its first restored mapping; later
    tasks map that same object through /proc/PID/map_files.
    """
    if shmem is None:
        shmem = {}
    current = procfs.maps(pid)
    saved = mm["vmas"]
    keep = [(helper, helper + helper_size)]
    keep += [(v.start, v.end) for v in current if v.path in VDSO_NAMES]
    _unmap_all_except(inj, keep)
    occupied = keep + [(v["start"], v["end"]) for v in saved]
    vdso_span = sum(v.size for v in current if v.path in VDSO_NAMES)
    temp = free_area(occupied, vdso_span)
    _move_vdso(inj, current, saved, temp)

    files = _TargetFiles(inj, helper)
    to_protect: list[dict[str, Any]] = []
    for v in saved:
        if v["kind"] == "vdso":
            continue
        length = v["end"] - v["start"]
        prot = v["prot"]
        flags = libc.MAP_FIXED | (libc.MAP_SHARED if v["shared"] else libc.MAP_PRIVATE)
        if "gd" in v["flags"]:
            flags |= libc.MAP_GROWSDOWN
        if not (v["kind"] == "file" and v["shared"]) and not prot & libc.PROT_WRITE:
            prot |= libc.PROT_WRITE
            to_protect.append(v)
        sid = v.get("shmem_id")
        if v["kind"] == "shmem" and sid in shmem:
            opid, ostart, oend = shmem[sid]
            fd = files.open(f"/proc/{opid}/map_files/{ostart:x}-{oend:x}", os.O_RDWR)
            inj.call("mmap", v["start"], length, prot, flags, fd, v["offset"])
        elif v["kind"] in ("anon", "shmem"):
            inj.call("mmap", v["start"], length, prot, flags | libc.MAP_ANONYMOUS, -1, 0)
            if v["kind"] == "shmem":
                shmem[sid] = (pid, v["start"], v["end"])
        else:
            mode = os.O_RDWR if (v["shared"] and "mw" in v["flags"]) else os.O_RDONLY
            fd = files.open(v["path"], mode)
            inj.call("mmap", v["start"], length, prot, flags, fd, v["offset"])
        for flag, advice in _MADVISE.items():
            if flag in v["flags"]:
                inj.raw("madvise", v["start"], length, advice)

    pages_fd = files.open(os.path.join(os.path.abspath(images_dir), mm["pages_file"]),
                          os.O_RDONLY)
    off = 0
    for vaddr, npages in mm["pagemap"]:
        length = npages * PAGE
        done = 0
        while done < length:
            got = inj.call("pread64", pages_fd, vaddr + done, length - done, off + done)
            if got <= 0:
                raise RestoreError(f"{mm['pages_file']}: short read at offset {off + done}")
            done += got
        off += length

    for v in to_protect:
        inj.call("mprotect", v["start"], v["end"] - v["start"], v["prot"])

    exe_fd = -1 if _same_exe(pid, mm["exe"]) else files.open(mm["exe"], os.O_RDONLY)
    _set_mm_map(inj, mm, helper, exe_fd)
    files.close_all()


def _same_exe(pid: int, path: str) -> bool:
    """Whether the child's exe already is ``path`` (a Python target restored by ckpt
    running on the same interpreter). The kernel refuses to replace an exe that is
    still mapped (EBUSY), and here there is nothing to replace."""
    try:
        return (os.readlink(f"/proc/{pid}/exe") == path
                and os.path.samefile(f"/proc/{pid}/exe", path))
    except OSError:
        return False


class PrctlMmMap(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
        "start_stack", "arg_start", "arg_end", "env_start", "env_end", "auxv")] + [
        ("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]


def _set_mm_map(inj: Injector, mm: dict[str, Any], scratch: int, exe_fd: int) -> None:
    auxv = bytes.fromhex(mm["auxv"])
    auxv_addr = scratch + 4096
    inj.write(auxv_addr, auxv)
    m = PrctlMmMap(**{k: mm[k] for k in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
        "start_stack", "arg_start", "arg_end", "env_start", "env_end")},
        auxv=auxv_addr, auxv_size=len(auxv), exe_fd=exe_fd & 0xFFFFFFFF)  # -1: keep the exe
    inj.write(scratch, bytes(m))
    try:
        inj.call("prctl", libc.PR_SET_MM, libc.PR_SET_MM_MAP, scratch, ctypes.sizeof(m), 0)
    except OSError as e:
        raise RestoreError(f"prctl(PR_SET_MM_MAP) failed: {os.strerror(e.errno)}") from None


def summarize_pagemap(runs: list[list[int]]) -> dict[str, int]:
    return {"runs": len(runs), "pages": sum(n for _, n in runs),
            "bytes": sum(n for _, n in runs) * PAGE}

