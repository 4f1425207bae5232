"""The mount namespace of a tree of its own (a container's, after pivot_root): its
mount tree saved at dump, and made again under a new root at restore.

Dump: the root's /proc/PID/mountinfo, parents before children, each mount one of:

- ``root``: the namespace's root mount, brought back from the restore's ``--root``
  (runc's bind mount of the container's rootfs);
- ``external``: a mount named external at dump (``--external mnt[POINT]:NAME``, criu's
  RPC ``ext_mnt``), bound at restore from the host path given for NAME;
- ``bind``: a bind of (a folder of) a mount saved before it (``/proc/sys`` bound
  read-only over itself, ``/dev/null`` of a tmpfs bound over ``/proc/keys``);
- ``new``: a filesystem mounted anew: proc, sysfs, devpts, mqueue, and tmpfs, whose
  contents are saved (folders, files with their data, symbolic links, FIFOs and the
  character devices a container's /dev holds: ``DEVICES``).

Each keeps its per-mount flags (ro, nosuid, nodev, noexec, atime) and the options of
its filesystem that matter (``OPTIONS``). A tmpfs's socket files are left to the unix
sockets of the tree bound to them (``check_sockets``), which bind them again. Refused at
dump, naming the mount: shared or slave propagation, another kind of filesystem that is
not external (ext4, overlay, cgroup...), a socket file of a tmpfs no socket of the tree
is bound to, another device or more than ``TMPFS_LIMIT``.

Restore (``Builder``): in a mount namespace of ckpt's own, everything made private, the
root bound over itself, then each mount made on its mount point found inside the new
root (openat2 RESOLVE_IN_ROOT: no link inside leads out), tmpfs contents written as
the mount is made, flags set last. The root process then takes a namespace of its own
copied from ckpt's and pivots into the new root (tree.py), leaving the host's mounts
behind; ckpt opens the tree's files through the new root (``Builder.path``).
"""

from __future__ import annotations

import _signal
import os
import stat

from ..errors import ImageError, RestoreError, UnsupportedError, UsageError
from ..images import MOUNTS, ImageReader, ImageWriter, RawWriter
from ..kernel import interrupts, libc, mountinfo, nsenter
from ..kernel.lazyre import LazyPattern
from ..kernel.mountinfo import Mount
from ..log import logger
from ..schema import NAT, PATH, S64, STR, U32, UID, Either, Int, List, Obj, Opt, Path, Str, Tup
from . import ghost

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.mounts")

IMAGE = MOUNTS
DATA = "mounts-data.img"
FEATURE = "mounts"
CGROUP_FEATURE = "cgroup-mounts"
TMPFS_LIMIT = 64 << 20  # bytes of tmpfs contents saved at most, all mounts together
MAX_ENTRIES = 100_000

NEW_FS = ("proc", "sysfs", "tmpfs", "devpts", "mqueue")
# Filesystem options kept, by filesystem, and the values they may take.
OPTIONS: dict[str, dict[str, str]] = {
    "tmpfs": {"size": r"[0-9]+[kmg]?", "nr_inodes": r"[0-9]+[kmg]?", "mode": r"[0-7]{1,4}",
              "uid": r"[0-9]+", "gid": r"[0-9]+"},
    "devpts": {"gid": r"[0-9]+", "mode": r"[0-7]{1,4}", "ptmxmode": r"[0-7]{1,4}"},
    "proc": {"hidepid": r"[0-4]|off|noaccess|invisible|ptraceable", "subset": r"pid",
             "gid": r"[0-9]+"},
    "sysfs": {}, "mqueue": {},
}
# Character devices a tmpfs may hold: null, zero, full, random, urandom, tty, console,
# ptmx (those runc makes in a container's /dev).
DEVICES = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
_ENTRY_TYPES = ("dir", "file", "link", "fifo", "chr")

