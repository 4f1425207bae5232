"""The pages file written behind the copy (pages.behind): what is handed over lands in
the file in order, with the size and CRC-32 of what was handed over, through a ring of
buffers given back only once written; an error of the writing thread is raised by the
next call. No process, no root."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from ckpt.images import Folder, RawWriter
from ckpt.pages.behind import WriteBehind
from ckpt.pages.buffer import BUF_SIZE, page_buffer


def writer(tmp_path: Path) -> RawWriter:
    return RawWriter(Folder.open(str(tmp_path)), "pages-1.img")


def test_everything_handed_over_lands_in_order(tmp_path: Path) -> None:
    out = writer(tmp_path)
    wb = WriteBehind(out)
    expect = bytearray()
    for n in range(40):  # ten times round the ring, each buffer filled anew
        buf = wb.buffer
        data = bytes([n]) * (BUF_SIZE // 2) + os.urandom(BUF_SIZE // 2)
        buf.view[:] = data
        assert wb.write_behind(buf.view[:BUF_SIZE // 4]) == len(expect)
        assert wb.write_behind(buf.view[BUF_SIZE // 2:]) == len(expect) + BUF_SIZE // 4
        expect += data[:BUF_SIZE // 4] + data[BUF_SIZE // 2:]
        wb.next_buffer()
    wb.write(b"from elsewhere")  # after what is queued
    expect += b"from elsewhere"
    wb.finish()
    out.close()
    got = (tmp_path / "pages-1.img").read_bytes()
    assert got == bytes(expect)
    assert out.size == len(expect) and out.crc == zlib.crc32(expect)


def test_the_ring_is_not_the_page_buffer(tmp_path: Path) -> None:
    """A shared memory object's data is read into ``page_buffer`` while the ring's
    buffers are still being written."""
    wb = WriteBehind(writer(tmp_path))
    try:
        assert page_buffer().addr not in {b.addr for b in wb.buffers}
    finally:
        wb.finish()


def test_an_error_of_the_thread_is_raised_by_the_next_call(tmp_path: Path) -> None:
    out = writer(tmp_path)
    wb = WriteBehind(out)
    os.close(out.fd)
    out.fd = os.open(tmp_path, os.O_RDONLY)  # writes fail: EBADF
    try:
        wb.buffer.view[:8] = b"12345678"
        wb.write_behind(wb.buffer.view[:8])
        with pytest.raises(OSError):
            for _ in range(8):  # the error shows at the latest once the ring went round
                wb.next_buffer()
            wb.drain()
        with pytest.raises(OSError):
            wb.finish()
    finally:
        os.close(out.fd)


def test_less_than_a_buffer_is_written_without_a_thread(tmp_path: Path) -> None:
    out = writer(tmp_path)
    wb = WriteBehind(out)
    wb.buffer.view[:4096] = b"p" * 4096
    wb.write_behind(wb.buffer.view[:4096])
    wb.write(b"shared memory")
    wb.finish()
    assert not wb._started
    out.close()
    assert (tmp_path / "pages-1.img").read_bytes() == b"p" * 4096 + b"shared memory"


def test_a_small_process_is_written_without_a_thread(tmp_path: Path) -> None:
    """Runs of pages handed over before a buffer's worth are written at once, in the
    caller's thread, which gets the same buffer back; the thread starts after."""
    out = writer(tmp_path)
    wb = WriteBehind(out)
    first = wb.buffer
    expect = bytearray()
    for n in range(3):
        first.view[:4096] = bytes([n + 1]) * 4096
        wb.write_behind(first.view[:4096])
        expect += bytes([n + 1]) * 4096
        assert wb.next_buffer() is first and not wb._started
        assert (tmp_path / "pages-1.img").read_bytes() == bytes(expect)
    first.view[:] = b"x" * BUF_SIZE
    wb.write_behind(first.view)
    expect += b"x" * BUF_SIZE
    assert wb.next_buffer() is not first and wb._started
    wb.finish()
    out.close()
    assert (tmp_path / "pages-1.img").read_bytes() == bytes(expect)
    assert out.crc == zlib.crc32(expect)
