"""Every JSON image of a dump folder checked against its schema, then against each
other, before a restore or ``ckpt show`` uses any of it.

The schemas live with the code that writes each part (``mem.SCHEMA``, ``task.SCHEMA``,
each file kind's ``SCHEMA``, ...); this module puts them together per image file and
checks what crosses files: every process of the tree has its images, fd tables name
descriptions that exist, ghost objects of one id are the same object, a shared memory
object's owner saved it, locks are held through fds their process has, data lies
within the raw files, and each thread resumes in executable memory. The first
problem is an ``ImageError`` naming the file and the field; nothing has been created.
"""

from __future__ import annotations

from . import standins
from .errors import ImageError
from .images import (
    CGROUPS,
    FILES,
    FORMAT,
    INVENTORY,
    LOCKS,
    MOUNTS,
    NAMESPACES,
    SYSV,
    ImageReader,
)
from .kernel import libc
from .kernel.record import dataclass, field
from .resources import (
    cpu,
    creds,
    files,
    ghost,
    mem,
    sharing,
    signals,
    task,
    thread,
    timers,
)
from .resources.filekind import ImageRefs
from .schema import (
    BOOL,
    PID,
    PID0,
    U32,
    U64,
    UID,
    Deferred,
    Field,
    Int,
    List,
    Null,
    Obj,
    Opt,
    Str,
    check,
    refuse,
)

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# What the dump driver writes of the tree: an entry of the inventory's tasks, the same
# fields at the top of core-PID.json.
TASK = Obj(
    pid=PID, ppid=PID0, pgid=PID0, sid=PID0,
    # a session leader's terminal and its foreground group; a shell job's root: that group
    ctty=Opt(U64), tpgid=Opt(Int(-1, 1 << 22)),
    zombie=Opt(BOOL), exit_status=Opt(Int(0, 0xFFFF)),
    zombie_as=Opt(Obj(comm=Str(64), uids=creds.IDS, gids=creds.IDS,
                      groups=List(UID, max=65536))),  # a zombie's name and ids
    exit_signal=Opt(Int(0, 64)),  # a child cloned with another signal than SIGCHLD (or none)
    **sharing.TASK_FIELDS,
)


def _lock_schema() -> Field:
    from . import netlock  # imported only for an inventory with a network lock (start-up)
    return netlock.SCHEMA


INVENTORY_SCHEMA = Obj(
    format=Str(choices=(FORMAT,)), version=Int(1, 1 << 16), needs=Opt(List(Str(64))),
    type=Opt(Str(choices=("dump", "pre-dump"))),
    parent=Opt(Null(Obj(dir=Str(), crc32=U32))), track_mem=Opt(BOOL), files=FILES,
    root_pid=PID, tasks=List(TASK, min=1, max=1 << 22), shell_job=Opt(BOOL),
    outside_sid=Opt(Null(PID)), outside_pgid=Opt(Null(PID)), standins=Opt(standins.SCHEMA),
    network_lock=Opt(Null(Deferred(_lock_schema))),
    kernel=Opt(Str(256)), arch=Opt(Str(64)), ckpt_version=Opt(Str(64)), created=Opt(Str(64)),
)
CORE = TASK.extend(
    cpu=cpu.SCHEMA, signals=signals.SCHEMA, task=task.SCHEMA, timers=timers.SCHEMA,
    threads=List(thread.SCHEMA, max=1 << 22), stop_signal=Int(0, 64),
)


def _cgroups() -> Any:
    from .resources import cgroups  # as those below: imported for a tree that has its image
    return cgroups


def _mounts() -> Any:
    from .resources import mounts
    return mounts


def _treens() -> Any:
    from .resources import treens
    return treens


def _locks() -> Any:
    from .resources import locks
    return locks


def _sysv() -> Any:
    from .resources import sysv
    return sysv


