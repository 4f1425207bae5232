"""Namespaces: a dumped process must live in ckpt's own (the restore makes it there),
and its fds on namespace files (``/proc/PID/ns/net`` opened, ``net:[N]``) are its own
namespaces, opened again from the restored process's.

A restored process lives in the restorer's namespaces, but for the uts and ipc
namespaces a tree has of its own (treens.py). A process in another namespace than the
dumping ckpt's (``unshare --net``) would come back in the wrong one, so the dump
refuses it, naming it and the namespace (``check_tree``); run ckpt inside the
process's namespaces instead (``nsenter``).

An fd on a namespace (``NamespaceFiles``) is saved as which of the process's own
namespaces it is (``net``, ``pid`` or ``pid_for_children``, ...), found by its inode;
the restore opens that name of the restored process (ckpt's own, the same
namespace) with the saved flags. An fd on any other namespace (another netns,
``/run/netns/NAME``) is refused at dump, naming the fd and the namespace.
"""

from __future__ import annotations

import os

from ..errors import RestoreError, UnsupportedError
from ..kernel.lazyre import LazyPattern
from ..log import logger
from ..schema import U64, Str
from .filekind import Description, DumpCtx, FileKind, OpenFd, RestoreCtx, reopen_flags

log = logger("ckpt.namespaces")

# The names of /proc/PID/ns/ by the type a namespace fd's link shows (``net:[N]``);
# the *_for_children ones are the namespace the process's children get.
NAMES: dict[str, tuple[str, ...]] = {
    "cgroup": ("cgroup",), "ipc": ("ipc",), "mnt": ("mnt",), "net": ("net",),
    "pid": ("pid", "pid_for_children"), "time": ("time", "time_for_children"),
    "user": ("user",), "uts": ("uts",),
}
_LINK = LazyPattern(r"(\w+):\[(\d+)\]")
FEATURE = "namespace-fds"  # what a dump with this kind needs of its reader (images.py)


def own(pid: int | str) -> dict[str, tuple[int, int]]:
    """(st_dev, st_ino) of every namespace of ``pid`` ("self" for ckpt) by its name in
    /proc/PID/ns; names this kernel lacks are left out."""
    out = {}
    for names in NAMES.values():
        for name in names:
            try:
                st = os.stat(f"/proc/{pid}/ns/{name}")
            except FileNotFoundError:
                continue
            out[name] = (st.st_dev, st.st_ino)
    return out


def shown(name: str, ino: int) -> str:
    kind = next(k for k, names in NAMES.items() if name in names)
    return f"{kind}:[{ino}]"


def check_tree(pids: list[int], theirs_too: tuple[str, ...] = ()) -> None:
    """Refuse a process (zombies left out) in another namespace than ckpt's, but for the
    kinds ``theirs_too``, which the tree may have of its own (treens.py)."""
    mine = own("self")
    for pid in pids:
        try:
            theirs = own(pid)
        except OSError:
            continue  # gone or a zombie: the freeze reports what matters
        for name, ident in theirs.items():
            if name in mine and ident != mine[name] and name not in theirs_too:
                raise UnsupportedError(
                    f"process {pid} is in {name} namespace {shown(name, ident[1])}, not "
                    f"ckpt's ({shown(name, mine[name][1])}): ckpt restores processes in its "
                    "own namespaces only; run ckpt inside the process's (nsenter)")


# The namespaces a thread may change alone (mnt comes with its own fs struct, which
# sharing.check_threads refuses; user namespaces only a single thread may enter).
_THREAD_OWN = ("uts", "ipc", "net", "cgroup", "pid_for_children", "time_for_children")


def check_threads(pid: int, tids: list[int]) -> None:
    """Refuse a thread of ``pid`` in another namespace than its process's (``unshare``
    or ``setns`` in one thread): restored threads are all in their process's. (Links
    read relative to each thread's ns folder: ~9 us each, 25 threads in ~1.4 ms.)"""
    leader = {}
    for name in _THREAD_OWN:
        try:
            leader[name] = os.readlink(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            continue
    task = os.open(f"/proc/{pid}/task", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for tid in tids:
            try:
                ns = os.open(f"{tid}/ns", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                             dir_fd=task)
            except FileNotFoundError:
                continue  # gone meanwhile
            try:
                for name, link in leader.items():
                    theirs = os.readlink(name, dir_fd=ns)
                    if theirs != link:
                        raise UnsupportedError(
                            f"thread {tid} of process {pid} is in {name} namespace {theirs}, "
                            f"not its process's ({link}); ckpt restores every thread in its "
                            "process's namespaces")
            except FileNotFoundError:
                continue  # gone meanwhile
            finally:
                os.close(ns)
    finally:
        os.close(task)


class NamespaceFiles(FileKind):
    KIND = "ns"
    # its own fields in files.json
    SCHEMA = {"ns": Str(choices=[n for ns in NAMES.values() for n in ns]), "ino": U64}

    @classmethod
    def claims(cls, link: str, st: os.stat_result) -> bool:
        if not link.endswith("]"):  # a file's path: no pattern compiled (start-up)
            return False
        m = _LINK.fullmatch(link)
        return m is not None and m[1] in NAMES and int(m[2]) == st.st_ino

    @classmethod
    def shown_path(cls, desc: Description) -> str:
        return shown(desc["ns"], desc["ino"])

    @classmethod
    def keys(cls, desc: Description) -> list[str]:
        return [cls.shown_path(desc)]

    def dump(self, ctx: DumpCtx, f: OpenFd) -> Description:
        kind = f.link.split(":", 1)[0]
        theirs = own(f.pid)
        ident = (f.st.st_dev, f.st.st_ino)
        name = next((n for n in NAMES[kind] if theirs.get(n) == ident), None)
        if name is None:
            mine = ", ".join(shown(n, theirs[n][1]) + f" ({n})" for n in NAMES[kind]
                             if n in theirs)
            raise UnsupportedError(
                f"{f.where}: {f.link} is a {kind} namespace other than the process's own "
                f"({mine}); ckpt restores an fd on the process's own namespaces only")
        log.info("%s: its own %s namespace %s", f.where, name, f.link)
        ctx.images.need(FEATURE)
        return {"ns": name, "ino": f.st.st_ino}

    def open(self, ctx: RestoreCtx, desc: Description) -> int:
        """The restored processes live in ckpt's namespaces: ckpt's is theirs."""
        name = desc.get("ns")
        if not any(name in names for names in NAMES.values()):
            raise RestoreError(f"the image holds an fd on an unknown namespace {name!r}")
        try:
            return os.open(f"/proc/self/ns/{name}", reopen_flags(desc["flags"]))
        except OSError as e:
            raise RestoreError(f"cannot open the {name} namespace again: {e.strerror}"
                               ) from None
