"""Logging set-up shared by the CLI and API callers: -o LOG inside the image
folder, -v0..-v4 as in criu."""

from __future__ import annotations

import logging
import os
import sys

from .errors import CkptError

_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO,
           4: logging.DEBUG}


def setup(verbosity: int = 2, log_file: str | None = None, images_dir: str | None = None,
          create_dir: bool = False) -> None:
    """Send ckpt's log to stderr, or to ``log_file`` (relative to ``images_dir``, which
    a dump creates and a restore expects to exist)."""
    root = logging.getLogger("ckpt")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    level = _LEVELS.get(max(0, min(verbosity, 4)), logging.DEBUG)
    if log_file:
        try:
            if not os.path.isabs(log_file) and images_dir:
                if create_dir:
                    os.makedirs(images_dir, exist_ok=True)
                elif not os.path.isdir(images_dir):
                    raise CkptError(f"the images folder {images_dir} does not exist")
                log_file = os.path.join(images_dir, log_file)
            # a name may hold bytes that are not UTF-8 (surrogate escapes): log them escaped
            handler: logging.Handler = logging.FileHandler(log_file, mode="w",
                                                           errors="backslashreplace")
        except OSError as e:
            raise CkptError(f"cannot write the log file {log_file}: "
                            f"{e.strerror or e} ({e.filename or log_file})") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("(%(relativeCreated)9.3f) %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
