"""The log's lines in criu's form and the handler of a log file ckpt opened, on
``logging``: imported by log.py once a record is to be written (log.py says why)."""

from __future__ import annotations

import logging
import os

from .log import timestamp

_TAGS = {logging.CRITICAL: "Error", logging.ERROR: "Error", logging.WARNING: "Warn "}


class CriuFormatter(logging.Formatter):
    """Lines as criu writes them, timed from ``start`` (``time.time()``)."""

    def __init__(self, start: float):
        super().__init__()
        self.start = start

    def format(self, record: logging.LogRecord) -> str:
        head = timestamp(record.created - self.start)
        tag = _TAGS.get(record.levelno)
        where = (f"{tag} ({_short_path(record.pathname)}:{record.lineno}): " if tag
                 else f"{record.name}: ")
        text = f"{head} {where}{record.getMessage()}"
        if record.exc_text is None and record.exc_info:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


def _short_path(path: str) -> str:
    """``ckpt/dumper.py`` for a file of ckpt's, else the file's name."""
    parts = path.replace(os.sep, "/").split("/")
    if "ckpt" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("ckpt"):])
    return parts[-1]


class LogFile(logging.FileHandler):
    """A log file already opened (as ``fd``) by ckpt, written with ``encoding``."""

    def __init__(self, path: str, fd: int, encoding: str | None):
        self._fd = fd
        # a name may hold bytes that are not UTF-8 (surrogate escapes): log them escaped
        super().__init__(path, mode="w", encoding=encoding, errors="backslashreplace")

    def _open(self):  # type: ignore[no-untyped-def]
        return open(self._fd, "w", encoding=self.encoding, errors=self.errors)
