"""pages.stripes: a process's page data cut in stripes over two files, written by a thread
each (pages.behind) and read back through ``Stripes.locate`` by the restore's fill: the
same logical bytes, each file checksummed on the way (a flipped byte in the second file
is caught), reads out of order checked whole."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ckpt.errors import ImageError
from ckpt.images import ImageReader, ImageWriter
from ckpt.pages import fill, stripes
from ckpt.pages.behind import WriteBehind
from ckpt.pages.buffer import BUF_SIZE
from ckpt.pages.stripes import Stripes
from ckpt_helpers import OwnMemory as Memory

PAGE = 4096
PID = 4242
FIRST = stripes.stripe_name(PID, 0)
LAYOUT = Stripes([FIRST, stripes.stripe_name(PID, 1)], 3 * PAGE, 5 * PAGE)
DATA = random.Random(7).randbytes(9 * BUF_SIZE + 7 * PAGE)


def test_locate_and_sizes() -> None:
    """Bytes before ``from`` in the first file; then stripes taking turns, each file's
    stripes one after the other; ``sizes`` is what ``locate`` fills."""
    s = Stripes(["a", "b"], 100, 10)
    assert s.locate(0, 100) == [(0, 0, 100)]
    assert s.locate(95, 30) == [(0, 95, 5), (0, 100, 10), (1, 0, 10), (0, 110, 5)]
    assert s.locate(131, 2) == [(1, 11, 2)]
    assert Stripes(["a"]).locate(5, 7) == [(0, 5, 7)]
    for total in range(0, 200):
        sizes = [0, 0]
        for index, off, n in s.locate(0, total):
            assert off == sizes[index]  # each file written in order, without holes
            sizes[index] += n
        assert s.sizes(total) == sizes, total


def test_check_names_the_files() -> None:
    mm = {"pages_file": FIRST, "stripes": LAYOUT.field()}
    assert LAYOUT.check(PID, mm) is None
    assert "files" in LAYOUT.check(PID + 1, mm)
    mm["stripes"] = {**LAYOUT.field(), "size": 100}
    assert "multiples" in LAYOUT.check(PID, mm)
    mm["stripes"] = {**LAYOUT.field(), "from": -4096}
    assert "multiples" in LAYOUT.check(PID, mm)


def striped_folder(tmp_path: Path, policy: tuple[int, int] = (3 * PAGE, 5 * PAGE)) -> Path:
    """The page data written as a dump writes it: pieces of every size through a write
    behind that stripes it (CKPT_PAGE_STRIPES)."""
    d = tmp_path / "images"
    w = ImageWriter(str(d))
    os.environ[stripes.ENV] = f"{policy[0]},{policy[1]}"
    try:
        sink = WriteBehind(w.raw(FIRST), lambda i: w.raw(stripes.stripe_name(PID, i)))
    finally:
        del os.environ[stripes.ENV]
    rng = random.Random(3)
    at = 0
    while at < len(DATA):
        n = min(len(DATA) - at, rng.choice([PAGE, 3 * PAGE, BUF_SIZE // 2, BUF_SIZE]))
        sink.buffer.view[:n] = DATA[at:at + n]
        assert sink.write_behind(sink.buffer.view[:n]) == at
        sink.next_buffer()
        at += n
    sink.finish()
    assert sink.layout == (Stripes(LAYOUT.names, *policy) if policy[0] < len(DATA)
                           else Stripes([FIRST]))
    w.finish({"type": "dump", "tasks": [{"pid": PID}]})
    return d


def test_written_in_stripes_read_back(tmp_path: Path) -> None:
    """Both files hold what the layout says; a restore reads the logical bytes back,
    in one long write (threads) and in short ones, each file's checksum compared."""
    d = striped_folder(tmp_path)
    files = [(d / name).read_bytes() for name in LAYOUT.names]
    assert [len(f) for f in files] == LAYOUT.sizes(len(DATA))
    assert b"".join(files[index][off:off + n]
                    for index, off, n in LAYOUT.locate(0, len(DATA))) == DATA
    reader = ImageReader(str(d))
    for cut in (len(DATA), 5 * PAGE + 123):
        pages = fill.Fill(reader, reader.verify(later=fill.is_pages))
        src = pages.file(str(d / FIRST), LAYOUT)
        mem = Memory(len(DATA))
        src.write(os.getpid(), 0, mem.runs([(0, cut)]))
        if cut < len(DATA):
            src.write(os.getpid(), cut, mem.runs([(cut, len(DATA) - cut)]))
        pages.done(str(d / FIRST))
        assert mem.bytes(0, len(DATA)) == DATA
        assert not pages.deferred
        pages.close()


