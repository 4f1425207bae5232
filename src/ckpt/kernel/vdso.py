"""The vDSO areas of a process (``[vvar]``, ``[vvar_vclock]``, ``[vdso]``): moving
them together, each at the same distance from the others, with injected ``mremap``;
and the padding after the vDSO's ELF image, which no code runs."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from . import libc
from .inject import InjectionError, Injector
from .procfs import Vma

NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]")


class MoveError(InjectionError):
    """An area could not be moved; ``area`` names it."""

    def __init__(self, e: OSError, area: str):
        super().__init__(e.errno, e.strerror)
        self.area = area


def areas(vmas: Sequence[Vma]) -> list[Vma]:
    """The vDSO areas among ``vmas``."""
    return [v for v in vmas if v.path in NAMES]


def span(found: Sequence[Vma]) -> int:
    """The bytes from the first area's start to the last one's end (0 for none)."""
    if not found:
        return 0
    return max(v.end for v in found) - min(v.start for v in found)


def placed(found: Sequence[Vma], to: int) -> dict[str, int]:
    """Where each of the areas ``found`` goes, by name, when the lowest goes to ``to``
    and the others keep their distances from it."""
    base = min(v.start for v in found)
    return {v.path: to + v.start - base for v in found}


def move_together(inj: Injector, found: Sequence[Vma], to: int) -> dict[str, int]:
    """Move the areas ``found`` so that the lowest starts at ``to`` and the others keep
    their distances from it; return where each is now, by name."""
    out = placed(found, to)
    for v in found:
        try:
            inj.call("mremap", v.start, v.size, v.size, libc.MREMAP_MAYMOVE | libc.MREMAP_FIXED,
                     out[v.path])
        except InjectionError as e:
            raise MoveError(e, v.path) from None
    return out


def padding(image: bytes, need: int) -> int | None:
    """The offset of ``need`` zero bytes (16-aligned) after the end of the ELF image
    ``image`` (a [vdso] area as read from memory): past its section headers and the
    contents of its segments, in the page rounding that nothing runs; None if there
    is no such room."""
    if len(image) < 64 or image[:4] != b"\x7fELF" or image[4] != 2:
        return None
    phoff, shoff = struct.unpack_from("<QQ", image, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", image, 0x36)
    end = shoff + shnum * shentsize
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + 40 > len(image):
            return None
        offset, _, _, filesz = struct.unpack_from("<QQQQ", image, at + 8)
        end = max(end, offset + filesz)
    start = (end + 15) & ~15
    if start + need > len(image) or any(image[start:start + need]):
        return None
    return start
