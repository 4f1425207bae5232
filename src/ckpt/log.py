"""Logging set-up shared by the CLI and API callers: -o LOG inside the image
folder, -v0..-v4 as in criu, lines in criu's form so that tools reading criu's
logs read ckpt's.

Each line starts with the time since the log began, ``(SS.uuuuuu)``; errors and
warnings then say ``Error (FILE:LINE): `` and ``Warn  (FILE:LINE): `` as criu's
do, other lines name ckpt's part (``ckpt.dump: ``). A failure (``failure``) is
written to the log file with the place it was raised, and at -v4 with the
exception behind it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback

from .errors import CkptError
from .kernel import safefs

_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO,
           4: logging.DEBUG}
_TAGS = {logging.CRITICAL: "Error", logging.ERROR: "Error", logging.WARNING: "Warn "}


def timestamp(seconds: float) -> str:
    """criu's ``(seconds.micro)``: at least two digits of seconds, six of microseconds."""
    micros = max(0, round(seconds * 1_000_000))
    return f"({micros // 1_000_000:02d}.{micros % 1_000_000:06d})"


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


class _LogFile(logging.FileHandler):
    """A log file already opened (as ``fd``) by ckpt."""

    def __init__(self, path: str, fd: int):
        self._fd = fd
        # a name may hold bytes that are not UTF-8 (surrogate escapes): log them escaped
        super().__init__(path, mode="w", encoding="utf-8", errors="backslashreplace")

    def _open(self):  # type: ignore[no-untyped-def]
        return open(self._fd, "w", encoding=self.encoding, errors=self.errors)


def setup(verbosity: int = 2, log_file: str | None = None, images_dir: str | None = None,
          create_dir: bool = False) -> None:
    """Send ckpt's log to stderr, or to ``log_file`` (relative to ``images_dir``, which
    a dump creates and a restore expects to exist). A log file in that folder is made
    anew, as images are (kernel/safefs.py): a symlink planted under its name in a
    folder others can write is removed, not written through."""
    root = logging.getLogger("ckpt")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    level = _LEVELS.get(max(0, min(verbosity, 4)), logging.DEBUG)
    if log_file:
        try:
            handler: logging.Handler
            if not os.path.isabs(log_file) and images_dir:
                if create_dir:
                    os.makedirs(images_dir, mode=0o700, exist_ok=True)
                elif not os.path.isdir(images_dir):
                    raise CkptError(f"the images folder {images_dir} does not exist")
                log_file = os.path.join(images_dir, log_file)
                handler = _LogFile(log_file, safefs.create_path(log_file))
            else:  # a path the user named: written as named, as criu does
                handler = logging.FileHandler(log_file, mode="w", errors="backslashreplace")
        except OSError as e:
            raise CkptError(f"cannot write the log file {log_file}: "
                            f"{e.strerror or e} ({e.filename or log_file})") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CriuFormatter(time.time()))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def to_file() -> bool:
    """Whether ckpt's log goes to a file (-o LOG) rather than stderr."""
    return any(isinstance(h, logging.FileHandler)
               for h in logging.getLogger("ckpt").handlers)


def failure(what: str, e: BaseException, *, always: bool = False) -> None:
    """Write the failure ``e`` of ``what`` (a command, a request) to the log, as an
    error raised where ``e`` was, then at -v4 the exception behind it (its traceback,
    with its causes). Only to a log file unless ``always``: on stderr the caller's own
    line already says it."""
    if not (always or to_file()):
        return
    log = logging.getLogger("ckpt")
    message = str(e) if isinstance(e, CkptError) else f"internal error: {type(e).__name__}: {e}"
    tb = traceback.extract_tb(e.__traceback__)
    path, line = (tb[-1].filename, tb[-1].lineno or 0) if tb else (__file__, 0)
    record = log.makeRecord(log.name, logging.ERROR, path, line, "%s failed: %s",
                            (what, message), None)
    log.handle(record)
    if not isinstance(e, CkptError):  # a bug: its traceback at every level
        log.error("%s", "".join(traceback.format_exception(e)).rstrip())
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("the exception behind it:\n%s",
                  "".join(traceback.format_exception(e)).rstrip())
