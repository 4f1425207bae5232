"""Page selection as pure functions: from pagemap entries, the kind of mapping and what
the parent has (its cover), the status of each page: not saved, saved here, or left in
the parent images. Bytes in, bytes out, one byte a page, no Python loop over pages."""

from __future__ import annotations

import struct

from ..kernel.libc import PAGE_SIZE as PAGE

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

DIGEST_SIZE = 16  # the first bytes of a page's SHA-256
# The digest of a page of zeros, written out: hashlib is not imported by every command
# for it (tests/unit/test_pages.py checks it).
ZERO_DIGEST = bytes.fromhex("ad7facb2586fc6e966c004d7d1d16b02")

# Per-page status.
SKIP, SAVE, PARENT = 0, 1, 2

# A parent's cover of a range: (start, end, index of the parent's page at start).
Cover = list[tuple[int, int, int]]

# pagemap, byte 7 (bits 56-63): 0x80 present, 0x40 swapped, 0x20 file page or shared anon,
# 0x04 a guard page (MADV_GUARD_INSTALL; shown as swapped too, but holds no data).
# Selection: 1 = the page's data belongs in the image.
_GUARD = 0x04
_SWAPPED = bytes(1 if b & 0x40 and not b & _GUARD else 0 for b in range(256))
_ANON_SEL = bytes(1 if b & 0x80 or _SWAPPED[b] else 0 for b in range(256))
_COW_SEL = bytes(1 if _SWAPPED[b] or (b & 0x80 and not b & 0x20) else 0 for b in range(256))
_GUARD_SEL = bytes(1 if b & 0x40 and b & _GUARD else 0 for b in range(256))
# An anonymous mapping showing a page that is not anonymous (the huge zero page, a special
# mapping's page): saved, never left in a parent.
_ODD = bytes(1 if b & 0x80 and b & 0x20 else 0 for b in range(256))
# Present but not exclusively mapped (bit 56 clear): other processes map that page too.
_ELSEWHERE = bytes(1 if b & 0x80 and not b & 0x01 else 0 for b in range(256))
# pagemap byte 6 (bits 48-55): bit 55 is soft-dirty.
_DIRTY = bytes(1 if b & 0x80 else 0 for b in range(256))
# code = sel | cover<<1 | dirty<<2 | odd<<3  ->  0 not saved, 1 saved here, 2 in the parent
_STATUS = bytes((SKIP if not c & 1 else PARENT if (c & 2 and not c & 12) else SAVE)
                for c in range(256))


def runs_of(status: bytes | bytearray, value: int) -> Iterator[tuple[int, int]]:
    """``(first page, count)`` of each run of pages whose status is ``value`` (1 or 2)."""
    table = bytearray(256)
    table[value] = 1
    marks = status.translate(table)  # 1 where the status is ``value``, else 0
    first = marks.find(1)
    while first >= 0:
        end = marks.find(0, first)
        if end < 0:
            end = len(marks)
        yield first, end - first
        first = marks.find(1, end)


