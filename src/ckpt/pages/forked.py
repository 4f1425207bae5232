"""Pages a process shares with its parent process since a fork (copy-on-write), found at
dump and shared again at restore.

Dump: where a child's private mapping and its parent's have the same origin
(``inheritable``: same kind, file and offset, same flags but protection), a page the
child has at the very frame (or swap slot) the parent has at that address holds the
same bytes: the child does not save it but records it ``inherited``.

Restore: the parent's memory is restored first, and the child is cloned from it (no
CLONE_VM), so it starts with its parent's address space, copy-on-write. ``pieces``
says which parts of each of the child's mappings it keeps from its parent (those of
the same origin where it inherits a page, and shared mappings of the same object),
the rest is unmapped and mapped again; ``stale`` which pages of the kept parts it must
drop (``MADV_DONTNEED``) because the parent has data there that the child had not.
The child then writes its own pages over the kept parts: that copy is its own.

Pure functions over ``mm-PID.json`` entries and pagemap bytes.
"""

from __future__ import annotations

from ..kernel.libc import PAGE_SIZE as PAGE
from ..kernel.record import dataclass
from .runs import merge_runs

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

Vma = dict[str, "Any"]

FEATURE = "inherited-pages"  # what a dump with ``inherited`` pages needs (images.FEATURES)
NOT_MAPPED = ("vdso", "aio")  # mappings a restore does not map itself (moved, or io_setup's)

# VmFlags a child may differ in from its parent over memory they share: protection
# (mprotect in the child), accounting and soft-dirty bits, mlock (not inherited).
_FREE_FLAGS = frozenset({"rd", "wr", "ex", "ac", "sd", "lo"})
# Mappings a child does not get from its parent as they are: not copied, or emptied.
_NOT_COPIED = frozenset({"dc", "wf"})  # MADV_DONTFORK, MADV_WIPEONFORK

_FRAME = (1 << 55) - 1  # pagemap: the frame number, or the swap type and offset
_KEY = _FRAME | 1 << 62 | 1 << 63  # ... and whether it is swapped or present


def _ghost_id(v: Vma) -> int | None:
    return int(v["ghost"]["id"]) if "ghost" in v else None


def inheritable(parent: Vma, child: Vma) -> bool:
    """Whether memory of ``child`` at an address both mappings cover is the parent's as
    the fork made it: the same kind, object, file offset and flags (but protection)."""
    if parent["kind"] != child["kind"] or child["kind"] not in ("anon", "file", "shmem"):
        return False
    if (parent["path"], parent["shared"]) != (child["path"], child["shared"]):
        return False
    pflags, cflags = set(parent["flags"]), set(child["flags"])
    if pflags & _NOT_COPIED or pflags - _FREE_FLAGS != cflags - _FREE_FLAGS:
        return False
    if child["kind"] != "anon" and (parent["offset"] - parent["start"]
                                    != child["offset"] - child["start"]):
        return False
    return (parent.get("shmem_id") == child.get("shmem_id")
            and _ghost_id(parent) == _ghost_id(child) and parent.get("file") == child.get("file"))


def private(v: Vma) -> bool:
    return v["kind"] in ("anon", "file") and not v["shared"]


def overlaps(parents: list[Vma], child: Vma) -> list[tuple[int, int, Vma]]:
    """``(start, end, parent mapping)`` of the parts of ``child`` where a mapping of
    ``parents`` (sorted by start) is of the same origin."""
    import _bisect  # here: few commands bisect (start-up)
    starts = [v["start"] for v in parents]
    out: list[tuple[int, int, Vma]] = []
    i = max(0, _bisect.bisect_right(starts, child["start"]) - 1)
    while i < len(parents) and parents[i]["start"] < child["end"]:
        pv = parents[i]
        i += 1
        a, b = max(pv["start"], child["start"]), min(pv["end"], child["end"])
        if a < b and inheritable(pv, child):
            out.append((a, b, pv))
    return out


