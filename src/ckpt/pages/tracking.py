"""How memory changes are tracked between dumps (soft-dirty bits or page digests), and
the token of the last soft-dirty clear, kept per process in ``/run/ckpt/soft-dirty``."""

from __future__ import annotations

import os

from ..errors import DumpError
from ..kernel import pagemap, procfs
from ..log import logger

log = logger("ckpt.pages")

STATE_DIR = "/run/ckpt/soft-dirty"


def soft_dirty_available() -> bool:
    return pagemap.probe().soft_dirty and os.environ.get("CKPT_TRACK_MEM") != "digest"


def tracking_method() -> str | None:
    """How this ckpt tracks memory: ``soft-dirty``, ``digest`` or None (nothing works)."""
    forced = os.environ.get("CKPT_TRACK_MEM", "")
    if forced == "digest":
        return "digest"
    if soft_dirty_available():
        return "soft-dirty"
    return None if forced == "soft-dirty" else "digest"


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started (a PID reused differs)."""
    try:
        return procfs.stat(pid).start_time
    except procfs.ProcessGone:
        raise DumpError(f"process {pid} exited during the dump") from None


def _state_path(pid: int) -> str:
    return os.path.join(os.environ.get("CKPT_STATE_DIR", STATE_DIR), str(pid))


def current_token(pid: int, started: int) -> str | None:
    """The token of the last soft-dirty clear ckpt did on this process, if any."""
    try:
        with open(_state_path(pid)) as f:
            when, token = f.read().split()
    except (OSError, ValueError):
        return None
    return token if int(when) == started else None


def clear_soft_dirty(pid: int, started: int, token: str) -> bool:
    """Clear the soft-dirty bits of a frozen process and remember ``token`` as the last clear."""
    path = _state_path(pid)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.unlink(path)  # first: a failure below leaves no token, so no stale parent
        except FileNotFoundError:
            pass
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("4")
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{started} {token}\n")
        os.rename(tmp, path)
    except OSError as e:
        log.warning("process %d: cannot clear its soft-dirty bits (%s); the next dump will "
                    "save every page", pid, e)
        return False
    return True
