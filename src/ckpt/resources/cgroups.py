"""Cgroup membership (``--manage-cgroups[=MODE]``): each process goes back into the
cgroups, v1 and v2, it was in, made again if missing, with their knobs.

Dump: a hierarchy in which every process of the tree is in ckpt's own cgroup is not
saved (as criu): they come back in the restorer's. In any other, each process's
cgroup is saved (``None`` for one in ckpt's own: it goes into the restorer's), and
for each cgroup holding a process, the knobs of ``KNOBS`` it has (limits, weights,
CPU and memory sets; not the devices whitelist, freezer state, hugetlb or net_prio
maps, pressure thresholds, io.max, ...). A thread in another cgroup than its process
is refused. ``--manage-cgroups=ignore`` saves nothing.

Restore, by criu's modes (``soft`` without the flag, as criu): ``none`` and
``props`` need every saved cgroup to exist, ``strict`` none of them; ``soft``,
``full`` and ``strict`` make the missing ones (and the folders above them); knobs are
written to every saved cgroup with ``props``, ``full`` and ``strict``, to those ckpt
made with ``soft``, to none with ``none``; ``ignore`` leaves the processes in the
restorer's cgroups. Checks run before anything is created; the cgroups are made
before the processes, each process joins its own before its memory is rebuilt (so
its pages are charged there), and a failed restore removes the cgroups it made.
"""

from __future__ import annotations

import os

from ..errors import RestoreError, UnsupportedError, UsageError
from ..images import CGROUPS
from ..kernel import cgroupfs
from ..kernel.cgroupfs import V2
from ..log import logger
from ..schema import PATH, List, Map, Null, Obj, Str, Tup

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.cgroups")

IMAGE = CGROUPS
FEATURE = "cgroups"  # what a dump with cgroups.json needs of its reader (images.py)
MODES = ("ignore", "none", "props", "soft", "full", "strict")
DEFAULT = "soft"  # criu's, with or without --manage-cgroups

