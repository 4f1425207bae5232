"""Processes that share their fd table (``CLONE_FILES``) or their fs struct (cwd,
root, umask: ``CLONE_FS``) with their parent, as ``clone()`` makes them: found at
dump with ``kcmp``, and made to share again at restore by creating the child
with the same clone flags.

The restore can only share what a parent shares with a child it creates, so at
dump every group of processes sharing one table (or one fs struct) must be a
process of the tree and descendants each sharing with its parent; anything else
(sharing with a process outside the tree, or with a process of the tree that is
not its parent) is refused, naming both processes.

The inventory's tasks carry ``files_of`` / ``fs_of``: the parent whose table or fs
struct the process shares.
"""

from __future__ import annotations

from ..errors import ImageError, UnsupportedError
from ..kernel import libc, procfs
from ..schema import PID, Opt

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

FEATURE = "shared-tables"  # the image feature of files_of, fs_of and a task's root
# What this adds to the inventory's tasks (and core-PID.json): the parent shared with.
TASK_FIELDS = {"files_of": Opt(PID), "fs_of": Opt(PID)}
KCMP_FILES, KCMP_FS = 2, 3
WHAT = {KCMP_FILES: ("files_of", "fd table", "CLONE_FILES"),
        KCMP_FS: ("fs_of", "working directory, root and umask", "CLONE_FS")}


def _same(pid1: int, pid2: int, kind: int) -> bool:
    try:
        return libc.syscall("kcmp", pid1, pid2, kind, 0, 0) == 0
    except OSError:
        return False


def find(tasks: list[dict[str, Any]]) -> dict[int, dict[str, int]]:
    """For each live process of ``tasks`` (the inventory's, parents first) that shares
    its fd table or fs struct with its parent: ``{"files_of": ppid, "fs_of": ppid}``
    (either or both). Refuses sharing the restore could not make again."""
    live = [t for t in tasks if not t.get("zombie")]
    by_pid = {t["pid"]: t for t in live}
    out: dict[int, dict[str, int]] = {}
    for kind, (key, what, flag) in WHAT.items():
        heads = []  # the first process of each group: it does not share with its parent
        for t in live:
            parent = by_pid.get(t["ppid"])
            if parent is not None and _same(t["pid"], parent["pid"], kind):
                out.setdefault(t["pid"], {})[key] = parent["pid"]
            else:
                heads.append(t["pid"])
        root = live[0]
        if root["ppid"] not in by_pid and procfs.exists(root["ppid"]) \
                and _same(root["pid"], root["ppid"], kind):
            raise UnsupportedError(f"process {root['pid']} shares its {what} with its parent "
                                   f"{root['ppid']}, outside the dumped tree ({flag}); "
                                   "dump the parent's tree")
        if len(heads) < 2:  # one group: nothing to compare (a tree of one process)
            continue
        from _functools import cmp_to_key  # functools' own, without collections
        order = sorted(heads, key=cmp_to_key(
            lambda a, b, k=kind: {0: 0, 1: -1, 2: 1}[libc.syscall("kcmp", a, b, k, 0, 0)]))
        for a, b in zip(order, order[1:], strict=False):
            if _same(a, b, kind):
                raise UnsupportedError(f"processes {a} and {b} share one {what} ({flag}), "
                                       "and neither is the other's parent; ckpt cannot "
                                       "make them share it again")
    return out


def check_threads(pid: int, tids: list[int]) -> None:
    """Refuse a thread of ``pid`` with an fd table or fs struct of its own (it called
    ``unshare(CLONE_FILES)`` or ``unshare(CLONE_FS)``): a restored thread is cloned
    sharing its process's, and would lose its own fds, cwd, root and umask."""
    for tid in tids:
        for kind, (_, what, flag) in WHAT.items():
            try:
                differs = libc.syscall("kcmp", pid, tid, kind, 0, 0) != 0
            except OSError:
                continue  # gone meanwhile: the freeze tells what matters
            if differs:
                raise UnsupportedError(f"thread {tid} of process {pid} has its own {what} "
                                       f"(unshare({flag})); ckpt restores threads sharing "
                                       "their process's only")


def check(tasks: list[dict[str, Any]]) -> None:
    """At restore: ``files_of`` and ``fs_of`` name the parent, which is a live process
    of the tree (images are untrusted)."""
    live = {t["pid"] for t in tasks if not t.get("zombie")}
    for t in tasks:
        for key, _, _ in WHAT.values():
            if key in t and (t[key] != t.get("ppid") or t[key] not in live
                             or t.get("zombie")):
                raise ImageError(f"inventory.json: process {t.get('pid')}: {key} "
                                 f"{t[key]!r} is not its live parent")


def clone_flags(info: dict[str, Any]) -> int:
    """The clone flags that make a process share what it shared with its parent."""
    return ((libc.CLONE_FILES if "files_of" in info else 0)
            | (libc.CLONE_FS if "fs_of" in info else 0))
