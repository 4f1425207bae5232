"""``ckpt show``: an image folder or file decoded to JSON, like ``crit show``.

A folder is verified first (the inventory's own checksum, then every file's
size and CRC-32, then every JSON image against its schema, validate.py), so what
is shown is what a restore would read; a single file is checked against its
inventory and its schema. JSON images
are shown as they are; raw files (page data, pipe and socket data) are only
summarized, never dumped. ``--fds`` lists, for each process and fd, the key to
give to ``restore --inherit-fd fd[N]:KEY``.
"""

from __future__ import annotations

import json
import os

from . import validate
from .errors import ImageError, UsageError
from .images import INVENTORY, ImageReader
from .resources import kinds

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any


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
    except (OSError, ValueError, RecursionError) as e:
        raise ImageError(f"{path}: unreadable ({e})") from None


def _show_dir(reader: ImageReader) -> dict[str, Any]:
    out: dict[str, Any] = {INVENTORY: _load_inventory(reader)}
    for name, meta in sorted(reader.files.items()):
        out[name] = reader.load_json(name) if _is_json(name) else _raw_summary(meta["size"])
    return out


def _fd_list(images: validate.Images) -> list[dict[str, Any]]:
    """One entry per process and fd, with the inherit-fd key the restorer accepts."""
    out: list[dict[str, Any]] = []
    root_pid = images.inventory["root_pid"]
    for pid in images.live:
        for entry in images.fd_tables[pid]:
            fid = entry["file"]
            desc = images.descriptions[fid]
            kind = kinds.kind_of(desc["kind"])
            keys = kind.keys(desc)
            path = kind.shown_path(desc)  # as /proc/PID/fd/N showed it
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
            value = json.load(f)
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:
        raise ImageError(f"{path}: corrupted ({e})") from None
    validate.check_file(name, value, path)
    return value


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
        images = validate.load(reader)
        if fds and images.inventory.get("type", "dump") != "dump":
            raise UsageError(f"--fds: {path} holds a pre-dump, which has no files")
        return _fd_list(images) if fds else _show_dir(reader)
    if fds:
        raise UsageError("--fds needs an image folder, not a file")
    try:
        os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file or folder") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _show_file(path)