def same_frames(child: bytes, parent: bytes) -> bytearray:
    """1 for each page whose pagemap entries (``child``, ``parent``: 8 bytes a page, same
    addresses) show one frame or swap slot, 0 elsewhere (and where frames read as 0:
    without CAP_SYS_ADMIN pagemap hides them, and nothing is found shared)."""
    c, p = memoryview(child).cast("Q"), memoryview(parent).cast("Q")
    return bytearray(1 if x & _FRAME and x & _KEY == y & _KEY else 0
                     for x, y in zip(c, p, strict=True))


@dataclass
class Piece:
    """A part of one of the child's mappings: kept from its parent (``parent`` is the
    parent's mapping there), or mapped anew (``parent`` None)."""

    start: int
    end: int
    vma: Vma
    parent: Vma | None = None


class Spans:
    """Sorted, disjoint ``(start, end)`` spans, looked up by bisection."""

    def __init__(self, spans: list[tuple[int, int]]):
        self.spans = spans
        self.starts = [s for s, _ in spans]

    def clip(self, a: int, b: int) -> list[tuple[int, int]]:
        """The parts of the spans within [a, b)."""
        import _bisect  # here: few commands bisect (start-up)
        out = []
        for s, e in self.spans[max(0, _bisect.bisect_right(self.starts, a) - 1):]:
            if s >= b:
                break
            if e > a:
                out.append((max(s, a), min(e, b)))
        return out


def pieces(parents: list[Vma], children: list[Vma], inherited: list[list[int]]
           ) -> list[Piece]:
    """Every mapping of the child (but the vDSO), cut into what it keeps from the parent
    and what is mapped anew, in address order. A private part is kept only where the
    child inherits a page; a shared part (one object) whenever it is of the same origin."""
    parents = sorted(parents, key=lambda v: v["start"])
    spans = Spans(merge_runs(inherited))
    out: list[Piece] = []
    for v in sorted(children, key=lambda v: v["start"]):
        if v["kind"] in NOT_MAPPED:
            continue
        cur = v["start"]
        for a, b, pv in overlaps(parents, v):
            if private(v) and not spans.clip(a, b):
                continue
            if a > cur:
                out.append(Piece(cur, a, v))
            out.append(Piece(a, b, v, pv))
            cur = b
        if cur < v["end"]:
            out.append(Piece(cur, v["end"], v))
    return out


def check_inherited(parents: list[Vma], children: list[Vma], inherited: list[list[int]]
                    ) -> str | None:
    """Why the runs ``inherited`` cannot be the child's parent's pages (an image that was
    tampered with); None when each lies in private memory of the same origin."""
    try:
        spans = merge_runs(inherited)
    except ValueError as e:
        return str(e)
    kept = Spans(merge_runs([[p.start, (p.end - p.start) // PAGE]
                             for p in pieces(parents, children, inherited)
                             if p.parent is not None and private(p.vma)]))
    for s, e in spans:
        if kept.clip(s, e) != [(s, e)]:
            return f"pages {s:#x}-{e:#x} said to be the parent's are not where it maps them"
    return None


def stale(parent_data: Spans, child_data: Spans, kept: list[Piece]) -> list[tuple[int, int]]:
    """``(start, end)`` of the pages of the kept private pieces where the parent has data
    (saved, in parent images, or inherited: ``parent_data``) and the child
    has none (``child_data``): the child drops them, and reads zeros or its file there."""
    out: list[tuple[int, int]] = []
    for p in kept:
        if p.parent is None or not private(p.vma):
            continue
        for s, e in parent_data.clip(p.start, p.end):
            out += _subtract(s, e, child_data.clip(s, e))
    return out


def _subtract(a: int, b: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[a, b) without the sorted, disjoint ``holes`` (all within it)."""
    out = []
    cur = a
    for s, e in holes:
        if s > cur:
            out.append((cur, s))
        cur = max(cur, e)
    if cur < b:
        out.append((cur, b))
    return out
