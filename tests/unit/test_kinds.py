"""The registry of file kinds: one ordered list, each kind claiming its own fds and
naming its descriptions for ``ckpt show --fds``, no process needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ckpt.resources import kinds
from ckpt.resources.filekind import FileKind


def _claimer(link: str, st: os.stat_result) -> str | None:
    """The kind that dumps an fd on ``link``: the first in the registry that claims it,
    the same whether every kind is asked or only those its line says may claim it."""
    every = next((k.KIND for k in kinds.KINDS if k.claims(link, st)), None)
    gated = next((n for n in kinds.may_claim(link, st, 0) if kinds.load(n).claims(link, st)),
                 None)
    assert gated == every
    return gated


def test_registry_is_one_ordered_list_of_distinct_kinds() -> None:
    names = [k.KIND for k in kinds.KINDS]
    assert len(set(names)) == len(names)
    assert all(issubclass(k, FileKind) for k in kinds.KINDS)
    assert {"reg", "chr", "tty", "pipe", "unix", "inet", "eventfd", "signalfd", "timerfd",
            "epoll", "inotify", "fanotify", "memfd"} <= set(names)
    for name in names:
        assert kinds.kind_of(name).KIND == name
    assert names == [name for name, *_ in kinds.REGISTRY]


def test_a_kind_is_imported_only_when_needed() -> None:
    """A command imports only the kinds of the files it meets: ``ckpt dump`` of a process
    holding /dev/null does not import the socket kinds."""
    code = ("import os, sys; from ckpt.resources import kinds; "
            "names = kinds.may_claim('/dev/null', os.stat('/dev/null'), 0); "
            "[kinds.load(n) for n in names]; "
            "print(names, 'ckpt.resources.sk_inet' in sys.modules, "
            "'ckpt.resources.sk_unix' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("]")
    assert out[0] == "['chr', 'tty'" and out[1].split() == ["False", "False"]


def test_each_fd_is_claimed_by_its_kind(tmp_path: Path) -> None:
    reg = tmp_path / "f"
    reg.write_text("x")
    assert _claimer(str(reg), os.stat(reg)) == "reg"
    assert _claimer(str(tmp_path), os.stat(tmp_path)) == "reg"
    assert _claimer("/dev/null", os.stat("/dev/null")) == "chr"
    fd = os.memfd_create("m")
    try:
        assert _claimer("/memfd:m (deleted)", os.fstat(fd)) == "memfd"
    finally:
        os.close(fd)
    r, w = os.pipe()
    try:
        assert _claimer(f"pipe:[{os.fstat(r).st_ino}]", os.fstat(r)) == "pipe"
    finally:
        os.close(r)
        os.close(w)
    efd = os.eventfd(0)
    try:
        anon = os.fstat(efd)  # an anon inode: mode 0600, no file type
    finally:
        os.close(efd)
    for link, kind in (("anon_inode:[eventfd]", "eventfd"), ("anon_inode:[signalfd]", "signalfd"),
                       ("anon_inode:[timerfd]", "timerfd"), ("anon_inode:[eventpoll]", "epoll"),
                       ("anon_inode:inotify", "inotify"), ("anon_inode:[fanotify]", "fanotify"),
                       ("anon_inode:[pidfd]", "pidfd"), ("anon_inode:[io_uring]", None)):
        assert _claimer(link, anon) == kind
    a, b = socket.socketpair()
    with a, b:
        st = os.fstat(a.fileno())
        assert _claimer(f"socket:[{st.st_ino}]", st) == "unix"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        st = os.fstat(udp.fileno())
        assert _claimer(f"socket:[{st.st_ino}]", st) == "inet"


def test_shown_paths_and_keys() -> None:
    """What ``ckpt show --fds`` prints for each kind, and its first --inherit-fd key."""
    cases = [
        ({"kind": "reg", "path": "/tmp/log"}, "/tmp/log", "tmp/log"),
        ({"kind": "pipe", "inode": 42}, "pipe:[42]", "pipe:[42]"),
        ({"kind": "pipe", "inode": 42, "fifo": "/tmp/ff"}, "/tmp/ff", "pipe:[42]"),
        ({"kind": "unix", "inode": 7}, "socket:[7]", "socket:[7]"),
        ({"kind": "inet", "inode": 8}, "socket:[8]", "socket:[8]"),
        ({"kind": "epoll"}, "anon_inode:[eventpoll]", None),
        ({"kind": "eventfd"}, "anon_inode:[eventfd]", None),
        ({"kind": "signalfd"}, "anon_inode:[signalfd]", None),
        ({"kind": "timerfd"}, "anon_inode:[timerfd]", None),
        ({"kind": "inotify"}, "anon_inode:inotify", None),
        ({"kind": "fanotify"}, "anon_inode:[fanotify]", None),
        ({"kind": "memfd", "path": "/memfd:m (deleted)"}, "/memfd:m (deleted)", None),
        ({"kind": "tty", "path": "/dev/pts/3", "rdev": [136, 3], "dev": 0x19},
         "/dev/pts/3", f"tty[{os.makedev(136, 3):x}:19]"),
    ]
    for desc, shown, key in cases:
        kind = kinds.kind_of(desc["kind"])
        assert kind.shown_path(desc) == shown
        assert (kind.keys(desc) or [None])[0] == key


def test_each_restore_gets_fresh_kind_objects() -> None:
    """Kinds keep their state on their object: one per dump or restore, never shared."""
    first = [cls() for cls in kinds.KINDS]
    second = [cls() for cls in kinds.KINDS]
    for a, b in zip(first, second, strict=True):
        assert a is not b and a.descriptions == {} and a.descriptions is not b.descriptions
