"""Page runs and page selection on synthetic pagemap bytes: pure functions, no process,
no root. (This kernel may lack soft-dirty: the selection is checked on its own.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ckpt.errors import ImageError
from ckpt.images import ImageWriter
from ckpt.kernel.libc import PAGE_SIZE as PAGE
from ckpt.pages import select
from ckpt.pages.chain import Segment, merge_segments, take
from ckpt.pages.parent import ParentImages, ParentMm, same_identity
from ckpt.pages.runs import Runs, merge_runs
from ckpt.pages.select import PARENT, SAVE, SKIP

BASE = 0x10000000
ZERO_PFN = 0x77


def entry(present: bool = True, dirty: bool = False, swapped: bool = False,
          file: bool = False, pfn: int = 0x1234) -> bytes:
    """One pagemap entry: bit 63 present, 62 swapped, 61 file page, 55 soft-dirty."""
    e = pfn | (1 << 63 if present else 0) | (1 << 62 if swapped else 0)
    e |= (1 << 61 if file else 0) | (1 << 55 if dirty else 0)
    return e.to_bytes(8, "little")


# The eight pages the selection tests share, and what becomes of them in an
# anonymous mapping whose parent covers pages 0-1 and 4-6.
RAW = b"".join([
    entry(),                              # 0 clean, covered        -> parent
    entry(dirty=True),                    # 1 dirty, covered        -> here
    entry(),                              # 2 clean, not covered    -> here
    entry(present=False),                 # 3 absent                -> nothing
    entry(swapped=True, present=False),   # 4 swapped clean         -> parent
    entry(file=True),                     # 5 huge zero page        -> here
    entry(pfn=ZERO_PFN),                  # 6 the zero page         -> nothing
    entry(),                              # 7 clean, other identity -> here
])
ANON = {"start": BASE, "end": BASE + 8 * PAGE, "kind": "anon", "path": "", "shared": False,
        "offset": 0}


def parent_mm(digests: bytes | None = None) -> ParentMm:
    """A parent whose anonymous mapping ends at page 7 (page 7 is the heap there) and
    that has pages 0-1 itself and 4-7 in its own parent; tracked by soft-dirty, or by
    ``digests`` when given."""
    tracking = ({"method": "digest", "file": "d"} if digests is not None
                else {"method": "soft-dirty", "token": "t"})
    other = dict(ANON, path="[heap]")
    return ParentMm({
        "vmas": [dict(ANON, end=BASE + 7 * PAGE), dict(other, start=BASE + 7 * PAGE)],
        "pagemap": [[BASE, 2]], "in_parent": [[BASE + 4 * PAGE, 4]],
        "start_time": 1, "tracking": tracking,
    }, digests, "test")


# ---------------------------------------------------------------- runs

def test_runs_merge_only_what_continues() -> None:
    runs = Runs()
    runs.add(BASE, 2)
    runs.add(BASE + 2 * PAGE, 3)   # continues: merged
    runs.add(BASE + 6 * PAGE, 1)   # a gap of one page: a new run
    runs.add(BASE + 7 * PAGE, 1)
    assert runs.runs == [[BASE, 5], [BASE + 6 * PAGE, 2]]
    assert runs.pages == 7


def test_merge_runs_of_several_lists() -> None:
    own = [[BASE + 4 * PAGE, 2], [BASE, 1]]
    theirs = [[BASE + PAGE, 1], [BASE + 9 * PAGE, 1]]
    assert merge_runs(own, theirs) == [(BASE, BASE + 2 * PAGE),
                                       (BASE + 4 * PAGE, BASE + 6 * PAGE),
                                       (BASE + 9 * PAGE, BASE + 10 * PAGE)]
    assert merge_runs() == []


def test_merge_runs_refuses_overlaps() -> None:
    with pytest.raises(ValueError, match=f"overlap at {BASE + PAGE:#x}"):
        merge_runs([[BASE, 2]], [[BASE + PAGE, 1]])


def test_overlapping_parent_runs_are_an_image_error() -> None:
    with pytest.raises(ImageError, match="test: page runs overlap"):
        ParentMm({"vmas": [ANON], "pagemap": [[BASE, 2]], "in_parent": [[BASE, 1]]},
                 None, "test")


def test_runs_of_a_status() -> None:
    status = bytes([PARENT, SAVE, SAVE, SKIP, PARENT, SAVE, SKIP, SAVE])
    assert list(select.runs_of(status, SAVE)) == [(1, 2), (5, 1), (7, 1)]
    assert list(select.runs_of(status, PARENT)) == [(0, 1), (4, 1)]
    assert list(select.runs_of(bytes(4), SAVE)) == []


# ---------------------------------------------------------------- selection

def test_anonymous_selection_leaves_out_absent_and_zero_pages() -> None:
    assert list(select.selected(RAW, "anon", ZERO_PFN)) == [1, 1, 1, 0, 1, 1, 0, 1]


def test_zero_page_unknown_without_frames() -> None:
    """Without CAP_SYS_ADMIN frames read as 0: the zero page is saved like any other."""
    assert list(select.selected(RAW, "anon", None)) == [1, 1, 1, 0, 1, 1, 1, 1]


def test_zero_pfn_found_only_at_an_entry() -> None:
    """The frame's bytes inside another entry (not at its start) do not count."""
    shifted = entry(pfn=ZERO_PFN << 8)  # the zero page's low byte at offset 1
    assert list(select.selected(shifted + entry(pfn=ZERO_PFN), "anon", ZERO_PFN)) == [1, 0]


