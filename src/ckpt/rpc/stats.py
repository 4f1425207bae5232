"""criu's statistics files, ``stats-dump`` and ``stats-restore`` in the work folder:
podman reads the first (``checkpoint --print-stats``, and ``--export`` puts it in the
tarball), go-criu both.

A file is two magic numbers, the size of the message and one ``stats_entry``
(schema.py), as criu's service images are. ckpt reads and writes pages in one
pass, so its memory time is all ``memdump_time``; fields ckpt does not measure
are 0.
"""

from __future__ import annotations

import os
import struct

from ..kernel import safefs
from ..log import logger
from .wire import encode

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

log = logger("ckpt.stats")

SERVICE_MAGIC = 0x55105940
STATS_MAGIC = 0x57093306
DUMP_FILE = "stats-dump"
RESTORE_FILE = "stats-restore"
PAGE = 4096


def _us(seconds: float) -> int:
    return min(int(seconds * 1e6), 0xFFFFFFFF)


def encode_file(entry: dict[str, Any]) -> bytes:
    body = encode(entry, "stats_entry")
    return struct.pack("<III", SERVICE_MAGIC, STATS_MAGIC, len(body)) + body


def dump_entry(result: Any) -> dict[str, Any]:
    """The ``stats_entry`` of a ``DumpResult``."""
    written = result.pages_bytes // PAGE
    parent = result.parent_bytes // PAGE
    return {"dump": {
        "freezing_time": _us(result.freezing_seconds), "frozen_time": _us(result.frozen_seconds),
        "memdump_time": _us(result.memory_seconds), "memwrite_time": 0,
        "pages_scanned": written + parent, "pages_skipped_parent": parent,
        "pages_written": written, "pages_lazy": 0}}


def restore_entry(result: Any) -> dict[str, Any]:
    """The ``stats_entry`` of a ``RestoreResult``."""
    return {"restore": {"pages_compared": 0, "pages_skipped_cow": 0, "forking_time": 0,
                        "restore_time": _us(result.seconds)}}


def write(work_dir: str, name: str, entry: dict[str, Any]) -> None:
    """Write ``name`` in ``work_dir``; a failure is logged, never raised: the dump or
    restore it describes is done and stands."""
    try:
        safefs.write_new(os.path.join(work_dir, name), encode_file(entry))
    except OSError as e:
        log.warning("cannot write %s in %s: %s", name, work_dir, e.strerror or e)
