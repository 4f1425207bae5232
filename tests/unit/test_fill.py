"""pages.fill: a pages file read once, written into a process (this one, through
process_vm_writev, as into a restored one), its checksum compared when it is read to
its end; out of order it is checked whole, and a file no process read is checked too.
A long write is shared by threads, each reading, checksumming and writing buffers: the
same bytes land, the checksums joined in order catch a flipped byte, a failed write is
raised (nothing left waiting)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ckpt.errors import ImageError, RestoreError
from ckpt.images import ImageReader, ImageWriter
from ckpt.pages import fill
from ckpt.pages.save import BUF_SIZE
from ckpt_helpers import OwnMemory as Memory

PAGE = 4096
NAME = "pages-4242.img"
DATA = random.Random(12).randbytes(5 * BUF_SIZE + 5 * PAGE)  # read and written at once


def folder(tmp_path: Path, data: bytes = DATA, names: tuple[str, ...] = (NAME,)) -> Path:
    d = tmp_path / "images"
    w = ImageWriter(str(d))
    for name in names:
        w.raw(name).write(data)
    w.finish({"type": "dump", "tasks": [{"pid": 4242}]})
    return d


def open_fill(d: Path) -> tuple[fill.Fill, str]:
    reader = ImageReader(str(d))
    return fill.Fill(reader, reader.verify(later=fill.is_pages)), str(d / NAME)


def test_in_order_read_once_and_checked(tmp_path: Path) -> None:
    """Runs scattered in memory (one write per buffer takes many of them), each byte of
    the file where its run says, the checksum compared at the end."""
    pages, path = open_fill(folder(tmp_path))
    mem = Memory(2 * len(DATA))
    pieces, at, off = [], 0, 0
    while off < len(DATA):  # runs of 1 to 9 pages, a page apart in memory
        n = min(random.Random(off).randint(1, 9) * PAGE, len(DATA) - off)
        pieces.append((at, n))
        at, off = at + n + PAGE, off + n
    pages.file(path).write(os.getpid(), 0, mem.runs(pieces))
    pages.done(path)
    off = 0
    for at, n in pieces:
        assert mem.bytes(at, n) == DATA[off:off + n]
        off += n
    pages.finish()


def test_rest_of_file_read_for_the_checksum(tmp_path: Path) -> None:
    """A process that takes only the start (and, after a gap, a later part) of its file:
    what is between and after is read and checksummed all the same."""
    d = folder(tmp_path)
    data = bytearray(DATA)
    data[-1] ^= 1  # the last byte, which no run takes
    (d / NAME).write_bytes(bytes(data))
    pages, path = open_fill(d)
    mem = Memory(2 * PAGE)
    pages.file(path).write(os.getpid(), 0, mem.runs([(0, PAGE)]))
    pages.file(path).write(os.getpid(), BUF_SIZE + PAGE, mem.runs([(PAGE, PAGE)]))
    assert mem.bytes(PAGE, PAGE) == DATA[BUF_SIZE + PAGE:BUF_SIZE + 2 * PAGE]
    with pytest.raises(ImageError, match=f"{NAME}: corrupted \\(checksum mismatch\\)"):
        pages.done(path)


@pytest.mark.parametrize("where", [0, len(DATA) // 2, len(DATA) - 1])
def test_flipped_byte_refused_once_written(tmp_path: Path, where: int) -> None:
    d = folder(tmp_path)
    data = bytearray(DATA)
    data[where] ^= 0x40
    (d / NAME).write_bytes(bytes(data))
    pages, path = open_fill(d)  # the size is right: nothing refused yet
    mem = Memory(len(DATA))
    pages.file(path).write(os.getpid(), 0, mem.runs([(0, len(DATA))]))
    with pytest.raises(ImageError, match="checksum mismatch") as e:
        pages.done(path)
    assert "\n" not in str(e.value)


def test_out_of_order_checked_whole(tmp_path: Path) -> None:
    """Runs whose data lies backwards in the file: written all the same, and the file
    read again whole for its checksum (a flipped byte found there too)."""
    d = folder(tmp_path)
    pages, path = open_fill(d)
    mem = Memory(2 * PAGE)
    src = pages.file(path)
    src.write(os.getpid(), PAGE, mem.runs([(0, PAGE)]))
    src.write(os.getpid(), 0, mem.runs([(PAGE, PAGE)]))
    assert mem.bytes(0, PAGE) == DATA[PAGE:2 * PAGE] and mem.bytes(PAGE, PAGE) == DATA[:PAGE]
    pages.done(path)
    pages.finish()

    data = bytearray(DATA)
    data[-PAGE] ^= 1
    (d / NAME).write_bytes(bytes(data))
    pages, path = open_fill(d)
    pages.file(path).write(os.getpid(), PAGE, mem.runs([(0, PAGE)]))
    pages.file(path).write(os.getpid(), 0, mem.runs([(PAGE, PAGE)]))
    with pytest.raises(ImageError, match="checksum mismatch"):
        pages.done(path)


def test_file_no_process_read_is_checked(tmp_path: Path) -> None:
    other = "pages-4343.img"
    d = folder(tmp_path, names=(NAME, other))
    data = bytearray(DATA)
    data[7] ^= 1
    (d / other).write_bytes(bytes(data))
    pages, path = open_fill(d)
    mem = Memory(len(DATA))
    pages.file(path).write(os.getpid(), 0, mem.runs([(0, len(DATA))]))
    pages.done(path)
    with pytest.raises(ImageError, match=f"{other}: corrupted"):
        pages.finish()


def test_truncated_refused_before_use(tmp_path: Path) -> None:
    d = folder(tmp_path)
    os.truncate(d / NAME, PAGE)
    with pytest.raises(ImageError, match="truncated"):
        ImageReader(str(d)).verify(later=fill.is_pages)


def test_short_write_refused(tmp_path: Path) -> None:
    """Memory that is not there (a run past a mapping): one line naming the process."""
    pages, path = open_fill(folder(tmp_path))
    with pytest.raises(RestoreError, match=f"process {os.getpid()}: cannot write its pages"):
        pages.file(path).write(os.getpid(), 0, [(PAGE, PAGE)])  # page 1: never mapped


def test_failed_write_of_a_long_run_refused(tmp_path: Path) -> None:
    """A write shared by threads (pages.fill._parallel) whose third buffer meets memory
    that is not there: the error of the thread that wrote it, raised here."""
    pages, path = open_fill(folder(tmp_path))
    mem = Memory(len(DATA))
    runs = mem.runs([(0, 2 * BUF_SIZE)]) + [(PAGE, len(DATA) - 2 * BUF_SIZE)]
    with pytest.raises(RestoreError, match=f"process {os.getpid()}: cannot write its pages"):
        pages.file(path).write(os.getpid(), 0, runs)
    assert mem.bytes(0, 2 * BUF_SIZE) == DATA[:2 * BUF_SIZE]


def test_long_write_of_a_file_checked_already(tmp_path: Path) -> None:
    """A file whose checksum is not compared on the way (a parent image, checked before):
    a long write shared by the threads lands all the same."""
    d = folder(tmp_path)
    mem = Memory(len(DATA))
    src = fill.PagesFile.one(str(d / NAME), len(DATA), None)
    src.write(os.getpid(), 0, mem.runs([(0, len(DATA))]))
    src.close()
    assert mem.bytes(0, len(DATA)) == DATA


def test_without_zlib_ng_read_in_one_thread(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without zlib-ng's crc32_combine the checksums of buffers read apart cannot be
    joined: a long write is read in order by one thread, its checksum compared as ever."""
    monkeypatch.setattr(fill, "crc32_combiner", lambda: None)
    d = folder(tmp_path)
    data = bytearray(DATA)
    data[len(DATA) // 2] ^= 1
    (d / NAME).write_bytes(bytes(data))
    pages, path = open_fill(d)
    mem = Memory(len(DATA))
    pages.file(path).write(os.getpid(), 0, mem.runs([(0, len(DATA))]))
    assert mem.bytes(0, len(DATA)) == bytes(data)
    with pytest.raises(ImageError, match="checksum mismatch"):
        pages.done(path)
