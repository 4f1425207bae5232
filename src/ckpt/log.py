"""Logging set-up shared by the CLI and API callers: -o LOG inside the image
folder, -v0..-v4 as in criu."""

from __future__ import annotations

import logging
import os
import sys

_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO,
           4: logging.DEBUG}


def setup(verbosity: int = 2, log_file: str | None = None, images_dir: str | None = None
          ) -> None:
    """Send ckpt's log to stderr, or to ``log_file`` (relative to ``images_dir``)."""
    root = logging.getLogger("ckpt")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    level = _LEVELS.get(max(0, min(verbosity, 4)), logging.DEBUG)
    if log_file:
        if not os.path.isabs(log_file) and images_dir:
            os.makedirs(images_dir, exist_ok=True)
            log_file = os.path.join(images_dir, log_file)
        handler: logging.Handler = logging.FileHandler(log_file, mode="w")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("(%(relativeCreated)9.3f) %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
