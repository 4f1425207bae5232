"""Control groups as the kernel shows them: which cgroup of each hierarchy a task is
in (``/proc/PID/cgroup``), and where each hierarchy is mounted (``/proc/self/mountinfo``).

A hierarchy is named as ``/proc/PID/cgroup`` names it: its controllers (``memory``,
``cpu,cpuacct``, ``name=systemd``), or ``""`` for the cgroup2 hierarchy. A cgroup is a
path from its hierarchy's root, as the reader's cgroup namespace sees it.
"""

from __future__ import annotations

import os

from .record import dataclass

V2 = ""  # the cgroup2 (unified) hierarchy's name


def memberships(pid: int | str, tid: int | None = None) -> dict[str, str]:
    """Hierarchy -> the cgroup path task ``tid`` of ``pid`` (its first thread by default)
    is in; hierarchy 0 without a path (a v1-only system's) left out."""
    where = f"/proc/{pid}/task/{tid}/cgroup" if tid is not None else f"/proc/{pid}/cgroup"
    out: dict[str, str] = {}
    with open(where, "rb") as f:
        for line in f.read().decode(errors="surrogateescape").splitlines():
            number, name, path = line.split(":", 2)
            if number == "0" and name:
                continue
            out[name] = path
    return out


@dataclass(frozen=True)
class Mount:
    """A mount of one hierarchy: ``root`` (the cgroup at ``point``) and ``point``."""

    root: str
    point: str


def _unescape(field: str) -> str:
    if "\\" not in field:  # the usual path: no octal escape, no regular expression
        return field
    import re
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def hierarchy_mounts() -> dict[str, list[Mount]]:
    """Each mounted hierarchy's mounts in ckpt's mount namespace, by its name as
    ``/proc/PID/cgroup`` gives it (v1 controllers in the kernel's order there)."""
    named: dict[frozenset[str], list[Mount]] = {}
    v2: list[Mount] = []
    with open("/proc/self/mountinfo", "rb") as f:
        for raw in f.read().decode(errors="surrogateescape").splitlines():
            left, _, right = raw.partition(" - ")
            fields, tail = left.split(" "), right.split(" ")
            mount = Mount(_unescape(fields[3]), _unescape(fields[4]))
            if tail[0] == "cgroup2":
                v2.append(mount)
            elif tail[0] == "cgroup":
                opts = set(tail[2].split(",")) if len(tail) > 2 else set()
                named.setdefault(frozenset(opts), []).append(mount)
    out: dict[str, list[Mount]] = {V2: v2} if v2 else {}
    for name in memberships("self"):
        if name == V2:
            continue
        wanted = set(name.split(","))
        for opts, ms in named.items():
            if wanted <= opts:
                out[name] = ms
    return out


def below_root(path: str) -> bool:
    """Whether cgroup ``path`` is one the reader's cgroup namespace holds: absolute,
    with no '.', '..' or empty component (the kernel shows a cgroup outside the
    namespace as /../...)."""
    return path == "/" or (path.startswith("/")
                           and all(p not in ("", ".", "..") for p in path[1:].split("/")))


def directory(mounts: list[Mount], path: str) -> str | None:
    """The folder of cgroup ``path`` through one of its hierarchy's ``mounts`` (the
    whole hierarchy's mount first), or None when no mount reaches it or ``path`` is not
    below the cgroup root (a folder outside the mount is never named)."""
    if not below_root(path):
        return None
    for m in sorted(mounts, key=lambda m: len(m.root)):
        root = m.root.rstrip("/")
        if path == m.root or path.startswith(root + "/"):
            return os.path.join(m.point, path[len(root):].lstrip("/"))
    return None
