"""The vDSO areas of a process (``[vvar]``, ``[vvar_vclock]``, ``[vdso]``) and moving
them together, each at the same distance from the others, with injected ``mremap``."""

from __future__ import annotations

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


def move_together(inj: Injector, found: Sequence[Vma], to: int) -> dict[str, int]:
    """Move the areas ``found`` so that the lowest starts at ``to`` and the others keep
    their distances from it; return where each is now, by name."""
    base = min(v.start for v in found)
    out: dict[str, int] = {}
    for v in found:
        dest = to + v.start - base
        try:
            inj.call("mremap", v.start, v.size, v.size, libc.MREMAP_MAYMOVE | libc.MREMAP_FIXED,
                     dest)
        except InjectionError as e:
            raise MoveError(e, v.path) from None
        out[v.path] = dest
    return out