# What mounts.json holds (check_image then checks how the fields go together): each
# mount, and each entry of a tmpfs's contents, relative to the tmpfs (``.`` its top).
_RELATIVE = Either(Str(choices=(".",)), Path(relative=True))
CONTENT = Obj(
    path=_RELATIVE, type=Str(choices=(*_ENTRY_TYPES, "hardlink")), mode=Opt(Int(0, 0o7777)),
    uid=Opt(UID), gid=Opt(UID), mtime_ns=Opt(S64), target=Opt(STR), rdev=Opt(Tup(U32, U32)),
    size=Opt(NAT), offset=Opt(NAT),
)
MOUNT = Obj({
    "id": Int(0, U32.hi), "point": PATH, "fstype": Str(255), "source": STR,
    "flags": List(Str(choices=mountinfo.MNT_FLAGS), max=len(mountinfo.MNT_FLAGS)),
    "how": Str(choices=("root", "external", "bind", "new", "cgroup")),
    "parent": Opt(Int(0, U32.hi)),
    "key": Opt(STR), "root": Opt(PATH), "from": Opt(Int(0, U32.hi)),
    "subpath": Opt(Either(Str(choices=("",)), Path(relative=True))), "options": Opt(STR),
    "contents": Opt(List(CONTENT, max=MAX_ENTRIES + 1)),
})
SCHEMA = Obj(mounts=List(MOUNT, min=1, max=MAX_ENTRIES))


_EXTERNAL = LazyPattern(r"mnt\[([^\]]+)\]:(.+)")


def split_external(external: tuple[str, ...] | list[str]) -> tuple[dict[str, str],
                                                                    tuple[str, ...]]:
    """criu's ``--external mnt[KEY]:VALUE`` entries as {KEY: VALUE}, and the others. At
    dump KEY is a mount point of the tree and VALUE the name it is saved under; at
    restore KEY is that name and VALUE the host path bound there."""
    found: dict[str, str] = {}
    rest = []
    for e in external:
        if not e.startswith("mnt["):
            rest.append(e)
            continue
        m = _EXTERNAL.fullmatch(e)
        if m is None:
            raise UsageError(f"--external {e}: expected mnt[KEY]:VALUE")
        found[m[1]] = m[2]
    return found, tuple(rest)


# ---------------------------------------------------------------- dump


def _flags(m: Mount) -> list[str]:
    return [o for o in m.options if o in mountinfo.MNT_FLAGS]


def _options(m: Mount) -> str:
    import re  # (a tree without a mount namespace of its own needs no re)
    keep = OPTIONS.get(m.fstype, {})
    out = []
    for opt in m.super_options:
        key, _, value = opt.partition("=")
        if key in keep and value and re.fullmatch(keep[key], value):
            out.append(opt)
    return ",".join(out)


def _order(mounts: list[Mount], where: str) -> list[Mount]:
    """Parents before children, siblings in mountinfo's order; the root first."""
    ids = {m.mount_id for m in mounts}
    roots = [m for m in mounts if m.parent_id not in ids or m.parent_id == m.mount_id]
    if len(roots) != 1 or roots[0].point != "/":
        raise UnsupportedError(f"{where}: the mount namespace has no single root mount at /")
    kids: dict[int, list[Mount]] = {}
    for m in mounts:
        if m is not roots[0]:
            kids.setdefault(m.parent_id, []).append(m)
    out, todo = [], [roots[0]]
    while todo:
        m = todo.pop(0)
        out.append(m)
        todo[:0] = kids.get(m.mount_id, [])
    return out


def _creation_order(mounts: list[Mount], source: dict[int, Mount]) -> list[Mount]:
    """``mounts`` (parents first) reordered so that each bind comes after its source too;
    otherwise as they were."""
    done: set[int] = set()
    out: list[Mount] = []
    todo = list(mounts)
    while todo:
        m = next((m for m in todo if (m is mounts[0] or m.parent_id in done)
                  and (m.mount_id not in source or source[m.mount_id].mount_id in done)),
                 None)
        if m is None:
            raise UnsupportedError(f"mount {todo[0].point}: its binds form a cycle")
        todo.remove(m)
        done.add(m.mount_id)
        out.append(m)
    return out


