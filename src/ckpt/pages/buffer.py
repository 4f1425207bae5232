"""ckpt's page-data buffers, kept for the life of the process: fresh memory is slow to
touch, and a copy into it slower still. Page data passes through them, never through
Python objects."""

from __future__ import annotations

from ..images import ctypes_view
from ..kernel import libc
from ..kernel.record import dataclass

BUF_SIZE = 1 << 20  # small enough to stay in the CPU cache
RING = 4  # buffers of a write behind the copy (pages.behind)


@dataclass
class Buffer:
    """A page-data buffer: its address and a view of it."""

    addr: int
    view: memoryview


_buffers: list[Buffer] = []


def _more(n: int) -> list[Buffer]:
    while len(_buffers) < n:
        addr = libc.anon_buffer(BUF_SIZE)
        _buffers.append(Buffer(addr, ctypes_view(addr, BUF_SIZE)))
    return _buffers


def page_buffer() -> Buffer:
    """The one buffer of a copy done a buffer at a time."""
    return _more(1)[0]


def spare_buffer() -> Buffer:
    """A buffer neither ``page_buffer`` nor the ring's: the pages file read back while
    page data goes to it by other ways (pages.splice)."""
    return _more(RING + 2)[RING + 1]


def ring() -> list[Buffer]:
    """``RING`` buffers, none of them ``page_buffer``'s (which a shared memory object's
    data is read into while the ring's are still being written)."""
    return _more(RING + 1)[1:RING + 1]


def writer_buffer(index: int) -> Buffer:
    """The buffer of writer ``index`` of a write behind, for the runs it reads itself
    (pages.behind.read_behind); none of the others."""
    return _more(RING + 3 + index)[RING + 2 + index]
