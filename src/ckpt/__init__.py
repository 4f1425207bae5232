"""ckpt: checkpoint/restore of running Linux processes, in Python.

    import ckpt
    ckpt.dump(pid, "/tmp/images")              # the process is killed once saved
    pid = ckpt.restore("/tmp/images").pid      # back, same PID, running
"""

from __future__ import annotations

import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0] if _sys.argv else "") in ("ckpt", "ckpt-criu"):
    # The ckpt command: SIGINT and the like are noted from here on, and make it roll
    # back and exit once its main function runs (cli.py), never print a traceback.
    from .kernel import interrupts as _interrupts
    _interrupts.record()
    # Before cli.py's imports: a command starts as quickly as it can (command.py).
    from .command import begin as _begin
    _begin()

from .errors import CkptError, DumpError, ImageError, RestoreError, UnsupportedError
from .version import __version__


def dump(pid: int, images_dir: str, **kwargs):  # type: ignore[no-untyped-def]
    """Checkpoint process ``pid`` into ``images_dir``; see ``ckpt.dumper.dump``."""
    from .dumper import dump as _dump
    return _dump(pid, images_dir, **kwargs)


def pre_dump(pid: int, images_dir: str, **kwargs):  # type: ignore[no-untyped-def]
    """Save the memory of ``pid``'s tree while it keeps running, for a later incremental
    dump (``--prev-images-dir``); see ``ckpt.dumper.pre_dump``."""
    from .dumper import pre_dump as _pre_dump
    return _pre_dump(pid, images_dir, **kwargs)


def restore(images_dir: str, **kwargs):  # type: ignore[no-untyped-def]
    """Restore the process saved in ``images_dir``; see ``ckpt.restorer.restore``."""
    from .restorer import restore as _restore
    return _restore(images_dir, **kwargs)


__all__ = ["dump", "pre_dump", "restore", "CkptError", "DumpError", "ImageError", "RestoreError",
           "UnsupportedError", "__version__"]
