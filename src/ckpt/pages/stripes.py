"""A process's page data in stripes over two files: where each byte of the logical page
stream (the runs of ``pagemap``, then the shared objects', as docs/image-format.md
lays them out) lies, in which file and at which offset.

One thread writing 1 GiB into one tmpfs file takes as long as ``dd`` (the file's lock is
the limit: two threads writing halves of the same file take as long again); two threads
each writing its own file take half of it. So once a dump's page data passes ``FROM``
bytes, what follows is cut in stripes of ``SIZE`` bytes, stripe k going to file k % 2,
each file written by a thread of its own (pages.behind). A dump whose data stays under
``FROM`` has one file, as before, and no ``stripes`` field.

Every reader of page data (the restore's fill, the chain of parent images, the
lazy-pages daemon, the checks of the images) reads through ``Stripes.locate``. Each
file is an image of its own in the inventory, with its own size and CRC-32 (of its own
bytes), so that every check of a folder (``ckpt show``, the inventory's list) sees both.
"""

from __future__ import annotations

import os

from ..errors import ImageError
from ..kernel.record import dataclass

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

FEATURE = "pages-stripes"
FROM = 64 << 20  # bytes of page data in the first file before the stripes begin
SIZE = 1 << 20  # bytes of a stripe
COUNT = 2  # files
ENV = "CKPT_PAGE_STRIPES"  # "FROM,SIZE" (bytes, multiples of pages: tests), "0": never


def stripe_name(pid: int, index: int) -> str:
    """The name of file ``index`` of process ``pid``'s page data."""
    return f"pages-{pid}.img" if index == 0 else f"pages-{pid}-{index}.img"


@dataclass
class Stripes:
    """Where the page data of one process is: ``names[0]`` holds bytes [0, start), then
    stripe k of ``size`` bytes (logical offset ``start + k * size``) is in
    ``names[k % len(names)]``, after the file's earlier stripes. One name: no stripes."""

    names: list[str]
    start: int = 0
    size: int = SIZE

    @classmethod
    def of(cls, mm: dict[str, Any]) -> Stripes:
        """The layout ``mm`` (an ``mm-PID.json``, checked) gives its page data."""
        s = mm.get("stripes")
        if not s:
            return cls([mm["pages_file"]])
        return cls(list(s["files"]), s["from"], s["size"])

    @staticmethod
    def policy() -> tuple[int, int] | None:
        """``(FROM, SIZE)`` for a dump's page data, or None (``CKPT_PAGE_STRIPES=0``)."""
        given = os.environ.get(ENV)
        if not given:
            return FROM, SIZE
        if given == "0":
            return None
        start, size = (int(x) for x in given.split(","))
        return start, size

    @property
    def striped(self) -> bool:
        return len(self.names) > 1

    def field(self) -> dict[str, Any]:
        """``mm-PID.json``'s ``stripes``."""
        return {"files": self.names, "from": self.start, "size": self.size}

    def locate(self, off: int, length: int) -> list[tuple[int, int, int]]:
        """Logical bytes [off, +length) as pieces ``(file index, offset in it, length)``,
        in order."""
        n = len(self.names)
        if n == 1 or off + length <= self.start:
            return [(0, off, length)] if length else []
        out: list[tuple[int, int, int]] = []
        end = off + length
        if off < self.start:
            out.append((0, off, self.start - off))
            off = self.start
        size = self.size
        while off < end:
            k, within = divmod(off - self.start, size)
            index = k % n
            at = (k // n) * size + within + (self.start if index == 0 else 0)
            piece = min(end - off, size - within)
            out.append((index, at, piece))
            off += piece
        return out

    def sizes(self, total: int) -> list[int]:
        """The size of each file when the logical stream is ``total`` bytes long."""
        out = [0] * len(self.names)
        if total <= self.start or len(self.names) == 1:
            out[0] = total
            return out
        out[0] = self.start
        k, rest = divmod(total - self.start, self.size)
        n = len(self.names)
        for i in range(n):
            out[i] += (k // n + (1 if i < k % n else 0)) * self.size
        out[k % n] += rest
        return out

    def check(self, pid: int, mm: dict[str, Any]) -> str | None:
        """What is wrong with ``mm``'s ``stripes`` (None: nothing)."""
        s = mm.get("stripes")
        if s is None:
            return None
        files = s["files"]
        if len(files) < 2 or files != [stripe_name(pid, i) for i in range(len(files))]:
            return f"files are not {[stripe_name(pid, i) for i in range(COUNT)]}"
        if s["size"] <= 0 or s["from"] < 0 or s["size"] % 4096 or s["from"] % 4096:
            return "from and size are not multiples of pages (size > 0)"
        return None


def read_into(fds: list[int], layout: Stripes, view: memoryview, want: int, off: int,
              path: str) -> list[tuple[int, int, int]]:
    """Logical bytes [off, +want) of the page data into ``view``, from the files open
    as ``fds`` (``layout.names``' order); the pieces read, as ``locate`` gives them.
    ImageError when a file ends before."""
    pieces = layout.locate(off, want)
    at = 0
    for index, foff, n in pieces:
        read_full(fds[index], view[at:], n, foff, f"{path} ({layout.names[index]})"
                  if layout.striped else path)
        at += n
    return pieces


def read_full(fd: int, view: memoryview, want: int, off: int, path: str) -> int:
    """Bytes [off, +want) of file ``fd`` (at ``path``) into ``view``; ImageError if it
    ends before."""
    got = 0
    while got < want:
        n = os.preadv(fd, [view[got:want]], off + got)
        if n <= 0:
            raise ImageError(f"{path}: short read at offset {off + got}")
        got += n
    return got
