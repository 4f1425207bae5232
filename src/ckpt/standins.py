"""Stand-ins: the processes a restore creates for a process group or session whose leader
had exited, and where each is created.

A group or session outlives its leader while it has members (a pipeline whose first
command ended, a daemon that forked after ``setsid`` and whose leader exited), and the
kernel keeps the leader's PID for it meanwhile. The restore makes the group or session
again with a stand-in: a process under the leader's PID that calls ``setpgid(0, 0)`` or
``setsid``, lives while the members are created (they join with ``setpgid``), then exits
and is reaped by its creator (tree.py). A session's members must be created in it: the
stand-in clones those whose parent is outside the session with ``CLONE_PARENT``, so
their parent is the one they had. ``plan`` says, from the inventory's tasks alone,
which stand-ins a tree needs and who creates each; the dump runs it to refuse what it
cannot rebuild (``Unbuildable``), the restore to build it.
"""

from __future__ import annotations

from .kernel.record import dataclass, field
from .schema import BOOL, PID, List, Obj

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

FEATURE = "standins"
# The inventory's ``standins``: what ``StandIn.record`` writes, one per leader.
SCHEMA = List(Obj(pid=PID, session=BOOL), max=1 << 22)


class Unbuildable(ValueError):
    """A tree whose sessions a restore cannot create again (the message names why)."""


@dataclass
class StandIn:
    """One stand-in: the leader's PID, whether it makes a session (and its group) or a
    group, the process that clones it (None: ckpt, for the root's session; a stand-in's
    PID when a session's stand-in clones it), whether that one clones it before its own
    ``setsid``, the process it is cloned right before (a group's first member) and, for a
    session, the processes it clones itself (``CLONE_PARENT``)."""

    pid: int
    session: bool
    creator: int | None
    early: bool = False
    before: int | None = None
    members: list[int] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """Its entry in the inventory's ``standins``."""
        return {"pid": self.pid, "session": self.session}


def leaderless(tasks: Sequence[dict[str, Any]], outside: Sequence[int | None]
               ) -> tuple[list[int], list[int]]:
    """The sessions, then the groups (a session's own group left out), whose leader is
    not in the tree, in the order the tasks name them; ``outside``: the shell job's
    session and group, which stay the restorer's."""
    pids = {t["pid"] for t in tasks}
    kept = set(outside) | pids
    sessions = list(dict.fromkeys(t["sid"] for t in tasks if t["sid"] not in kept))
    groups = list(dict.fromkeys(t["pgid"] for t in tasks
                                if t["pgid"] not in kept and t["pgid"] not in sessions))
    return sessions, groups


def plan(tasks: Sequence[dict[str, Any]], outside_sid: int | None,
         outside_pgid: int | None) -> list[StandIn]:
    """The stand-ins of the tree ``tasks`` (the inventory's, root first, parents before
    children), in the order they are created; ``Unbuildable`` for a tree whose sessions
    cannot be created again."""
    sessions, groups = leaderless(tasks, (outside_sid, outside_pgid))
    by_pid = {t["pid"]: t for t in tasks}
    born: dict[int, int | None] = {}  # the session a process is created in
    early: dict[int, bool] = {}  # cloned before its parent's setsid
    tops: dict[int, list[dict[str, Any]]] = {s: [] for s in sessions}
    for t in tasks:
        pid, sid = t["pid"], t["sid"]
        parent = by_pid.get(t["ppid"]) if pid != tasks[0]["pid"] else None
        if parent is None:
            natural = outside_sid
        else:
            early[pid] = (parent["sid"] == parent["pid"] and sid != parent["pid"]
                          and sid != pid)
            natural = born[parent["pid"]] if early[pid] else parent["sid"]
        born[pid] = natural
        if sid in (pid, natural):
            continue
        if sid not in tops:
            raise Unbuildable(f"process {pid}: its session {sid} cannot be recreated "
                              "from its parent's (not supported yet)")
        born[pid] = sid
        tops[sid].append(t)
    made: list[StandIn] = []
    for sid in sessions:
        members = tops[sid]
        creators = {m["ppid"] if m["pid"] != tasks[0]["pid"] else None for m in members}
        if len(creators) != 1:
            raise Unbuildable(
                f"session {sid}, whose leader {sid} has exited, holds processes of "
                f"different parents outside it ({', '.join(str(m['pid']) for m in members)}"
                "); ckpt recreates such a session only when one process had forked them all")
        for m in members:
            if "files_of" in m or "fs_of" in m:
                raise Unbuildable(f"process {m['pid']} is in session {sid}, whose leader "
                                  f"{sid} has exited, and shares its parent's fd table or "
                                  "fs struct: ckpt cannot recreate both")
        made.append(StandIn(sid, True, creators.pop(), members=[m["pid"] for m in members]))
    order = _creation_order(tasks, made)
    creator_of = _creators(tasks, made)
    for pgid in groups:
        first = next(p for p in order if p in by_pid and by_pid[p]["pgid"] == pgid)
        creator = creator_of[first]
        if creator is None:
            raise Unbuildable(f"process {first} is in process group {pgid}, whose leader "
                              f"{pgid} has exited, outside its session")
        made.append(StandIn(pgid, False, creator,
                            early=early.get(first, False) and creator == by_pid[first]["ppid"],
                            before=first))
    return made


def _creators(tasks: Sequence[dict[str, Any]], made: list[StandIn]) -> dict[int, int | None]:
    """Who clones each process: its parent, or its session's stand-in (None: ckpt)."""
    out: dict[int, int | None] = {t["pid"]: t["ppid"] for t in tasks}
    out[tasks[0]["pid"]] = None
    for s in made:
        out[s.pid] = s.creator
        for m in s.members:
            out[m] = s.pid
    return out


def _creation_order(tasks: Sequence[dict[str, Any]], made: list[StandIn]) -> list[int]:
    """Every process and session stand-in in the order the restore clones them: from the
    top down, each one's children (those before its setsid first) when it is made."""
    creator_of = _creators(tasks, made)
    by_pid = {t["pid"]: t for t in tasks}
    kids: dict[int | None, list[int]] = {}
    for pid in [t["pid"] for t in tasks] + [s.pid for s in made]:
        kids.setdefault(creator_of[pid], []).append(pid)

    def before_setsid(pid: int) -> bool:
        t, parent = by_pid.get(pid), by_pid.get(creator_of[pid] or 0)
        return (t is not None and parent is not None and parent["sid"] == parent["pid"]
                and t["sid"] not in (parent["pid"], pid))

    order = list(kids.get(None, []))
    todo = list(order)
    while todo:
        mine = kids.get(todo.pop(0), [])
        mine = [k for k in mine if before_setsid(k)] + [k for k in mine if not before_setsid(k)]
        order += mine
        todo += mine
    return order


def check_recorded(recorded: Any, planned: Sequence[StandIn]) -> str:
    """A problem with the inventory's ``standins`` against the tree's, or ''."""
    want = sorted((s.pid, s.session) for s in planned)
    try:
        got = sorted((int(r["pid"]), bool(r["session"])) for r in recorded)
    except (TypeError, KeyError, ValueError):
        return "standins: not a list of {\"pid\": PID, \"session\": bool}"
    if want != got:
        return (f"standins: {got} does not match the groups and sessions of the tasks "
                f"whose leader is not in the tree ({want})")
    return ""
