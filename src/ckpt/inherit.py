"""--inherit-fd arguments: ``fd[N]:KEY`` hands the restorer's fd N to every
restored fd whose file matches KEY; ``debug[N]:TEXT`` writes TEXT to fd N as
a restore marker."""

from __future__ import annotations

import os

from .errors import UsageError
from .kernel.lazyre import LazyPattern

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

_ARG_RE = LazyPattern(r"(?s)^(fd|debug)\[(\d+)\]:(.+)$")  # (?s): no re.S, no re at import
_ORIG_FD_RE = LazyPattern(r"^orig-fd\[(\d+)\]$")
FORMAT_HELP = ("fd[N]:KEY (KEY: tmp/old, /tmp/old, pipe:[INODE], socket:[INODE], "
               "tty[RDEV:DEV], orig-fd[M]) or debug[N]:TEXT")


def parse_inherit_fd(arg: str) -> tuple[int, str] | None:
    """(fd, key) for ``fd[N]:KEY``; None for ``debug[N]:TEXT`` after writing TEXT."""
    m = _ARG_RE.match(arg)
    if not m:
        raise UsageError(f"malformed --inherit-fd argument {arg!r}; expected {FORMAT_HELP}")
    kind, num, rest = m[1], int(m[2]), m[3]
    try:
        os.fstat(num)
    except OSError:
        raise UsageError(f"--inherit-fd {arg!r}: fd {num} is not open in the restorer") from None
    if kind == "debug":
        os.write(num, rest.encode())
        return None
    return num, rest


def available_keys(descriptions: dict[str, dict[str, Any]]) -> list[str]:
    from .resources.kinds import kind_of
    out: list[str] = []
    for desc in descriptions.values():
        keys = kind_of(desc["kind"]).keys(desc)
        if keys and keys[0] not in out:
            out.append(keys[0])
    return out


def resolve_original_fds(inherit: dict[str, int], root_pid: int,
                         root_table: list[dict[str, Any]]) -> dict[str, int]:
    """Take the ``orig-fd[M]`` keys out of ``inherit``: each names the file the root
    process had open as fd M at dump time. Returns {description id: restorer's fd}."""
    by_fd = {e["fd"]: e["file"] for e in root_table}
    out: dict[str, int] = {}
    for key in [k for k in inherit if _ORIG_FD_RE.match(k)]:
        num = int(key[len("orig-fd["):-1])
        if num not in by_fd:
            have = ", ".join(str(n) for n in sorted(by_fd)) or "none"
            raise UsageError(f"--inherit-fd key {key!r}: the root process {root_pid} had no "
                             f"fd {num} at dump time; its fds: {have}")
        out[by_fd[num]] = inherit.pop(key)
    return out
