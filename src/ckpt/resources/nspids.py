"""The PIDs of a tree in a PID namespace of its own (a container's, its init the
tree's root): each process's and thread's PID there, saved at dump, and asked for at
restore beside its host PID.

The images name processes by their host PIDs, as ckpt sees and traces them; a tree
whose root is PID 1 of a PID namespace of its own, every process of that namespace in
the tree, is saved with ``ids`` {host PID: PID inside} (namespaces.json, treens.py).
The restore forks the root with CLONE_NEWPID and clones every process and thread
with a set_tid array of two levels, its PID inside and its host PID, so ckpt finds
each under the host PID it had, and the processes see the PIDs they had
(``levels``). A PID a restored process is given to use itself (a process group it
joins) is its PID inside (``inner``).
"""

from __future__ import annotations

import os

from ..errors import UnsupportedError
from ..kernel import pidns, procfs
from ..kernel.scoped import contextmanager

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator

_ids: dict[int, int] = {}  # host PID -> PID inside, while a restore makes such a tree


def _inner_of(pid: int, tid: int) -> int:
    return pidns.ns_pids(f"{pid}/task/{tid}")[-1]


def dump(tasks: dict[int, list[int]], root: int) -> dict[int, int]:
    """{host PID: PID inside} of every process and thread of ``tasks`` (pid -> its other
    threads), checking that the root is the namespace's init and that every process of
    the namespace is in the tree (else what stays outside could not come back)."""
    ids = {}
    for pid, threads in tasks.items():
        for tid in [pid, *threads]:
            ids[tid] = _inner_of(pid, tid)
    if ids[root] != 1:
        raise UnsupportedError(
            f"process {root} is PID {ids[root]} of a PID namespace of its own, not its "
            "init: ckpt saves a PID namespace from its init (PID 1) down")
    ns = os.stat(f"/proc/{root}/ns/pid").st_ino
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in tasks:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino == ns:
                comm = procfs.stat(int(entry)).comm
                raise UnsupportedError(
                    f"process {entry} ({comm}) is in the PID namespace of process {root} "
                    "but not in its tree (entered with setns?): it would not come back")
        except (OSError, procfs.ProcessGone):
            continue
    return ids


def levels(pid: int) -> list[int]:
    """The set_tid array that makes ``pid``: its PID inside, then its host PID, while a
    restore makes a tree in a PID namespace of its own; else the host PID alone."""
    return [_ids[pid], pid] if pid in _ids else [pid]


def inner(pid: int) -> int:
    """The PID a restored process knows ``pid`` by."""
    return _ids.get(pid, pid)


def active() -> bool:
    return bool(_ids)


@contextmanager
def restoring(ids: dict[int, int]) -> Iterator[None]:
    """``ids`` are the PIDs inside of the tree the block restores."""
    global _ids
    before, _ids = _ids, dict(ids)
    try:
        yield
    finally:
        _ids = before
