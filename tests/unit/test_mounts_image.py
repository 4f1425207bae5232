"""The pure parts of mounts: mountinfo parsed, the creation order of a mount tree (binds
after their source), --external mnt[...] entries, mounts.json as a restore checks it."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest

from ckpt import validate
from ckpt.errors import ImageError, UnsupportedError, UsageError
from ckpt.kernel import mountinfo
from ckpt.resources.mounts import _creation_order, check_image, split_external

INFO = rb"""67 44 254:0 /srv/rootfs / rw,relatime - ext4 /dev/vda rw
68 67 0:40 / /proc rw,relatime - proc proc rw
69 67 0:41 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
70 69 0:42 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620
50 68 0:41 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
84 67 254:0 /srv/my\040data /data rw,relatime - ext4 /dev/vda rw
"""


def test_mountinfo_parsed() -> None:
    ms = mountinfo.parse(INFO)
    assert [m.point for m in ms] == ["/", "/proc", "/dev", "/dev/pts", "/proc/keys", "/data"]
    assert ms[3].tags == ["shared:3"] and ms[3].super_options == ["rw", "gid=5", "mode=620"]
    assert ms[5].root == "/srv/my data" and ms[2].options == ["rw", "nosuid"]


def test_binds_come_after_their_source() -> None:
    ms = mountinfo.parse(INFO)
    source = {50: ms[2]}  # /proc/keys is a bind of the /dev tmpfs
    order = [m.point for m in _creation_order(ms, source)]
    assert order.index("/proc/keys") > order.index("/dev")
    assert order.index("/proc/keys") > order.index("/proc")
    with pytest.raises(UnsupportedError, match="cycle"):
        _creation_order(ms, {69: ms[4], 50: ms[2]})


def test_external_entries() -> None:
    assert split_external(["unix[12]", "mnt[/data]:data", "mnt[data]:/srv/x:y"]) == (
        {"/data": "data", "data": "/srv/x:y"}, ("unix[12]",))
    with pytest.raises(UsageError):
        split_external(["mnt[/data]"])


GOOD: dict[str, Any] = {"mounts": [
    {"id": 1, "point": "/", "how": "root", "fstype": "ext4", "source": "/dev/vda",
     "flags": ["relatime"]},
    {"id": 2, "parent": 1, "point": "/dev", "how": "new", "fstype": "tmpfs",
     "source": "tmpfs", "flags": ["nosuid"], "options": "size=65536k,mode=755",
     "contents": [{"path": ".", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0},
                  {"path": "null", "type": "chr", "rdev": [1, 3], "mode": 0o666, "uid": 0,
                   "gid": 0},
                  {"path": "fd", "type": "link", "target": "/proc/self/fd", "mode": 0o777,
                   "uid": 0, "gid": 0},
                  {"path": "shm", "type": "dir", "mode": 0o1777, "uid": 0, "gid": 0},
                  {"path": "shm/a", "type": "file", "size": 3, "offset": 0, "mode": 0o644,
                   "uid": 0, "gid": 0},
                  {"path": "shm/b", "type": "hardlink", "target": "shm/a"}]},
    {"id": 3, "parent": 1, "point": "/proc/keys", "how": "bind", "from": 2,
     "subpath": "null", "fstype": "tmpfs", "source": "tmpfs", "flags": []},
    {"id": 4, "parent": 1, "point": "/data", "how": "external", "key": "data",
     "fstype": "ext4", "source": "/dev/vda", "flags": ["ro"]},
    {"id": 5, "parent": 1, "point": "/sys/fs/cgroup/cpu", "how": "cgroup", "key": "cpu",
     "root": "/ctr", "fstype": "cgroup", "source": "cgroup", "flags": ["ro"]},
]}


def test_good_image_passes() -> None:
    assert check_image(GOOD, "mounts.json") == GOOD["mounts"]


def _bad(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    obj = data
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value"), [
    (["mounts"], []),
    (["mounts", 0, "how"], "new"),
    (["mounts", 1, "how"], "root"),
    (["mounts", 1, "point"], "/dev/../etc"),
    (["mounts", 1, "point"], "dev"),
    (["mounts", 1, "parent"], 9),
    (["mounts", 1, "fstype"], "ext4"),
    (["mounts", 1, "options"], "size=1m,exec=/bin/sh"),
    (["mounts", 1, "options"], "mode=999"),
    (["mounts", 1, "flags"], ["rw", "shared"]),
    (["mounts", 1, "contents", 0, "path"], "x"),
    (["mounts", 1, "contents", 1, "rdev"], [8, 0]),
    (["mounts", 1, "contents", 1, "mode"], 0o17777),
    (["mounts", 1, "contents", 4, "path"], "../../etc/passwd"),
    (["mounts", 1, "contents", 4, "offset"], -1),
    (["mounts", 1, "contents", 5, "target"], "/etc/shadow"),
    (["mounts", 1, "contents", 2, "type"], "sock"),
    (["mounts", 2, "from"], 4),
    (["mounts", 2, "subpath"], "../../x"),
    (["mounts", 3, "key"], None),
    (["mounts", 4, "key"], None),
    (["mounts", 4, "root"], "/ctr/../.."),
])
def test_bad_image_refused(path: list[Any], value: Any) -> None:
    with pytest.raises(ImageError, match="mounts.json"):
        check_image(_bad(path, value), "mounts.json")


@pytest.mark.parametrize(("path", "value"), [
    (["mounts", 1, "surplus"], 1),
    (["mounts", 1, "contents", 4, "mtime_ns"], "yesterday"),
    (["mounts", 1, "contents", 4, "uid"], 1 << 40),
    (["mounts", 1, "id"], -1),
    (["mounts", 1, "source"], "a\0b"),
    (["mounts", 1, "flags"], "ro"),
])
def test_schema_refuses_what_check_image_lets_by(path: list[Any], value: Any) -> None:
    """validate's table has mounts.json: its schema (every field's type and range, no
    unknown field) and then check_image, as a restore and ckpt show read it."""
    validate.check_file("mounts.json", GOOD, "mounts.json")
    with pytest.raises(ImageError, match=r"mounts.json: mounts\[1\]"):
        validate.check_file("mounts.json", _bad(path, value), "mounts.json")


def test_escapes_undone_as_the_regular_expression_did() -> None:
    import random
    import re
    rnd = random.Random(5)
    pieces = [b"\\", b"0", b"4", b"1", b"3", b"7", b"8", b"a", b" ", b"\xff"]
    for _ in range(20000):
        text = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 12)))
        try:
            want = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), text))
        except ValueError:  # \\4xx and above: no byte
            with pytest.raises(ValueError):
                mountinfo._unescape(text)
            continue
        assert mountinfo._unescape(text) == want, text