# The knobs saved and written back, by v1 controller (in the order they are written:
# a CPU period before its quota, cpus and mems before anything joins a cpuset), and
# those of every v1 cgroup and of cgroup2.
V1_KNOBS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.cfs_burst_us",
            "cpu.rt_period_us", "cpu.rt_runtime_us", "cpu.idle"),
    "cpuset": ("cpuset.cpus", "cpuset.mems", "cpuset.cpu_exclusive", "cpuset.mem_exclusive",
               "cpuset.memory_migrate"),
    "memory": ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
               "memory.soft_limit_in_bytes", "memory.swappiness",
               "memory.move_charge_at_immigrate"),
    "pids": ("pids.max",),
    "blkio": ("blkio.weight", "blkio.bfq.weight"),
    "net_cls": ("net_cls.classid",),
}
V1_COMMON = ("notify_on_release", "cgroup.clone_children")
V2_KNOBS = ("cgroup.max.descendants", "cgroup.max.depth", "cpuset.cpus", "cpuset.mems",
            "cpu.max", "cpu.weight", "cpu.idle", "memory.min", "memory.low", "memory.high",
            "memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "io.weight")
_MAX_VALUE = 4096

_HIERARCHY = Str(256, pattern="[A-Za-z0-9_,=.-]*")  # "cpu,cpuacct", "name=systemd"; "" cgroup2
# A cgroup below the dumping ckpt's cgroup root (no '.', '..' or empty component: the
# dump refuses a process in a cgroup outside it, and a restore goes nowhere else).
_CGROUP = PATH
_KNOB = Str(64, choices={*V2_KNOBS, *V1_COMMON, *(k for ks in V1_KNOBS.values() for k in ks)})
# What ``dump`` writes (cgroups.json); ``inconsistency`` checks it against itself.
SCHEMA = Obj(
    hierarchies=List(_HIERARCHY, max=64),
    tasks=Map(Map(Null(_CGROUP), key=_HIERARCHY), key=Str(8, pattern="[0-9]+")),
    cgroups=List(Obj(hierarchy=_HIERARCHY, path=_CGROUP,
                       knobs=List(Tup(_KNOB, Str(_MAX_VALUE, pattern=r"[^\n]+")), max=64))),
)


def knobs_of(hierarchy: str) -> tuple[str, ...]:
    """The knobs saved for a cgroup of ``hierarchy``, in writing order."""
    if hierarchy == V2:
        return V2_KNOBS
    own = [k for c in hierarchy.split(",") for k in V1_KNOBS.get(c, ())]
    return (*own, *V1_COMMON)


def shown(hierarchy: str, path: str) -> str:
    """A cgroup as a person reads it: ``memory:/a/b``, ``cgroup2:/a``."""
    return f"{hierarchy or 'cgroup2'}:{path}"


def check_mode(mode: str | None) -> str:
    """The mode ``--manage-cgroups`` asks for (criu's default when not given)."""
    mode = mode or DEFAULT
    if mode not in MODES:
        raise UsageError(f"--manage-cgroups={mode}: not one of {', '.join(MODES)}")
    return mode


def inconsistency(image: dict[str, Any]) -> tuple[str, str] | None:
    """The first place where cgroups.json (its schema checked) contradicts itself, as
    (field, what is wrong): every cgroup a process joins and every knob written must be
    one the dump saved, of a hierarchy it saved."""
    hierarchies = set(image["hierarchies"])
    saved = set()
    for i, cg in enumerate(image["cgroups"]):
        h = cg["hierarchy"]
        if h not in hierarchies:
            return f"cgroups[{i}].hierarchy", f"{h or 'cgroup2'} is not among the hierarchies"
        if (h, cg["path"]) in saved:
            return f"cgroups[{i}]", f"{shown(h, cg['path'])} is saved twice"
        saved.add((h, cg["path"]))
        allowed = knobs_of(h)
        for j, (name, _value) in enumerate(cg["knobs"]):
            if name not in allowed:
                return f"cgroups[{i}].knobs[{j}]", f"{name} is not a knob of {h or 'cgroup2'}"
    for pid, where in image["tasks"].items():
        for h, path in where.items():
            if h not in hierarchies:
                return f"tasks.{pid}", f"{h or 'cgroup2'} is not among the hierarchies"
            if path is not None and (h, path) not in saved:
                return f"tasks.{pid}", f"cgroup {shown(h, path)} is not among the cgroups"
    return None


# ---------------------------------------------------------------- dump

def dump(tasks: dict[int, list[int]], mode: str | None) -> dict[str, Any] | None:
    """What cgroups.json holds for the processes ``tasks`` (pid -> its other threads),
    or None when they are all in ckpt's cgroups (or ``mode`` is ignore)."""
    mode = check_mode(mode)
    if mode == "ignore":
        log.info("cgroups not saved (--manage-cgroups=ignore)")
        return None
    mine = cgroupfs.memberships("self")
    members = {pid: _process_cgroups(pid, threads) for pid, threads in tasks.items()}
    differ = sorted({h for m in members.values() for h, p in m.items() if mine.get(h) != p})
    if not differ:
        log.info("every process is in ckpt's cgroups: none saved")
        return None
    mounts = cgroupfs.hierarchy_mounts()
    saved: dict[str, dict[str, str | None]] = {}
    cgroups: dict[tuple[str, str], dict[str, Any]] = {}
    for pid, m in members.items():
        saved[str(pid)] = {}
        for h in differ:
            path = m.get(h)
            if path is None:
                raise UnsupportedError(f"process {pid} is in no cgroup of hierarchy "
                                       f"{h or 'cgroup2'}, which ckpt sees")
            if path == mine.get(h):
                saved[str(pid)][h] = None  # ckpt's own: the restorer's
                continue
            if not cgroupfs.below_root(path):
                raise UnsupportedError(
                    f"process {pid} is in cgroup {shown(h, path)}, outside ckpt's cgroup "
                    "namespace: a restore puts processes only into cgroups below its root "
                    "(dump from the namespace that holds them)")
            saved[str(pid)][h] = path
            if (h, path) not in cgroups:
                cgroups[(h, path)] = _dump_cgroup(pid, h, path, mounts)
    log.info("cgroups saved: %s", ", ".join(shown(h, p) for h, p in cgroups))
    return {"hierarchies": differ, "tasks": saved, "cgroups": list(cgroups.values())}


def _process_cgroups(pid: int, threads: list[int]) -> dict[str, str]:
    """The cgroups of process ``pid``, refused when one of its threads is elsewhere."""
    own = cgroupfs.memberships(pid)
    for tid in threads:
        theirs = cgroupfs.memberships(pid, tid)
        for h, path in theirs.items():
            if own.get(h) != path:
                raise UnsupportedError(
                    f"thread {tid} of process {pid} is in cgroup {shown(h, path)}, its process "
                    f"in {shown(h, own.get(h, '?'))}: ckpt puts a process's threads back in "
                    "its own cgroups only (not supported yet)")
    return own


def _dump_cgroup(pid: int, hierarchy: str, path: str,
                 mounts: dict[str, list[cgroupfs.Mount]]) -> dict[str, Any]:
    """One cgroup a process is in: where, and its knobs."""
    folder = cgroupfs.directory(mounts.get(hierarchy, []), path)
    if folder is None or not os.path.isdir(folder):
        raise UnsupportedError(f"process {pid} is in cgroup {shown(hierarchy, path)}, which "
                               "no mount of ckpt's reaches")
    knobs = []
    for knob in knobs_of(hierarchy):
        try:
            with open(os.path.join(folder, knob), "rb") as f:
                value = f.read(_MAX_VALUE + 1).decode().strip()
        except (FileNotFoundError, PermissionError):
            continue  # not on this kernel, or not enabled in this cgroup (cgroup2)
        except (OSError, UnicodeDecodeError) as e:
            log.debug("cgroup %s: %s unreadable (%s); not saved", shown(hierarchy, path), knob,
                      e)
            continue
        if value and len(value) <= _MAX_VALUE and "\n" not in value:
            knobs.append([knob, value])
    return {"hierarchy": hierarchy, "path": path, "knobs": knobs}


# ---------------------------------------------------------------- restore

def _root_of(hierarchy: str, roots: dict[str, str]) -> str | None:
    """The root given for ``hierarchy`` among criu's cgroup roots ({controller: path},
    "" for every controller not named, and for cgroup2)."""
    for ctrl, path in roots.items():
        if ctrl and hierarchy and ctrl in hierarchy.split(","):
            return path
    return roots.get("")


def moved(path: str, old: str, new: str) -> str | None:
    """``path`` with its prefix ``old`` replaced by ``new``; None if not below ``old``."""
    old, new = old.rstrip("/"), new.rstrip("/")
    if path.rstrip("/") == old:
        return new or "/"
    if path.startswith(old + "/"):
        return new + path[len(old):]
    return None


Moves = dict[str, tuple[str, str]]  # hierarchy -> (cgroup at the dump, where it goes)


def rerooted(image: dict[str, Any], root_pid: int, roots: dict[str, str]
             ) -> tuple[dict[str, Any], Moves]:
    """cgroups.json with the tree moved to criu's cgroup roots (``--cgroup-root``,
    runc's cg_root, a container restored under another ID): in each hierarchy given a
    root, the cgroup of the tree's root process becomes that root and the cgroups below
    it move along (the rest stay where they were); and those moves."""
    saved = image["tasks"].get(str(root_pid), {})
    moves: Moves = {}
    for h, was in saved.items():
        root = _root_of(h, roots)
        if root is None:
            continue
        if not cgroupfs.below_root(root):
            raise RestoreError(f"cgroup root {shown(h, root)}: not a cgroup below ckpt's "
                               "cgroup root")
        if was is None or was.rstrip("/") == root.rstrip("/"):
            continue
        log.info("cgroups of %s below %s move to %s", h or "cgroup2", was, root)
        moves[h] = (was, root)
    if not moves:
        return image, moves

    def move(h: str, path: str | None) -> str | None:
        if path is None or h not in moves:
            return path
        return moved(path, *moves[h]) or path

    cgroups: dict[tuple[str, str], dict[str, Any]] = {}
    for cg in image["cgroups"]:
        key = (cg["hierarchy"], move(cg["hierarchy"], cg["path"]))
        if key in cgroups:
            raise RestoreError(f"cgroup root: cgroups {shown(*key)} and "
                               f"{shown(cg['hierarchy'], cg['path'])} would be one")
        cgroups[key] = {**cg, "path": key[1]}
    tasks = {pid: {h: move(h, path) for h, path in where.items()}
             for pid, where in image["tasks"].items()}
    return {**image, "tasks": tasks, "cgroups": list(cgroups.values())}, moves


class RestoreCgroups:
    """The cgroups of one restore: checked, made, joined, and removed on failure."""

    def __init__(self, image: dict[str, Any] | None, mode: str | None,
                 root_pid: int = 0, roots: dict[str, str] | None = None):
        self.mode = check_mode(mode)
        self.image = image if self.mode != "ignore" else None
        self.created: list[str] = []  # folders made, in order (removed in reverse)
        self._folders: dict[tuple[str, str], str] = {}
        self._mine: dict[str, str] = {}
        self.moves: Moves = {}  # by criu's cgroup roots (``rerooted``)
        if image is not None and self.mode == "ignore":
            log.info("the processes stay in the restorer's cgroups (--manage-cgroups=ignore)")
        if self.image is not None:
            if roots:
                self.image, self.moves = rerooted(self.image, root_pid, roots)
            self._find(self.image)

    def _find(self, image: dict[str, Any]) -> None:
        """Every hierarchy and cgroup found here; nothing created (the image itself was
        checked with the others, validate.py)."""
        hierarchies, cgroups = image["hierarchies"], image["cgroups"]
        mounts = cgroupfs.hierarchy_mounts()
        self._mine = cgroupfs.memberships("self")
        for h in hierarchies:
            if h not in mounts or h not in self._mine:
                raise RestoreError(f"the processes were in cgroups of hierarchy "
                                   f"{h or 'cgroup2'}, which is not mounted here; restore "
                                   "with --manage-cgroups=ignore to leave them in ckpt's")
        for cg in cgroups:
            h, path = cg["hierarchy"], cg["path"]
            folder = cgroupfs.directory(mounts[h], path)
            if folder is None:
                raise RestoreError(f"cgroup {shown(h, path)}: no mount of ckpt's reaches it")
            self._folders[(h, path)] = folder
        for h, path in self._mine.items():
            if h in hierarchies:
                folder = cgroupfs.directory(mounts[h], path)
                if folder is None:
                    raise RestoreError(f"ckpt's own cgroup {shown(h, path)} is out of reach")
                self._folders[(h, path)] = folder

    def check(self) -> None:
        """Refuse what the mode forbids, before anything is created."""
        if self.image is None:
            return
        for cg in self.image["cgroups"]:
            where = shown(cg["hierarchy"], cg["path"])
            exists = os.path.isdir(self._folders[(cg["hierarchy"], cg["path"])])
            if not exists and self.mode in ("none", "props"):
                raise RestoreError(f"cgroup {where} does not exist; --manage-cgroups="
                                   f"{self.mode} puts processes only into cgroups that do "
                                   "(soft, full or strict make them)")
            if exists and self.mode == "strict":
                raise RestoreError(f"cgroup {where} exists; --manage-cgroups=strict makes "
                                   "every cgroup anew")

    def make(self) -> None:
        """Make the missing cgroups (and the folders above them) and write the knobs the
        mode wants, before any process joins them."""
        if self.image is None:
            return
        for cg in self.image["cgroups"]:
            h, path = cg["hierarchy"], cg["path"]
            folder = self._folders[(h, path)]
            made = self._make(folder, shown(h, path))
            if self.mode in ("props", "full", "strict") or (self.mode == "soft" and made):
                for name, value in cg["knobs"]:
                    _write(folder, name, value, shown(h, path))
            log.info("cgroup %s %s", shown(h, path), "made" if made else "exists")

    def _make(self, folder: str, where: str) -> bool:
        """Make ``folder`` and the missing folders above it; whether it was missing."""
        if os.path.isdir(folder):
            return False
        missing = []
        up = folder
        while not os.path.isdir(up):
            missing.append(up)
            up = os.path.dirname(up)
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except OSError as e:
                raise RestoreError(f"cannot make cgroup {where} ({d}): {e.strerror}") from None
            self.created.append(d)
        return True

    def join(self, pid: int) -> None:
        """Put restored process ``pid`` into its cgroups (ckpt's own where it was in the
        dumping ckpt's)."""
        if self.image is None:
            return
        for h, path in self.image["tasks"].get(str(pid), {}).items():
            target = path if path is not None else self._mine[h]
            folder = self._folders[(h, target)]
            try:
                with open(os.path.join(folder, "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            except OSError as e:
                raise RestoreError(f"process {pid}: cannot join cgroup {shown(h, target)}: "
                                   f"{e.strerror}") from None
            log.debug("process %d joined cgroup %s", pid, shown(h, target))

    def undo(self) -> None:
        """A failed restore: remove the cgroups it made (its processes are gone)."""
        for d in reversed(self.created):
            try:
                os.rmdir(d)
            except OSError as e:
                log.warning("cannot remove the cgroup folder %s made by this restore: %s", d,
                            e.strerror)
        self.created.clear()


def _write(folder: str, name: str, value: str, where: str) -> None:
    try:
        fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        log.warning("cgroup %s has no %s here; %s not set", where, name, value)
        return
    except OSError as e:
        raise RestoreError(f"cgroup {where}: cannot open {name}: {e.strerror}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise RestoreError(f"cgroup {where}: cannot set {name} to {value}: {e.strerror}"
                           ) from None
    finally:
        os.close(fd)
