"""How the ``ckpt`` and ``ckpt-criu`` commands start and end quickly, as a command
needs and a program that imports ckpt as a library does not: ``begin`` (from
ckpt/__init__, before any other import of ckpt's) puts off ``inspect``
(deferred.py), takes the compiled methods of dataclasses (dccache.py), imports ckpt's
modules from the one file of their code (modcache.py) and stops the
cyclic garbage collector, which would otherwise sweep the objects of the imports
again and again (7 to 10 ms); ``started`` (once the command's modules are in)
freezes those objects and lets it run again; ``end`` leaves without Python's
teardown of some 150 modules (about 10 ms), after what that teardown would do that
matters: threads other than daemons waited for, the ``atexit`` functions (logging's
flush and close) and the standard streams flushed."""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import NoReturn


def begin() -> None:
    from .deferred import defer_imports
    defer_imports()  # before a command's modules import dataclasses
    from .dccache import install
    install()
    from . import modcache
    modcache.install()
    gc.disable()


def started() -> None:
    """The command's modules are imported: the objects so far stay (no collection
    will look at them again) and the collector runs from here on."""
    from . import modcache
    modcache.release()
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def end(status: int) -> NoReturn:
    """Exit with ``status`` now, after what Python's own exit does first: wait for the
    threads that are not daemons, run the atexit functions, flush stdout and stderr."""
    import atexit
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if not thread.daemon and thread is not threading.main_thread():
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, or gone (None)
            pass
    os._exit(status & 0xFF)
