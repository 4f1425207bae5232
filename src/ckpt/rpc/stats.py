"""criu's statistics files, ``stats-dump`` and ``stats-restore`` in the work folder:
podman reads the first (``checkpoint --print-stats``, and ``--export`` puts it in the
tarball), go-criu both.

A file is two magic numbers, the size of the message and one ``stats_entry``
(schema.py), as criu's service images are. ckpt reads and writes pages in one
pass, so its memory time is all ``memdump_time``; fields ckpt does not measure
are 0. The message is encoded here, without wire.py and its table of every criu
message (built at import, about 0.5 ms of every command): its fields are numbers
only (tests/unit/test_criu_stats.py checks it against wire.py).
"""

from __future__ import annotations

import os
import struct

from ..kernel import safefs
from ..log import logger

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


# stats_entry's fields (schema.py): dump (1) and restore (2), each a message of numbers
_FIELDS = {
    "dump": (1, ("freezing_time", "frozen_time", "memdump_time", "memwrite_time",
                 "pages_scanned", "pages_skipped_parent", "pages_written", "", "pages_lazy")),
    "restore": (2, ("pages_compared", "pages_skipped_cow", "forking_time", "restore_time",
                    "pages_restored")),
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_entry(entry: dict[str, Any]) -> bytes:
    """``entry`` as a ``stats_entry`` message: its fields in the order of their numbers,
    each a varint (a message of them for ``dump`` and ``restore``)."""
    out = b""
    for kind, (number, names) in _FIELDS.items():
        if kind not in entry:
            continue
        values = entry[kind]
        body = b"".join(_varint(i << 3) + _varint(int(values[name]))
                        for i, name in enumerate(names, 1) if name in values)
        out += _varint(number << 3 | 2) + _varint(len(body)) + body
    return out


def encode_file(entry: dict[str, Any]) -> bytes:
    body = encode_entry(entry)
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
