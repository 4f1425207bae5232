"""At restore, an image folder and the chain of its parents, each checked before
anything is created, and where each saved page of a process is (which file, which
offset) along that chain."""

from __future__ import annotations

import os

from ..errors import ImageError
from ..images import ImageReader
from ..kernel.libc import PAGE_SIZE as PAGE
from ..kernel.record import dataclass
from .compressed import FEATURE
from .stripes import Stripes

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any


@dataclass
class Segment:
    """Pages [start, end) of a process, at logical ``offset`` in the page data whose
    first file is ``path``, laid out as ``layout`` says (pages.stripes)."""

    start: int
    end: int
    path: str
    offset: int
    layout: Stripes | None = None


class Chain:
    """An image folder and its parents, each checked before anything is restored."""

    MAX_DEPTH = 256

    def __init__(self, images: ImageReader):
        self.readers = [images]
        seen = {os.path.realpath(images.dir)}
        cur = images
        while True:
            link = cur.inventory.get("parent")
            if not link:
                break
            rel = str(link.get("dir", ""))
            path = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(cur.dir, rel))
            what = f"the parent images of {cur.dir}"
            if os.path.realpath(path) in seen or len(self.readers) > self.MAX_DEPTH:
                raise ImageError(f"{cur.path('inventory.json')}: the chain of parent images "
                                 f"loops back to {path}")
            seen.add(os.path.realpath(path))
            if not os.path.isdir(path):
                raise ImageError(f"{path}: {what} are missing")
            try:
                parent = ImageReader(path)
            except ImageError as e:
                raise ImageError(f"{e} ({what})") from None
            if FEATURE in parent.inventory.get("needs", []):
                raise ImageError(f"{path}: {what} hold compressed page data, which cannot "
                                 "be read in place")
            if parent.crc32 != link.get("crc32"):
                raise ImageError(
                    f"{parent.path('inventory.json')}: {what} changed since they were "
                    f"dumped (inventory checksum {parent.crc32}, {cur.dir} was made on "
                    f"{link.get('crc32')})")
            try:
                parent.verify()
            except ImageError as e:
                raise ImageError(f"{e} ({what})") from None
            self.readers.append(parent)
            cur = parent

    @property
    def depth(self) -> int:
        return len(self.readers) - 1

    def segments(self, pid: int, mm: dict[str, Any]) -> list[Segment] | None:
        """Where each saved page of ``pid`` is, in address order; None when every page
        is in the folder's own pages file (no ``in_parent``)."""
        if not mm.get("in_parent"):
            return None
        return merge_segments(self._resolve(0, pid, mm))

    def _resolve(self, level: int, pid: int, mm: dict[str, Any]) -> list[Segment]:
        reader = self.readers[level]
        path = os.path.abspath(reader.path(mm["pages_file"]))
        layout = Stripes.of(mm)
        segs: list[Segment] = []
        off = 0
        for vaddr, npages in mm["pagemap"]:
            segs.append(Segment(vaddr, vaddr + npages * PAGE, path, off, layout))
            off += npages * PAGE
        wanted = mm.get("in_parent") or []
        if wanted:
            name = f"mm-{pid}.json"
            if level + 1 >= len(self.readers):
                raise ImageError(f"{reader.path(name)}: pages in the parent images, but "
                                 f"{reader.dir} has no parent")
            parent = self.readers[level + 1]
            if name not in parent.files:
                raise ImageError(f"{reader.path(name)}: pages in the parent images, but "
                                 f"{parent.dir} has no process {pid}")
            theirs = self._resolve(level + 1, pid, parent.load_json(name))
            segs += take(wanted, theirs, reader.path(name), parent.dir)
        segs.sort(key=lambda s: s.start)
        return segs


def take(wanted: list[list[int]], theirs: list[Segment], where: str,
         parent_dir: str) -> list[Segment]:
    """The parts of ``theirs`` (sorted) that the runs ``wanted`` (sorted) ask for."""
    import _bisect  # here: few commands bisect (start-up)
    out: list[Segment] = []
    starts = [s.start for s in theirs]
    for vaddr, npages in wanted:
        a, b = vaddr, vaddr + npages * PAGE
        j = max(0, _bisect.bisect_right(starts, a) - 1)
        pos = a
        while pos < b:
            if j >= len(theirs) or theirs[j].start > pos:
                raise ImageError(f"{where}: page {pos:#x} is said to be in the parent images, "
                                 f"but {parent_dir} does not have it")
            s = theirs[j]
            if s.end <= pos:
                j += 1
                continue
            e = min(b, s.end)
            out.append(Segment(pos, e, s.path, s.offset + pos - s.start, s.layout))
            pos = e
            j += 1
    return out


def merge_segments(segs: list[Segment]) -> list[Segment]:
    """``segs`` (sorted) with each segment that continues the last one in the same
    file joined to it."""
    out: list[Segment] = []
    for s in segs:
        last = out[-1] if out else None
        if (last is not None and last.end == s.start and last.path == s.path
                and last.offset + (last.end - last.start) == s.offset):
            last.end = s.end
        else:
            out.append(Segment(s.start, s.end, s.path, s.offset, s.layout))
    return out
