"""Fault points (CKPT_FAULT): the declared list matches the call sites in the code,
and an armed point fails at the hit it names. (tests/test_faults.py makes a real
dump and restore fail at each point.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import ckpt
from ckpt import faults

SRC = Path(ckpt.__file__).resolve().parent


def test_points_match_call_sites() -> None:
    """Every point named in the code is declared, and every declared point is in the code."""
    used: set[str] = set()
    for path in SRC.rglob("*.py"):
        used |= set(re.findall(r'faults\.point\("([^"]+)"\)', path.read_text()))
    assert used == set(faults.names()), (
        f"undeclared: {sorted(used - set(faults.names()))}, "
        f"never called: {sorted(set(faults.names()) - used)}")


@pytest.fixture
def armed() -> Iterator[None]:
    """Arm points in this process; afterwards, put back what CKPT_FAULT had armed."""
    saved = dict(faults._armed), dict(faults._hits)
    yield
    faults._armed.clear()
    faults._armed.update(saved[0])
    faults._hits.clear()
    faults._hits.update(saved[1])


def test_disarmed_points_pass(armed: None) -> None:
    faults.arm("")
    for name in faults.names():
        faults.point(name)


def test_point_fails_at_its_nth_hit(armed: None) -> None:
    """``NAME:N``: the N-th hit fails, the ones before and after pass; other points pass."""
    faults.arm(" dump.task.core:3 ,dump.files")
    faults.point("dump.frozen")
    faults.point("dump.task.core")
    faults.point("dump.task.core")
    with pytest.raises(faults.InjectedFault, match=r"^injected fault at dump\.task\.core$"):
        faults.point("dump.task.core")
    faults.point("dump.task.core")
    with pytest.raises(faults.InjectedFault, match=r"dump\.files"):
        faults.point("dump.files")


@pytest.mark.parametrize("spec", ["dump.files:0", "dump.files:x", "dump.files:", "dump.files"])
def test_bad_counts_mean_the_first_hit(armed: None, spec: str) -> None:
    faults.arm(spec)
    with pytest.raises(faults.InjectedFault):
        faults.point("dump.files")


def test_undeclared_point_refused_when_armed(armed: None) -> None:
    faults.arm("dump.files")
    with pytest.raises(AssertionError, match="undeclared fault point 'dump.nowhere'"):
        faults.point("dump.nowhere")


@pytest.mark.parametrize("spec, expected", [
    ("dump.files:kill", {"dump.files": (1, "kill")}),
    ("dump.files:3:kill", {"dump.files": (3, "kill")}),
    ("dump.files:stop:3, dump.frozen:2", {"dump.files": (3, "stop"),
                                          "dump.frozen": (2, "fail")}),
])
def test_action_spec(spec: str, expected: dict[str, tuple[int, str]]) -> None:
    """``NAME[:N]:kill``: ckpt SIGKILLs itself at that hit instead of failing;
    ``NAME[:N]:stop``: it SIGSTOPs itself, and goes on once continued."""
    assert faults._parse(spec) == expected
