"""State checks in the style of CRIU's zdtm tests, one line of a table per case.

Each case runs one of the small C programs of tests/zdtm/ with a mode: it sets some
state up, prints "ready", is dumped (killed) and restored, then gets SIGTERM, checks
every piece of that state itself and prints "PASS" or "FAIL: why". A case whose state
ckpt refuses by design asserts the refusal instead: the dump fails naming it, and the
process, left running untouched, still passes its checks.

The ``zdtm`` column names the CRIU tests whose kind of state a case covers (the
programs are ours). docs/zdtm-inventory.md lists every CRIU static test with what
became of it here. A case that fails for a known cause in another helper's area is a
strict xfail naming the area and the cause: it turns red once fixed, and the mark must go.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckpt_helpers import (
    TESTS,
    Builder,
    Output,
    Procs,
    ckpt_fails,
    dump_and_check_dead,
    is_alive,
    proc_status,
    restore_detached,
)

ZDTM = TESTS / "zdtm"
VERDICT = r"^(PASS|FAIL: .*|SETUP: .*)$"


@dataclass(frozen=True)
class Case:
    """One state check: a program of tests/zdtm/ in one mode."""

    id: str
    prog: str
    mode: str
    zdtm: str  # the CRIU tests of the same kind of state
    dump: tuple[str, ...] = ()  # extra flags of the dump
    restore: tuple[str, ...] = ()  # extra flags of the restore
    refuse: str = ""  # a regex of the dump's refusal, when ckpt refuses this by design
    libs: tuple[str, ...] = ()  # extra gcc flags (libraries)
    timeout: float = 30.0


def C(id: str, prog: str, mode: str = "", zdtm: str = "", **kw: object) -> Case:  # noqa: N802
    return Case(id, prog, mode or id, zdtm or id, **kw)  # type: ignore[arg-type]


def xfail(case: Case, area: str, why: str) -> pytest.param:  # type: ignore[valid-type]
    """A known failure in ``area`` (the helper working on it), cause ``why``; strict."""
    return pytest.param(case, id=case.id, marks=pytest.mark.xfail(
        strict=True, reason=f"[{area}] {why}"))


PT = ("-pthread",)
RT = ("-pthread", "-lrt")

CASES: list[Case | object] = [
    # ---------------------------------------------------------------- tasks and trees
    C("busyloop", "task", zdtm="busyloop00"),
    C("sleeping", "task", zdtm="sleeping00"),
    C("pid", "task", zdtm="pid00"),
    C("pstree", "task", zdtm="pstree"),
    C("sessions", "task", zdtm="session00 session01 session02 session03"),
    C("wait", "task", zdtm="wait00"),
    C("zombies", "task", zdtm="zombie00"),
    xfail(C("zombie-pgid", "task", zdtm="zombie01"), "tree-cow",
          "a zombie whose group is another process's comes back in its parent's group: "
          "the restore's zombie exits as soon as forked, before processes join groups"),
    C("helper-zombie", "task", zdtm="helper_zombie_child",
      refuse=r"in session \d+, which is neither in the dumped tree"),
    C("stopped", "task", zdtm="stopped"),
    C("stopped-kill", "task", zdtm="stopped01"),
    C("stopped-tkill", "task", zdtm="stopped02"),
    C("stopped-both", "task", zdtm="stopped12"),
    C("stopped-tstp", "task", zdtm="stopped03"),
    C("stopped-ttin", "task", zdtm="stopped04"),
    C("vfork", "task", zdtm="vfork00", refuse=r"shares its memory with its child .*vfork"),
    C("caps", "task", zdtm="caps00"),
    C("caps-ambient", "task", zdtm="caps01"),
    C("xids", "task", zdtm="xids00"),
    C("groups", "task", zdtm="groups"),
    C("rlimits", "task", zdtm="rlimits00"),
    C("sched-prio", "task", zdtm="sched_prio00"),
    C("sched-policy", "task", zdtm="sched_policy00"),
    C("pdeath-sig", "task", zdtm="pdeath_sig"),
    C("selfexe", "task", zdtm="selfexe00"),
    C("cmdline-env", "task", zdtm="cmdlinenv00 env00"),
    C("umask", "task", zdtm="umask00"),
    C("uptime-grow", "task", zdtm="uptime_grow"),
    C("oom-score-adj", "task", zdtm="oom_score_adj"),
    C("loginuid", "task", zdtm="loginuid"),
    C("dumpable0", "task", zdtm="dumpable01"),
    C("dumpable1", "task", zdtm="dumpable02"),
    C("thp-disable", "task", zdtm="thp_disable"),
    C("subreaper-existing", "task", zdtm="child_subreaper_existing_child"),
    C("subreaper-reparent", "task", zdtm="child_subreaper child_subreaper_and_reparent"),
    C("membarrier", "task", zdtm="membarrier"),
]


def _param(c: Case | object) -> object:
    return c if not isinstance(c, Case) else pytest.param(c, id=c.id)


def _cases() -> list[object]:
    return [_param(c) for c in CASES]


def dumped_pids(images: Path) -> list[int]:
    """Every process of the dumped tree, from its inventory."""
    inventory = json.loads((images / "inventory.json").read_text())
    return [t["pid"] for t in inventory["tasks"]]


def run_case(case: Case, build: Builder, procs: Procs, tmp_path: Path, images: Path) -> None:
    exe = build(case.prog, where=ZDTM, extra=case.libs)
    work = tmp_path / "work"
    work.mkdir()
    target = procs.start([exe, case.mode], cwd=work)
    out = target.out
    first = out.wait_line(r"^(ready|SETUP: .*|FAIL: .*)$", timeout=case.timeout)
    assert first == "ready", f"set-up failed: {first}"
    if case.refuse:
        err = ckpt_fails("dump", "-t", target.pid, "-D", images, *case.dump,
                         timeout=case.timeout)
        assert re.search(case.refuse, err), err
        assert is_alive(target.pid), "the refused dump killed the process"
        assert proc_status(target.pid)["TracerPid"] == "0", "left traced"
        assert not (images / "inventory.json").exists()
    else:
        dump_and_check_dead(procs, target, images, *case.dump, timeout=case.timeout)
        for pid in dumped_pids(images):  # re-parented to pytest (a subreaper): reap them
            procs.wait_gone(pid)
        try:
            restore_detached(procs, target.pid, out, images, "-v4", "-o", "restore.log",
                             *case.restore, timeout=case.timeout)
            check_verdict(case, procs, target.pid, out)
        finally:
            kill_restored(exe, dumped_pids(images))
        return
    check_verdict(case, procs, target.pid, out)


def check_verdict(case: Case, procs: Procs, pid: int, out: Output) -> None:
    """SIGTERM makes the program check its state: it must say PASS and exit 0."""
    start = len(out.lines())
    os.kill(pid, signal.SIGTERM)
    verdict = out.wait_line(VERDICT, timeout=case.timeout, start=start)
    assert verdict == "PASS", verdict
    code = procs.wait_gone(pid, timeout=case.timeout)
    assert code in (0, None), f"exited with {code} after PASS"


def kill_restored(exe: Path, pids: list[int]) -> None:
    """Kill what is left of a restored tree (its processes deeper than the root reach
    pytest only as their parents die, after the fixture's clean-up looked)."""
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/exe") != str(exe):
                continue
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:  # gone, or not our child (its parent reaps it)
            pass


@pytest.mark.parametrize("case", _cases())
def test_zdtm(case: Case, build: Builder, procs: Procs, tmp_path: Path,
              images: Path) -> None:
    run_case(case, build, procs, tmp_path, images)
