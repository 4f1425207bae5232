"""Which stand-ins a tree needs and who creates each (standins.plan), from the
inventory's tasks alone; the shapes it cannot rebuild are refused."""

from __future__ import annotations

from typing import Any

import pytest

from ckpt import standins, tree
from ckpt.standins import StandIn, Unbuildable


def task(pid: int, ppid: int, pgid: int, sid: int, **extra: Any) -> dict[str, Any]:
    return {"pid": pid, "ppid": ppid, "pgid": pgid, "sid": sid, **extra}


def test_a_tree_of_its_own_needs_none() -> None:
    tasks = [task(10, 1, 10, 10), task(11, 10, 11, 10), task(12, 10, 11, 10)]
    assert standins.plan(tasks, None, None) == []


def test_shell_job_keeps_the_restorers_group_and_session() -> None:
    tasks = [task(10, 5, 5, 4), task(11, 10, 5, 4)]
    assert standins.plan(tasks, 4, 5) == []


def test_group_whose_leader_exited_is_cloned_before_its_first_member() -> None:
    tasks = [task(10, 1, 10, 10), task(11, 10, 11, 10), task(13, 10, 12, 10),
             task(14, 11, 12, 10)]
    assert standins.plan(tasks, None, None) == [StandIn(12, False, 10, before=13)]
    root, order = tree.build_nodes(tasks, 10, None, standins.plan(tasks, None, None))
    assert [k.pid for k in root.late] == [11, 12, 13]
    assert [n.pid for n in order] == [10, 11, 13, 14]
    assert [n.pid for n in order if n.joins_group] == [13, 14]


def test_group_member_before_its_parents_setsid() -> None:
    """The first member is cloned before its parent's setsid: its group's stand-in too,
    in the session it inherits."""
    tasks = [task(10, 1, 10, 10), task(11, 10, 11, 11), task(12, 11, 9, 10)]
    assert standins.plan(tasks, None, None) == [StandIn(9, False, 11, early=True, before=12)]


def test_daemon_session_root_is_cloned_by_a_stand_in_of_ckpts() -> None:
    tasks = [task(20, 1, 8, 8), task(21, 20, 8, 8), task(22, 20, 22, 8)]
    plan = standins.plan(tasks, None, None)
    assert plan == [StandIn(8, True, None, members=[20])]
    root, order = tree.build_nodes(tasks, 20, None, plan)
    assert root.creator is not None and root.creator.pid == 8 and root.parent is None
    assert [n.pid for n in order] == [20, 21, 22]
    assert [n.pid for n in order if n.joins_group] == [20, 21]


def test_daemon_reparented_to_the_root_is_cloned_by_a_stand_in_of_the_roots() -> None:
    tasks = [task(10, 1, 10, 10), task(21, 10, 8, 8), task(22, 10, 8, 8),
             task(23, 21, 23, 8)]
    plan = standins.plan(tasks, None, None)
    assert plan == [StandIn(8, True, 10, members=[21, 22])]
    root, _ = tree.build_nodes(tasks, 10, None, plan)
    (stand_in,) = root.late
    assert stand_in.pid == 8 and [k.pid for k in stand_in.late] == [21, 22]
    assert [k.pid for k in stand_in.late[0].late] == [23]


def test_group_of_a_session_stand_in_members_is_cloned_by_the_session_stand_in() -> None:
    tasks = [task(20, 1, 7, 8), task(21, 20, 7, 8)]
    assert standins.plan(tasks, None, None) == [
        StandIn(8, True, None, members=[20]), StandIn(7, False, 8, before=20)]


def test_session_of_members_of_different_parents_is_refused() -> None:
    tasks = [task(10, 1, 10, 10), task(11, 10, 11, 11), task(21, 10, 8, 8),
             task(22, 11, 8, 8)]
    with pytest.raises(Unbuildable, match=r"session 8, whose leader 8 has exited.*21, 22"):
        standins.plan(tasks, None, None)


def test_session_member_sharing_its_parents_fd_table_is_refused() -> None:
    tasks = [task(10, 1, 10, 10), task(21, 10, 8, 8, files_of=10)]
    with pytest.raises(Unbuildable, match=r"process 21 .* fd table"):
        standins.plan(tasks, None, None)


def test_session_inherited_before_a_setsid_needs_none() -> None:
    """A child cloned before its parent's setsid stays in its grandparent's session."""
    tasks = [task(10, 1, 10, 10), task(11, 10, 11, 11), task(12, 11, 12, 12),
             task(13, 12, 13, 11)]
    assert standins.plan(tasks, None, None) == []


def test_session_of_a_process_not_its_ancestor_is_refused() -> None:
    """A child in its sibling's session (it was reparented): that session's leader is in
    the tree, so no stand-in can make it."""
    tasks = [task(10, 1, 10, 10), task(11, 10, 11, 11), task(12, 10, 12, 11)]
    with pytest.raises(Unbuildable, match=r"process 12: its session 11 cannot be recreated"):
        standins.plan(tasks, None, None)


def test_recorded_stand_ins_must_be_the_trees() -> None:
    plan = [StandIn(8, True, None, members=[20])]
    assert standins.check_recorded([{"pid": 8, "session": True}], plan) == ""
    assert "does not match" in standins.check_recorded([], plan)
    assert "does not match" in standins.check_recorded([{"pid": 8, "session": False}], plan)
    assert "does not match" in standins.check_recorded([{"pid": 9, "session": True}], [])
    for bad in (5, [5], [{"pid": "x", "session": True}], [{"session": True}]):
        assert "not a list" in standins.check_recorded(bad, plan)
