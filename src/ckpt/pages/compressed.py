"""Compressed page data (``--compress``), for images that travel: a dump appends the
pages through a zstd stream (``ZstdWriter``, in front of the pages file's writer), and
a restore takes them back in order (``ZstdReader``), decompressed into ckpt's page
buffer and written into the restored process with ``process_vm_writev`` (the
process cannot read its pages from a compressed file itself).

The pages file is then one zstd stream of what it would hold uncompressed: offsets
in ``mm-PID.json`` (runs, shared memory's ``pages_off``) are offsets in that
uncompressed data, and the inventory's size and CRC-32 are those of the stored file.
A stream is read from its start: such a folder cannot be the parent of an
incremental dump. zstd comes from the ``zstandard`` package (installed by bootstrap),
imported only by a dump or restore that compresses.
"""

from __future__ import annotations

from ..errors import DumpError, ImageError
from ..images import RawWriter
from ..kernel import libc

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

FEATURE = "compressed-pages"
METHOD = "zstd"
LEVEL = 1  # zstd's fastest level but the negative ones: pages compress well at it
_OUT = 128 << 10  # compressed bytes handed to the file at once


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        raise DumpError("--compress needs the zstandard package (pip install zstandard; "
                        "scripts/bootstrap.sh installs it)") from None
    return zstandard


class ZstdWriter:
    """Appends page data to ``out`` through a zstd stream; ``size`` counts the data as
    written (uncompressed), which the images' offsets refer to."""

    def __init__(self, out: RawWriter):
        self.out = out
        self.size = 0
        self._stream = _zstd().ZstdCompressor(level=LEVEL).stream_writer(
            _Sink(out), write_size=_OUT, closefd=False)

    def write(self, data: bytes | memoryview) -> int:
        off = self.size
        self._stream.write(data)
        self.size += len(data)
        return off

    def finish(self) -> None:
        """End the stream (what is still in zstd's buffers goes to the file)."""
        self._stream.close()


class _Sink:
    """What zstd's stream writer writes to: the pages file's writer."""

    def __init__(self, out: RawWriter):
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.write(data)
        return len(data)


class ZstdReader:
    """The page data of a compressed pages file, read in order: ``into_process`` writes
    [offset, +length) of it into a process's memory. ``source`` reads the stored file
    from its start, checksumming it (pages.fill)."""

    def __init__(self, source: Any, buf_addr: int, buf: memoryview):
        self.path = source.path
        self.buf_addr = buf_addr
        self.buf = buf
        self.pos = 0  # offset in the uncompressed data
        self._stream = _zstd().ZstdDecompressor().stream_reader(source, read_size=_OUT,
                                                                closefd=False)

    def close(self) -> None:
        self._stream.close()

    def _fill(self, n: int) -> int:
        got = self._stream.readinto(self.buf[:n])
        if got <= 0:
            raise ImageError(f"{self.path}: the compressed page data ends at {self.pos}")
        self.pos += got
        return int(got)

    def into_process(self, pid: int, vaddr: int, length: int, off: int) -> None:
        if off < self.pos:
            raise ImageError(f"{self.path}: page data at {off} read out of order")
        while self.pos < off:  # data no mapping takes any more: skipped
            self._fill(min(len(self.buf), off - self.pos))
        done = 0
        while done < length:
            got = self._fill(min(len(self.buf), length - done))
            written = 0
            while written < got:
                n = libc.process_vm_writev(pid, self.buf_addr + written,
                                           vaddr + done + written, got - written)
                if n <= 0:
                    raise OSError(5, f"short write into process {pid} at "
                                     f"{vaddr + done + written:#x}")
                written += n
            done += got


def check_parent(inventory: dict[str, Any], where: str) -> None:
    """Refuse a compressed folder as the parent of an incremental dump."""
    if FEATURE in inventory.get("needs", []):
        raise DumpError(f"{where} holds compressed page data (--compress), which cannot be "
                        "the parent of an incremental dump")
