"""LDT entries as the kernel holds them, turned back into the ``struct user_desc`` that
made them, and the schema refusing an entry no user_desc makes (ldt.py): pure logic."""

import pytest

from ckpt.errors import ImageError
from ckpt.resources import ldt
from ckpt.schema import check


def fill_ldt(base: int, limit: int, bits: int) -> int:
    """The entry the kernel makes of a user_desc (arch/x86's fill_ldt, as documented)."""
    seg32, contents, rx_only = bits & 1, (bits >> 1) & 3, (bits >> 3) & 1
    pages, absent, usable = (bits >> 4) & 1, (bits >> 5) & 1, (bits >> 6) & 1
    kind = (rx_only ^ 1) << 1 | contents << 2 | 1  # accessed set
    return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | kind << 40 | 1 << 44 | 3 << 45
            | (absent ^ 1) << 47 | ((limit >> 16) & 0xF) << 48 | usable << 52 | seg32 << 54
            | pages << 55 | ((base >> 24) & 0xFF) << 56)


# (base, limit, bits): 32-bit writable data with AVL; 16-bit read-only data in pages;
# readable 32-bit code; conforming code not present; expand-down data
DESCS = [(0x40600000, 0xFFF, 0b1000001), (0x12340, 0xF, 0b0011000), (0x1000, 0xFFFFF, 0b0010101),
         (0x2000, 0x100, 0b1101111), (0xFEED0000, 0xABCDE, 0b0000011)]


@pytest.mark.parametrize("desc", DESCS)
def test_entry_back_to_its_user_desc(desc: tuple[int, int, int]) -> None:
    assert ldt.user_desc(fill_ldt(*desc)) == desc


def test_seen_on_this_kernel() -> None:
    """What modify_ldt(0) read here of a writable 32-bit data segment at 0x40cf6000,
    limit 0xfff, written with useable=1."""
    assert ldt.user_desc(0x4050F3CF60000FFF) == (0x40CF6000, 0xFFF, 0b1000001)


@pytest.mark.parametrize("raw", [
    0,  # empty: never saved
    fill_ldt(0, 0, 0) & ~(1 << 44),  # a system segment (S clear): a call gate, a TSS
    fill_ldt(0, 0, 0) & ~(3 << 45),  # DPL 0
    fill_ldt(0, 0, 0) | 1 << 53,  # a 64-bit code segment
    fill_ldt(0, 0, 0) & ~(1 << 40),  # not accessed: the kernel always sets it
    fill_ldt(0, 0, 0b0000110) | 1 << 47,  # conforming code present: refused by modify_ldt
])
def test_no_user_desc_makes_it(raw: int) -> None:
    assert ldt.user_desc(raw) is None
    with pytest.raises(ImageError, match="not an LDT entry"):
        check([[3, raw]], ldt.SCHEMA, "core-1.json")


def test_schema_takes_saved_entries() -> None:
    check([[i, fill_ldt(*d)] for i, d in enumerate(DESCS)], ldt.SCHEMA, "core-1.json")
    with pytest.raises(ImageError):
        check([[ldt.ENTRIES, fill_ldt(*DESCS[0])]], ldt.SCHEMA, "core-1.json")
