"""``ckpt check``: probe, for real, every kernel interface ckpt needs (probes.py), and
say which network lock works here and which locks are held.

Each failing probe prints one line naming what is missing and why; when none
fails, "Looks good." is printed and 0 returned, else 1. What a check that found
nothing missing printed is kept for the boot (``cache_key``): the next check prints
it again without importing the probes' machinery or running any.
"""

from __future__ import annotations

import os


def network_lock() -> str:
    """Which network lock works here (for --tcp-established), as ``check`` reports it."""
    from . import netlock
    works, why = [], []
    for backend in netlock.BACKENDS:
        err = netlock.probe(backend)
        if err is None:
            works.append(backend)
        else:
            why.append(f"{backend}: {err}")
    if not works:
        return ("network lock: none works (" + "; ".join(why) + "); dumps of TCP "
                "connections need --network-lock skip")
    others = f" ({', '.join(works[1:])} works too)" if works[1:] else ""
    missing = f" ({'; '.join(why)})" if why else ""
    return f"network lock: {works[0]}{others}{missing}"


def held_network_locks() -> list[str]:
    """The network locks taken by dumps and not released yet, one line each: those of
    running dumps, those kept for a restore, those of ckpts killed mid-dump (which
    the next dump or restore releases)."""
    from .recovery import netlock_notes_exist
    if not netlock_notes_exist():
        return []
    from . import netlock
    lines = []
    for note, owned in netlock.held():
        lk = note.lock
        running = [h for h in note.holders if h.still_open()]
        if owned:
            state = "taken by a dump running now"
        elif running:
            state = ("left by a ckpt killed during a dump; the next dump or restore "
                     "releases it")
        else:
            state = (f"held for the restore of {note.images}" if note.images
                     else "held for a restore")
        drop = (f"nft delete table inet {lk.name}" if lk.backend == "nftables"
                else f"remove the iptables and ip6tables chain {lk.name} and its jumps "
                "from INPUT and OUTPUT")
        lines.append(f"network lock {lk.name} ({lk.backend}, {len(lk.conns)} "
                     f"connection(s)): {state}"
                     + ("" if owned or running else f" (to drop it by hand: {drop})"))
    return lines


# ---------------------------------------------------------------- the probes' cache

CACHE = "/run/ckpt/check.json"
_TOOLS = ("nft", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore")


def cache_path() -> str:
    """Where ``check`` keeps what it found (``CKPT_CHECK_CACHE`` overrides, for tests)."""
    return os.environ.get("CKPT_CHECK_CACHE", CACHE)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat_key(path: str | None) -> list[int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return None if st is None else [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _on_path(tool: str) -> str | None:
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", tool)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def _caps() -> str:
    """This process's effective capabilities, as /proc shows them."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return ""


def cache_key() -> dict[str, object]:
    """What the probes' findings hold for: this boot and kernel, ckpt's code, this
    user, its capabilities and namespaces, ptrace_scope, the netfilter tools found."""
    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "kernel": list(os.uname()),
        "code": [_stat_key(os.path.join(here, name))
                 for name in ("check.py", "probes.py", "netlock.py")],
        "euid": os.geteuid(),
        "caps": _caps(),
        "ns": [(_stat_key(f"/proc/self/ns/{n}") or [0, 0])[:2]  # (its times are the reader's)
               for n in ("user", "pid", "mnt", "net", "cgroup")],
        "ptrace_scope": _read("/proc/sys/kernel/yama/ptrace_scope"),
        "tools": {t: [p, _stat_key(p)] if (p := _on_path(t)) else None for t in _TOOLS},
    }


def cached_lines(key: dict[str, object], path: str | None = None) -> list[str] | None:
    """The lines a ``check`` that found nothing missing printed under the same ``key``,
    or None. Only a file of this user that no one else may write counts. Read by json's
    C scanner (jsontext): the ``json`` package would import ``re`` and ``enum``, a
    fifth of a cached check."""
    from . import jsontext
    path = path or cache_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            saved = jsontext.loads(f.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    lines = saved.get("lines") if isinstance(saved, dict) else None
    if saved.get("key") != key or not isinstance(lines, list) \
            or not all(isinstance(line, str) for line in lines):
        return None
    return lines


def save_lines(key: dict[str, object], lines: list[str], path: str | None = None) -> None:
    """Keep ``lines`` for the next ``check`` of this boot; quietly nothing where this
    user cannot write (a user other than root, for /run)."""
    from . import jsontext
    from .kernel import safefs
    folder, name = os.path.split(path or cache_path())
    try:
        dirfd = safefs.open_dir(folder, create=True)
    except OSError:
        return
    tmp = f".{name}.{os.getpid()}"
    try:
        fd = safefs.create(dirfd, tmp)
        with os.fdopen(fd, "w") as f:
            f.write(jsontext.dumps({"key": key, "lines": lines}))
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except OSError:
        safefs.remove(dirfd, tmp)
    finally:
        os.close(dirfd)


def probe_lines(verbose: bool = False) -> tuple[list[str], bool]:
    """Probe everything: the lines to print before the held network locks, and
    whether every probe passed."""
    from .probes import NOTES, OPTIONAL, probe_all
    failures = probe_all(verbose)
    lines = [f"{name}: {why}" for name, why in failures]
    lines += [f"note: {note}" for note in NOTES]
    for name, probe in OPTIONAL:
        note = probe()
        if note:
            lines.append(f"note: {name}: {note}")
    lines.append(network_lock())
    return lines, not failures


def run_checks(verbose: bool = False) -> int:
    """Probe the kernel; print a line per missing interface, or "Looks good.".

    Optional interfaces, whose absence ckpt works around, are reported as notes. What
    a check that found nothing missing printed is kept for this boot (``cache_key``:
    criu keeps its kernel probe under /run too), and printed again, without probing,
    by the next ``check`` under the same key; the network locks held are looked up
    every time."""
    key = cache_key()
    lines = None if verbose else cached_lines(key)
    good = True
    if lines is None:
        lines, good = probe_lines(verbose)
        if good:
            save_lines(key, lines)
    for line in lines:
        print(line)
    for line in held_network_locks():
        print(line)
    if not good:
        return 1
    print("Looks good.")
    return 0
