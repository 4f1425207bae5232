"""Pure parts of lazy restore: which pages are left to the daemon (pages/lazy.py), and
the daemon's bookkeeping of pending pages by chunk (lazy_pages.Proc)."""

from __future__ import annotations

from typing import Any

from ckpt.kernel.libc import PAGE_SIZE as PAGE
from ckpt.lazy_pages import CHUNK, Proc
from ckpt.pages import lazy

P = PAGE


def _vma(**kw: Any) -> dict[str, Any]:
    return {"kind": "anon", "shared": False, "prot": 3, "flags": ["rd", "wr"], **kw}


def test_eligible_mappings() -> None:
    assert lazy.eligible(_vma())
    assert not lazy.eligible(_vma(shared=True))
    assert not lazy.eligible(_vma(kind="file"))
    assert not lazy.eligible(_vma(prot=0))
    assert not lazy.eligible(_vma(flags=["rd", "wr", "lo"]))  # mlock would fill it first


def test_lazy_spans_leave_out_what_children_inherit() -> None:
    fresh = [(0x10000, 0x20000), (0x30000, 0x40000)]
    keep = [[0x11000, 2], [0x12000, 1], [0x1f000, 4], [0x35000, 1]]  # overlapping: a union
    assert lazy.lazy_spans(fresh, keep) == [(0x10000, 0x11000), (0x13000, 0x1f000),
                                           (0x30000, 0x35000), (0x36000, 0x40000)]
    assert lazy.lazy_spans(fresh, []) == fresh


def test_split_keeps_file_offsets() -> None:
    pagemap = [[0x10000, 4], [0x20000, 2]]  # file: 4 pages, then 2
    cut = lazy.split(pagemap, [(0x11000, 0x13000), (0x20000, 0x30000)])
    assert cut.eager == [(0x10000, P, 0), (0x13000, P, 3 * P)]
    assert cut.lazy == [(0x11000, 2 * P, P), (0x20000, 2 * P, 4 * P)]


def _proc(runs: list[tuple[int, int, int]]) -> Proc:
    return Proc.from_runs(1, -1, -1, None, runs)  # type: ignore[arg-type]


def test_pending_pieces_by_chunk() -> None:
    p = _proc([(0x100000, CHUNK + 2 * P, CHUNK - P)])
    assert p.pending == {0: [[0x100000, P, CHUNK - P]],
                         1: [[0x100000 + P, CHUNK, CHUNK]],
                         2: [[0x100000 + P + CHUNK, P, 2 * CHUNK]]}
    assert p.chunk_at(0x100000) == 0
    assert p.chunk_at(0x100000 + 5 * P) == 1
    assert p.chunk_at(0x100000 + CHUNK + 2 * P) is None
    assert p.next_chunk() == 0


def test_pending_pages_moved_and_dropped() -> None:
    p = _proc([(0x100000, 4 * P, 0)])
    p.cut(0x101000, 0x102000)  # munmap of the 2nd page
    assert p.pending == {0: [[0x100000, P, 0], [0x102000, 2 * P, 2 * P]]}
    p.cut(0x102000, 0x104000, moved=0x500000)  # mremap of the last two
    assert sorted(p.pending[0]) == [[0x100000, P, 0], [0x500000, 2 * P, 2 * P]]
    assert p.chunk_at(0x501000) == 0 and p.chunk_at(0x102000) is None
    child = p.fork(-1)
    p.cut(0, 1 << 47)
    assert p.pending == {} and not p.todo
    assert child.todo and child.pid == 0
