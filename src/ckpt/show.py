"""``ckpt show``: an image folder or file decoded to JSON, like ``crit show``.

A folder is verified first (the inventory's own checksum, then every file's
size and CRC-32), so what is shown is what a restore would read. JSON images
are shown as they are; raw files (page data, pipe and socket data) are only
summarized, never dumped. ``--fds`` lists, for each process and fd, the key to
give to ``restore --inherit-fd fd[N]:KEY``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import CkptError, ImageError, UsageError
from .images import INVENTORY, ImageReader
from .resources import kinds


def _is_json(name: str) -> bool:
    return name.endswith(".json")


def _raw_summary(size: int) -> dict[str, Any]:
    return {"raw": True, "size": size}


def _load_inventory(reader: ImageReader) -> Any:
    """inventory.json as written, with its own checksum (the reader already checked it)."""
    path = reader.path(INVENTORY)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: unreadable ({e})") from None


def _show_dir(reader: ImageReader) -> dict[str, Any]:
    out: dict[str, Any] = {INVENTORY: _load_inventory(reader)}
    for name, meta in sorted(reader.files.items()):
        out[name] = reader.load_json(name) if _is_json(name) else _raw_summary(meta["size"])
    return out


def _fd_list(reader: ImageReader) -> list[dict[str, Any]]:
    """One entry per process and fd, with the inherit-fd key the restorer accepts."""
    descriptions: dict[str, dict[str, Any]] = reader.load_json("files.json")
    out: list[dict[str, Any]] = []
    root_pid = reader.inventory.get("root_pid")
    for t in reader.inventory.get("tasks", []):
        if t.get("zombie"):
            continue
        pid = t["pid"]
        name = f"fds-{pid}.json"
        for entry in reader.load_json(name):
            fid = entry.get("file")
            desc = descriptions.get(fid) if isinstance(fid, str) else None
            if desc is None:
                raise ImageError(f"{reader.path(name)}: fd {entry.get('fd')} refers to file "
                                 f"{fid!r}, which files.json does not describe")
            try:
                kind = kinds.kind_of(desc["kind"])
                keys = kind.keys(desc)
                path = kind.shown_path(desc)  # as /proc/PID/fd/N showed it
            except (CkptError, KeyError, TypeError, ValueError) as e:
                raise ImageError(f"{reader.path('files.json')}: file {fid}: {e}") from None
            out.append({"pid": pid, "fd": entry["fd"], "file": fid, "kind": desc["kind"],
                        "path": path, "cloexec": entry.get("cloexec", False),
                        "key": keys[0] if keys else None,
                        # every key that names it; the root's fds also by their number
                        "keys": keys + ([f"orig-fd[{entry['fd']}]"] if pid == root_pid else [])})
    return out


def _show_file(path: str) -> Any:
    """One image file decoded; verified against the folder's inventory when there is one."""
    directory, name = os.path.split(os.path.abspath(path))
    reader: ImageReader | None = None
    if os.path.exists(os.path.join(directory, INVENTORY)):
        reader = ImageReader(directory)  # checks the inventory's own checksum
    if name == INVENTORY:
        assert reader is not None
        return _load_inventory(reader)
    if reader is not None and name in reader.files:
        reader.verify_file(name)  # as a restore would
    try:
        if not _is_json(name):
            return _raw_summary(os.stat(path).st_size)
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise ImageError(f"{path}: corrupted ({e})") from None


def show(path: str, fds: bool = False) -> Any:
    """The images at ``path`` (a folder, or one file of it) as a JSON-able object.

    A folder gives ``{file name: decoded image}`` for the inventory and every
    file it lists (raw files as ``{"raw": true, "size": N}``), after checking
    every checksum. With ``fds``, a folder gives instead a list of
    ``{pid, fd, file, kind, path, cloexec, key}``, ``key`` being what
    ``restore --inherit-fd fd[N]:KEY`` matches. Raises ImageError, naming the
    file, for anything missing or corrupted.
    """
    if os.path.isdir(path):
        reader = ImageReader(path)
        reader.verify()
        return _fd_list(reader) if fds else _show_dir(reader)
    if fds:
        raise UsageError("--fds needs an image folder, not a file")
    try:
        os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file or folder") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _show_file(path)
