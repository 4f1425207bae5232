"""cgroups.json checked before a restore: paths below the cgroup root only, every cgroup
a process joins and every knob written one the dump saved."""

from __future__ import annotations

import copy

import pytest

from ckpt.errors import ImageError
from ckpt.kernel.cgroupfs import Mount, below_root, directory
from ckpt.resources import cgroups
from ckpt.schema import check

GOOD = {"hierarchies": ["pids", ""],
        "tasks": {"10": {"pids": "/a/b", "": None}, "11": {"pids": None, "": "/a"}},
        "cgroups": [{"hierarchy": "pids", "path": "/a/b", "knobs": [["pids.max", "64"]]},
                    {"hierarchy": "", "path": "/a", "knobs": [["memory.max", "max"]]}]}


def test_below_root() -> None:
    assert below_root("/") and below_root("/a/b")
    for path in ("", "a", "/..", "/../a", "/a/../b", "/a/.", "/a//b", "/a/"):
        assert not below_root(path), path


def test_directory_never_names_a_folder_outside_the_mount() -> None:
    mounts = [Mount("/", "/sys/fs/cgroup/pids"), Mount("/../..", "/mnt/up")]
    assert directory(mounts, "/a/b") == "/sys/fs/cgroup/pids/a/b"
    assert directory(mounts, "/../../x") is None
    assert directory(mounts, "/a/../../etc") is None


def test_a_dump_as_written_is_consistent() -> None:
    check(GOOD, cgroups.SCHEMA, "cgroups.json")
    assert cgroups.inconsistency(GOOD) is None


@pytest.mark.parametrize("path", ["/a/../..", "/a/./b", "a", "/a//b"])
def test_paths_outside_the_root_refused(path: str) -> None:
    doc = copy.deepcopy(GOOD)
    doc["cgroups"][0]["path"] = path
    with pytest.raises(ImageError, match=r"cgroups\[0\]\.path"):
        check(doc, cgroups.SCHEMA, "cgroups.json")


def test_knobs_outside_the_list_refused() -> None:
    doc = copy.deepcopy(GOOD)
    doc["cgroups"][0]["knobs"].append(["cgroup.procs", "1"])
    with pytest.raises(ImageError, match="cgroup.procs"):
        check(doc, cgroups.SCHEMA, "cgroups.json")
    doc = copy.deepcopy(GOOD)
    doc["cgroups"][0]["knobs"].append(["memory.max", "1"])  # cgroup2's, not pids'
    assert cgroups.inconsistency(doc) == ("cgroups[0].knobs[1]",
                                          "memory.max is not a knob of pids")


def test_cgroups_not_saved_refused() -> None:
    doc = copy.deepcopy(GOOD)
    doc["tasks"]["10"]["pids"] = "/"
    assert cgroups.inconsistency(doc) == ("tasks.10", "cgroup pids:/ is not among the cgroups")
    doc = copy.deepcopy(GOOD)
    doc["tasks"]["10"]["cpu"] = None
    assert cgroups.inconsistency(doc) == ("tasks.10", "cpu is not among the hierarchies")
    doc = copy.deepcopy(GOOD)
    doc["cgroups"].append(copy.deepcopy(doc["cgroups"][0]))
    assert cgroups.inconsistency(doc) == ("cgroups[2]", "pids:/a/b is saved twice")
