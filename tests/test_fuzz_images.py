"""Fuzzed images: a real dump, mutated 1,200 ways with every checksum recomputed (byte
flips, truncations, values of the wrong type or range, missing and unknown fields,
wrong nesting, paths with '..', fd 99999, overlapping mappings, pages in a shared
mapping of a file or of the executable, a rip of 0), each restored and shown.

Every mutant must be refused with a one-line error, or restored (then killed): never a
traceback, a hang, a process left behind, nor a change to a file outside the images
folder (the mapped and opened files of the process, and its executable, are watched).
Most mutants are refused by the schemas before anything is created, in-process
(``ckpt.restore``, ``ckpt.show``); a sample goes through the ``ckpt`` command too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import signal
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ckpt
from ckpt.errors import CkptError
from ckpt.images import INVENTORY, _canonical
from ckpt.show import show
from ckpt_helpers import my_children, run_ckpt, scaled

SEED = 1313
PAGE = 4096
# A restore first puts back what killed ckpts (other tests', other runs') left: warnings.
_WARNING = re.compile(r"^\(\d+\.\d+\) Warn ")
Mutant = tuple[str, dict[str, bytes]]  # what was done, file name -> its new bytes


class Folder:
    """The dumped images, mutated one way at a time and put back after each."""

    def __init__(self, path: Path):
        self.path = path
        self.original = {p.name: p.read_bytes() for p in path.iterdir()}
        self.inventory = json.loads(self.original[INVENTORY])
        self.jsons = sorted(n for n in self.original if n.endswith(".json") and n != INVENTORY)

    def load(self, name: str) -> Any:
        return json.loads(self.original[name])

    def apply(self, new: dict[str, bytes]) -> None:
        """Write the mutated files, the inventory listing their new sizes and CRC-32s."""
        try:
            inv = json.loads(new.get(INVENTORY, self.original[INVENTORY]))
        except ValueError:  # a broken inventory, as it is
            (self.path / INVENTORY).write_bytes(new[INVENTORY])
            return
        for name, data in new.items():
            if name != INVENTORY:
                (self.path / name).write_bytes(data)
                if isinstance(inv, dict) and isinstance(inv.get("files"), dict) \
                        and name in inv["files"]:
                    inv["files"][name] = {"size": len(data), "crc32": zlib.crc32(data)}
        if isinstance(inv, dict):
            inv.pop("crc32", None)
            inv["crc32"] = zlib.crc32(_canonical(inv))
        (self.path / INVENTORY).write_text(json.dumps(inv, indent=1, sort_keys=True))

    def reset(self, touched: dict[str, bytes]) -> None:
        for name in [*touched, INVENTORY]:
            (self.path / name).write_bytes(self.original[name])


def _spots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value, as the keys leading to it."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _spots(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _spots(v, (*path, i))


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        value = value[k]
    return value


_ODD = ["x", "", 1.5, None, True, [], {}, [1, 2], {"a": 1}, 2**64, 2**70, -1, -(2**63) - 1,
        0, 99999, "/tmp/../etc/shadow", "../../x", "a\0b", "x" * 5000, "\udcff", [[[[[]]]]]]


def _json_mutant(folder: Folder, rng: random.Random, canary: Path,
                 names: list[str] | None = None) -> Mutant:
    """One value of one JSON image (of ``names``; by default any, the inventory too)
    replaced, removed, added to or nested wrong."""
    name = rng.choice(names or [*folder.jsons, INVENTORY])
    doc = folder.load(name)
    spots = [p for p in _spots(doc) if p and not (name == INVENTORY and p[0] == "crc32")]
    path = rng.choice(spots)
    parent, key = _at(doc, path[:-1]), path[-1]
    how = rng.choice(["type", "type", "range", "drop", "unknown", "wrap", "unwrap", "path"])
    if how == "drop":
        del parent[key]
    elif how == "unknown" and isinstance(parent, dict):
        parent["surplus"] = 1
    elif how == "wrap":
        parent[key] = [parent[key]]
    elif how == "unwrap" and isinstance(parent[key], list) and parent[key]:
        parent[key] = parent[key][0]
    elif how == "path":
        parent[key] = rng.choice([f"{canary}/../{canary.name}/log", "relative/path",
                                  f"{canary}//log", f"{canary}/new"])
    elif how == "range":
        parent[key] = rng.choice([2**64, 2**63, -1, -(2**31), 99999, 0, 1 << 47])
    else:
        parent[key] = copy.deepcopy(rng.choice(_ODD))
    text = json.dumps(doc, indent=1, sort_keys=True)
    return f"{name}: {how} at {'/'.join(map(str, path))}", {name: text.encode()}


def _byte_mutant(folder: Folder, rng: random.Random) -> Mutant:
    name = rng.choice([*folder.jsons, INVENTORY])
    data = bytearray(folder.original[name])
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(data))
        data[i] = rng.randrange(256)
    return f"{name}: bytes flipped", {name: bytes(data)}


def _truncated(folder: Folder, rng: random.Random) -> Mutant:
    name = rng.choice([*folder.jsons, INVENTORY])
    data = folder.original[name]
    return f"{name}: truncated", {name: data[:rng.randrange(len(data))]}


def _targeted(folder: Folder, pid: int, exe: Path, canary: Path) -> list[Mutant]:
    """What a hostile image would try first."""
    out: list[Mutant] = []
    mm_name, fds_name, core_name = f"mm-{pid}.json", f"fds-{pid}.json", f"core-{pid}.json"
    pages_name = f"pages-{pid}.img"

    def edit(name: str, what: str, change: Callable[[Any], Any],
             extra: dict[str, bytes] | None = None) -> None:
        doc = folder.load(name)
        doc = change(doc) or doc
        out.append((what, {name: json.dumps(doc).encode(), **(extra or {})}))

    def paged(doc: Any, match: Callable[[dict[str, Any]], bool]) -> Any:
        """The first mapping ``match`` takes, made shared and writable, with a page of
        data in the pages file (one more page at its end)."""
        v = next(v for v in doc["vmas"] if match(v))
        v.update(shared=True, prot=3, flags=[*v["flags"], "mw"])
        doc["pagemap"].append([v["start"], 1])
        return doc

    more_page = folder.original[pages_name] + b"\xcc" * PAGE
    for label, match in [("the executable", lambda v: v["path"] == str(exe)),
                         ("a shared file mapping", lambda v: v["path"].endswith("map.bin"))]:
        edit(mm_name, f"{label} shared, writable, with a page of data",
             lambda d, m=match: paged(d, m), {pages_name: more_page})  # type: ignore[misc]
    edit(mm_name, "overlapping mappings",
         lambda d: d["vmas"].insert(1, dict(d["vmas"][0], end=d["vmas"][1]["end"])))
    edit(mm_name, "a mapping beyond user space",
         lambda d: d["vmas"].append(dict(d["vmas"][-1], start=1 << 47, end=(1 << 47) + PAGE)))
    edit(mm_name, "pages of another file", lambda d: d.update(pages_file="../../etc/passwd"))
    edit(mm_name, "pages past the pages file", lambda d: d["pagemap"].append([0x1000, 9]))
    for fd in (99999, -1, 2**31, 1 << 20):
        edit(fds_name, f"fd {fd}", lambda d, fd=fd: d[0].update(fd=fd))  # type: ignore[misc]
    edit(fds_name, "an fd on a file files.json lacks", lambda d: d[0].update(file="999"))
    edit(core_name, "rip 0", lambda d: d["cpu"]["regs"].update(rip=0))
    edit(core_name, "uid 0 and every capability", lambda d: d["task"]["creds"].update(
        uids=[0, 0, 0, 0], caps={k: 2**64 - 1 for k in d["task"]["creds"]["caps"]}))
    edit("files.json", "a description's path with '..'", lambda d: next(
        x for x in d.values() if x["kind"] == "reg").update(path=f"{canary}/../etc"))
    edit("files.json", "a pipe's data past its raw file", lambda d: next(
        x for x in d.values() if x["kind"] == "pipe").update(data_off=1 << 40))
    def disk(d: Any) -> None:
        g = next(x for x in d.values() if "ghost" in x and "path" in x["ghost"])["ghost"]
        for k in ("runs", "data_off", "tail"):
            g.pop(k, None)
        g.update(type="blk", rdev=[8, 0], mode=0o666, size=0)

    edit("files.json", "a deleted node of a disk, open to all", disk)
    inv = copy.deepcopy(folder.inventory)
    inv["files"]["../../etc/passwd"] = inv["files"].pop(mm_name)
    out.append(("a file name with '..' in the inventory", {INVENTORY: json.dumps(inv).encode()}))
    return out


def _snapshot(paths: list[Path]) -> dict[str, tuple[int, int, str]]:
    """Mode, owner and content digest of every file under ``paths``."""
    out = {}
    for top in paths:
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            out[str(p)] = (st.st_mode, st.st_uid, digest)
    return out


class _Hang(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def _kill_restored(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


@dataclass
class Dumped:
    """The fuzzee dumped: its images, PID, executable and the files it had open."""

    folder: Folder
    pid: int
    exe: Path
    canary: Path
    before: dict[str, tuple[int, int, str]]  # the files ckpt must not change
    children: set[int]  # our children before any restore


@pytest.fixture
def dumped(build: Any, procs: Any, tmp_path: Path) -> Dumped:
    exe = build("fuzzee")
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "map.bin").write_bytes(b"M" * 2 * PAGE)
    (canary / "priv.bin").write_bytes(b"p" * 2 * PAGE)
    (canary / "log").write_text("a log\n")
    target = procs.start([exe, canary])
    target.out.wait_line("^ready M", timeout=scaled(10))
    images = tmp_path / "images"
    ckpt.dump(target.pid, str(images))
    procs.wait_gone(target)
    return Dumped(Folder(images), target.pid, exe, canary, _snapshot([canary, exe]),
                  my_children())


def _attempt(what: str, images: Path, problems: list[str], **restore: Any) -> bool:
    """Restore (with ``restore``'s arguments, then kill what was restored) and show
    ``images``; note what went wrong; whether it was restored."""
    restored = False
    signal.alarm(int(scaled(30)))
    try:
        try:
            res = ckpt.restore(str(images), detach=True, **restore)
        except CkptError as e:
            if "\n" in str(e):
                problems.append(f"{what}: a multi-line error: {e}")
        else:
            restored = True
            _kill_restored(res.pids)
        for fds in (False, True):
            try:
                show(str(images), fds=fds)
            except CkptError:
                pass
    except _Hang:
        problems.append(f"{what}: no answer in 30 s")
    except Exception as e:  # noqa: BLE001 - what the test is about
        problems.append(f"{what}: {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
    return restored


def _run_mutants(folder: Folder, mutants: list[Mutant], children: set[int],
                 **restore: Any) -> tuple[list[str], int]:
    """Each mutant written, restored (``restore``'s arguments) and shown, then undone:
    what went wrong (20 problems at most), and how many were restored."""
    problems: list[str] = []
    accepted = 0
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for what, new in mutants:
            folder.apply(new)
            accepted += _attempt(what, folder.path, problems, **restore)
            left = my_children() - children
            if left:
                problems.append(f"{what}: processes left behind: {sorted(left)}")
                _kill_restored(sorted(left))
            folder.reset(new)
            if len(problems) > 20:
                break
    finally:
        signal.signal(signal.SIGALRM, old)
    return problems, accepted


def test_fuzzed_images(dumped: Dumped) -> None:
    folder, images = dumped.folder, dumped.folder.path
    rng = random.Random(SEED)
    mutants = _targeted(folder, dumped.pid, dumped.exe, dumped.canary)
    mutants += [_byte_mutant(folder, rng) for _ in range(300)]
    mutants += [_truncated(folder, rng) for _ in range(100)]
    mutants += [_json_mutant(folder, rng, dumped.canary) for _ in range(800)]
    assert len(mutants) >= 1000
    problems, accepted = _run_mutants(folder, mutants, dumped.children)
    assert problems == [], "\n".join(problems)
    assert _snapshot([dumped.canary, dumped.exe]) == dumped.before, \
        "a file outside the image folder changed"
    assert accepted < len(mutants) // 4, f"{accepted} of {len(mutants)} mutants restored"
    for _what, new in mutants[:3]:  # the attacks on files are refused by name
        folder.apply(new)
        with pytest.raises(CkptError, match=r"private mappings .*never into a file|overlaps"):
            ckpt.restore(str(images), detach=True)
        folder.reset(new)


def test_fuzzed_images_through_the_command(dumped: Dumped) -> None:
    """A sample of mutants through ``ckpt restore`` and ``ckpt show``: exit 0 or 1, one
    line of error, no traceback, nothing left running."""
    folder, images = dumped.folder, dumped.folder.path
    rng = random.Random(SEED + 1)
    mutants = _targeted(folder, dumped.pid, dumped.exe, dumped.canary)[:6]
    mutants += [_json_mutant(folder, rng, dumped.canary) for _ in range(14)]
    mutants += [_byte_mutant(folder, rng) for _ in range(5)]
    for what, new in mutants:
        folder.apply(new)
        for argv in (["restore", "-D", images, "-d"], ["show", images]):
            res = run_ckpt(*argv, timeout=60)
            assert res.returncode in (0, 1), f"{what}: ckpt {argv[0]} exited {res.returncode}"
            assert "Traceback" not in res.stderr, f"{what}: {res.stderr}"
            if res.returncode == 1:  # warnings of notes other ckpts left aside
                errors = [ln for ln in res.stderr.splitlines() if not _WARNING.match(ln)]
                assert len(errors) == 1, f"{what}: {res.stderr}"
            if argv[0] == "restore" and res.returncode == 1:
                assert my_children() == dumped.children, f"{what}: a process left behind"
        _kill_restored(sorted(my_children() - dumped.children))
        folder.reset(new)
    assert _snapshot([dumped.canary, dumped.exe]) == dumped.before


@pytest.fixture
def container(procs: Any, tmp_path: Path) -> tuple[Folder, Path, Path, int]:
    """A tree in mount, uts, ipc and PID namespaces of its own dumped (test_mounts.py's
    container): its images, rootfs, data folder and root's PID."""
    from test_mounts import _dump, _start

    pid, rootfs, data = _start(procs, tmp_path, pid_ns=True)
    images = tmp_path / "images"
    _dump(procs, pid, images)
    return Folder(images), rootfs, data, pid


def test_fuzzed_container_images(container: tuple[Folder, Path, Path, int],
                                 tmp_path: Path) -> None:
    """mounts.json and namespaces.json fuzzed (values of the wrong type or range, paths
    with '..', missing and unknown fields) and aimed at: each mutant refused in one
    line or restored (then killed), nothing left running, the rootfs unchanged."""
    folder, rootfs, data, pid = container
    names = ["mounts.json", "namespaces.json"]
    assert all(n in folder.original for n in names)
    rng = random.Random(SEED + 2)
    mutants: list[Mutant] = []

    def edit(name: str, what: str, change: Callable[[Any], Any]) -> None:
        doc = folder.load(name)
        change(doc)
        mutants.append((what, {name: json.dumps(doc).encode()}))

    def tmpfs(doc: Any) -> dict[str, Any]:
        return next(m for m in doc["mounts"] if m.get("contents") and len(m["contents"]) > 1)

    edit("mounts.json", "a mount point out of the root",
         lambda d: d["mounts"][1].update(point="/../../../tmp/x"))
    edit("mounts.json", "an external key given no source",
         lambda d: next(m for m in d["mounts"] if m["how"] == "external").update(key="other"))
    edit("mounts.json", "a tmpfs file written out of its mount",
         lambda d: tmpfs(d)["contents"][-1].update(path="../../../../etc/ckpt-fuzz"))
    edit("mounts.json", "a disk in a tmpfs",
         lambda d: tmpfs(d)["contents"][-1].update(type="chr", rdev=[8, 0]))
    edit("mounts.json", "a bind of the host's root",
         lambda d: d["mounts"][1].update(how="bind", subpath="../../.."))
    edit("mounts.json", "a mount of ext4 anew",
         lambda d: d["mounts"][1].update(how="new", fstype="ext4", options=""))
    edit("namespaces.json", "the root not PID 1 inside",
         lambda d: d["pid"]["ids"].update({str(pid): 2}))
    edit("namespaces.json", "a sysctl of the host",
         lambda d: d["ipc"]["sysctls"].update({"kernel/core_pattern": "|/bin/sh"}))
    mutants += [_json_mutant(folder, rng, data, names) for _ in range(250)]
    before = _snapshot([rootfs])
    external = (f"mnt[data]:{data}",)
    problems, _ = _run_mutants(folder, mutants, my_children(), root=str(rootfs),
                               external=external)
    assert problems == [], "\n".join(problems)
    assert _snapshot([rootfs]) == before, "the rootfs changed"
    assert not Path("/etc/ckpt-fuzz").exists()
    for _what, new in mutants[:8]:  # the attacks are refused by name
        folder.apply(new)
        with pytest.raises(CkptError, match=r"mounts.json|namespaces.json|--external"):
            ckpt.restore(str(folder.path), detach=True, root=str(rootfs), external=external)
        folder.reset(new)
