"""criu's statistics files as ckpt writes them (rpc/stats.py): the header podman and
go-criu check, and a message they decode, every required field set."""

from __future__ import annotations

import struct
from types import SimpleNamespace

from ckpt.rpc import stats
from ckpt.rpc.wire import decode


def _read(data: bytes) -> dict[str, object]:
    magic, kind, size = struct.unpack_from("<III", data)
    assert (magic, kind) == (0x55105940, 0x57093306)
    assert len(data) == 12 + size
    return decode(data[12:], "stats_entry")


def test_dump_stats() -> None:
    res = SimpleNamespace(pages_bytes=10 * 4096, parent_bytes=3 * 4096, frozen_seconds=0.25,
                          freezing_seconds=0.002, memory_seconds=0.1)
    entry = _read(stats.encode_file(stats.dump_entry(res)))
    assert entry["dump"] == {"freezing_time": 2000, "frozen_time": 250000,
                             "memdump_time": 100000, "memwrite_time": 0, "pages_scanned": 13,
                             "pages_skipped_parent": 3, "pages_written": 10, "pages_lazy": 0}


def test_restore_stats() -> None:
    entry = _read(stats.encode_file(stats.restore_entry(SimpleNamespace(seconds=1.5))))
    assert entry["restore"]["restore_time"] == 1500000


def test_times_saturate() -> None:
    res = SimpleNamespace(pages_bytes=0, parent_bytes=0, frozen_seconds=1e9,
                          freezing_seconds=0, memory_seconds=0)
    assert _read(stats.encode_file(stats.dump_entry(res)))["dump"]["frozen_time"] == 0xFFFFFFFF


def test_encoded_as_wire_encodes() -> None:
    """stats.py encodes its one message itself; wire.py (every criu message) agrees."""
    from ckpt.rpc.wire import encode
    dump = stats.dump_entry(SimpleNamespace(pages_bytes=300 << 20, parent_bytes=4096,
                                            frozen_seconds=3.5, freezing_seconds=0.01,
                                            memory_seconds=1e9))
    restore = stats.restore_entry(SimpleNamespace(seconds=0.02))
    for entry in (dump, restore, {**dump, **restore},
                  {"restore": {**restore["restore"], "pages_restored": 1 << 40}}):
        assert stats.encode_entry(entry) == encode(entry, "stats_entry")