def test_private_file_mapping_saves_its_own_copies_only() -> None:
    assert list(select.selected(RAW, "file", ZERO_PFN)) == [1, 1, 1, 0, 1, 0, 1, 1]


def test_guard_pages_are_never_read_and_are_found() -> None:
    """A guard page (MADV_GUARD_INSTALL) shows as swapped with bit 58: it holds no data
    (reading it faults), in any kind of mapping; ``guards`` finds it."""
    guard = (1 << 62 | 1 << 58).to_bytes(8, "little")
    raw = entry() + guard + entry(swapped=True, present=False) + guard
    for kind in ("anon", "file", "aio"):
        assert list(select.selected(raw, kind, ZERO_PFN)) == [1, 0, 1, 0], kind
    assert list(select.guards(raw)) == [0, 1, 0, 1]


def test_aio_ring_pages_are_all_saved() -> None:
    """An AIO ring's pages are the kernel's (file pages to pagemap): all are saved."""
    assert list(select.selected(RAW, "aio", ZERO_PFN)) == [1, 1, 1, 0, 1, 1, 1, 1]


def test_parent_cover_follows_identity() -> None:
    parent = parent_mm()
    assert parent.npages == 6
    cover = parent.cover(ANON, BASE, BASE + 8 * PAGE)
    # page 7 is in a mapping of another identity there; page indexes count in address order
    assert cover == [(BASE, BASE + 2 * PAGE, 0), (BASE + 4 * PAGE, BASE + 7 * PAGE, 2)]
    assert parent.cover(ANON, BASE + 5 * PAGE, BASE + 6 * PAGE) == [
        (BASE + 5 * PAGE, BASE + 6 * PAGE, 3)]
    assert parent.cover(dict(ANON, shared=True), BASE, BASE + 8 * PAGE) == []
    assert list(select.cover_mask(BASE, 8, cover)) == [1, 1, 0, 0, 1, 1, 1, 0]


def test_same_identity_of_file_mappings() -> None:
    f = {"start": BASE, "end": BASE + 4 * PAGE, "kind": "file", "path": "/lib/x.so",
         "shared": False, "offset": 0}
    assert same_identity(f, dict(f, start=BASE + PAGE, offset=PAGE))  # split by mprotect
    assert not same_identity(f, dict(f, offset=PAGE))  # another part of the file
    assert not same_identity(f, dict(f, path="/lib/y.so"))
    assert same_identity(ANON, dict(ANON, start=BASE + PAGE, offset=123))


def test_soft_dirty_status() -> None:
    """A page is left in the parent only if it is selected, clean, covered by a mapping
    of the same identity, and not the huge zero page; the zero page is not saved."""
    sel = select.selected(RAW, "anon", ZERO_PFN)
    cover = parent_mm().cover(ANON, BASE, BASE + 8 * PAGE)
    status = select.split_soft_dirty(RAW, sel, select.cover_mask(BASE, 8, cover), anon=True)
    assert list(status) == [2, 1, 1, 0, 2, 1, 0, 1]
    assert select.soft_dirty_status(RAW, sel, BASE, cover, anon=True) == status
    # in a private file mapping a file page (5) is not selected, so never in the parent
    fsel = select.selected(RAW, "file", ZERO_PFN)
    assert list(select.soft_dirty_status(RAW, fsel, BASE, cover, anon=False)) == [
        2, 1, 1, 0, 2, 0, 2, 1]
    # no parent: every selected page is saved
    assert list(select.soft_dirty_status(RAW, sel, BASE, [], anon=True)) == list(sel)