class DumpMounts:
    """Saves the mount tree of process ``pid``'s namespace into ``images``."""

    def __init__(self, images: ImageWriter, pid: int, external: dict[str, str]):
        self.images = images
        self.pid = pid
        self.external = external  # mount point -> the name the restore resolves
        self.where = f"process {pid}"
        self.saved: list[dict[str, Any]] = []
        self.data: RawWriter | None = None
        self.bytes = 0
        self.entries = 0
        self.sockets: list[tuple[str, str]] = []  # (mount, path) of tmpfs socket files
        self._hierarchies: dict[str, str] | None = None  # device -> cgroup hierarchy

    def check(self) -> list[Mount]:
        """Refuse what a restore could not make again, before anything is written."""
        mounts = _order(mountinfo.read(self.pid), self.where)
        for m in mounts:
            what = f"{self.where}: mount {m.point} ({m.fstype} {m.source})"
            if any(t.startswith(("shared:", "master:")) for t in m.tags):
                raise UnsupportedError(f"{what} has {' '.join(m.tags)} propagation; ckpt "
                                       "restores private mounts only")
        return mounts

    def dump(self) -> None:
        mounts = self.check()
        source = self._sources(mounts)
        for m in _creation_order(mounts, source):
            entry: dict[str, Any] = {"id": m.mount_id, "point": m.point, "fstype": m.fstype,
                                     "source": m.source, "flags": _flags(m)}
            what = f"{self.where}: mount {m.point} ({m.fstype} {m.source})"
            src = source.get(m.mount_id)
            if m is mounts[0]:
                entry["how"] = "root"
            else:
                entry["parent"] = m.parent_id
                if m.point in self.external:
                    entry.update(how="external", key=self.external[m.point], root=m.root)
                elif src is not None:
                    entry.update(how="bind", **{"from": src.mount_id},
                                 subpath=_below(m.root, src.root))
                elif m.fstype in ("cgroup", "cgroup2") and self._hierarchy(m) is not None:
                    # (a cgroup namespace's own mount shows its folder from ckpt's root)
                    entry.update(how="cgroup", key=self._hierarchy(m), root=m.root)
                    self.images.need(CGROUP_FEATURE)
                elif m.fstype in NEW_FS and m.root == "/":
                    entry.update(how="new", options=_options(m))
                    if m.fstype == "tmpfs":
                        entry["contents"] = self._contents(m, what)
                else:
                    raise UnsupportedError(
                        f"{what}: ckpt cannot make it again; name it external "
                        f"(--external mnt[{m.point}]:NAME, runc's ext_mnt) and give "
                        "its source at restore")
            self.saved.append(entry)
            log.info("mount %s: %s", m.point, entry["how"])
        self.images.write_json(IMAGE, {"mounts": self.saved})
        self.images.need(FEATURE)

    def _hierarchy(self, m: Mount) -> str | None:
        """The cgroup hierarchy (as /proc/PID/cgroup names it) that cgroup mount ``m``
        shows, found among ckpt's own mounts by its device; None if none is."""
        if self._hierarchies is None:
            from ..kernel import cgroupfs
            self._hierarchies = {}
            for h, ms in cgroupfs.hierarchy_mounts().items():
                for hm in ms:
                    try:
                        st = os.stat(hm.point)
                    except OSError:
                        continue
                    self._hierarchies[f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"] = h
        return self._hierarchies.get(m.dev)

    def _sources(self, mounts: list[Mount]) -> dict[int, Mount]:
        """The mount each bind mount is made from: the first mount of its filesystem with
        the widest root (``/`` when one shows it whole), when it lies below it."""
        primary: dict[str, Mount] = {}
        for m in mounts:
            if m.point in self.external and m is not mounts[0]:
                continue
            best = primary.get(m.dev)
            if best is None or len(m.root.rstrip("/")) < len(best.root.rstrip("/")):
                primary[m.dev] = m
        out = {}
        for m in mounts[1:]:
            p = primary.get(m.dev)
            if p is not None and p is not m and m.point not in self.external \
                    and _below(m.root, p.root) is not None:
                out[m.mount_id] = p
        return out

    def _contents(self, m: Mount, what: str) -> list[dict[str, Any]]:
        """Every entry of the tmpfs at ``m`` (not what is mounted over it), data saved."""
        try:  # a detached copy of the mount alone; made only from inside its namespace
            with nsenter.entered(self.pid, ["mnt"]):
                tree = mountinfo.open_tree(m.point, mountinfo.OPEN_TREE_CLONE
                                           | mountinfo.OPEN_TREE_CLOEXEC)
        except OSError as e:
            raise UnsupportedError(f"{what}: cannot read its contents: {e.strerror}") from None
        try:
            if os.stat(tree).st_dev != os.makedev(*(int(x) for x in m.dev.split(":"))):
                raise UnsupportedError(f"{what} is covered by another mount at its place")
            top = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=tree)
        finally:
            os.close(tree)  # an O_PATH fd: the folder is read through ``top``
        try:
            out: list[dict[str, Any]] = []
            seen: dict[tuple[int, int], str] = {}
            self._walk(top, "", out, seen, what, m.point)
            return out
        finally:
            os.close(top)

    def _walk(self, dirfd: int, rel: str, out: list[dict[str, Any]],
              seen: dict[tuple[int, int], str], what: str, point: str) -> None:
        st = os.fstat(dirfd)
        out.append(_meta("dir", rel or ".", st))
        for name in sorted(os.listdir(dirfd)):
            path = f"{rel}/{name}" if rel else name
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                raise UnsupportedError(f"{what}: more than {MAX_ENTRIES} files in tmpfs mounts")
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode):  # bound again by its socket (check_sockets)
                self.sockets.append((what, os.path.join(point, path)))
                continue
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=dirfd)
                try:
                    self._walk(fd, path, out, seen, what, point)
                finally:
                    os.close(fd)
                continue
            if st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen:
                out.append({"path": path, "type": "hardlink",
                            "target": seen[(st.st_dev, st.st_ino)]})
                continue
            seen[(st.st_dev, st.st_ino)] = path
            if stat.S_ISLNK(st.st_mode):
                e = _meta("link", path, st)
                e["target"] = os.readlink(name, dir_fd=dirfd)
            elif stat.S_ISFIFO(st.st_mode):
                e = _meta("fifo", path, st)
            elif stat.S_ISCHR(st.st_mode):
                dev = (os.major(st.st_rdev), os.minor(st.st_rdev))
                if dev not in DEVICES:
                    raise UnsupportedError(f"{what}: {path} is device {dev[0]}:{dev[1]}; "
                                           "ckpt makes again only " + _devices())
                e = _meta("chr", path, st)
                e["rdev"] = list(dev)
            elif stat.S_ISREG(st.st_mode):
                e = _meta("file", path, st)
                e.update(size=st.st_size, offset=self._save(dirfd, name, st.st_size, what))
            else:
                raise UnsupportedError(f"{what}: {path} is a block device; ckpt does not "
                                       "save those in a tmpfs")
            out.append(e)

    def check_sockets(self, descriptions: dict[str, dict[str, Any]]) -> None:
        """Each socket file of a tmpfs is the file of a unix socket of the tree, which the
        restore binds to it again (sk_unix.py); refuse another one (bound by a socket
        outside the tree, or by none): it would be lost."""
        bound = {d["file"]["path"] for d in descriptions.values()
                 if d["kind"] == "unix" and "file" in d and not d["file"].get("gone")}
        for what, path in self.sockets:
            if path not in bound:
                raise UnsupportedError(f"{what}: {path} is a socket file no unix socket of "
                                       "the tree is bound to; ckpt cannot make it again")

    def _save(self, dirfd: int, name: str, size: int, what: str) -> int:
        self.bytes += size
        if self.bytes > TMPFS_LIMIT:
            raise UnsupportedError(f"{what}: tmpfs contents over {TMPFS_LIMIT >> 20} MiB; "
                                   "not saved")
        if self.data is None:
            self.data = self.images.raw(DATA)
        offset = self.data.size
        if size:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                ghost.append_data(self.data, fd, 0, size, f"{what}: {name}")
            finally:
                os.close(fd)
        return offset


