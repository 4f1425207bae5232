"""Pages a child shares with its parent since a fork (pages/forked.py): which mappings
are of one origin, which frames are the same, what a child cloned from its restored
parent keeps, and what it must drop."""

from __future__ import annotations

import struct

from ckpt.pages import forked
from ckpt.pages.forked import Piece, Spans

PAGE = 4096
BASE = 0x7F0000000000


def vma(start: int, pages: int, kind: str = "anon", **extra: object) -> dict[str, object]:
    v: dict[str, object] = {"start": BASE + start * PAGE, "end": BASE + (start + pages) * PAGE,
                            "kind": kind, "path": "", "shared": False, "offset": 0, "prot": 3,
                            "flags": ["rd", "wr", "mr", "mw", "me", "ac"]}
    v.update(extra)
    return v


def run(start: int, pages: int) -> list[int]:
    return [BASE + start * PAGE, pages]


def test_inheritable_needs_the_same_origin() -> None:
    anon = vma(0, 10)
    assert forked.inheritable(anon, vma(0, 10, prot=1, flags=["rd", "mr", "mw", "me"]))
    assert not forked.inheritable(anon, vma(0, 10, path="[heap]"))
    assert not forked.inheritable(anon, vma(0, 10, shared=True))
    assert not forked.inheritable(vma(0, 10, flags=["rd", "wr", "dc"]),
                                  vma(0, 10, flags=["rd", "wr", "dc"]))  # not copied
    assert not forked.inheritable(anon, vma(0, 10, flags=["rd", "wr", "hg"]))
    lib = vma(0, 4, "file", path="/lib/x.so", offset=0x1000, file={"size": 9, "mtime_ns": 1})
    assert forked.inheritable(lib, dict(lib))
    assert not forked.inheritable(lib, {**lib, "offset": 0x2000})
    assert not forked.inheritable(lib, {**lib, "file": {"size": 9, "mtime_ns": 2}})
    assert not forked.inheritable(vma(0, 1, "vdso"), vma(0, 1, "vdso"))


def test_same_frames_compares_present_frames_and_swap_slots() -> None:
    present, swapped = 1 << 63, 1 << 62
    child = struct.pack("<5Q", present | 7, present | 8, swapped | 9, 0, present | 0)
    parent = struct.pack("<5Q", present | 7, present | 9, swapped | 9, 0, present | 0)
    assert forked.same_frames(child, parent) == bytearray([1, 0, 1, 0, 0])
    assert forked.same_frames(struct.pack("<Q", present | 7),
                              struct.pack("<Q", swapped | 7)) == bytearray([0])


def test_pieces_keep_only_parts_with_inherited_pages() -> None:
    parents = [vma(0, 100), vma(200, 10, "shmem", shared=True, shmem_id=5)]
    children = [vma(0, 150), vma(200, 10, "shmem", shared=True, shmem_id=5),
                vma(300, 5)]
    got = forked.pieces(parents, children, [run(10, 5)])
    assert [(p.start, p.end, p.parent is not None) for p in got] == [
        (BASE, BASE + 100 * PAGE, True),  # the parent's part, with an inherited page
        (BASE + 100 * PAGE, BASE + 150 * PAGE, False),  # grown since: mapped anew
        (BASE + 200 * PAGE, BASE + 210 * PAGE, True),  # one shared object: kept as is
        (BASE + 300 * PAGE, BASE + 305 * PAGE, False),
    ]
    assert all(p.parent is None for p in forked.pieces(parents, children[:1], []))


def test_stale_pages_are_the_parents_data_the_child_lacks() -> None:
    child = vma(0, 100)
    kept = [Piece(BASE, BASE + 100 * PAGE, child, vma(0, 100))]
    parent_data = Spans([(BASE, BASE + 50 * PAGE), (BASE + 200 * PAGE, BASE + 210 * PAGE)])
    child_data = Spans([(BASE + 10 * PAGE, BASE + 20 * PAGE)])
    assert forked.stale(parent_data, child_data, kept) == [
        (BASE, BASE + 10 * PAGE), (BASE + 20 * PAGE, BASE + 50 * PAGE)]
    shared = Piece(BASE, BASE + 100 * PAGE, vma(0, 100, "shmem", shared=True, shmem_id=1),
                   vma(0, 100, "shmem", shared=True, shmem_id=1))
    assert forked.stale(parent_data, child_data, [shared]) == []


def test_inherited_pages_are_checked_against_the_parents_mappings() -> None:
    parents, children = [vma(0, 100)], [vma(0, 150)]
    assert forked.check_inherited(parents, children, [run(0, 100)]) is None
    assert "not where" in str(forked.check_inherited(parents, children, [run(90, 20)]))
    assert "overlap" in str(forked.check_inherited(parents, children,
                                                   [run(0, 10), run(5, 10)]))
    assert forked.check_inherited(parents, [vma(0, 100, path="[heap]")], [run(0, 1)])