# The schema of each JSON image by its name (PID replaced by N).
SCHEMAS = {
    "core-N.json": CORE, "mm-N.json": mem.SCHEMA, "fds-N.json": files.FD_TABLE,
    LOCKS: Deferred(lambda: _locks().SCHEMA), SYSV: Deferred(lambda: _sysv().SCHEMA),
    CGROUPS: Deferred(lambda: _cgroups().SCHEMA), MOUNTS: Deferred(lambda: _mounts().SCHEMA),
    NAMESPACES: Deferred(lambda: _treens().SCHEMA),
}
# Checks of what a schema cannot say in one field, by image name: each raises ImageError.
RELATIONS: dict[str, Callable[[Any, str], Any]] = {
    MOUNTS: lambda value, where: _mounts().check_image(value, where),
    NAMESPACES: lambda value, where: _treens().check_image(value, where),
}


@dataclass
class Images:
    """A dump folder's images, every one checked: the inventory and, per live process,
    its core, mm and fd table; files.json's descriptions."""

    reader: ImageReader
    inventory: dict[str, Any]
    cores: dict[int, dict[str, Any]] = field(default_factory=dict)
    mms: dict[int, dict[str, Any]] = field(default_factory=dict)
    fd_tables: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    descriptions: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> list[int]:
        return [t["pid"] for t in self.inventory["tasks"] if not t.get("zombie")]


def load(reader: ImageReader) -> Images:
    """Every JSON image of the dump in ``reader`` (its checksums verified already),
    checked; the reader keeps the checked objects (``load_json`` returns them)."""
    inv = reader.inventory
    check(inv, INVENTORY_SCHEMA, reader.path(INVENTORY))
    out = Images(reader, inv)
    if inv.get("type", "dump") != "dump":  # a pre-dump: the mappings and pages only
        for pid in out.live:
            name = f"mm-{pid}.json"
            mm = _load(reader, name, mem.PAGES_ONLY)
            where = reader.path(name)
            mem.check_image(pid, mm, where, mem.pages_size(pid, mm, where, _sizes(reader)),
                            pre_dump=True)
        return out
    _check_tree(reader)
    for pid in out.live:
        out.cores[pid] = _load(reader, f"core-{pid}.json", CORE)
        out.mms[pid] = _load(reader, f"mm-{pid}.json", mem.SCHEMA)
        out.fd_tables[pid] = _load(reader, f"fds-{pid}.json", files.FD_TABLE)
    descriptions = reader.load_json("files.json")
    where = reader.path("files.json")
    if type(descriptions) is not dict:
        raise ImageError(f"{where}: not an object of descriptions")
    sizes = {name: meta["size"] for name, meta in reader.files.items()}
    pids = {t["pid"] for t in inv["tasks"]}
    files.check_descriptions(descriptions, where, ImageRefs(descriptions, sizes, pids))
    out.descriptions = descriptions
    _check_processes(out, sizes)
    _check_ghosts(out, sizes.get(ghost.DATA_FILE, 0))
    for name in (LOCKS, SYSV, CGROUPS, MOUNTS, NAMESPACES):
        if name in reader.files:
            value = _load(reader, name, SCHEMAS[name])
            if name in RELATIONS:
                RELATIONS[name](value, reader.path(name))
    _check_others(out, sizes)
    return out


def _sizes(reader: ImageReader) -> dict[str, int]:
    return {name: meta["size"] for name, meta in reader.files.items()}


def check_parent(reader: ImageReader, pids: list[int]) -> None:
    """The mm-PID.json of each of ``pids`` that a parent folder of a chain has: those
    give the pages a restore reads from it (a pre-dump's have the mappings only)."""
    check(reader.inventory, INVENTORY_SCHEMA, reader.path(INVENTORY))
    pre = reader.inventory.get("type") == "pre-dump"
    for pid in pids:
        name = f"mm-{pid}.json"
        if name in reader.files:
            mm = _load(reader, name, mem.PAGES_ONLY if pre else mem.SCHEMA)
            where = reader.path(name)
            size = mem.pages_size(pid, mm, where, _sizes(reader), absent=0)
            mem.check_image(pid, mm, where, size, pre_dump=pre)


