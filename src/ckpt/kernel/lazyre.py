"""Regular expressions compiled on first use: compiling every pattern of every module
at import would make each command pay, at start-up, for patterns it never uses."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    import re
    from typing import Any


class LazyPattern:
    """Stands for ``re.compile(pattern, flags)``: the first method used compiles it."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str | bytes, flags: int = 0):
        self._args = (pattern, flags)
        self._compiled: re.Pattern[Any] | None = None

    def __getattr__(self, name: str) -> Any:  # match, search, finditer, pattern, ...
        if self._compiled is None:
            import re  # here: re (with enum) costs a command that compiles no pattern
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)
