"""Standard modules whose import ckpt's commands put off until first use: ``inspect``,
which ``dataclasses`` imports but uses only for classes without a docstring, costs
each command about 5 ms at start-up; ``traceback`` (with ``linecache``, ``tokenize``
and ``token``), which ``logging`` and ckpt's log import but use only to show an
exception, about 2 ms."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

DEFERRED = ("inspect", "traceback")


class _Deferred(type(sys)):  # types.ModuleType, without importing types
    """Stands for a module not imported yet: the first attribute asked for imports it."""

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_deferred_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = __import__(self.__name__)
            self.__dict__["_deferred_real"] = real
        return getattr(real, name)


def defer_imports() -> None:
    """Put off the imports of ``DEFERRED`` in this process (a command's, not a program
    that imports ckpt as a library: it may have imported them already, or want them)."""
    for name in DEFERRED:
        if name not in sys.modules:
            sys.modules[name] = _Deferred(name)
