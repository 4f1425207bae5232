"""The exceptions ckpt raises; each carries a message meant for a person."""

from __future__ import annotations


class CkptError(Exception):
    """Base of every error ckpt reports to its user."""


class DumpError(CkptError):
    """A dump could not be completed; the process was left as it was."""


class RestoreError(CkptError):
    """A restore could not be completed; nothing restored was left behind."""


class ImageError(CkptError):
    """An image folder or file is missing, corrupted or of an unknown format."""


class UnsupportedError(DumpError):
    """The process holds a kind of resource ckpt cannot dump (yet)."""


class TransientError(UnsupportedError):
    """State a process holds for an instant only (a /proc file of another process, open
    while it is read): the dump, which left the tree as it was, is tried again."""


class UsageError(CkptError):
    """A malformed option or argument."""
