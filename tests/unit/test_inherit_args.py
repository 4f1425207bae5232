"""``--inherit-fd`` arguments: ``fd[N]:KEY`` and ``debug[N]:TEXT`` parsed, malformed
ones refused with a message that quotes them, and ``orig-fd[M]`` keys resolved
against the fd table the root process had at dump time."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ckpt.errors import UsageError
from ckpt.inherit import parse_inherit_fd, resolve_original_fds


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def closed_fd() -> int:
    """A number that is no open fd of this process."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


@pytest.mark.parametrize("key", [
    "tmp/old", "/tmp/old", "pipe:[12345]", "socket:[99]", "tty[8800:19]", "orig-fd[1]",
    "dir with spaces/f:i[le]", "x",
])
def test_fd_key(pipe: tuple[int, int], key: str) -> None:
    """Everything after the first colon is the key, as given."""
    _, w = pipe
    assert parse_inherit_fd(f"fd[{w}]:{key}") == (w, key)


def test_debug_writes_its_text(pipe: tuple[int, int]) -> None:
    r, w = pipe
    assert parse_inherit_fd(f"debug[{w}]:--- restored: here ---") is None
    assert os.read(r, 100) == b"--- restored: here ---"


@pytest.mark.parametrize("arg", [
    "garbage", "fd3:tmp/old", "fd[x]:tmp/old", "fd[3]", "fd[3]:", "fd[-1]:tmp/old",
    "fd[]:tmp/old", "pipe[3]:tmp/old", "FD[3]:tmp/old", " fd[3]:tmp/old", "debug[3]",
    "",
])
def test_malformed(arg: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_inherit_fd(arg)
    msg = str(e.value)
    assert f"malformed --inherit-fd argument {arg!r}" in msg, msg
    assert "fd[N]:KEY" in msg and "debug[N]:TEXT" in msg, msg


@pytest.mark.parametrize("kind", ["fd", "debug"])
def test_fd_not_open(closed_fd: int, kind: str) -> None:
    arg = f"{kind}[{closed_fd}]:tmp/old"
    with pytest.raises(UsageError) as e:
        parse_inherit_fd(arg)
    assert str(e.value) == f"--inherit-fd {arg!r}: fd {closed_fd} is not open in the restorer"


ROOT_TABLE = [{"fd": 0, "file": "3"}, {"fd": 1, "file": "7"}, {"fd": 2, "file": "7"},
              {"fd": 5, "file": "9"}]


def test_original_fds_resolved() -> None:
    """orig-fd[M] keys leave ``inherit`` and name the description the root's fd M held."""
    inherit = {"orig-fd[1]": 10, "tmp/log": 11, "orig-fd[5]": 12}
    assert resolve_original_fds(inherit, 4242, ROOT_TABLE) == {"7": 10, "9": 12}
    assert inherit == {"tmp/log": 11}


def test_no_original_fds() -> None:
    inherit = {"tmp/log": 11, "orig-fd": 12, "orig-fd[x]": 13}
    assert resolve_original_fds(inherit, 4242, ROOT_TABLE) == {}
    assert inherit == {"tmp/log": 11, "orig-fd": 12, "orig-fd[x]": 13}


@pytest.mark.parametrize(("table", "have"), [(ROOT_TABLE, "0, 1, 2, 5"), ([], "none")])
def test_original_fd_the_root_did_not_have(table: list[dict[str, object]], have: str) -> None:
    with pytest.raises(UsageError) as e:
        resolve_original_fds({"orig-fd[4]": 10}, 4242, table)  # type: ignore[arg-type]
    assert str(e.value) == (f"--inherit-fd key 'orig-fd[4]': the root process 4242 had no "
                            f"fd 4 at dump time; its fds: {have}")