@pytest.mark.parametrize("index", [0, 1])
def test_flipped_byte_in_either_file_is_caught(tmp_path: Path, index: int) -> None:
    d = striped_folder(tmp_path)
    path = d / LAYOUT.names[index]
    data = bytearray(path.read_bytes())
    data[len(data) * 2 // 3] ^= 0x40
    path.write_bytes(bytes(data))
    reader = ImageReader(str(d))
    pages = fill.Fill(reader, reader.verify(later=fill.is_pages))
    mem = Memory(len(DATA))
    pages.file(str(d / FIRST), LAYOUT).write(os.getpid(), 0, mem.runs([(0, len(DATA))]))
    with pytest.raises(ImageError, match=f"{LAYOUT.names[index]}: corrupted"):
        pages.done(str(d / FIRST))
    pages.close()


def test_out_of_order_reads_are_checked_whole(tmp_path: Path) -> None:
    """The second half first, then the first: each file checked whole at the end."""
    d = striped_folder(tmp_path)
    reader = ImageReader(str(d))
    pages = fill.Fill(reader, reader.verify(later=fill.is_pages))
    src = pages.file(str(d / FIRST), LAYOUT)
    mem = Memory(len(DATA))
    half = len(DATA) // 2
    src.write(os.getpid(), half, mem.runs([(half, len(DATA) - half)]))
    src.write(os.getpid(), 0, mem.runs([(0, half)]))
    pages.done(str(d / FIRST))
    assert mem.bytes(0, len(DATA)) == DATA
    pages.close()


def test_small_data_is_one_file(tmp_path: Path) -> None:
    """Under ``from`` bytes nothing is striped: one file, no second one made."""
    d = striped_folder(tmp_path, policy=(len(DATA), 5 * PAGE))
    assert not (d / LAYOUT.names[1]).exists()
    assert (d / FIRST).read_bytes() == DATA


def test_room_keeps_a_buffer_in_one_stripe(tmp_path: Path) -> None:
    """Filled up to ``room`` each time, every handed-over piece lies in one stripe."""
    w = ImageWriter(str(tmp_path / "images"))
    os.environ[stripes.ENV] = f"{3 * PAGE},{5 * PAGE}"
    try:
        sink = WriteBehind(w.raw(FIRST), lambda i: w.raw(stripes.stripe_name(PID, i)))
    finally:
        del os.environ[stripes.ENV]
    for _ in range(40):
        n = min(2 * PAGE, sink.room())
        assert len(sink.layout.locate(sink.size, n)) == 1 or not sink.layout.striped
        sink.write_behind(sink.buffer.view[:n])
        sink.next_buffer()
    sink.finish()
    assert sink.layout.striped
    w.abort()


def test_one_file_follows_what_others_append(tmp_path: Path) -> None:
    """Never striped (``one_file``, as when the process splices its own pages into the
    file): data appended to the file by others moves the offset of the next write."""
    w = ImageWriter(str(tmp_path / "images"))
    out = w.raw(FIRST)
    sink = WriteBehind(out, lambda i: w.raw(stripes.stripe_name(PID, i)))
    sink.one_file()
    sink.write(b"a" * PAGE)
    out.write(b"b" * PAGE)  # as pages.splice does
    assert sink.size == 2 * PAGE
    assert sink.write(b"c" * PAGE) == 2 * PAGE
    sink.finish()
    w.abort()


def test_a_folder_with_only_a_stripe_file_holds_images(tmp_path: Path) -> None:
    """A second stripe file alone (a dump's left-overs) makes a folder one a dump does not
    write into without --overwrite, as any image does."""
    from ckpt.errors import CkptError
    from ckpt.images import Folder

    (tmp_path / stripes.stripe_name(PID, 1)).write_bytes(b"x")
    with pytest.raises(CkptError, match="already holds images"):
        Folder.for_dump(str(tmp_path))
