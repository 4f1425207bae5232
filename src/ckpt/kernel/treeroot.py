"""Where the dumped or restored tree's ``/`` is, seen from ckpt: paths the images hold
are the tree's, and ckpt reaches them through this root.

A tree in ckpt's own mount namespace has ckpt's root (the default: paths are used as
they are). A tree in a mount namespace of its own (a container) shows its paths from
its own root: the dump reaches them through ``/proc/ROOT/root``, the restore through the
folder where it built the tree's mounts (resources/mounts.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_root = ""


def path(p: str) -> str:
    """The path ckpt uses for the tree's absolute path ``p``."""
    return _root + p if _root and p.startswith("/") else p


def is_own() -> bool:
    """Whether the tree has a root other than ckpt's."""
    return bool(_root)


@contextmanager
def at(root: str) -> Iterator[None]:
    """The tree's ``/`` is ``root`` for the block ("" or "/": ckpt's)."""
    global _root
    before, _root = _root, root.rstrip("/")
    try:
        yield
    finally:
        _root = before


OWN_NS = "a tree with a mount namespace of its own (a container)"  # for refusals