def test_digest_status() -> None:
    """The parent's digests, in its page order, line up with the pages it covers; a page
    with the same digest stays there, an all-zero anonymous page is not saved."""
    digests = b"".join(bytes([i]) * select.DIGEST_SIZE for i in range(6))
    cover = parent_mm(digests).cover(ANON, BASE, BASE + 8 * PAGE)
    theirs = select.parent_digests(BASE, 8, cover, digests)
    assert [t[0] if t else None for t in theirs] == [0, 1, None, None, 2, 3, 4, None]
    ours = [theirs[0], b"x" * 16, select.ZERO_DIGEST, b"y" * 16, theirs[4], b"z" * 16,
            theirs[6], select.ZERO_DIGEST]
    assert list(select.digest_status(ours, theirs, anon=True)) == [2, 1, 0, 1, 2, 1, 2, 0]
    # a file mapping's all-zero page is the process's own copy: saved
    assert list(select.digest_status(ours, theirs, anon=False)) == [2, 1, 1, 1, 2, 1, 2, 1]
    # pages a deferred copy could not read are left out
    valid = bytes([1, 0, 1, 1, 0, 1, 1, 1])
    assert list(select.digest_status(ours, theirs, True, valid)) == [2, 0, 0, 1, 0, 1, 2, 0]
    assert select.ZERO_DIGEST == hashlib.sha256(bytes(PAGE)).digest()[:select.DIGEST_SIZE]


def test_digest_parent_needs_one_digest_a_page() -> None:
    with pytest.raises(ImageError, match="test: 6 pages but 5 digests"):
        ParentMm({"vmas": [ANON], "pagemap": [[BASE, 6]],
                  "tracking": {"method": "digest", "file": "d"}},
                 bytes(5 * select.DIGEST_SIZE), "test")


def test_parent_digests_are_checked_against_its_inventory(tmp_path: Path) -> None:
    """A parent's digests file that changed since it was written is refused, naming it."""
    w = ImageWriter(str(tmp_path / "parent"))
    w.raw("digests-1.img").write(bytes(range(2 * select.DIGEST_SIZE)))
    w.write_json("mm-1.json", {"vmas": [ANON], "pagemap": [[BASE, 2]], "start_time": 1,
                               "tracking": {"method": "digest", "file": "digests-1.img"}})
    w.finish({"tasks": [{"pid": 1}]})
    child = str(tmp_path / "child")
    assert ParentImages(child, "../parent").tasks[1].npages == 2

    digests = tmp_path / "parent" / "digests-1.img"
    data = digests.read_bytes()
    digests.write_bytes(data[:5] + b"X" + data[6:])
    with pytest.raises(ImageError, match=f"{digests}: corrupted \\(checksum mismatch\\)"):
        ParentImages(child, "../parent")
    digests.write_bytes(data[:-1])
    with pytest.raises(ImageError, match=f"{digests}: truncated or changed: 31 bytes, "
                                         "the inventory says 32"):
        ParentImages(child, "../parent")
    digests.unlink()
    with pytest.raises(ImageError, match=f"{digests}: missing from the image folder"):
        ParentImages(child, "../parent")


# ---------------------------------------------------------------- the chain

def test_take_from_the_parent() -> None:
    """The pages a child leaves in its parent are found in the parent's segments, at
    their offsets there; a page the parent does not have is an image error."""
    theirs = [Segment(BASE, BASE + 4 * PAGE, "p/pages", 0),
              Segment(BASE + 6 * PAGE, BASE + 8 * PAGE, "pp/pages", 8 * PAGE)]
    got = take([[BASE + PAGE, 2], [BASE + 6 * PAGE, 2]], theirs, "mm", "p")
    assert got == [Segment(BASE + PAGE, BASE + 3 * PAGE, "p/pages", PAGE),
                   Segment(BASE + 6 * PAGE, BASE + 8 * PAGE, "pp/pages", 8 * PAGE)]
    with pytest.raises(ImageError, match=f"mm: page {BASE + 4 * PAGE:#x} is said to be "
                                         "in the parent images, but p does not have it"):
        take([[BASE + 3 * PAGE, 2]], theirs, "mm", "p")


def test_merge_segments_joins_only_contiguous_parts_of_one_file() -> None:
    segs = [Segment(BASE, BASE + PAGE, "a", 0),
            Segment(BASE + PAGE, BASE + 2 * PAGE, "a", PAGE),      # continues: joined
            Segment(BASE + 2 * PAGE, BASE + 3 * PAGE, "a", 5 * PAGE),  # elsewhere in a
            Segment(BASE + 3 * PAGE, BASE + 4 * PAGE, "b", 6 * PAGE)]  # another file
    assert merge_segments(segs) == [Segment(BASE, BASE + 2 * PAGE, "a", 0),
                                    Segment(BASE + 2 * PAGE, BASE + 3 * PAGE, "a", 5 * PAGE),
                                    Segment(BASE + 3 * PAGE, BASE + 4 * PAGE, "b", 6 * PAGE)]
    assert segs[0].end == BASE + PAGE  # the input is left as it was
