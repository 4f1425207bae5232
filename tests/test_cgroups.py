"""Cgroups (--manage-cgroups): a process in cgroups the test made (v1 pids, cpu, memory
and cgroup2) comes back into them, made again when they were removed, with their
knobs; its child, in ckpt's cgroups, comes back into the restorer's. criu's modes:
none and props want the cgroups to exist, strict wants them gone, soft (the default)
writes knobs only into the cgroups it made, props into all, ignore leaves the
processes in the restorer's cgroups. A refused or failed restore leaves no process
and no cgroup it made; a thread in another cgroup than its process is refused at
dump, the process unharmed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ckpt.kernel import cgroupfs
from ckpt_helpers import (
    PROGS,
    PYTHON,
    Proc,
    Procs,
    assert_tags_carry_on,
    ckpt_cmd,
    ckpt_fails,
    ckpt_ok,
    edit_image,
    is_alive,
    proc_state,
    proc_status,
    scaled,
    wait_until,
)

PAIR = PROGS / "cgroup_pair.py"
# The hierarchies the test uses, with a knob of each and the value the test sets.
KNOBS = {"pids": ("pids.max", "64"), "cpu": ("cpu.shares", "512"),
         "memory": ("memory.limit_in_bytes", str(512 << 20)),
         cgroupfs.V2: ("cgroup.max.descendants", "3")}


@dataclass
class MadeCgroups:
    """Per hierarchy: the test's own cgroup (ckpt's too) and OUTER/inner made under it."""

    outer: str
    own: dict[str, str] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)  # hierarchy -> inner's folder

    def inner(self, h: str) -> str:
        return f"{self.own[h].rstrip('/')}/{self.outer}/inner"

    def all_folders(self) -> list[str]:
        """Every folder the test makes, outer ones first."""
        return ([os.path.dirname(f) for f in self.folders.values()]
                + list(self.folders.values()))

    def make(self) -> None:
        for d in self.all_folders():
            if not os.path.isdir(d):
                os.mkdir(d)

    def remove(self) -> None:
        """Remove every folder (killing what is left in them), inner ones first."""
        for d in reversed(self.all_folders()):
            wait_until(lambda d=d: _rmdir(d), 10, f"cgroup {d} to empty")

    def join(self, pid: int) -> None:
        for folder in self.folders.values():
            Path(folder, "cgroup.procs").write_text(str(pid))

    def set_knobs(self, values: dict[str, str] | None = None) -> None:
        for h, (knob, value) in KNOBS.items():
            if h in self.folders:
                Path(self.folders[h], knob).write_text((values or {}).get(h, value))

    def knobs(self) -> dict[str, str]:
        return {h: Path(self.folders[h], knob).read_text().strip()
                for h, (knob, _) in KNOBS.items() if h in self.folders}

    def saved_knobs(self) -> dict[str, str]:
        return {h: value for h, (_, value) in KNOBS.items() if h in self.folders}


def _rmdir(d: str) -> bool:
    if not os.path.isdir(d):
        return True
    try:
        os.rmdir(d)
        return True
    except OSError:
        for line in Path(d, "cgroup.procs").read_text().split():
            try:
                os.kill(int(line), 9)
            except OSError:
                pass
        return False


@pytest.fixture
def cgs() -> Iterator[MadeCgroups]:
    """OUTER/inner cgroups under the test's own in each hierarchy of KNOBS this machine
    has (the memory one stays under the test's, which may have a limit)."""
    mounts = cgroupfs.hierarchy_mounts()
    own = cgroupfs.memberships("self")
    t = MadeCgroups(f"ckpt-test-{os.getpid()}-{time.monotonic_ns()}")
    for h in KNOBS:
        if h in mounts and h in own:
            t.own[h] = own[h]
            folder = cgroupfs.directory(mounts[h], t.inner(h))
            if folder is None:
                del t.own[h]
            else:
                t.folders[h] = folder
    if len(t.folders) < 2 or cgroupfs.V2 not in t.folders:
        pytest.skip(f"this machine lacks cgroup hierarchies the test uses: {sorted(KNOBS)}")
    t.make()
    try:
        yield t
    finally:
        t.remove()


def _start(procs: Procs) -> tuple[Proc, int, int, int]:
    target = procs.start([PYTHON, PAIR])
    _, parent, child, thread = target.out.wait_line(r"^pids ").split()
    assert_tags_carry_on(target.out, ["P", "C"], 2)
    return target, int(parent), int(child), int(thread)


def _where(pid: int) -> dict[str, str]:
    return {h: p for h, p in cgroupfs.memberships(pid).items() if h in KNOBS}


def _restored(procs: Procs, target: Proc, child: int) -> None:
    procs.adopt(target.pid, target.out)
    assert is_alive(child)
    assert_tags_carry_on(target.out, ["P", "C"], 3)


def _kill_restored(procs: Procs, target: Proc, child: int) -> None:
    for pid in (child, target.pid):
        os.kill(pid, 9)
    for pid in (target.pid, child):
        procs.wait_gone(pid)


def _dumped(procs: Procs, cgs: MadeCgroups, images: Path, *extra: str
            ) -> tuple[Proc, int, dict[str, str]]:
    """The pair started, the parent moved into the inner cgroups (knobs set), dumped
    and killed; (target, child, the parent's cgroups)."""
    target, pid, child, _ = _start(procs)
    cgs.join(pid)
    cgs.set_knobs()
    inner = _where(pid)
    assert inner == {h: cgs.inner(h) for h in cgs.folders}, inner
    assert _where(child) == {h: cgs.own[h] for h in cgs.folders}
    ckpt_ok("dump", "-t", pid, "-D", images, *extra)
    procs.wait_gone(target)
    procs.wait_gone(child)
    return target, child, inner


def test_cgroups_made_again_after_removal(procs: Procs, cgs: MadeCgroups, images: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's cgroups removed after the dump: --manage-cgroups=none refuses; a
    restore that fails after making them removes them; the default (soft) makes them
    again with their knobs, the parent joins them before its memory comes back (its
    pages are charged to the new memory cgroup), its child goes into the restorer's."""
    target, child, inner = _dumped(procs, cgs, images)
    saved = json.loads((images / "cgroups.json").read_text())
    assert set(saved["hierarchies"]) >= set(cgs.folders)
    assert saved["tasks"][str(child)] == {h: None for h in saved["hierarchies"]}
    cgs.remove()

    err = ckpt_fails("restore", "-D", images, "-d", "--manage-cgroups=none")
    assert "does not exist" in err and "--manage-cgroups=none" in err, err
    assert not any(os.path.exists(f) for f in cgs.folders.values())
    assert not os.path.exists(f"/proc/{target.pid}")

    monkeypatch.setenv("CKPT_FAULT", "restore.seized")
    err = ckpt_fails("restore", "-D", images, "-d")
    monkeypatch.delenv("CKPT_FAULT")
    assert "restore.seized" in err, err
    assert not any(os.path.exists(os.path.dirname(f)) for f in cgs.folders.values())
    assert not os.path.exists(f"/proc/{target.pid}")

    ckpt_ok("restore", "-D", images, "-d")
    _restored(procs, target, child)
    assert _where(target.pid) == inner
    assert _where(child) == {h: cgs.own[h] for h in cgs.folders}
    assert cgs.knobs() == cgs.saved_knobs()
    if "memory" in cgs.folders:
        usage = int(Path(cgs.folders["memory"], "memory.usage_in_bytes").read_text())
        assert usage >= 4 << 20, f"{usage} bytes charged to the restored memory cgroup"


def test_modes_on_existing_cgroups(procs: Procs, cgs: MadeCgroups, images: Path) -> None:
    """The cgroups still there at restore, a knob changed meanwhile: strict refuses
    (leaving them), soft leaves the knob as it is now, props sets it back, ignore
    leaves both processes in the restorer's cgroups."""
    target, child, inner = _dumped(procs, cgs, images)
    cgs.set_knobs({"pids": "32"})
    now = cgs.knobs()

    err = ckpt_fails("restore", "-D", images, "-d", "--manage-cgroups=strict")
    assert "exists" in err and "strict" in err, err
    assert all(os.path.isdir(f) for f in cgs.folders.values())
    assert not os.path.exists(f"/proc/{target.pid}")

    ckpt_ok("restore", "-D", images, "-d", "--manage-cgroups")  # soft
    _restored(procs, target, child)
    assert _where(target.pid) == inner and cgs.knobs() == now
    _kill_restored(procs, target, child)

    ckpt_ok("restore", "-D", images, "-d", "--manage-cgroups=props")
    _restored(procs, target, child)
    assert _where(target.pid) == inner and cgs.knobs() == cgs.saved_knobs()
    _kill_restored(procs, target, child)

    ckpt_ok("restore", "-D", images, "-d", "--manage-cgroups=ignore")
    _restored(procs, target, child)
    assert _where(target.pid) == _where(child) == {h: cgs.own[h] for h in cgs.folders}


def test_dump_with_ignore_saves_no_cgroups(procs: Procs, cgs: MadeCgroups,
                                           images: Path) -> None:
    target, child, _ = _dumped(procs, cgs, images, "--manage-cgroups=ignore")
    assert not (images / "cgroups.json").exists()
    ckpt_ok("restore", "-D", images, "-d")
    _restored(procs, target, child)
    assert _where(target.pid) == {h: cgs.own[h] for h in cgs.folders}


def test_thread_in_another_cgroup_refused(procs: Procs, cgs: MadeCgroups,
                                          images: Path) -> None:
    """A v1 cgroup holds one thread of the parent, not the parent: refused at dump,
    naming the thread and the cgroup; the process runs on as it was."""
    v1 = next((h for h in ("pids", "cpu", "memory") if h in cgs.folders), None)
    if v1 is None:
        pytest.skip("no v1 hierarchy here")
    target, pid, _, thread = _start(procs)
    Path(cgs.folders[v1], "tasks").write_text(str(thread))
    blocked = proc_status(pid)["SigBlk"]
    err = ckpt_fails("dump", "-t", pid, "-D", images)
    assert f"thread {thread} of process {pid} is in cgroup {v1}:{cgs.inner(v1)}" in err, err
    assert not (images / "inventory.json").exists()
    status = proc_status(pid)
    assert status["TracerPid"] == "0" and status["SigBlk"] == blocked
    assert proc_state(pid) in ("R", "S")
    assert_tags_carry_on(target.out, ["P", "C"], 3)


def _escape(path: str) -> str:
    return f"{path}/../../../ckpt-escape"


def test_crafted_cgroup_paths_refused(procs: Procs, cgs: MadeCgroups, images: Path) -> None:
    """cgroups.json edited, checksums recomputed: a cgroup with '..' in its path, a
    process sent into a cgroup the dump did not save (the root), a knob outside the
    list, a value of two lines. Each is refused in one line naming the file and the
    field, before anything is made: no process, no cgroup anywhere; the images as
    dumped then restore."""
    target, child, inner = _dumped(procs, cgs, images)
    cgs.remove()
    pid = str(target.pid)

    def escape(doc: dict) -> None:
        for cg in doc["cgroups"]:
            cg["path"] = _escape(cg["path"])
        doc["tasks"][pid] = {h: _escape(p) if p else p for h, p in doc["tasks"][pid].items()}

    def to_root(doc: dict) -> None:
        doc["tasks"][pid] = {h: "/" for h in doc["tasks"][pid]}

    def knob(doc: dict) -> None:
        doc["cgroups"][0]["knobs"].append(["cgroup.procs", "1"])

    def two_lines(doc: dict) -> None:
        doc["cgroups"][0]["knobs"][0][1] += "\n1"

    mounts = cgroupfs.hierarchy_mounts()
    escaped = [os.path.normpath(os.path.join(m.point, _escape(inner[h]).lstrip("/")))
               for h in cgs.folders for m in mounts[h]]
    cases = [(escape, "'..' component"), (to_root, "is not among the cgroups"),
             (knob, "'cgroup.procs' is not one of"), (two_lines, "is not of the form")]
    for change, why in cases:
        crafted = images.with_name(f"{images.name}-{change.__name__}")
        shutil.copytree(images, crafted)
        edit_image(crafted, "cgroups.json", change)
        err = ckpt_fails("restore", "-D", crafted, "-d")
        assert "cgroups.json: " in err and why in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(f"/proc/{target.pid}")
        assert not any(os.path.exists(f) for f in [*cgs.all_folders(), *escaped]), change

    ckpt_ok("restore", "-D", images, "-d")
    _restored(procs, target, child)
    assert _where(target.pid) == inner


def test_process_outside_the_cgroup_namespace_root_refused(procs: Procs, cgs: MadeCgroups,
                                                           images: Path) -> None:
    """ckpt and the target in one cgroup namespace whose root is the inner cgroups, the
    target moved into the outer ones, which the kernel shows as /..: the dump refuses,
    naming the process and the cgroup, before it touches the process (a restore puts
    processes only below its cgroup root, and never follows '..')."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("no unshare(1) or nsenter(1) here")
    join = "; ".join(f"echo $$ > {f}/cgroup.procs" for f in cgs.folders.values())
    holder = procs.start(["sh", "-c", f"{join}; exec unshare -C sleep 1000"])
    enter = ["nsenter", "-C", "-t", str(holder.pid)]
    wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/cgroup")
               != os.readlink("/proc/self/ns/cgroup"), 10, "the cgroup namespace")
    target = procs.start([*enter, PYTHON, PAIR])
    _, parent, _, _ = target.out.wait_line(r"^pids ").split()
    pid = int(parent)
    for folder in cgs.folders.values():
        Path(os.path.dirname(folder), "cgroup.procs").write_text(str(pid))
    blocked = proc_status(pid)["SigBlk"]
    res = subprocess.run([*enter, *ckpt_cmd(), "dump", "-t", str(pid), "-D", str(images)],
                         capture_output=True, text=True, timeout=scaled(60))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"process {pid} is in cgroup " in res.stderr, res.stderr
    assert ":/.., outside ckpt's cgroup namespace" in res.stderr, res.stderr
    assert not (images / "inventory.json").exists()
    status = proc_status(pid)
    assert status["TracerPid"] == "0" and status["SigBlk"] == blocked
    assert_tags_carry_on(target.out, ["P", "C"], 3)


def test_cgroup_root_moves_the_tree(procs: Procs, cgs: MadeCgroups, images: Path) -> None:
    """restore --cgroup-root [CTL:]PATH (criu's; runc's cg_root over RPC): the parent's
    cgroups at dump become PATH in each hierarchy, made with their knobs (soft), the
    child stays in the restorer's; refused at dump, where the cgroups are saved as they
    are."""
    err = ckpt_fails("dump", "-t", os.getpid(), "-D", images, "--cgroup-root", "/x")
    assert "--cgroup-root /x: the cgroups are saved where they are" in err, err
    target, child, _ = _dumped(procs, cgs, images)
    moved = {h: f"{cgs.own[h].rstrip('/')}/{cgs.outer}/moved" for h in cgs.folders}
    roots = [a for h, path in moved.items()
             for a in ("--cgroup-root", f"{h}:{path}" if h else path)]
    mounts = cgroupfs.hierarchy_mounts()
    folders = [cgroupfs.directory(mounts[h], path) for h, path in moved.items()]
    try:
        ckpt_ok("restore", "-D", images, "-d", *roots)
        _restored(procs, target, child)
        assert _where(target.pid) == moved
        assert _where(child) == {h: cgs.own[h] for h in cgs.folders}
        for h, (knob, value) in KNOBS.items():
            if h in moved:
                assert Path(cgroupfs.directory(mounts[h], moved[h]) or "", knob
                            ).read_text().strip() == value
    finally:
        if is_alive(target.pid):
            _kill_restored(procs, target, child)
        for folder in folders:
            if folder is not None:
                wait_until(lambda d=folder: _rmdir(d), 10, f"cgroup {folder} to empty")
