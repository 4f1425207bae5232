"""Ghost objects: files that have no name any more, whose content only the kernel holds.

Two sorts: *deleted files* (a regular file unlinked while open or mapped,
``/path (deleted)``; criu calls them ghost files) and *memfds*
(``memfd_create``, ``/memfd:NAME (deleted)``). A process may hold one through
fds, mappings (MAP_SHARED or MAP_PRIVATE) and its exe link, and several
processes may share it.

Dump: each object is saved once per dump, whoever holds it and however: its
data ranges (``SEEK_DATA``/``SEEK_HOLE``) are copied by the kernel
(``copy_file_range``, else ``sendfile``) from a descriptor of the object to
``ghost-data.img``; every reference (fd description, mapping, exe) carries the
same description, with its ``id``. A deleted file larger than the ghost limit
(``--ghost-limit``, 64 MiB by default) is refused.

Restore: ``create`` makes the object again in ckpt and fills it from the image
by the kernel again: an ``O_TMPFILE`` in the file's directory, linked under its
old name (or a hidden one if that name is taken now) and unlinked at once, so
that /proc shows ``/path (deleted)`` again; or ``memfd_create`` with the
name, mode and seals. Fd descriptions reopen that one object (``Made``), and
mappings map it (mem.py: through a process already holding it).
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import logging
import mmap
import os
import stat as st_mod
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

from ..errors import DumpError, RestoreError, UnsupportedError
from ..images import ImageReader, ImageWriter, RawWriter, ctypes_view
from ..kernel import libc
from .filekind import reopen_flags

log = logging.getLogger("ckpt.ghost")

DATA_FILE = "ghost-data.img"
DEFAULT_LIMIT = 64 << 20
DELETED = " (deleted)"
MEMFD_PREFIX = "/memfd:"

F_SEAL_SEAL = fcntl.F_SEAL_SEAL
F_SEAL_EXEC = 0x20
MFD_NOEXEC_SEAL = 0x8
MFD_EXEC = 0x10
PAGE = os.sysconf("SC_PAGE_SIZE")
_CHUNK = 64 << 20  # the most of the image mapped at once to checksum it
_COPY_FALLBACK = (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)


# ---------------------------------------------------------------- what is a ghost


def memfd_name(link: str) -> str | None:
    """NAME of a ``/memfd:NAME (deleted)`` link, else None."""
    if link.startswith(MEMFD_PREFIX) and link.endswith(DELETED):
        return link[len(MEMFD_PREFIX):-len(DELETED)]
    return None


def is_memfd(link: str, st: os.stat_result) -> bool:
    return st_mod.S_ISREG(st.st_mode) and st.st_nlink == 0 and memfd_name(link) is not None


def is_ghost(link: str, st: os.stat_result) -> bool:
    """Whether ``link`` (an fd link or a mapping's path) names a file that lost its name."""
    if not link.endswith(DELETED):
        return False
    if st.st_nlink == 0:
        return True
    try:  # a live file whose name really ends with " (deleted)"
        now = os.stat(link)
        return (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
    except OSError:
        return True


def may_be_ghost(path: str) -> bool:
    """A cheap first test on a mapping's path, before opening the mapped file."""
    return path.endswith(DELETED) or path.startswith(MEMFD_PREFIX)


# ---------------------------------------------------------------- dump


class GhostStore:
    """The ghost objects of one dump, saved once each into ``ghost-data.img``."""

    def __init__(self, images: ImageWriter, limit: int = DEFAULT_LIMIT):
        self.images = images
        self.limit = limit
        self.saved: dict[tuple[int, int], dict[str, Any]] = {}
        self._data: RawWriter | None = None

    def save(self, fd: int, st: os.stat_result, link: str, what: str) -> dict[str, Any]:
        """The description of the object ``fd`` reads (saved now if it was not yet).

        ``fd`` is ckpt's own readable descriptor of it, ``link`` what /proc shows
        for it, ``what`` names the holder for messages ("process 12 fd 3").
        """
        key = (st.st_dev, st.st_ino)
        if key in self.saved:
            return copy.deepcopy(self.saved[key])
        name = memfd_name(link) if st.st_nlink == 0 else None
        info: dict[str, Any] = {"id": len(self.saved) + 1}
        if name is not None:
            if st.st_blksize > PAGE:
                raise UnsupportedError(f"{what}: {link} is a memfd of huge pages "
                                       "(MFD_HUGETLB); not supported yet")
            info["memfd"] = name
            try:
                info["seals"] = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            except OSError as e:
                raise UnsupportedError(f"{what}: {link}: cannot read its seals "
                                       f"({e.strerror}); not a memfd ckpt can save") from None
        else:
            path = link[:-len(DELETED)] if link.endswith(DELETED) else link
            if st.st_nlink:
                raise UnsupportedError(
                    f"{what}: {link} was unlinked but the file still has {st.st_nlink} "
                    "other link(s) elsewhere; not supported yet")
            if not path.startswith("/") or path == "/secretmem":
                raise UnsupportedError(f"{what}: {link} is a file ckpt cannot save")
            if st.st_size > self.limit:
                raise UnsupportedError(
                    f"{what}: {path} is a deleted file of {st.st_size} bytes, more than "
                    f"the ghost file limit of {self.limit} bytes; raise it with "
                    "--ghost-limit (ghost_limit=) to save it")
            info["path"] = path
        info.update(size=st.st_size, mode=st_mod.S_IMODE(st.st_mode), uid=st.st_uid,
                    gid=st.st_gid)
        data = self._writer()
        info["data_off"] = data.size
        info["runs"] = []
        for off, length in libc.data_ranges(fd, st.st_size):
            _append(data, fd, off, length, f"{what}: {link}")
            info["runs"].append([off, length])
        tail = _save_tail(data, fd, st.st_size)
        if tail is not None:
            info["tail"] = tail
        log.info("%s: %s saved (%d bytes, %d in the image)", what, link, st.st_size,
                 data.size - info["data_off"])
        self.saved[key] = info
        return copy.deepcopy(info)

    def _writer(self) -> RawWriter:
        if self._data is None:
            self._data = self.images.raw(DATA_FILE)
        return self._data


def _append(raw: RawWriter, src: int, off: int, length: int, what: str) -> None:
    """Append ``length`` bytes of ``src`` at ``off`` to ``raw``, copied by the kernel."""
    start = raw.size
    done = 0
    use_sendfile = False
    while done < length:
        n = -1
        if not use_sendfile:
            try:
                n = os.copy_file_range(src, raw.fd, length - done, off + done)
            except OSError as e:
                if e.errno not in _COPY_FALLBACK:
                    raise
                use_sendfile = True
        if use_sendfile:
            n = os.sendfile(raw.fd, src, off + done, length - done)
        if n == 0:
            raise DumpError(f"{what}: the file shrank while it was being saved")
        done += n
    raw.size += length
    raw.crc = _crc_of(raw.path, start, length, raw.crc)


@contextlib.contextmanager
def _page_of(fd: int, offset: int, writable: bool) -> Iterator[memoryview]:
    """The page of file ``fd`` at ``offset``, mapped shared in ckpt (whole, even where
    it lies past the end of the file, which Python's mmap refuses)."""
    prot = libc.PROT_READ | (libc.PROT_WRITE if writable else 0)
    addr = libc.syscall("mmap", 0, PAGE, prot, libc.MAP_SHARED, fd, offset)
    try:
        with ctypes_view(addr, PAGE) as view:
            yield view
    finally:
        libc.syscall("munmap", addr, PAGE)


def _save_tail(raw: RawWriter, fd: int, size: int) -> list[int] | None:
    """Save the bytes past the end of the object in its last page, if any is not zero.

    A mapping of the last page may write there (the page is whole in memory), and
    every mapping of the page shows those bytes, though no read() does. On tmpfs
    (memfds, /dev/shm) they last as long as the page; read through a mapping of
    that page. Returns ``[offset in the image, length]``.
    """
    used = size % PAGE
    if not used:
        return None
    try:
        with _page_of(fd, size - used, writable=False) as page:
            tail = page[used:]
            if tail == bytes(len(tail)):
                return None
            return [raw.write(tail), PAGE - used]
    except OSError:
        return None  # a file that cannot be mapped: no mapping wrote there


def _crc_of(path: str, start: int, length: int, crc: int) -> int:
    """Continue ``crc`` over bytes [start, start+length) of file ``path`` (mapped, no copy)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = start
        while pos < start + length:
            base = pos & ~(mmap.ALLOCATIONGRANULARITY - 1)
            n = min(_CHUNK, start + length - pos)
            with mmap.mmap(fd, pos - base + n, mmap.MAP_SHARED, mmap.PROT_READ,
                           offset=base) as m, memoryview(m) as mv:
                crc = zlib.crc32(mv[pos - base:], crc)
            pos += n
    finally:
        os.close(fd)
    return crc


_stores: weakref.WeakKeyDictionary[ImageWriter, GhostStore] = weakref.WeakKeyDictionary()


def configure(images: ImageWriter, limit: int | None) -> None:
    """Set the ghost file limit of the dump writing ``images`` (None: the default)."""
    if limit is not None and limit < 0:
        raise DumpError(f"invalid ghost file limit {limit}")
    _stores[images] = GhostStore(images, DEFAULT_LIMIT if limit is None else limit)


def store(images: ImageWriter) -> GhostStore:
    """The ghost objects of the dump writing ``images`` (fds, mappings and exe share it)."""
    if images not in _stores:
        _stores[images] = GhostStore(images)
    return _stores[images]


def save_fd(images: ImageWriter, dup: int, st: os.stat_result, link: str,
            what: str) -> dict[str, Any]:
    """Save the object behind ``dup`` (ckpt's pidfd_getfd copy of a target's fd)."""
    fd = os.open(f"/proc/self/fd/{dup}", os.O_RDONLY | os.O_CLOEXEC)  # dup may be write-only
    try:
        return store(images).save(fd, st, link, what)
    finally:
        os.close(fd)


def save_mapping(images: ImageWriter, pid: int, start: int, end: int,
                 path: str) -> dict[str, Any] | None:
    """The ghost description of a file mapping of ``pid``, or None if its file has a name."""
    if not may_be_ghost(path):
        return None
    fd = os.open(f"/proc/{pid}/map_files/{start:x}-{end:x}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not st_mod.S_ISREG(st.st_mode) or not is_ghost(path, st):
            return None
        return store(images).save(fd, st, path, f"process {pid} mapping {start:#x}-{end:#x}")
    finally:
        os.close(fd)


def save_exe(images: ImageWriter, pid: int, link: str) -> dict[str, Any] | None:
    """The ghost description of ``pid``'s executable, or None if it has a name."""
    if not may_be_ghost(link):
        return None
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not is_ghost(link, st):
            return None
        return store(images).save(fd, st, link, f"process {pid} exe")
    finally:
        os.close(fd)


# ---------------------------------------------------------------- restore


def describe(info: dict[str, Any]) -> str:
    if "memfd" in info:
        return f"memfd {info['memfd']!r}"
    return f"deleted file {info['path']}"


def check(info: dict[str, Any]) -> None:
    """Refuse early what ``create`` could not do: a deleted file's directory is gone."""
    if "path" in info and not os.path.isdir(os.path.dirname(info["path"])):
        raise RestoreError(f"cannot recreate deleted file {info['path']}: its directory "
                           f"{os.path.dirname(info['path'])} no longer exists")


def create(data_path: str, info: dict[str, Any]) -> int:
    """Make the object of ``info`` again, filled from ``data_path``; ckpt's O_RDWR fd of it."""
    fd = _new_memfd(info) if "memfd" in info else _new_file(info)
    try:
        os.ftruncate(fd, info["size"])
        _fill(fd, data_path, info)
        os.fchown(fd, info["uid"], info["gid"])
        os.fchmod(fd, info["mode"])  # after chown, which drops set-id bits
        if "memfd" in info:
            want = int(info["seals"])
            have = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if want & ~have:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, want & ~have)
        else:
            fd = _named(fd, info["path"])
    except OSError as e:
        os.close(fd)
        raise RestoreError(f"cannot recreate {describe(info)}: {e.strerror or e}") from None
    except BaseException:
        os.close(fd)
        raise
    log.info("%s recreated (%d bytes)", describe(info), info["size"])
    return fd


def _new_memfd(info: dict[str, Any]) -> int:
    seals, mode = int(info["seals"]), int(info["mode"])
    flags = os.MFD_CLOEXEC
    if not seals & F_SEAL_SEAL:
        flags |= os.MFD_ALLOW_SEALING
    exec_flags = MFD_NOEXEC_SEAL if seals & F_SEAL_EXEC and not mode & 0o111 else MFD_EXEC
    try:
        return os.memfd_create(info["memfd"], flags | exec_flags)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel before 6.3, without these flags
            raise RestoreError(f"cannot recreate {describe(info)}: {e.strerror}") from None
    return os.memfd_create(info["memfd"], flags)


def _new_file(info: dict[str, Any]) -> int:
    check(info)
    directory = os.path.dirname(info["path"])
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise RestoreError(f"cannot recreate {describe(info)}: {e.strerror}") from None
    # A file system without O_TMPFILE: a hidden name, removed at once.
    for n in range(1000):
        hidden = os.path.join(directory, f".{os.path.basename(info['path'])}.ckpt-ghost.{n}")
        try:
            fd = os.open(hidden, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        os.unlink(hidden)
        return fd
    raise RestoreError(f"cannot recreate {describe(info)}: no free hidden name")


def _link_fd(fd: int, name: str) -> None:
    """linkat(/proc/self/fd/FD, name, AT_SYMLINK_FOLLOW): give file ``fd`` a name."""
    procfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:  # with a dir fd, os.link is linkat (plain link() would link the /proc symlink)
        os.link(str(fd), name, src_dir_fd=procfd, follow_symlinks=True)
    finally:
        os.close(procfd)


def _named(fd: int, path: str) -> int:
    """The O_TMPFILE file ``fd`` reopened under its old name, which is removed at once.

    Opened through a name, the file shows as "PATH (deleted)" in /proc again (so
    do the descriptions reopened from it). If the name is taken now (the file was
    replaced, e.g. by an upgrade), a hidden name next to it is used. A file that
    never had a name (O_TMPFILE, "#INODE") gets none.
    """
    if os.fstat(fd).st_nlink or os.path.basename(path).startswith("#"):
        return fd
    names = [path] + [os.path.join(os.path.dirname(path),
                                   f".{os.path.basename(path)}.ckpt-ghost.{n}")
                      for n in range(100)]
    for name in names:
        try:
            _link_fd(fd, name)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: not an O_TMPFILE file, it cannot be linked
                log.warning("%s: cannot name the recreated file (%s); it stays nameless",
                            path, e.strerror)
            return fd
        try:
            named = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        finally:
            os.unlink(name)
        if os.path.samestat(os.fstat(named), os.fstat(fd)):
            os.close(fd)
            return named
        os.close(named)  # replaced meanwhile: keep the nameless one
        return fd
    return fd


def _fill_tail(fd: int, data_path: str, info: dict[str, Any]) -> None:
    """Put back the bytes past the end in the last page (``_save_tail``), through a
    mapping of that page, as the process had written them."""
    img_off, length = (int(x) for x in info["tail"])
    size = int(info["size"])
    used = size % PAGE
    if not used or length != PAGE - used:
        raise RestoreError(f"{describe(info)}: bad tail {info['tail']} for size {size}")
    src = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _page_of(fd, size - used, writable=True) as page:
            if os.preadv(src, [page[used:]], img_off) != length:
                raise RestoreError(f"{data_path}: short read at offset {img_off}")
    finally:
        os.close(src)


def _fill(fd: int, data_path: str, info: dict[str, Any]) -> None:
    """Copy the saved data ranges into the new object, by the kernel."""
    if info["runs"]:
        _fill_runs(fd, data_path, info)
    if info.get("tail"):
        _fill_tail(fd, data_path, info)


def _fill_runs(fd: int, data_path: str, info: dict[str, Any]) -> None:
    try:
        src = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RestoreError(f"{data_path}: missing, but {describe(info)} is in it") from None
    try:
        img_off = int(info["data_off"])
        use_sendfile = False
        for off, length in info["runs"]:
            done = 0
            while done < length:
                n = -1
                if not use_sendfile:
                    try:
                        n = os.copy_file_range(src, fd, length - done, img_off + done,
                                               off + done)
                    except OSError as e:
                        if e.errno not in _COPY_FALLBACK:
                            raise
                        use_sendfile = True
                if use_sendfile:
                    os.lseek(fd, off + done, os.SEEK_SET)
                    n = os.sendfile(fd, src, img_off + done, length - done)
                if n == 0:
                    raise RestoreError(f"{data_path}: short read at offset {img_off + done}")
                done += n
            img_off += length
    finally:
        os.close(src)


class Made:
    """The ghost objects one kind made during a restore, by id: each is made once and
    kept open until every process holds its fds; each description reopens it with its
    own flags and offset."""

    def __init__(self) -> None:
        self._objects: dict[int, int] = {}

    def reopen(self, images: ImageReader, desc: dict[str, Any]) -> int:
        """An fd for fd description ``desc`` of a ghost object: the object reopened
        through /proc/self/fd with the description's flags, at its offset."""
        info = desc["ghost"]
        gid = int(info["id"])
        if gid not in self._objects:
            self._objects[gid] = create(images.path(DATA_FILE), info)
        flags = reopen_flags(desc["flags"], bool(info.get("dir")), through_proc=True)
        try:
            fd = os.open(f"/proc/self/fd/{self._objects[gid]}", flags)
        except OSError as e:
            raise RestoreError(f"cannot reopen {describe(info)}: {e.strerror}") from None
        if not desc["flags"] & os.O_PATH:
            os.lseek(fd, int(desc.get("pos", 0)), os.SEEK_SET)
        return fd

    def close(self) -> None:
        for fd in self._objects.values():
            os.close(fd)
        self._objects.clear()


def holders(images_dir: str) -> dict[int, tuple[int, int]]:
    """Ghost id -> (pid, fd) of a process of the image holding it through an fd."""
    reader = ImageReader(images_dir)
    descriptions = reader.load_json("files.json")
    ids = {fid: int(d["ghost"]["id"]) for fid, d in descriptions.items() if "ghost" in d}
    out: dict[int, tuple[int, int]] = {}
    if not ids:
        return out
    for t in reader.inventory["tasks"]:
        if t.get("zombie"):
            continue
        for e in reader.load_json(f"fds-{t['pid']}.json"):
            if e["file"] in ids:
                out.setdefault(ids[e["file"]], (int(t["pid"]), int(e["fd"])))
    return out
