"""Ghost objects: files that have no name any more, whose content only the kernel holds.

Two sorts: *deleted files* (a file unlinked while open or mapped, ``/path
(deleted)``; criu calls them ghost files) and *memfds* (``memfd_create``,
``/memfd:NAME (deleted)``). A deleted file is a regular file (a temporary file:
``mkstemp`` + ``unlink``, ``O_TMPFILE``), a removed directory (an fd on it, a
working directory), a FIFO, a device node or a symbolic link (through an
``O_PATH`` fd). A process may hold one through fds, mappings (MAP_SHARED or
MAP_PRIVATE), its exe link and its cwd, and several processes may share it.

Dump: each object is saved once per dump, whoever holds it and however: a
regular file's data ranges (``SEEK_DATA``/``SEEK_HOLE``) are copied by the
kernel (``copy_file_range``, else ``sendfile``) from a descriptor of the object
to ``ghost-data.img``; every reference (fd description, mapping, exe, cwd)
carries the same description, with its ``id``. A deleted file larger than the
ghost limit (``--ghost-limit``, 64 MiB by default) is refused. What the restore
would refuse (``check``) is refused then.

Restore: ``create`` makes the object again in ckpt: a regular file as an
``O_TMPFILE`` in its directory, filled from the image by the kernel, linked
under its old name (or a hidden one if that name is taken now) and unlinked at
once, so that /proc shows ``/path (deleted)`` again; a directory, FIFO, device
node or symlink made under that name, opened and removed. Directories on the
way that are gone now are made for that time and removed after (a file of a
removed directory shows ``/dir/file (deleted)`` again); where one is a file now,
a hidden name in the nearest directory is used. The object gets its owner,
mode, access and modification times back, and every directory ckpt made or
removed a name in gets its times back too. A memfd is made with
``memfd_create`` with its name, mode and seals. Fd descriptions reopen that one
object (``Made``), mappings map it (mem.py: through a process already holding
it), a removed working directory is entered through it (``cwd_source``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as st_mod

from ..errors import DumpError, RestoreError, UnsupportedError
from ..images import ImageReader, ImageWriter, RawWriter, crc32, ctypes_view
from ..kernel import libc, treeroot
from ..kernel.scoped import contextmanager
from ..log import logger
from ..schema import NAT, PATH, S64, U32, UID, Int, List, Obj, Opt, Str, Tup, refuse
from .filekind import reopen_flags

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

log = logger("ckpt.ghost")

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
TYPES = ("dir", "fifo", "chr", "blk", "link")

# A ghost object, as fd descriptions, mappings, the exe and the cwd carry it
# (docs/image-format.md, Ghost objects); ``check_image`` says how the fields go together.
SCHEMA = Obj(
    id=Int(1, 1 << 31),
    path=Opt(PATH),  # a deleted file's path, without " (deleted)"
    memfd=Opt(Str(249)),  # a memfd's name
    seals=Opt(U32),
    type=Opt(Str(choices=TYPES)),  # absent: a regular file
    rdev=Opt(Tup(U32, U32)),
    target=Opt(Str()),  # a symlink's
    size=NAT, mode=Int(0, 0o7777), uid=UID, gid=UID, atime_ns=S64, mtime_ns=S64,
    data_off=Opt(NAT),
    runs=Opt(List(Tup(NAT, Int(1, 1 << 62)))),
    tail=Opt(Tup(NAT, Int(1, PAGE - 1))),
)


# ---------------------------------------------------------------- what is a ghost


def memfd_name(link: str) -> str | None:
    """NAME of a ``/memfd:NAME (deleted)`` link, else None."""
    if link.startswith(MEMFD_PREFIX) and link.endswith(DELETED):
        return link[len(MEMFD_PREFIX):-len(DELETED)]
    return None


# memfd_secret's files: kept out of every other process's reach by the kernel, so no
# dump can read them.
SECRETMEM = "/secretmem (deleted)"
SECRETMEM_REFUSAL = ("memory of memfd_secret, which the kernel lets no other process "
                     "read; not supported")


def is_secretmem(link: str, dev_major: int) -> bool:
    return link == SECRETMEM and dev_major == 0  # (a pseudo file system's device)


def is_memfd(link: str, st: os.stat_result) -> bool:
    return st_mod.S_ISREG(st.st_mode) and st.st_nlink == 0 and memfd_name(link) is not None


def is_ghost(link: str, st: os.stat_result) -> bool:
    """Whether ``link`` (an fd link or a mapping's path) names a file that lost its name."""
    if not link.endswith(DELETED):
        return False
    if st.st_nlink == 0:
        return True
    try:  # a live file whose name really ends with " (deleted)"
        now = treeroot.stat(link)
        return (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
    except OSError:
        return True


def may_be_ghost(path: str) -> bool:
    """A cheap first test on a mapping's path, before opening the mapped file."""
    return path.endswith(DELETED) or path.startswith(MEMFD_PREFIX)


# ---------------------------------------------------------------- dump


def _node_type(st: os.stat_result, fd: int | None, link: str, what: str) -> dict[str, Any]:
    """What a deleted file that is not a regular file needs to be made again: its
    ``type`` (dir, fifo, chr, blk, link), a device's ``rdev``, a symlink's ``target``."""
    mode = st.st_mode
    if st_mod.S_ISREG(mode):
        return {}
    if st_mod.S_ISDIR(mode):
        return {"type": "dir"}
    if st_mod.S_ISFIFO(mode):
        return {"type": "fifo"}
    if st_mod.S_ISCHR(mode) or st_mod.S_ISBLK(mode):
        return {"type": "chr" if st_mod.S_ISCHR(mode) else "blk",
                "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)]}
    if st_mod.S_ISLNK(mode) and fd is not None:
        return {"type": "link", "target": os.readlink("", dir_fd=fd)}
    raise UnsupportedError(f"{what}: {link} is a deleted {st_mod.filemode(mode)[0]!r} file; "
                           "ckpt cannot make one again")


class GhostStore:
    """The ghost objects of one dump, saved once each into ``ghost-data.img``."""

    def __init__(self, images: ImageWriter, limit: int = DEFAULT_LIMIT):
        self.images = images
        self.limit = limit
        self.saved: dict[tuple[int, int], dict[str, Any]] = {}
        self._data: RawWriter | None = None

    def save(self, fd: int | None, st: os.stat_result, link: str, what: str
             ) -> dict[str, Any]:
        """The description of the object ``st`` is the fstat of (saved now if it was not
        yet).

        ``fd`` is ckpt's own readable descriptor of a regular file (None for other
        types), ``link`` what /proc shows for it, ``what`` names the holder for
        messages ("process 12 fd 3").
        """
        key = (st.st_dev, st.st_ino)
        if key in self.saved:
            import copy  # here: only a dump of a deleted file needs it
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
                    "other link(s) elsewhere; ckpt saves it as a link only when it is open "
                    "through an fd or mapped (not as the exe)")
            if not path.startswith("/") or path == "/secretmem":
                raise UnsupportedError(f"{what}: {link} is a file ckpt cannot save")
            info["path"] = path
            info.update(_node_type(st, fd, link, what))
            if "type" in info:
                self.images.need("ghost-nodes")
        runs = libc.data_ranges(fd, st.st_size) if fd is not None and st_mod.S_ISREG(
            st.st_mode) else []
        data_bytes = sum(n for _, n in runs)
        if name is None and data_bytes > self.limit:  # memfds have no limit
            raise UnsupportedError(
                f"{what}: {info['path']} is a deleted file with {data_bytes} bytes of data "
                f"(its size: {st.st_size}), more than the ghost file limit of {self.limit} "
                "bytes; raise it with --ghost-limit (ghost_limit=) to save it")
        info.update(size=st.st_size, mode=st_mod.S_IMODE(st.st_mode), uid=st.st_uid,
                    gid=st.st_gid, atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns)
        try:  # what the restore would refuse is refused now
            check(info)
        except RestoreError as e:
            raise UnsupportedError(f"{what}: {e} (the restore would fail)") from None
        if fd is not None and st_mod.S_ISREG(st.st_mode):
            data = self._writer()
            info["data_off"] = data.size
            info["runs"] = []
            for off, length in runs:
                append_data(data, fd, off, length, f"{what}: {link}")
                info["runs"].append([off, length])
            tail = _save_tail(data, fd, st.st_size)
            if tail is not None:
                info["tail"] = tail
                self.images.need("ghost-tail")
            log.info("%s: %s saved (%d bytes, %d in the image)", what, link, st.st_size,
                     data.size - info["data_off"])
        else:
            log.info("%s: %s saved (%s)", what, link, info.get("type"))
        self.saved[key] = info
        import copy
        return copy.deepcopy(info)

    def _writer(self) -> RawWriter:
        if self._data is None:
            self._data = self.images.raw(DATA_FILE)
        return self._data


def append_data(raw: RawWriter, src: int, off: int, length: int, what: str) -> None:
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
    raw.crc = _crc_of(raw.fd, start, length, raw.crc)


@contextmanager
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


def _crc_of(fd: int, start: int, length: int, crc: int) -> int:
    """Continue ``crc`` over bytes [start, start+length) of the file open as ``fd`` (mapped,
    no copy)."""
    import mmap  # here: a dump of no deleted file needs it not (start-up)
    pos = start
    while pos < start + length:
        base = pos & ~(mmap.ALLOCATIONGRANULARITY - 1)
        n = min(_CHUNK, start + length - pos)
        with mmap.mmap(fd, pos - base + n, mmap.MAP_SHARED, mmap.PROT_READ,
                       offset=base) as m, memoryview(m) as mv:
            crc = crc32(mv[pos - base:], crc)
        pos += n
    return crc


def configure(images: ImageWriter, limit: int | None) -> None:
    """Set the ghost file limit of the dump writing ``images`` (None: the default)."""
    if limit is not None and limit < 0:
        raise DumpError(f"invalid ghost file limit {limit}")
    images.kept["ghost"] = GhostStore(images, DEFAULT_LIMIT if limit is None else limit)


def store(images: ImageWriter) -> GhostStore:
    """The ghost objects of the dump writing ``images`` (fds, mappings and exe share it),
    kept with them."""
    if "ghost" not in images.kept:
        images.kept["ghost"] = GhostStore(images)
    return images.kept["ghost"]  # type: ignore[no-any-return]


def save_fd(images: ImageWriter, dup: int, st: os.stat_result, link: str,
            what: str) -> dict[str, Any]:
    """Save the object behind ``dup`` (ckpt's pidfd_getfd copy of a target's fd)."""
    if st_mod.S_ISLNK(st.st_mode):  # an O_PATH fd on the link itself
        return store(images).save(dup, st, link, what)
    if not st_mod.S_ISREG(st.st_mode):
        return store(images).save(None, st, link, what)
    fd = os.open(f"/proc/self/fd/{dup}", os.O_RDONLY | os.O_CLOEXEC)  # dup may be write-only
    try:
        return store(images).save(fd, st, link, what)
    finally:
        os.close(fd)


def save_cwd(images: ImageWriter, pid: int, link: str) -> dict[str, Any] | None:
    """The ghost description of ``pid``'s working directory if it was removed, else None."""
    if not link.endswith(DELETED):
        return None
    fd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not is_ghost(link, st):
            return None
        return store(images).save(None, st, link, f"process {pid} cwd")
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


def mapped_other_name(pid: int, start: int, end: int, path: str) -> str | None:
    """Another name of the regular file mapped by ``pid`` at ``start``-``end`` under
    ``path``, a name it lost while it has other links; None for other mappings. Raise
    when none is found."""
    if not path.endswith(DELETED):
        return None
    fd = os.open(f"/proc/{pid}/map_files/{start:x}-{end:x}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not st_mod.S_ISREG(st.st_mode) or not st.st_nlink or not is_ghost(path, st):
        return None
    other = other_name(st, path[:-len(DELETED)])
    if other is None:
        raise UnsupportedError(
            f"process {pid} mapping {start:#x}-{end:#x}: {path} was unlinked but the file "
            f"still has {st.st_nlink} other link(s), which ckpt did not find near "
            f"{os.path.dirname(path)}")
    return other


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


def other_name(st: os.stat_result, deleted: str, budget: int = 100_000) -> str | None:
    """Another name of the regular file ``st``, whose name ``deleted`` was removed while
    it has other links, or None: looked for around that name, nearest first (its nearest
    directory still there, then each one above it), breadth first, never into another
    file system, at most ``budget`` entries in all. A name found leads to that very file
    (``lstat``). The kernel keeps no list of a file's names: this is the only way."""
    searched: set[str] = set()
    here = _nearest_dir(os.path.dirname(deleted) or "/")
    seen = 0
    while True:
        queue = [here]
        while queue:
            d = queue.pop(0)
            if d in searched:
                continue
            searched.add(d)
            try:
                entries = list(os.scandir(treeroot.path(d)))
            except OSError:
                continue
            for e in entries:
                seen += 1
                if seen > budget:
                    return None
                path = os.path.join(d, e.name)  # the tree's
                try:
                    if e.inode() == st.st_ino:
                        s = e.stat(follow_symlinks=False)
                        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
                            return path
                    elif e.is_dir(follow_symlinks=False) and path not in searched and \
                            e.stat(follow_symlinks=False).st_dev == st.st_dev:
                        queue.append(path)
                except OSError:
                    continue
        if here == "/" or treeroot.stat(os.path.dirname(here), False).st_dev != st.st_dev:
            return None
        here = os.path.dirname(here)


# ---------------------------------------------------------------- restore


_KINDS = {None: "deleted file", "dir": "removed directory", "fifo": "deleted FIFO",
          "chr": "deleted character device", "blk": "deleted block device",
          "link": "deleted symbolic link"}


def describe(info: dict[str, Any]) -> str:
    if "memfd" in info:
        return f"memfd {info['memfd']!r}"
    return f"{_KINDS.get(info.get('type'), 'deleted file')} {info['path']}"


def _nearest_dir(path: str) -> str:
    """The tree's ``path`` if it is a directory, else its nearest ancestor that is."""
    while path and path != "/":
        try:
            if st_mod.S_ISDIR(treeroot.stat(path).st_mode):
                break
        except OSError:
            pass
        path = os.path.dirname(path)
    return path or "/"


def check_image(info: dict[str, Any], where: str, data_size: int) -> None:
    """Refuse a ghost object (schema-checked) whose fields do not go together, or whose
    data lies beyond ``data_size`` bytes (ghost-data.img's); ``where`` names it."""
    kind = info.get("type")
    if ("memfd" in info) == ("path" in info):
        raise refuse(where, "path", "a ghost object has a path or a memfd name, not both")
    if "memfd" in info and ("seals" not in info or kind is not None):
        raise refuse(where, "memfd", "a memfd is a regular file with seals")
    if (kind in ("chr", "blk")) != ("rdev" in info):
        raise refuse(where, "rdev", "only a device node has a device number, and it must")
    if (kind == "link") != ("target" in info):
        raise refuse(where, "target", "only a symbolic link has a target, and it must")
    if kind is not None:
        if info.keys() & {"runs", "data_off", "tail"}:
            raise refuse(where, "runs", f"a {kind} has no data")
        return
    end = total = 0
    for i, (off, length) in enumerate(info.get("runs", [])):
        if off < end:
            raise refuse(where, f"runs[{i}]", "data ranges overlap or are out of order")
        end = off + length
        total += length
        if end > info["size"]:
            raise refuse(where, f"runs[{i}]", f"goes past the file's size {info['size']}")
    if total and "data_off" not in info:
        raise refuse(where, "data_off", "missing, but the file has data")
    if info.get("data_off", 0) + total > data_size:
        raise refuse(where, "runs", f"{total} bytes at {info.get('data_off', 0)}, past the "
                     f"end of {DATA_FILE} ({data_size} bytes)")
    tail = info.get("tail")
    if tail is not None:
        if info["size"] % PAGE + tail[1] != PAGE:
            raise refuse(where, "tail", f"is not the rest of the last page of a file of "
                         f"{info['size']} bytes")
        if tail[0] + tail[1] > data_size:
            raise refuse(where, "tail", f"past the end of {DATA_FILE} ({data_size} bytes)")


def check(info: dict[str, Any]) -> None:
    """Refuse what ``create`` could not do: the object's type is unknown, or the
    directory it is to be made in cannot take it (a read-only file system)."""
    if "memfd" in info:
        return
    if info.get("type") not in _KINDS:
        raise RestoreError(f"cannot recreate {info['path']}: unknown type {info.get('type')!r}")
    if info.get("type") in ("chr", "blk"):
        why = _wider_than_host(info)
        if why is not None:
            raise RestoreError(f"cannot recreate {describe(info)}: {why}")
    where = _nearest_dir(os.path.dirname(info["path"]) or "/")
    if not os.access(treeroot.path(where), os.W_OK):
        raise RestoreError(f"cannot recreate {describe(info)}: {where} is not writable")


def _host_nodes(kind: str, rdev: int) -> list[tuple[str, os.stat_result]]:
    """The device nodes of /dev (not through symbolic links) of that type and number."""
    fmt = _FORMAT[kind]
    found: list[tuple[str, os.stat_result]] = []
    todo = ["/dev"]
    while todo and len(todo) < 10_000:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st_mod.S_ISDIR(st.st_mode):
                todo.append(e.path)
            elif st_mod.S_IFMT(st.st_mode) == fmt and st.st_rdev == rdev:
                found.append((e.path, st))
    return found


def _within(bits: int, node: os.stat_result, shift: int, same: bool) -> bool:
    """Whether permission ``bits`` give no more than ``node`` gives its class at ``shift``
    (owner 6, group 3, others 0) when ``same`` (the same owner or group), else others."""
    return not bits & ~((node.st_mode >> (shift if same else 0)) & 0o7)


def _wider_than_host(info: dict[str, Any]) -> str | None:
    """Why making the deleted device node of ``info`` again would grant someone access
    to the device that the host's own nodes of it do not, or None. A crafted image could
    otherwise make a node of any device (a disk) that its process can open. Allowed: a
    device /dev has a node of, whose owner, group and others get at most the access
    that node gives them (an owner or group other than the node's: at most what it
    gives others; root is never limited)."""
    major, minor = info["rdev"]
    nodes = _host_nodes(info["type"], os.makedev(major, minor))
    if not nodes:
        return (f"/dev has no node of device {major}:{minor}: ckpt makes deleted device "
                "nodes again only of devices the host gives access to")
    mode = info["mode"] & 0o777
    for _path, st in nodes:
        if (_within(mode & 0o7, st, 0, True)
                and _within((mode >> 3) & 0o7, st, 3, info["gid"] == st.st_gid)
                and (info["uid"] == 0 or _within(mode >> 6, st, 6, info["uid"] == st.st_uid))):
            return None
    path, st = nodes[0]
    return (f"its mode {mode:o} (owner {info['uid']}, group {info['gid']}) would give more "
            f"access to device {major}:{minor} than {path} does ({st.st_mode & 0o777:o}, "
            f"owner {st.st_uid}, group {st.st_gid})")


def create(data_path: str, info: dict[str, Any]) -> int:
    """Make the object of ``info`` again (a regular file filled from ``data_path``); ckpt's
    fd of it: O_RDWR for a file or memfd, O_RDONLY for a directory, O_RDWR|O_NONBLOCK for a
    FIFO, O_PATH for a device node or symlink."""
    check(info)
    try:
        if "memfd" in info:
            return _new_memfd(data_path, info)
        if info.get("type") is None:
            return _new_file(data_path, info)
        return _new_node(info)
    except OSError as e:
        raise RestoreError(f"cannot recreate {describe(info)}: {e.strerror or e}") from None


def _new_memfd(data_path: str, info: dict[str, Any]) -> int:
    seals, mode = int(info["seals"]), int(info["mode"])
    flags = os.MFD_CLOEXEC
    if seals != F_SEAL_SEAL:  # F_SEAL_SEAL alone: made without MFD_ALLOW_SEALING
        flags |= os.MFD_ALLOW_SEALING
    exec_flags = MFD_NOEXEC_SEAL if seals & F_SEAL_EXEC and not mode & 0o111 else MFD_EXEC
    try:
        fd = os.memfd_create(info["memfd"], flags | exec_flags)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel before 6.3, without these flags
            raise
        fd = os.memfd_create(info["memfd"], flags)
    try:
        _fill_attributes(fd, data_path, info)  # its seals wait for its mappings (seal_memfds)
    except BaseException:
        os.close(fd)
        raise
    log.info("%s recreated (%d bytes)", describe(info), info["size"])
    return fd


def _fill_attributes(fd: int, data_path: str, info: dict[str, Any]) -> None:
    """Size, content, owner, mode and times of a new regular file or memfd."""
    os.ftruncate(fd, info["size"])
    _fill(fd, data_path, info)
    os.fchown(fd, info["uid"], info["gid"])
    os.fchmod(fd, info["mode"])  # after chown, which drops set-id bits
    _set_times(fd, info)


def _set_times(target: int | str, info: dict[str, Any], follow: bool = True,
               dir_fd: int | None = None) -> None:
    if "mtime_ns" in info:
        os.utime(target, ns=(info["atime_ns"], info["mtime_ns"]), follow_symlinks=follow,
                 dir_fd=dir_fd)


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def _spot(path: str) -> Iterator[tuple[int, list[str]]]:
    """Where to make a ghost that had ``path``: (an fd of its directory, the names to try
    in it, in order).

    The directory is reached from / one folder at a time, never through a symbolic
    link (``O_NOFOLLOW``): a path the kernel showed has none, and one planted since
    must not lead the restore elsewhere. A folder that is gone is made (with the
    missing ones above it) for the time the block runs, and removed after. The names:
    ``path``'s own, then hidden ones next to it for when it is taken now. Where a
    folder on the way is a file or a symbolic link now, the nearest folder is used,
    with hidden names only. The folder whose entries change gets its access and
    modification times back afterwards."""
    directory, base = os.path.split(path)
    hidden = [f".{base}.ckpt-ghost.{n}" for n in range(100)]
    names = [base] + hidden
    fds = [treeroot.open_root()]  # the tree's own, in a container
    made: list[tuple[int, str]] = []  # (fd of the folder above, name) of folders made
    try:
        for part in (p for p in directory.split("/") if p):
            try:
                fds.append(os.open(part, _DIR, dir_fd=fds[-1]))
                continue
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                if not made:  # a file or a link stands where a folder was
                    names = hidden
                    break
                raise
            if not made:  # the folder whose entries change, as it was
                kept = os.fstat(fds[-1])
            os.mkdir(part, 0o700, dir_fd=fds[-1])
            made.append((fds[-1], part))
            fds.append(os.open(part, _DIR, dir_fd=fds[-1]))
        changed = made[0][0] if made else fds[-1]
        if not made:
            kept = os.fstat(changed)
        try:
            yield fds[-1], names
        finally:
            for up, name in reversed(made):
                try:
                    os.rmdir(name, dir_fd=up)
                except OSError as e:
                    log.warning("%s: cannot remove the folder made for a ghost: %s", name,
                                e.strerror)
            os.utime(changed, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    finally:
        for fd in fds:
            os.close(fd)


def _new_file(data_path: str, info: dict[str, Any]) -> int:
    """A deleted regular file: an O_TMPFILE in its directory, filled, then named."""
    with _spot(info["path"]) as (dfd, names):
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            # a file system without O_TMPFILE
            fd = _hidden_file(dfd, [n for n in names if ".ckpt-ghost." in n])
        try:
            _fill_attributes(fd, data_path, info)
            fd = _named(fd, info, dfd, names)
        except BaseException:
            os.close(fd)
            raise
    log.info("%s recreated (%d bytes)", describe(info), info["size"])
    return fd


def _hidden_file(dfd: int, names: list[str]) -> int:
    for name in names:
        try:
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        except FileExistsError:
            continue
        os.unlink(name, dir_fd=dfd)
        return fd
    raise OSError(errno.EEXIST, "no free hidden name")


def _link_fd(fd: int, dfd: int, name: str) -> None:
    """linkat(/proc/self/fd/FD, dfd, name, AT_SYMLINK_FOLLOW): give file ``fd`` a name."""
    procfd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:  # with a dir fd, os.link is linkat (plain link() would link the /proc symlink)
        os.link(str(fd), name, src_dir_fd=procfd, dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(procfd)


def _named(fd: int, info: dict[str, Any], dfd: int, names: list[str]) -> int:
    """The O_TMPFILE file ``fd`` reopened under the first free of ``names``, which is
    removed at once: opened through a name, the file shows as "PATH (deleted)" in /proc
    again (so do the descriptions reopened from it). A file that never had a name
    (O_TMPFILE, "#INODE") gets none."""
    if os.fstat(fd).st_nlink or os.path.basename(info["path"]).startswith("#"):
        return fd
    for name in names:
        try:
            _link_fd(fd, dfd, name)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: not an O_TMPFILE file, it cannot be linked
                log.warning("%s: cannot name the recreated file (%s); it stays nameless",
                            info["path"], e.strerror)
            return fd
        try:
            named = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        finally:
            os.unlink(name, dir_fd=dfd)
        if os.path.samestat(os.fstat(named), os.fstat(fd)):
            os.close(fd)
            return named
        os.close(named)  # replaced meanwhile: keep the nameless one
        return fd
    return fd


def as_deleted(fd: int, path: str, flags: int) -> int:
    """File ``fd``, which has other names, opened again with ``flags`` through its removed
    name ``path`` (or a hidden one next to it), which is removed at once: /proc shows
    ``PATH (deleted)`` again, and the file has the links it had."""
    with _spot(path) as (dfd, names):
        for name in names:
            try:
                _link_fd(fd, dfd, name)
            except FileExistsError:
                continue
            try:
                named = os.open(name, flags | os.O_NOFOLLOW, dir_fd=dfd)
            finally:
                os.unlink(name, dir_fd=dfd)
            if not os.path.samestat(os.fstat(named), os.fstat(fd)):  # replaced meanwhile
                os.close(named)
                raise OSError(errno.EEXIST, f"{path} was replaced while it was opened")
            return named
    raise OSError(errno.EEXIST, f"no free name next to {path}")


def _new_node(info: dict[str, Any]) -> int:
    """A removed directory, deleted FIFO, device node or symlink: made under its old name
    (or a hidden one), given its owner, mode and times, opened, and removed. Everything
    after the name is made goes through an ``O_PATH`` fd of what was made, checked to
    be it: a name swapped meanwhile (in a folder others can write) changes nothing else."""
    kind = info["type"]
    with _spot(info["path"]) as (dfd, names):
        for name in names:
            try:
                if kind == "dir":
                    os.mkdir(name, 0o700, dir_fd=dfd)
                elif kind == "fifo":
                    os.mkfifo(name, 0o600, dir_fd=dfd)
                elif kind in ("chr", "blk"):
                    os.mknod(name, 0o600 | _FORMAT[kind], os.makedev(*info["rdev"]), dir_fd=dfd)
                else:
                    os.symlink(info["target"], name, dir_fd=dfd)
            except FileExistsError:
                continue
            break
        else:
            raise OSError(errno.EEXIST, "no free name")
        try:
            node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                st = os.fstat(node)
                if st_mod.S_IFMT(st.st_mode) != _FORMAT[kind] or (
                        kind in ("chr", "blk") and st.st_rdev != os.makedev(*info["rdev"])):
                    raise OSError(errno.EEXIST, f"{name} was replaced while it was made")
                libc.fchown_empty(node, info["uid"], info["gid"])
                if kind == "link":  # a symlink's mode is always 0777
                    _set_times(name, info, follow=False, dir_fd=dfd)
                    log.info("%s recreated", describe(info))
                    return node
                through = f"/proc/self/fd/{node}"  # the very inode, whatever its name
                os.chmod(through, info["mode"])  # after chown, which drops set-id bits
                _set_times(through, info)
                log.info("%s recreated", describe(info))
                if kind in ("chr", "blk"):
                    return node
                fd = os.open(through, _NODE_OPEN[kind] | os.O_CLOEXEC)
            except BaseException:
                os.close(node)
                raise
            os.close(node)
            return fd
        finally:
            (os.rmdir if kind == "dir" else os.unlink)(name, dir_fd=dfd)


_FORMAT = {"dir": st_mod.S_IFDIR, "fifo": st_mod.S_IFIFO, "chr": st_mod.S_IFCHR,
           "blk": st_mod.S_IFBLK, "link": st_mod.S_IFLNK}
_NODE_OPEN = {"dir": os.O_RDONLY | os.O_DIRECTORY, "fifo": os.O_RDWR | os.O_NONBLOCK,
              "chr": os.O_PATH, "blk": os.O_PATH, "link": os.O_PATH | os.O_NOFOLLOW}


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
    if info.get("runs"):  # none: a file of holes only
        _fill_runs(fd, data_path, info)
    if info.get("tail"):
        _fill_tail(fd, data_path, info)


def fill_data(fd: int, src: int, img_off: int, length: int, what: str) -> None:
    """Copy ``length`` bytes at ``img_off`` of the open image file ``src`` into ``fd``
    from offset 0, by the kernel (the contents of a file of a tmpfs mount: mounts.py)."""
    _copy_runs(src, fd, [[0, length]], img_off, what)


def _fill_runs(fd: int, data_path: str, info: dict[str, Any]) -> None:
    try:
        src = os.open(data_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RestoreError(f"{data_path}: missing, but {describe(info)} is in it") from None
    try:
        _copy_runs(src, fd, info["runs"], int(info["data_off"]), data_path)
    finally:
        os.close(src)


def _copy_runs(src: int, fd: int, runs: list[list[int]], img_off: int, what: str) -> None:
    """The bytes of ``src`` from ``img_off`` on, into each (offset, length) of ``fd``."""
    use_sendfile = False
    for off, length in runs:
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
                raise RestoreError(f"{what}: short read at offset {img_off + done}")
            done += n
        img_off += length


# The memfds of the restore running in this process, by ghost id: ckpt's fd of each,
# the one memfd_create returned. The first read-write fd description of a memfd and
# its mappings are that very file (a dup, or pidfd_getfd inside the process): a
# memfd reopened for writing through /proc can no longer be executed (execveat
# fails with ETXTBSY while any such file is open), and the one memfd_create
# returns does not count as a writer. Its seals are added once every process has
# mapped it: F_SEAL_FUTURE_WRITE refuses writable mappings made after it.
_memfds: dict[int, tuple[int, int]] = {}  # ghost id -> (fd, seals)


def memfd(data_path: str, info: dict[str, Any]) -> int:
    """ckpt's fd of the memfd of ``info``, made and filled once per restore, not sealed
    yet; it stays ckpt's until ``seal_memfds`` or ``drop_memfds``."""
    gid = int(info["id"])
    if gid not in _memfds:
        _memfds[gid] = (create(data_path, info), int(info["seals"]))
    return _memfds[gid][0]


def seal_memfds() -> None:
    """Once every process is restored: add each memfd's saved seals, let ckpt's fds go."""
    try:
        for gid, (fd, want) in sorted(_memfds.items()):
            have = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if want & ~have:
                try:
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, want & ~have)
                except OSError as e:
                    raise RestoreError(f"memfd {gid}: cannot add seals {want & ~have:#x}: "
                                       f"{e.strerror}") from None
    finally:
        drop_memfds()


def drop_memfds() -> None:
    for fd, _seals in _memfds.values():
        os.close(fd)
    _memfds.clear()


class Made:
    """The ghost objects one kind made during a restore, by id: each is made once and
    kept open until every process holds its fds; each description reopens it with its
    own flags and offset."""

    def __init__(self) -> None:
        self._objects: dict[int, int] = {}
        self._first_rw: set[int] = set()  # memfds whose first read-write fd is given

    def reopen(self, images: ImageReader, desc: dict[str, Any]) -> int:
        """An fd for fd description ``desc`` of a ghost object: the object reopened
        through /proc/self/fd with the description's flags, at its offset (the first
        read-write description of a memfd is the memfd itself, see ``memfd``)."""
        info = desc["ghost"]
        gid = int(info["id"])
        if "memfd" in info:
            base = memfd(images.path(DATA_FILE), info)
            if desc["flags"] & os.O_ACCMODE == os.O_RDWR and gid not in self._first_rw:
                self._first_rw.add(gid)
                fd = os.dup(base)
                os.lseek(fd, int(desc.get("pos", 0)), os.SEEK_SET)
                return fd
        else:
            if gid not in self._objects:
                self._objects[gid] = create(images.path(DATA_FILE), info)
            base = self._objects[gid]
        kind = info.get("type")
        flags = reopen_flags(desc["flags"], kind == "dir", through_proc=True)
        try:
            fd = os.open(f"/proc/self/fd/{base}", flags)
        except OSError as e:
            raise RestoreError(f"cannot reopen {describe(info)}: {e.strerror}") from None
        if kind in (None, "dir") and not desc["flags"] & os.O_PATH:
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


def cwd_source(images_dir: str, info: dict[str, Any], cwds: dict[int, int]
               ) -> tuple[str, int | None]:
    """How a restored process enters its removed working directory ``info``, the same
    object as its fds on it and other processes' cwd: (a path to open, ckpt's own fd
    to close once it is opened, or None). ``cwds``: ghost id -> a process restored
    before whose cwd it is."""
    gid = int(info["id"])
    if gid in cwds:
        return f"/proc/{cwds[gid]}/cwd", None
    holder = holders(images_dir).get(gid)
    if holder is not None:
        return f"/proc/{holder[0]}/fd/{holder[1]}", None
    own = create(os.path.join(images_dir, DATA_FILE), info)
    return f"/proc/{os.getpid()}/fd/{own}", own