def selected(raw: bytes, kind: str, zero_pfn: int | None) -> bytearray:
    """1 for each page whose data belongs in the image, by the pagemap ``raw`` alone.

    ``anon``: present or swapped, but not the zero page (``zero_pfn``, when the
    kernel shows frames: a page never written reads as zeros again from a fresh
    mapping). Private ``file``: the process's own copies (present anonymous pages,
    or swapped). ``aio`` (a ring): every page present. Other kinds: as ``file``.
    """
    whole = kind in ("anon", "aio")  # an AIO ring: every page it has (aio.py)
    sel = bytearray(raw[7::8].translate(_ANON_SEL if whole else _COW_SEL))
    if kind == "anon" and zero_pfn is not None:
        key = struct.pack("<Q", zero_pfn)[:6]
        high = zero_pfn >> 48
        pos = raw.find(key)
        while pos >= 0:
            if pos % 8 == 0 and raw[pos + 6] & 0x7F == high and raw[pos + 7] & 0xE0 == 0x80:
                sel[pos // 8] = 0
            pos = raw.find(key, pos + 1)
    return sel


def guards(raw: bytes) -> bytes:
    """1 for each page of the pagemap ``raw`` that is a guard page (MADV_GUARD_INSTALL)."""
    return raw[7::8].translate(_GUARD_SEL)


def mapped_elsewhere(raw: bytes) -> bytes:
    """1 for each page another process maps too (copy-on-write after a fork, or a file's
    page): ``process_vm_readv`` pins pages, and the kernel gives a process its own copy
    of an anonymous page it shared before such a pin, so these are read otherwise."""
    return raw[7::8].translate(_ELSEWHERE)


def cover_mask(lo: int, n: int, cover: Cover) -> bytearray:
    """1 for each of the ``n`` pages from ``lo`` that the parent's ``cover`` has."""
    mask = bytearray(n)
    for a, b, _idx in cover:
        mask[(a - lo) // PAGE:(b - lo) // PAGE] = b"\x01" * ((b - a) // PAGE)
    return mask


def split_soft_dirty(raw: bytes, sel: bytes | bytearray, cover: bytes | bytearray,
                     anon: bool) -> bytes:
    """Per page: 0 not saved, 1 saved here, 2 left in the parent.

    ``raw`` is the pagemap (8 bytes a page), ``sel`` the selected pages (0/1),
    ``cover`` (0/1) what the parent has in a mapping of the same identity. A page
    goes to the parent when it is selected, covered, not soft-dirty (bit 55) and,
    in an anonymous mapping, not a non-anonymous page (the huge zero page).
    The four masks are combined as big integers, one byte a page: no Python loop.
    """
    n = len(sel)
    code = int.from_bytes(sel, "little")
    code |= int.from_bytes(cover, "little") << 1
    code |= int.from_bytes(raw[6::8].translate(_DIRTY), "little") << 2
    if anon:
        code |= int.from_bytes(raw[7::8].translate(_ODD), "little") << 3
    return code.to_bytes(n, "little").translate(_STATUS)


def soft_dirty_status(raw: bytes, sel: bytes | bytearray, lo: int, cover: Cover,
                      anon: bool) -> bytes:
    """The status of the pages from ``lo`` when the parent tracked soft-dirty bits:
    those clean and in its ``cover`` stay there, the other selected ones are saved."""
    if not cover:
        return bytes(sel)
    return split_soft_dirty(raw, sel, cover_mask(lo, len(sel), cover), anon)


def parent_digests(lo: int, n: int, cover: Cover, digests: bytes) -> list[bytes | None]:
    """The parent's digest of each of the ``n`` pages from ``lo`` (None where it has
    none); ``digests`` holds the parent's, in its page order."""
    theirs: list[bytes | None] = [None] * n
    for a, b, idx in cover:
        first, count = (a - lo) // PAGE, (b - a) // PAGE
        theirs[first:first + count] = [
            digests[x:x + DIGEST_SIZE]
            for x in range(idx * DIGEST_SIZE, (idx + count) * DIGEST_SIZE, DIGEST_SIZE)]
    return theirs


def digest_status(ours: Sequence[bytes], theirs: Sequence[bytes | None], anon: bool,
                  valid: bytes | None = None) -> bytes:
    """The status of pages by their digests: the parent's digest leaves a page there,
    an all-zero anonymous page is not saved, the rest is saved. ``valid`` (0/1 a
    page, None for all) leaves out the pages that could not be read."""
    zero = ZERO_DIGEST if anon else None
    status = bytes([SKIP if dg == zero else PARENT if dg == t else SAVE
                    for dg, t in zip(ours, theirs, strict=True)])
    if valid is not None:
        status = bytes(st if ok else SKIP for st, ok in zip(status, valid, strict=True))
    return status
