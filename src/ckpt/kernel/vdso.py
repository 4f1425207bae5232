"""The vDSO areas of a process (``[vvar]``, ``[vvar_vclock]``, ``[vdso]``): moving
them together, each at the same distance from the others, with injected ``mremap``;
the padding after the vDSO's ELF image, which no code runs; and ckpt's own vDSO image."""

from __future__ import annotations

import ctypes
import struct

from . import libc
from .inject import InjectionError, Injector
from .procfs import Vma

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Sequence

NAMES = ("[vvar]", "[vvar_vclock]", "[vdso]")
_IMAGE_MAX = 1 << 20  # no vDSO is larger: a bound on what a bad header makes us read


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


def image_end(image: bytes) -> int | None:
    """Where the ELF image at the start of ``image`` ends: past its section headers and
    the contents of its segments; None if ``image`` holds no 64-bit ELF header, or not
    all of its program headers."""
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
    return end


def own_image() -> bytes:
    """This process's own vDSO's ELF image, found through its auxiliary vector and read
    in place: no /proc/self/maps to read and parse (it holds some 200 lines in a
    Python process). Empty if the process has no vDSO."""
    base = libc.getauxval(libc.AT_SYSINFO_EHDR)
    if not base:
        return b""
    head = ctypes.string_at(base, 64)
    if head[:4] != b"\x7fELF":
        return b""
    phoff = struct.unpack_from("<Q", head, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    headers = ctypes.string_at(base, min(phoff + phnum * phentsize, _IMAGE_MAX))
    end = image_end(headers)  # within the image's first page, with the headers it spans
    return ctypes.string_at(base, min(end, _IMAGE_MAX)) if end else b""


def padding(image: bytes, need: int) -> int | None:
    """The offset of ``need`` zero bytes (16-aligned) after the end of the ELF image
    ``image`` (a [vdso] area as read from memory): past its section headers and the
    contents of its segments, in the page rounding that nothing runs; None if there
    is no such room."""
    end = image_end(image)
    if end is None:
        return None
    start = (end + 15) & ~15
    if start + need > len(image) or any(image[start:start + need]):
        return None
    return start