def check_file(name: str, value: Any, where: str) -> None:
    """One JSON image alone (``ckpt show FILE``), against the schema its name says."""
    if name == INVENTORY:
        value = {k: v for k, v in value.items() if k != "crc32"} \
            if isinstance(value, dict) else value
        check(value, INVENTORY_SCHEMA, where)
        return
    generic = "-".join(["N" if p.isdigit() else p for p in name.removesuffix(".json")
                        .split("-")]) + ".json"
    if name == "files.json":
        if type(value) is not dict:
            raise ImageError(f"{where}: not an object of descriptions")
        files.check_descriptions(value, where, None)
        return
    schema = SCHEMAS.get(generic)
    if schema is not None:
        check(value, schema, where)
    if name in RELATIONS:
        RELATIONS[name](value, where)


def _load(reader: ImageReader, name: str, schema: Any) -> Any:
    value = reader.load_json(name)
    check(value, schema, reader.path(name))
    return value


def _check_tree(reader: ImageReader) -> None:
    """Processes once each, parents before children (the root first), each live one
    with its images listed."""
    inv = reader.inventory
    where = reader.path(INVENTORY)
    tasks = inv["tasks"]
    if tasks[0]["pid"] != inv["root_pid"] or tasks[0].get("zombie"):
        raise refuse(where, "tasks[0]", f"is not the live root process {inv['root_pid']}")
    seen: set[int] = set()
    for i, t in enumerate(tasks):
        if t["pid"] in seen:
            raise refuse(where, f"tasks[{i}].pid", f"process {t['pid']} twice")
        if i and t["ppid"] not in seen:
            raise refuse(where, f"tasks[{i}].ppid", f"its parent {t['ppid']} is not listed "
                         "before it")
        seen.add(t["pid"])
        if t.get("zombie"):
            continue
        for name in (f"core-{t['pid']}.json", f"mm-{t['pid']}.json",
                     f"fds-{t['pid']}.json", "files.json"):
            if name not in reader.files:
                raise refuse(where, "files", f"{name} is not listed")


def _check_processes(out: Images, sizes: dict[str, int]) -> None:
    """Each process's images against its inventory entry and the other processes."""
    reader = out.reader
    nr_open = _nr_open()
    tids = {t["pid"] for t in out.inventory["tasks"]}
    by_pid = {t["pid"]: t for t in out.inventory["tasks"]}
    for pid in out.live:
        core, mm = out.cores[pid], out.mms[pid]
        cwhere, mwhere = reader.path(f"core-{pid}.json"), reader.path(f"mm-{pid}.json")
        if core["pid"] != pid:
            raise refuse(cwhere, "pid", f"is {core['pid']}, not {pid}")
        if "fs_of" in by_pid[pid] or "files_of" in by_pid[pid]:
            if {k: by_pid[pid].get(k) for k in ("fs_of", "files_of")} != \
                    {k: core.get(k) for k in ("fs_of", "files_of")}:
                raise refuse(cwhere, "files_of", "differs from the inventory's")
        for i, th in enumerate(core["threads"]):
            if th["tid"] in tids:
                raise refuse(cwhere, f"threads[{i}].tid", f"{th['tid']} is taken by another "
                             "process or thread of the tree")
            tids.add(th["tid"])
        mem.check_image(pid, mm, mwhere, mem.pages_size(pid, mm, mwhere, sizes))
        executable = [(v["start"], v["end"]) for v in mm["vmas"]
                      if v["prot"] & libc.PROT_EXEC or v["kind"] == "vdso"]
        for where_regs, regs in [("cpu", core["cpu"]["regs"])] + [
                (f"threads[{i}].cpu", th["cpu"]["regs"]) for i, th in enumerate(core["threads"])]:
            if not any(s <= regs["rip"] < e for s, e in executable):
                raise refuse(cwhere, f"{where_regs}.regs.rip", f"{regs['rip']:#x} is not in "
                             "an executable mapping of the process")
        files.check_table(pid, out.fd_tables[pid], reader.path(f"fds-{pid}.json"),
                          out.descriptions, nr_open)
    for pid in out.live:  # a shared anonymous object is saved by its owner
        mwhere = reader.path(f"mm-{pid}.json")
        for i, v in enumerate(out.mms[pid]["vmas"]):
            if v["kind"] != "shmem":
                continue
            owner = out.mms.get(v["shmem_owner"])
            if owner is None or not any(o["id"] == v["shmem_id"] for o in owner["shmem"]):
                raise refuse(mwhere, f"vmas[{i}].shmem_owner", f"process {v['shmem_owner']} "
                             f"did not save shared memory object {v['shmem_id']}")


