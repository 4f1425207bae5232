"""The image folder: versioned metadata files, raw data files, and their checksums.

Every file's size and CRC-32 is recorded in ``inventory.json``, which is written
last and carries a checksum of its own. ``ImageReader.verify`` checks them all
before a restore changes anything. See docs/image-format.md.

Files are created through a ``Folder``, an fd of the folder: never through a
path, never following a symlink, never opening a file ckpt did not create
(kernel/safefs.py). A dump refuses a folder that holds images already, or that
belongs to another user, unless told to overwrite (docs/security.md).

With a page server (page_server.py) the writer sends every file to it as well,
and page data (``pages-PID.img``) only to it.
"""

from __future__ import annotations

import binascii  # its crc32 is zlib's, and ckpt imports it anyway: zlib stays out
import ctypes
import errno
import os
import stat

from . import jsontext
from .errors import CkptError, ImageError
from .kernel import safefs
from .kernel.lazyre import LazyPattern
from .schema import NAT, U32, Map, Obj, Str, check

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

FORMAT = "ckpt-images"
VERSION = 11  # the layout this ckpt writes; what a dump uses beyond it is named in ``needs``
READ_VERSIONS = (6, 7, 8, 9, 10, 11)  # what it restores (see docs/image-format.md, Compatibility)

