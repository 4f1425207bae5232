"""The parent images of an incremental dump (``--prev-images-dir``): which pages the
parent has of each process, in mappings of which identity, and whether it may serve
as that process's parent (same process, memory tracked, bits not cleared since)."""

from __future__ import annotations

import os

from ..errors import DumpError, ImageError
from ..images import ImageReader
from ..kernel.libc import PAGE_SIZE as PAGE
from .compressed import check_parent
from .runs import merge_runs
from .select import DIGEST_SIZE, Cover
from .tracking import current_token, soft_dirty_available

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any


def same_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two mapping entries (``mm-PID.json`` vmas) show the same memory at an
    address both cover: same kind, path, sharing, and file offset at that address."""
    if (a["kind"], a["path"], a["shared"]) != (b["kind"], b["path"], b["shared"]):
        return False
    return a["kind"] != "file" or a["offset"] - a["start"] == b["offset"] - b["start"]


class ParentMm:
    """What the parent images have of one process: its mappings and pages (own or in
    its own parent, in address order), and how it tracked memory."""

    def __init__(self, mm: dict[str, Any], digests: bytes | None, where: str):
        self.where = where
        self.start_time = mm.get("start_time")
        self.vmas = sorted(mm["vmas"], key=lambda v: v["start"])
        self.vma_starts = [v["start"] for v in self.vmas]
        try:
            spans = merge_runs(mm.get("pagemap", []), mm.get("in_parent", []))
        except ValueError as e:
            raise ImageError(f"{where}: {e}") from None
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]
        self.index: list[int] = []
        n = 0
        for s, e in spans:
            self.index.append(n)
            n += (e - s) // PAGE
        self.npages = n
        tracking = mm.get("tracking") or {}
        self.method: str | None = tracking.get("method")
        self.token: str | None = tracking.get("token")
        self.digests = digests
        if self.method == "digest" and (digests is None or len(digests) != n * DIGEST_SIZE):
            raise ImageError(f"{where}: {n} pages but "
                             f"{0 if digests is None else len(digests) // DIGEST_SIZE} digests")

    def cover(self, entry: dict[str, Any], lo: int, hi: int) -> Cover:
        """``(start, end, page index)`` of what the parent has in [lo, hi) in mappings of
        the same identity as ``entry``; the index counts pages in address order."""
        import _bisect  # here: few commands bisect (start-up)
        out: Cover = []
        i = max(0, _bisect.bisect_right(self.vma_starts, lo) - 1)
        while i < len(self.vmas) and self.vmas[i]["start"] < hi:
            pv = self.vmas[i]
            i += 1
            a, b = max(lo, pv["start"]), min(hi, pv["end"])
            if a >= b or not same_identity(pv, entry):
                continue
            j = max(0, _bisect.bisect_right(self.starts, a) - 1)
            while j < len(self.starts) and self.starts[j] < b:
                x, y = max(a, self.starts[j]), min(b, self.ends[j])
                if x < y:
                    out.append((x, y, self.index[j] + (x - self.starts[j]) // PAGE))
                j += 1
        return out


class ParentImages:
    """The images given with ``--prev-images-dir`` (relative to the dump's folder)."""

    def __init__(self, images_dir: str, rel: str):
        self.rel = rel
        self.dir = os.path.normpath(rel if os.path.isabs(rel) else os.path.join(images_dir, rel))
        if os.path.realpath(self.dir) == os.path.realpath(images_dir):
            raise DumpError(f"--prev-images-dir {rel} is the images folder itself")
        if not os.path.isdir(self.dir):
            raise DumpError(f"--prev-images-dir: {self.dir} does not exist")
        self.reader = ImageReader(self.dir)  # format, version and the inventory's checksum
        check_parent(self.reader.inventory, self.dir)
        self.crc32 = self.reader.crc32
        self.used = False
        self.tasks: dict[int, ParentMm] = {}
        for t in self.reader.inventory.get("tasks", []):
            name = f"mm-{t['pid']}.json"
            if t.get("zombie") or name not in self.reader.files:
                continue
            mm = self.reader.load_json(name)
            tracking = mm.get("tracking") or {}
            digests = None
            if tracking.get("method") == "digest":
                digests = self.reader.read_raw(tracking.get("file", ""))
            self.tasks[int(t["pid"])] = ParentMm(mm, digests, self.reader.path(name))

    def task(self, pid: int, started: int) -> tuple[ParentMm | None, str]:
        """The parent's record of process ``pid``, or None and why it cannot be used."""
        p = self.tasks.get(pid)
        if p is None:
            return None, f"it is not in the parent images {self.dir} (a new process)"
        if p.start_time != started:
            return None, f"the parent images {self.dir} hold another process of that PID"
        if p.method is None:
            return None, f"the parent images {self.dir} were taken without --track-mem"
        if p.method == "soft-dirty":
            if not soft_dirty_available():
                return None, "soft-dirty tracking is not available (CONFIG_MEM_SOFT_DIRTY)"
            if p.token is None or current_token(pid, started) != p.token:
                return None, (f"its soft-dirty bits were cleared again after {self.dir} was "
                              "taken (by another dump, or one that failed)")
        elif p.method != "digest":
            return None, f"the parent images {self.dir} use an unknown tracking {p.method!r}"
        return p, ""