def _check_ghosts(out: Images, data_size: int) -> None:
    """Each ghost object well formed, and every reference to one id the same object."""
    found: dict[int, tuple[dict[str, Any], str]] = {}

    def one(info: dict[str, Any], where: str) -> None:
        ghost.check_image(info, where, data_size)
        first = found.setdefault(info["id"], (info, where))
        if first[0] != info:
            raise refuse(where, "id", f"ghost object {info['id']} differs from the one of "
                         f"{first[1]}")

    where = out.reader.path("files.json")
    for fid, desc in out.descriptions.items():
        if "ghost" in desc:
            one(desc["ghost"], f"{where}: {fid}.ghost")
    for pid in out.live:
        mwhere = out.reader.path(f"mm-{pid}.json")
        mm = out.mms[pid]
        for i, v in enumerate(mm["vmas"]):
            if "ghost" in v:
                one(v["ghost"], f"{mwhere}: vmas[{i}].ghost")
        if "exe_ghost" in mm:
            one(mm["exe_ghost"], f"{mwhere}: exe_ghost")
        cwd = out.cores[pid]["task"].get("cwd_ghost")
        if cwd is not None:
            one(cwd, f"{out.reader.path(f'core-{pid}.json')}: task.cwd_ghost")


def _check_others(out: Images, sizes: dict[str, int]) -> None:
    """locks.json, sysv.json and cgroups.json against the tree and the raw files."""
    reader = out.reader
    if LOCKS in reader.files:
        where = reader.path(LOCKS)
        for i, lk in enumerate(reader.load_json(LOCKS)):
            if "mapping" in lk:  # held through a mapping of a file, and no fd
                mm = out.mms.get(lk["pid"])
                if "fd" in lk or "file" in lk or mm is None or not any(
                        v["start"] == lk["mapping"] and v["kind"] == "file" and "ghost" not in v
                        for v in mm["vmas"]):
                    raise refuse(where, f"[{i}]", f"process {lk['pid']} has no mapping of a "
                                 f"file at {lk['mapping']:#x} (and a lock held through one "
                                 "has no fd)")
                continue
            table = out.fd_tables.get(lk["pid"])
            if table is None or not any(e["fd"] == lk.get("fd") and e["file"] == lk.get("file")
                                        for e in table):
                raise refuse(where, f"[{i}]", f"process {lk['pid']} has no fd {lk.get('fd')} "
                             f"on file {lk.get('file')}")
    shmids: set[int] = set()
    if SYSV in reader.files:
        where = reader.path(SYSV)
        data = _sysv().DATA
        for i, seg in enumerate(reader.load_json(SYSV)["shm"]):
            shmids.add(seg["id"])
            if seg["data_off"] + seg["length"] > sizes.get(data, 0):
                raise refuse(where, f"shm[{i}]", f"its data lies past the end of {data}")
    for pid in out.live:
        for i, v in enumerate(out.mms[pid]["vmas"]):
            if v["kind"] == "sysv" and v["shmid"] not in shmids:
                raise refuse(reader.path(f"mm-{pid}.json"), f"vmas[{i}].shmid",
                             f"SysV segment {v['shmid']} is not in {SYSV}")
    if CGROUPS in reader.files:
        tree = {str(p) for p in out.live}
        cg = reader.load_json(CGROUPS)
        for key in cg["tasks"]:
            if key not in tree:
                raise refuse(reader.path(CGROUPS), f"tasks.{key}",
                             "not a live process of the tree")
        problem = _cgroups().inconsistency(cg)
        if problem is not None:
            raise refuse(reader.path(CGROUPS), *problem)


def _nr_open() -> int:
    """fs.nr_open: no fd number reaches it."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20