# What a dump may hold that a reader must know, or it would restore it wrong or not
# at all: a feature name -> what it adds. A dump lists the ones it uses in the
# inventory's ``needs``; a reader refuses a folder that needs one it does not know.
# A new feature is one line here and one in docs/image-format.md, never a new version.
FEATURES: dict[str, str] = {
    "fown": "the signal owner and signal of O_ASYNC files (a description's fown)",
    "tcp": "established TCP connections (tcp in inet descriptions, tcp-queues.img)",
    "tcp-ended": "TCP connections that ended (tcp.ended), rebuilt closed",
    "tcp-reconnect": "connections not accepted yet that connect again (tcp.reconnect)",
    "tcp-syn-sent": "TCP connections being made (tcp.syn_sent) that connect again",
    "tcp-shut-rd": "TCP connections shut down for reading by the process (tcp.shut_rd)",
    "tty": "pty queues, owners and modes, deleted slaves, /dev/tty, a job's termios",
    "ghost-nodes": "deleted files that are not regular files, a removed cwd, the path kind",
    "ghost-tail": "a ghost file's tail beyond --ghost-limit",
    "shared-tables": "fd tables and fs structs shared by processes (files_of, fs_of), chroot",
    "pidfd": "pidfds",
    "locks": "file locks (locks.json)",
    "mapped-locks": "flock and OFD locks held through a memory mapping only (locks.json)",
    "lease-breaking": "leases being broken, broken again at restore (locks.json)",
    "memory-kinds": "aio rings, SysV mappings, guard pages and sealed mappings in mm-PID.json",
    "sysv": "SysV IPC objects (sysv.json, sysv-shm.img)",
    "mqueue": "POSIX message queues",
    "socket-queues": "UDP datagram queues and shutdown, raw and ping sockets",
    "socket-families": "netlink and packet sockets",
    "unix-files": "files in unix messages, unaccepted unix connections, gone socket files",
    "unix-real-path": "socket files reached through symbolic links (file.real)",
    "namespace-fds": "fds on the process's own namespaces (the ns kind)",
    "cgroups": "the processes' cgroups and their knobs (cgroups.json)",
    "epoll-moved": "epoll watches whose fd number no longer named their file (holder)",
    "inotify-deleted": "inotify watches of deleted files, through a description (file)",
    "fanotify-deleted": "fanotify marks of deleted files, through a description (file)",
    "inherited-pages": "pages a child shares with its parent process (mm-PID.json inherited)",
    "tree-namespaces": "uts and ipc namespaces of the tree's own (namespaces.json)",
    "cgroup-namespace": "a cgroup namespace of the tree's own, rooted at the root's cgroups "
                        "(namespaces.json cgroup)",
    "external-netns": "a network namespace of the tree's own named external, joined at "
                      "restore (namespaces.json net.external)",
    "compressed-pages": "pages files compressed with zstd (mm-PID.json pages_compression)",
    "standins": "groups and sessions whose leader had exited, made by stand-ins (standins)",
    "pipe-packets": "the packets buffered in a pipe in packet mode (O_DIRECT)",
    "linked-mappings": "mappings of a removed name of a file with other links (deleted)",
    "unix-peercred": "the creator of a unix socket pair (peercred), who makes it again",
    "mounts": "the mount tree of the tree's own mount namespace (mounts.json, mounts-data.img)",
    "cgroup-mounts": "cgroup mounts of the tree bound from its cgroups (mounts.json how cgroup)",
    "orphan-pts": "a terminal whose master was outside the tree, a container's console (tty)",
    "job-ctty": "a shell job's session leader whose controlling terminal was the user's",
    "multicast": "multicast groups joined by inet sockets (mcast)",
    "session-keyring": "the session keyring a process joined, with its user keys (keyring)",
    "process-knobs": "I/O priorities, NUMA policies, coredump_filter, mlockall(MCL_FUTURE), "
                     "clone exit signals",
    "in-call": "a task frozen in a syscall, restored inside it (cpu.in_call)",
    "kmsg-place": "where a reader of /dev/kmsg reads next (kmsg_seq of a chr description)",
    "pages-stripes": "page data in stripes over two files, each written by a thread (stripes)",
    "ldt": "a process's x86 LDT entries (task.ldt)",
    "syscall-dispatch": "a task's syscall user dispatch, Wine's (cpu.dispatch)",
    "epoll-params": "an epoll's busy polling parameters (EPIOCSPARAMS: params)",
    "gdt-tls": "a thread's GDT TLS entries, set_thread_area's (cpu.tls)",
    "autogroup": "the nice value of a process's autogroup (task.autogroup)",
    "zombie-identity": "a zombie's name, uids, gids and groups (zombie_as of a task)",
}
INVENTORY = "inventory.json"
# Images only some trees have (each module's IMAGE), named here for a restore that
# imports their modules only when they are there.
MOUNTS, NAMESPACES, CGROUPS = "mounts.json", "namespaces.json", "cgroups.json"
LOCKS, SYSV = "locks.json", "sysv.json"
# The inventory's files: a plain name in the folder (never a path) -> size and CRC-32.
FILE_NAME = Str(255, pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*")
FILES = Map(Obj(size=NAT, crc32=U32), key=FILE_NAME, max=1 << 22)
SENT_NOTE = "pages-sent.txt"  # not an image: where a page-server dump sent its page data
# Not an image either: written once a dump is complete, because container engines
# (podman, CRI-O, runc's tests) take a folder holding criu's inventory.img for a
# complete checkpoint and refuse to restore one without it.
COMPLETE_MARK = "inventory.img"
_COMPLETE_TEXT = b"ckpt images, not criu's: the inventory is inventory.json\n"
_CHUNK = 1 << 20  # read to verify: small enough to stay in the CPU cache for the checksum
# Data at least this large is checksummed by zlib-ng when it is there: below, the
# standard library's (about 1 GB/s here) takes less than importing zlib-ng (about 2 ms).
_FAST_CRC_FROM = 1 << 20
_fast_crc: Any = None


def crc32(data: bytes | bytearray | memoryview, crc: int = 0, fast: bool = False) -> int:
    """CRC-32 (zlib's) of ``data`` continuing ``crc``. Large data (or any, with ``fast``:
    more is coming) goes through zlib-ng's (the ``zlib-ng`` package, installed by
    bootstrap; about 15 times the speed of the standard library's here, which would
    cost a second per GiB of pages at dump and again at restore), imported only when
    such data comes."""
    global _fast_crc
    if fast or len(data) >= _FAST_CRC_FROM:
        if _fast_crc is None:
            try:
                from zlib_ng import zlib_ng
                _fast_crc = zlib_ng.crc32
            except ImportError:
                _fast_crc = binascii.crc32
        return int(_fast_crc(data, crc))
    return binascii.crc32(data, crc)
def crc32_combiner() -> Any:
    """zlib-ng's crc32_combine(crc1, crc2, len2), the CRC-32 of two pieces of data from
    theirs, or None without zlib-ng (the standard library has none)."""
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        return None
    return zlib_ng.crc32_combine


# The names ckpt writes in a folder: metadata (NAME.json, NAME-PID.json), raw data
# (NAME.img, NAME-PID.img, NAME-PID-N.img), the inventory and its temporary name, the
# page-server note.
IMAGE_NAME = LazyPattern(r"inventory\.json(\.tmp)?|pages-sent\.txt|[a-z][a-z-]*(-\d+)*\.(json|img)")


def _canonical(obj: Any) -> bytes:
    """``obj`` as compact JSON, keys sorted: what the inventory's checksum covers, and
    every JSON image's text (json's C encoder writes it; with an indent, json writes
    in Python, about 1 ms per 10 KB)."""
    return jsontext.dumps(obj).encode()


class Folder:
    """An image folder held open by its fd: files are created in it through
    kernel/safefs.py (never through a symlink, never into a file that was there)."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str, create: bool = False) -> Folder:
        """Open folder ``path`` (made, mode 0700, if missing and ``create``)."""
        try:
            return cls(path, safefs.open_dir(path, create))
        except OSError as e:
            raise CkptError(f"cannot {'create' if create else 'open'} the folder {path}: "
                            f"{e.strerror or e}") from None

    @classmethod
    def for_dump(cls, path: str, overwrite: bool = False) -> Folder:
        """The folder a dump writes into, created if missing. Unless ``overwrite``,
        refuse one that holds images already, or that belongs to another user."""
        folder = cls.open(path, create=True)
        try:
            if not overwrite:
                folder._check_fresh()
        except BaseException:
            folder.close()
            raise
        return folder

    def _check_fresh(self) -> None:
        owner = os.fstat(self.fd).st_uid
        if owner != os.geteuid():
            raise CkptError(f"{self.path} belongs to user {owner}, who could change the "
                            "images ckpt writes there: dump into a folder of your own user, "
                            "or pass --overwrite")
        held = sorted(n for n in os.listdir(self.fd) if IMAGE_NAME.fullmatch(n))
        if held:
            more = ", ..." if len(held) > 3 else ""
            raise CkptError(f"{self.path} already holds images ({', '.join(held[:3])}{more}): "
                            "dump into an empty folder, or pass --overwrite to replace them")

    def create(self, name: str, readable: bool = False) -> int:
        """A new file ``name``, open for writing (an old one of that name is removed)."""
        return safefs.create(self.fd, name, readable=readable)

    def read(self, name: str) -> int:
        """File ``name``, open for reading, if it is not a symlink."""
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)

    def rename(self, old: str, new: str) -> None:
        os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def remove(self, name: str) -> bool:
        """Remove ``name`` if it is there; True if it was."""
        return safefs.remove(self.fd, name)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def mark_complete(self) -> None:
        """Write ``COMPLETE_MARK`` (after the inventory, which it never describes)."""
        fd = self.create(COMPLETE_MARK)
        try:
            _write_all(fd, _COMPLETE_TEXT)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.fsync()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RawWriter:
    """An image file of raw bytes (page data, pipe data), checksummed as it is written."""

    def __init__(self, folder: Folder, name: str):
        self.name = name
        self.fd = folder.create(name, readable=True)  # readable: ghost.py checksums in place
        self.size = 0
        self.crc = 0

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data``; return the offset it was written at."""
        off = self.size
        mv = memoryview(data)
        self.crc = crc32(mv, self.crc)
        done = 0
        while done < len(mv):
            done += os.write(self.fd, mv[done:])
        self.size += len(mv)
        return off

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


class ImageWriter:
    """Writes one image folder; nothing is valid until ``finish`` wrote the inventory."""

    def __init__(self, directory: str, remote: Any = None, overwrite: bool = False):
        """``remote``: a ``page_server.Client``; every file goes to it too, and the
        page data (``pages-*.img``) only to it. ``overwrite``: see ``Folder.for_dump``."""
        self.dir = directory
        self.remote = remote
        self.folder = Folder.for_dump(directory, overwrite)
        # A stale inventory must never describe new files.
        for stale in (COMPLETE_MARK, INVENTORY, SENT_NOTE):
            self.folder.remove(stale)
        self.files: dict[str, dict[str, int]] = {}
        self._raw: dict[str, RawWriter] = {}
        self.needs: set[str] = set()
        self._created: list[str] = []  # every file written, for ``abort``
        self.kept: dict[str, Any] = {}  # what a resource module keeps for this dump

    def need(self, feature: str) -> None:
        """The images hold ``feature`` (a key of FEATURES), which a reader must know
        (docs/image-format.md, Compatibility)."""
        if feature not in FEATURES:
            raise ValueError(f"unknown image feature {feature!r}")
        self.needs.add(feature)

    def _write(self, name: str, data: bytes) -> None:
        """A new file ``name`` holding ``data``, synced."""
        fd = self.folder.create(name)
        self._created.append(name)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_json(self, name: str, obj: Any) -> None:
        data = _canonical(obj) + b"\n"
        self._write(name, data)
        self.files[name] = {"size": len(data), "crc32": binascii.crc32(data)}
        if self.remote is not None:
            self._send(name)

    def _send(self, name: str) -> None:
        """Send the file ``name`` just written to the page server."""
        fd = self.folder.read(name)
        try:
            self.remote.send_file(name, fd)
        finally:
            os.close(fd)

    def raw(self, name: str) -> RawWriter:
        if self.remote is not None and name.startswith("pages-"):
            w = self.remote.raw(name)
        else:
            self._created.append(name)
            w = RawWriter(self.folder, name)
        self._raw[name] = w
        return w

    def finish(self, inventory: dict[str, Any]) -> None:
        """Close raw files, write the inventory, and fsync the folder."""
        for name, w in self._raw.items():
            w.close()
            self.files[name] = {"size": w.size, "crc32": w.crc}
            if self.remote is not None and isinstance(w, RawWriter):
                self._send(name)
        body = dict(inventory, format=FORMAT, version=VERSION, files=self.files)
        if self.needs:
            body["needs"] = sorted(self.needs)
        body["crc32"] = binascii.crc32(_canonical(body))
        self.write_json_plain(INVENTORY, body)
        self.folder.fsync()
        self._created.append(COMPLETE_MARK)
        self.folder.mark_complete()
        if self.remote is not None:  # last, once the page server has everything else
            self._send(INVENTORY)
            self.remote.finish()
            self._write(SENT_NOTE, f"{self.remote.where} {self.remote.remote_dir}\n".encode())

    def write_json_plain(self, name: str, obj: Any) -> None:
        """``name`` written under a temporary name, then renamed: never half there."""
        tmp = name + ".tmp"
        self._write(tmp, _canonical(obj) + b"\n")
        self.folder.rename(tmp, name)
        self._created.append(name)

    def abort(self) -> None:
        """Give up: every file this dump wrote is removed (an inventory already
        written too: a dump reported as failed never leaves images that look valid),
        so that the folder takes a new dump as it was."""
        for w in self._raw.values():
            if isinstance(w, RawWriter) and w.fd >= 0:
                os.close(w.fd)
                w.fd = -1
        if self.folder.fd >= 0:
            removed = [n for n in dict.fromkeys(self._created) if self.folder.remove(n)]
            if removed:
                self.folder.fsync()
            self.folder.close()
        if self.remote is not None:
            self.remote.abort()

    def close(self) -> None:
        """Let go of the folder (after ``finish``, or ``abort``, which closes it too)."""
        self.folder.close()


class ImageReader:
    """Reads and verifies an image folder written by ``ImageWriter``."""

    def __init__(self, directory: str):
        self.dir = directory
        try:
            if not stat.S_ISDIR(os.stat(directory).st_mode):
                raise ImageError(f"{directory} is not a folder")
        except FileNotFoundError:
            raise ImageError(f"image folder {directory} does not exist") from None
        except OSError as e:
            raise _unreadable(directory, e) from None
        path = os.path.join(directory, INVENTORY)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise ImageError(f"{path}: missing; {directory} holds no complete dump") from None
        except OSError as e:
            raise _unreadable(path, e) from None
        try:
            inv = jsontext.loads(raw)
        except (ValueError, RecursionError) as e:
            raise ImageError(f"{path}: corrupted ({e})") from None
        if not isinstance(inv, dict) or inv.get("format") != FORMAT:
            raise ImageError(f"{path}: not a ckpt image inventory")
        if inv.get("version") not in READ_VERSIONS:
            raise ImageError(f"{path}: image format version {inv.get('version')} is not "
                             f"supported (this ckpt reads versions "
                             f"{', '.join(map(str, READ_VERSIONS))})")
        crc = inv.pop("crc32", None)
        if crc != binascii.crc32(_canonical(inv)):
            raise ImageError(f"{path}: corrupted (checksum mismatch)")
        needs = inv.get("needs", [])
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise ImageError(f"{path}: needs: not a list of feature names")
        unknown = [n for n in needs if n not in FEATURES]
        if unknown:
            raise ImageError(f"{path}: the dump uses {', '.join(unknown)}, which this ckpt "
                             "does not know; restore it with the ckpt that made it or a newer one")
        check(inv.get("files"), FILES, f"{path}: files")
        self.crc32: int = crc  # what a child's ``parent`` link records
        self.version: int = inv["version"]
        self.inventory: dict[str, Any] = inv
        self.files: dict[str, dict[str, int]] = inv["files"]
        self._json: dict[str, Any] = {}  # the JSON images read so far, by name
        self._verified: dict[str, bytes] = {}  # small files as ``verify`` checked them

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def verify(self, later: Callable[[str], bool] | None = None) -> list[str]:
        """Check every file's size and CRC-32 against the inventory; of the files ``later``
        names, the size only: their CRC-32 is the caller's to check as it reads them (the
        pages files, pages.fill). Returns those. A small file is read whole and kept as
        checked: ``load_json`` takes it from there, not from the file again."""
        buf = None
        deferred = []
        for name in sorted(self.files):
            if later is not None and later(name):
                self._check_size(name, self._size_of(name))
                deferred.append(name)
            elif self.files[name]["size"] <= _CHUNK:
                self._verified[name] = self.read_raw(name)
            else:
                buf = buf or bytearray(_CHUNK)
                self.verify_file(name, buf)
        return deferred

    def _size_of(self, name: str) -> int:
        fd = self._open_listed(name)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def verify_file(self, name: str, buf: bytearray | None = None) -> None:
        """Check one file's size and CRC-32 against the inventory, reading it through
        ``buf`` (a new one by default)."""
        fd = self._open_listed(name)
        try:
            self._check_size(name, os.fstat(fd).st_size)
            mv = memoryview(buf if buf is not None else bytearray(_CHUNK))
            crc = 0
            while True:
                n = os.readv(fd, [mv])
                if n == 0:
                    break
                crc = crc32(mv[:n], crc)
            self._check_crc(name, crc)
        except OSError as e:
            raise ImageError(f"{self.path(name)}: unreadable ({e.strerror})") from None
        finally:
            os.close(fd)

    def read_raw(self, name: str) -> bytes:
        """A small raw file (digests) whole, checked against the inventory."""
        fd = self._open_listed(name)
        try:
            size = os.fstat(fd).st_size
            self._check_size(name, size)
            data = os.pread(fd, size, 0)
        except OSError as e:
            raise ImageError(f"{self.path(name)}: unreadable ({e.strerror})") from None
        finally:
            os.close(fd)
        self._check_size(name, len(data))
        self._check_crc(name, crc32(data))
        return data

    def _open_listed(self, name: str) -> int:
        path = self.path(name)
        if name not in self.files:
            raise ImageError(f"{path}: not listed in the inventory")
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise _unreadable(path, e) from None
            raise ImageError(f"{path}: missing from the image folder"
                             f"{self._sent_hint(name)}") from None

    def _check_size(self, name: str, size: int) -> None:
        if size != self.files[name]["size"]:
            raise ImageError(f"{self.path(name)}: truncated or changed: {size} bytes, "
                             f"the inventory says {self.files[name]['size']}")

    def _check_crc(self, name: str, crc: int) -> None:
        if crc != self.files[name]["crc32"]:
            raise ImageError(f"{self.path(name)}: corrupted (checksum mismatch)")

    def _sent_hint(self, name: str) -> str:
        try:
            with open(self.path(SENT_NOTE)) as f:
                where, _, remote_dir = f.read().strip().partition(" ")
        except OSError:
            return ""
        if not name.startswith("pages-"):
            return ""
        return (f" (the page data went to the page server at {where}: restore from its "
                f"folder, {remote_dir})")

    def load_json(self, name: str) -> Any:
        """JSON image ``name``, read once: later calls return the same object (the one
        validate.py checked against its schema)."""
        if name in self._json:
            return self._json[name]
        if name not in self.files:
            raise ImageError(f"{self.path(name)}: not listed in the inventory")
        try:
            data = self._verified.pop(name, None)
            if data is not None:
                self._json[name] = jsontext.loads(data)
            else:
                with open(self.path(name), "rb") as f:
                    self._json[name] = jsontext.loads(f.read())
        except FileNotFoundError:
            raise ImageError(f"{self.path(name)}: missing from the image folder") from None
        except OSError as e:
            raise _unreadable(self.path(name), e) from None
        except (ValueError, RecursionError) as e:
            raise ImageError(f"{self.path(name)}: corrupted ({e})") from None
        return self._json[name]


def _unreadable(path: str, e: OSError) -> ImageError:
    return ImageError(f"{path}: cannot be read ({e.strerror or e})")


def _write_all(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    done = 0
    while done < len(mv):
        done += os.write(fd, mv[done:])


def untrusted(directory: str, names: list[str], owners: tuple[int, ...] = (0,)
              ) -> tuple[str, str | None]:
    """(the image folder ``directory``, without the symbolic links it went through, why
    it or its files ``names`` could have been written by a user not in ``owners`` or
    None; a folder or file missing or out of reach is not this function's to report: what
    cannot be looked at cannot be read either). As sshd's
    StrictModes: every folder on the way from / and the folder itself must be owned by
    one of ``owners`` and not writable by its group or others (a folder above may be a
    sticky one, as /tmp, where no one removes or renames what is not theirs), each file
    a regular one of such an owner, not writable by group or others. Symbolic links on
    the way are followed, and must be such an owner's too."""
    def bad(path: str, st: os.stat_result, what: str) -> str | None:
        if st.st_uid not in owners:
            return f"{path} is {what} of user {st.st_uid}"
        if st.st_mode & 0o022 and not (what == "a folder above" and st.st_mode & stat.S_ISVTX):
            return f"{path} is {what} writable by {'all' if st.st_mode & 0o002 else 'its group'}"
        return None

    start = directory if directory.startswith("/") else os.path.join(os.getcwd(), directory)
    done, todo = "/", [p for p in start.split("/") if p not in ("", ".")]
    links = 0
    try:
        why = bad("/", os.lstat("/"), "a folder above" if todo else "the image folder")
        while todo and why is None:
            cur = os.path.normpath(os.path.join(done, todo.pop(0)))  # done has no links
            st = os.lstat(cur)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if st.st_uid not in owners or links > 40:
                    return directory, f"{cur} is a symbolic link of user {st.st_uid}"
                target = os.readlink(cur)
                done = "/" if target.startswith("/") else done
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
                continue
            if not stat.S_ISDIR(st.st_mode):
                return directory, f"{cur} is not a folder"
            why = bad(cur, st, "a folder above" if todo else "the image folder")
            done = cur
        for name in names:
            if why is not None:
                break
            file = os.path.join(done, name)
            try:
                st = os.lstat(file)
            except FileNotFoundError:
                continue
            why = (bad(file, st, "an image") if stat.S_ISREG(st.st_mode)
                   else f"{file} is not a regular file")
    except (FileNotFoundError, PermissionError):  # the reader says what it cannot read
        return directory, None
    except OSError as e:
        return directory, f"{e.filename or directory}: {e.strerror}"
    return (done if links else directory), why


def ctypes_view(addr: int, size: int) -> memoryview:
    """A memoryview on raw memory at ``addr`` (no copy)."""
    return memoryview((ctypes.c_char * size).from_address(addr)).cast("B")