def _devices() -> str:
    return ", ".join(f"{a}:{b}" for a, b in sorted(DEVICES))


def _meta(kind: str, path: str, st: os.stat_result) -> dict[str, Any]:
    return {"path": path, "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}


def _below(path: str, top: str) -> str | None:
    """``path`` relative to ``top`` when it lies at or below it, else None."""
    if top == "/":
        return path.lstrip("/")
    if path == top:
        return ""
    if path.startswith(top + "/"):
        return path[len(top) + 1:]
    return None


# ---------------------------------------------------------------- restore

_NAME = LazyPattern(r"[^/\0]+")


def _clean(path: str, what: str, absolute: bool) -> str:
    """A path of the image, refused when it has ``.``, ``..`` or empty components."""
    if not isinstance(path, str) or len(path) > 4096 or "\0" in path:
        raise ImageError(f"{what}: bad path {path!r}")
    body = path[1:] if absolute else path
    if absolute and not path.startswith("/"):
        raise ImageError(f"{what}: {path!r} is not absolute")
    if body in ("", ".") and (absolute or path == "."):
        return path
    if any(c in ("", ".", "..") for c in body.split("/")):
        raise ImageError(f"{what}: {path!r} has an empty, . or .. component")
    return path


def check_image(data: Any, where: str) -> list[dict[str, Any]]:
    """mounts.json as a restore may use it, or ImageError naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("mounts"), list) \
            or not data["mounts"]:
        raise ImageError(f"{where}: a list of mounts is expected")
    mounts = data["mounts"]
    ids: set[int] = set()
    for i, m in enumerate(mounts):
        what = f"{where}: mount {i}"
        if not isinstance(m, dict) or not isinstance(m.get("id"), int):
            raise ImageError(f"{what}: an object with an id is expected")
        _clean(m.get("point"), what, True)
        how = m.get("how")
        if (i == 0) != (how == "root"):
            raise ImageError(f"{what}: the first mount, and only it, is the root")
        if i and m.get("parent") not in ids:
            raise ImageError(f"{what}: its parent is not a mount before it")
        if how == "external" and not isinstance(m.get("key"), str):
            raise ImageError(f"{what}: an external mount needs its key")
        if how == "external" and "root" in m:
            _clean(m["root"], what, True)
        elif how == "bind":
            if m.get("from") not in ids:
                raise ImageError(f"{what}: a bind of a mount not before it")
            if m.get("subpath") != "":
                _clean(m.get("subpath"), what, False)
        elif how == "new":
            import re
            fstype = m.get("fstype")
            if fstype not in NEW_FS:
                raise ImageError(f"{what}: ckpt does not mount {fstype!r}")
            for opt in filter(None, str(m.get("options", "")).split(",")):
                key, _, value = opt.partition("=")
                if key not in OPTIONS[fstype] or not re.fullmatch(OPTIONS[fstype][key],
                                                                  value):
                    raise ImageError(f"{what}: option {opt!r} of {fstype}")
            if fstype == "tmpfs":
                _check_contents(m.get("contents"), what)
        elif how == "cgroup":
            if not isinstance(m.get("key"), str) or "root" not in m:
                raise ImageError(f"{what}: a cgroup mount needs its hierarchy and root")
            _clean(m["root"], what, True)
        elif how not in ("root", "external"):
            raise ImageError(f"{what}: unknown kind {how!r}")
        if not isinstance(m.get("flags"), list) or \
                any(f not in mountinfo.MNT_FLAGS for f in m["flags"]):
            raise ImageError(f"{what}: bad flags {m.get('flags')!r}")
        ids.add(m["id"])
    return mounts


def _check_contents(contents: Any, what: str) -> None:
    if not isinstance(contents, list) or not contents or contents[0].get("path") != ".":
        raise ImageError(f"{what}: the contents must start with the mount's folder")
    for e in contents:
        if not isinstance(e, dict):
            raise ImageError(f"{what}: a content entry is not an object")
        _clean(e.get("path"), what, False)
        kind = e.get("type")
        if kind == "hardlink":
            _clean(e.get("target"), what, False)
            continue
        if kind not in _ENTRY_TYPES:
            raise ImageError(f"{what}: {e.get('path')}: unknown type {kind!r}")
        for key in ("mode", "uid", "gid"):
            if not isinstance(e.get(key), int) or e[key] < 0:
                raise ImageError(f"{what}: {e['path']}: bad {key}")
        if e["mode"] > 0o7777:
            raise ImageError(f"{what}: {e['path']}: bad mode")
        if kind == "chr" and tuple(e.get("rdev", ())) not in DEVICES:
            raise ImageError(f"{what}: {e['path']}: device {e.get('rdev')} is not one of "
                             + _devices())
        if kind == "link" and not isinstance(e.get("target"), str):
            raise ImageError(f"{what}: {e['path']}: a link without target")
        if kind == "file" and not (isinstance(e.get("size"), int) and e["size"] >= 0
                                   and isinstance(e.get("offset"), int) and e["offset"] >= 0):
            raise ImageError(f"{what}: {e['path']}: bad size or offset")


def _mount_flags(names: list[str]) -> int:
    flags = 0
    for name in names:
        flags |= mountinfo.MNT_FLAGS[name]
    return flags


class Builder:
    """Makes the saved mount tree in a new mount namespace whose root is ``root``."""

    def __init__(self, images: ImageReader, mounts: list[dict[str, Any]], root: str,
                 external: dict[str, str], pid_ns: bool = False):
        self.images = images
        self.mounts = mounts
        self.root = os.path.realpath(root)
        self.external = external  # key -> host path
        # With a PID namespace of the tree's own, its proc mounts (and what depends on
        # them) wait until the namespace exists (``finish``).
        self.later = self._after_proc() if pid_ns else set()
        self.holder = 0  # the process holding the tree's mount namespace (``hold``)
        self.ns_fd = -1  # ckpt's fd on that namespace

    def _after_proc(self) -> set[int]:
        """The ids of the new proc mounts and of every mount on, or bound from, them."""
        later: set[int] = set()
        for m in self.mounts:
            if (m["how"] == "new" and m["fstype"] == "proc") or m.get("parent") in later \
                    or m.get("from") in later:
                later.add(m["id"])
        return later

    def check(self) -> None:
        """Before anything is created: the root and every external source exist."""
        if not os.path.isdir(self.root):
            raise RestoreError(f"--root {self.root}: not a folder")
        for m in self.mounts:
            if m["how"] == "external":
                src = self.external.get(m["key"])
                if src is None:
                    raise RestoreError(
                        f"mount {m['point']} was external with key {m['key']!r}: give its "
                        f"source (--external mnt[{m['key']}]:PATH, runc's ext_mnt)")
                if not os.path.exists(src):
                    raise RestoreError(f"mount {m['point']}: source {src} does not exist")
            elif m["how"] == "cgroup":
                self._cgroup_source(m)

    def _cgroup_source(self, m: dict[str, Any]) -> str:
        """The folder a cgroup mount is bound from: its cgroup (``root``) through ckpt's
        mount of its hierarchy (``key``)."""
        from ..kernel import cgroupfs
        folder = cgroupfs.directory(cgroupfs.hierarchy_mounts().get(m["key"], []), m["root"])
        if folder is None or not os.path.isdir(folder):
            raise RestoreError(f"mount {m['point']}: cgroup {m['key'] or 'cgroup2'}:"
                               f"{m['root']} is not reachable here")
        return folder

    def move_cgroup_roots(self, moves: dict[str, tuple[str, str]]) -> None:
        """The tree's cgroup mounts follow its cgroups to criu's cgroup roots (a
        container restored under another ID, in other cgroups): an external cgroup
        mount whose root was a moved cgroup, or below one, is bound from where it went
        (``moves``: hierarchy -> (old cgroup, new), cgroups.rerooted)."""
        from ..kernel import cgroupfs
        from .cgroups import moved
        hierarchies = cgroupfs.hierarchy_mounts()
        for m in self.mounts:
            if m["how"] == "cgroup":
                h: str | None = m["key"]
            elif m["how"] == "external" and m["fstype"] in ("cgroup", "cgroup2") \
                    and m.get("root"):
                src = os.path.realpath(self.external[m["key"]])
                at = [(len(hm.point), h) for h, ms in hierarchies.items() for hm in ms
                      if _below(src, hm.point) is not None]
                h = max(at)[1] if at else None
            else:
                continue
            new = moved(m["root"], *moves[h]) if h in moves else None
            if new is not None:
                log.info("cgroup mount %s: bound from %s, not %s", m["point"], new, m["root"])
                m["root"] = new

    def hold(self, avoid: set[int]) -> None:
        """The tree's own mount namespace: a copy of ckpt's made private, whose root is
        the new root bound over itself, pivoted into by a child of ckpt that holds it
        while the restore goes on (and leaves with ckpt). ckpt opens the tree's files
        through the holder's root; the restored root enters it (tree.py). The holder
        lives until the tree is made: it never keeps a PID of ``avoid`` (the tree's),
        being made again elsewhere when its fork got one."""
        taken: list[int] = []  # holders forked under a PID of the tree
        try:
            while True:
                pid = self._fork_holder()
                if pid not in avoid:
                    break
                log.info("the mount namespace's holder got PID %d, which the tree needs: "
                         "forked again", pid)
                taken.append(pid)  # held until the end: each PID of ``avoid`` once at most
        finally:
            for stray in taken:  # their PIDs free again once reaped
                _end(stray)
        self.holder = pid
        self.ns_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)

    def _fork_holder(self) -> int:
        """Fork a child of ckpt pivoted into the new root, waiting to be killed."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        ckpt = os.getpid()
        pid = interrupts.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                libc.prctl(libc.PR_SET_PDEATHSIG, _signal.SIGKILL)  # it leaves with ckpt
                if os.getppid() == ckpt:
                    _pivot(self.root)
                    os.write(ready_w, b"p")
                    while True:  # until ckpt kills it (close)
                        _signal.pause()
            finally:
                os._exit(1)
        os.close(ready_w)
        try:
            ok = os.read(ready_r, 1) == b"p"
        finally:
            os.close(ready_r)
        if not ok:
            _end(pid)
            raise RestoreError(f"cannot pivot into {self.root} in a new mount namespace")
        return pid

    def build(self) -> None:
        """Every mount but those waiting for the PID namespace, made by ckpt inside the
        tree's mount namespace, where paths are the tree's (no link leads out of it)."""
        self._make_all([m for m in self.mounts[1:] if m["id"] not in self.later], -1)

    def finish(self, pid_ns: int) -> None:
        """The mounts waiting for the PID namespace ``pid_ns`` (an fd): proc's, and what
        is on them or bound from them."""
        self._make_all([m for m in self.mounts if m["id"] in self.later], pid_ns)

    def _make_all(self, todo: list[dict[str, Any]], pid_ns: int) -> None:
        if not todo and not (self.mounts[0]["flags"] and pid_ns < 0):
            return
        sources: dict[int, int] = {}  # external mounts: detached copies made here
        data = -1
        try:
            for m in todo:
                if m["how"] in ("external", "cgroup"):
                    sources[m["id"]] = mountinfo.open_tree(
                        external_source(self.external[m["key"]], m.get("root", ""))
                        if m["how"] == "external" else self._cgroup_source(m),
                        mountinfo.OPEN_TREE_CLONE | mountinfo.OPEN_TREE_CLOEXEC)
            if any(m.get("contents") for m in todo) and DATA in self.images.files:
                data = os.open(self.images.path(DATA), os.O_RDONLY | os.O_CLOEXEC)
            with nsenter.entered(self.holder, ["mnt"]):
                for m in todo:
                    self._make(m, sources.get(m["id"], -1), pid_ns, data)
                for m in reversed(todo if pid_ns >= 0 else self.mounts[:1] + todo):
                    self._set_flags(m)  # children first: a read-only parent stays writable
        except OSError as e:
            raise RestoreError(f"cannot make the tree's mounts: {e}") from None
        finally:
            for fd in [*sources.values(), data]:
                if fd >= 0:
                    os.close(fd)

    def _make(self, m: dict[str, Any], source: int, pid_ns: int, data: int) -> None:
        """Mount ``m`` at its point, ckpt being in the tree's namespace (paths its own)."""
        point, how = m["point"], m["how"]
        try:
            if how in ("external", "cgroup"):
                mountinfo.move_mount(source, point)
            elif how == "bind":
                src = next(s for s in self.mounts if s["id"] == m["from"])
                path = os.path.join(src["point"], m["subpath"]) if m["subpath"] \
                    else src["point"]
                if src["fstype"] == "devpts" and m["subpath"].isdigit() \
                        and not os.path.exists(path):  # a pty (runc's /dev/console)
                    from . import tty  # (tty.py is imported where a tree has terminals)
                    tty.make_early(os.path.join(src["point"], "ptmx"), int(m["subpath"]))
                mountinfo.mount(path, point, None, mountinfo.MS_BIND)
            elif m["fstype"] == "proc" and pid_ns >= 0:
                opts = [tuple(o.split("=", 1)) for o in filter(None, m["options"].split(","))]
                fd = mountinfo.new_mount("proc", opts, [("pidns", pid_ns)])  # type: ignore[arg-type]
                try:
                    mountinfo.move_mount(fd, point)
                finally:
                    os.close(fd)
            else:
                flags = _mount_flags(m["flags"]) & ~mountinfo.MS_RDONLY
                mountinfo.mount(m["fstype"], point, m["fstype"], flags,
                                m.get("options") or None)
        except OSError as e:
            raise RestoreError(f"mount {point} ({how} {m['fstype']}): {e.strerror}") from None
        if how == "new" and m["fstype"] == "tmpfs":
            self._fill(m, data)

    def _set_flags(self, m: dict[str, Any]) -> None:
        flags = _mount_flags(m["flags"])
        if m["how"] == "new" and not flags & mountinfo.MS_RDONLY and \
                not (m["fstype"] == "proc" and flags):
            return  # a new mount has its flags from its mount call
        try:
            mountinfo.mount(None, m["point"], None,
                            mountinfo.MS_REMOUNT | mountinfo.MS_BIND | flags)
        except OSError as e:
            raise RestoreError(f"mount {m['point']}: cannot set {m['flags']}: "
                               f"{e.strerror}") from None

    def _fill(self, m: dict[str, Any], data: int) -> None:
        """The saved contents of a tmpfs, written into the new one."""
        top = os.open(m["point"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        dirs: list[dict[str, Any]] = []
        try:
            for e in m["contents"]:
                self._entry(top, e, data, m["point"])
                if e["type"] == "dir":
                    dirs.append(e)
            for e in reversed(dirs):  # modes last: a read-only folder was filled
                os.chown(e["path"], e["uid"], e["gid"], dir_fd=top, follow_symlinks=False)
                os.chmod(e["path"], e["mode"], dir_fd=top)
        except OSError as e:
            raise RestoreError(f"mount {m['point']}: cannot make its contents: {e}") from None
        finally:
            os.close(top)

    def _entry(self, top: int, e: dict[str, Any], data: int, where: str) -> None:
        path, kind = e["path"], e["type"]
        parent, _, name = path.rpartition("/")
        dirfd = top if not parent else mountinfo.openat2(
            top, parent, os.O_RDONLY | os.O_DIRECTORY,
            mountinfo.RESOLVE_BENEATH | mountinfo.RESOLVE_NO_MAGICLINKS)
        try:
            if kind == "dir":
                if path != ".":
                    os.mkdir(name, 0o700, dir_fd=dirfd)
                return
            if kind == "hardlink":
                os.link(e["target"], name, src_dir_fd=top, dst_dir_fd=dirfd,
                        follow_symlinks=False)
                return
            if kind == "link":
                os.symlink(e["target"], name, dir_fd=dirfd)
            elif kind == "fifo":
                os.mkfifo(name, 0o600, dir_fd=dirfd)
            elif kind == "chr":
                os.mknod(name, 0o600 | stat.S_IFCHR, os.makedev(*e["rdev"]), dir_fd=dirfd)
            else:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
                try:
                    if e["size"]:
                        ghost.fill_data(fd, data, e["offset"], e["size"], f"{where}/{path}")
                finally:
                    os.close(fd)
            os.chown(name, e["uid"], e["gid"], dir_fd=dirfd, follow_symlinks=False)
            if kind != "link":
                os.chmod(name, e["mode"], dir_fd=dirfd)
        finally:
            if dirfd != top:
                os.close(dirfd)

    def close(self) -> None:
        from . import tty
        tty.drop_early()
        if self.ns_fd >= 0:
            os.close(self.ns_fd)
            self.ns_fd = -1
        if self.holder:
            _end(self.holder)
            self.holder = 0


def _end(pid: int) -> None:
    """Kill and reap a child of ckpt's."""
    os.kill(pid, _signal.SIGKILL)
    os.waitpid(pid, 0)


def external_source(given: str, root: str) -> str:
    """The host path an external mount is bound from: ``given``, or the folder below it
    that the saved mount showed when ``given`` names a folder above it on the same
    filesystem (runc names a cgroup hierarchy's mount point for a container's cgroup
    mounted there: the saved mount's root, ``/ctr1``, is below it)."""
    st = os.stat(given)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    host = [m for m in mountinfo.read("self") if m.dev == dev
            and _below(given, m.point) is not None]
    if not host or not root:
        return given
    m = max(host, key=lambda h: len(h.point))
    rel = _below(given, m.point) or ""
    shown = os.path.join(m.root, rel).rstrip("/") or "/"  # ``given`` in the filesystem
    below = _below(root, shown)
    return os.path.join(given, below) if below else given


def _pivot(new_root: str) -> None:
    """A mount namespace of this process's own whose ``/`` is ``new_root`` bound over
    itself, the mounts of the namespace it copied made private and detached
    (pivot_root over itself, as runc does)."""
    libc.unshare(libc.CLONE_NEWNS)
    mountinfo.mount(None, "/", None, mountinfo.MS_REC | mountinfo.MS_PRIVATE)
    mountinfo.mount(new_root, new_root, None, mountinfo.MS_BIND)
    os.chdir(new_root)
    mountinfo.pivot_root(".", ".")
    mountinfo.umount2(".", mountinfo.MNT_DETACH)
    os.chdir("/")
