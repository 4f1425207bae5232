"""Logging set-up shared by the CLI and API callers: -o LOG inside the image
folder, -v0..-v4 as in criu, lines in criu's form so that tools reading criu's
logs read ckpt's.

Each line starts with the time since the log began, ``(SS.uuuuuu)``; errors and
warnings then say ``Error (FILE:LINE): `` and ``Warn  (FILE:LINE): `` as criu's
do, other lines name ckpt's part (``ckpt.dump: ``). A failure (``failure``) is
written to the log file with the place it was raised, and at -v4 with the
exception behind it.

ckpt's modules log through ``logger(name)``, which stands for
``logging.getLogger(name)`` and imports ``logging`` (about 3 ms of a command's
start-up, with ``threading`` and ``string``) only for a record to be made: a
command's ``setup`` opens the log file at once but leaves the handler (logfile.py)
to the first record at its level or above, so that a dump at the default
verbosity, which logs no warning, never imports it. With ``logging`` imported
already (a program using ckpt as a library, the RPC server) the set-up is made at
once, as is every record a ``logger`` gets: they go where ``logging`` sends them.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

from .errors import CkptError
from .kernel import interrupts, safefs

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50  # logging's levels
_LEVELS = {0: CRITICAL, 1: ERROR, 2: WARNING, 3: INFO, 4: DEBUG}


def timestamp(seconds: float) -> str:
    """criu's ``(seconds.micro)``: at least two digits of seconds, six of microseconds."""
    micros = max(0, round(seconds * 1_000_000))
    return f"({micros // 1_000_000:02d}.{micros % 1_000_000:06d})"


class _SetUp:
    """What ``setup`` chose, not installed in ``logging`` yet: the level, and the log
    file (path, fd and encoding) or None for stderr."""

    def __init__(self, level: int, file: tuple[str, int, str | None] | None, start: float):
        self.level = level
        self.file = file
        self.start = start

    def install(self) -> None:
        import logging

        from .logfile import CriuFormatter, LogFile
        root = logging.getLogger("ckpt")
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        handler: logging.Handler
        if self.file is not None:
            handler = LogFile(*self.file)
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(CriuFormatter(self.start))
        root.addHandler(handler)
        root.setLevel(self.level)
        root.propagate = False


_pending: list[_SetUp] = []  # setup's choice while logging is not imported
_installing = _thread.allocate_lock()


def _install_pending() -> None:
    # The terminating signals held: an exception cut into the opening of the log file
    # (-o) closed its fd, and the next try, the failure's own report, found it gone
    # (EBADF, printed as a traceback).
    with _installing, interrupts.held():
        if _pending:
            _pending[0].install()
            _pending.clear()


class Logger:
    """``logging.getLogger(name)``, imported on its first record (module doc): the
    methods ckpt's modules use, each record attributed to its caller's line."""

    __slots__ = ("name", "_real")

    def __init__(self, name: str):
        self.name = name
        self._real: Any = None

    def real(self) -> Any:
        """The ``logging.Logger`` this one stands for."""
        if _pending:
            _install_pending()
        if self._real is None:
            import logging
            self._real = logging.getLogger(self.name)
        return self._real

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802  # logging's name
        if _pending and level < _pending[0].level:
            return False
        return bool(self.real().isEnabledFor(level))

    def _log(self, level: int, msg: object, args: tuple[object, ...],
             kwargs: dict[str, Any]) -> None:
        if _pending and level < _pending[0].level:
            return
        # the caller's frame: past this method and the one that called it
        self.real().log(level, msg, *args, stacklevel=3, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(ERROR, msg, args, kwargs)


def logger(name: str) -> Logger:
    """The logger of ckpt's part ``name`` (``ckpt.dump``...)."""
    return Logger(name)


def setup(verbosity: int = 2, log_file: str | None = None, images_dir: str | None = None,
          create_dir: bool = False) -> None:
    """Send ckpt's log to stderr, or to ``log_file`` (relative to ``images_dir``, which
    a dump creates and a restore expects to exist). A log file in that folder is made
    anew, as images are (kernel/safefs.py): a symlink planted under its name in a
    folder others can write is removed, not written through."""
    level = _LEVELS.get(max(0, min(verbosity, 4)), DEBUG)
    file = None
    if log_file:
        try:
            if not os.path.isabs(log_file) and images_dir:
                if create_dir:
                    os.makedirs(images_dir, mode=0o700, exist_ok=True)
                elif not os.path.isdir(images_dir):
                    raise CkptError(f"the images folder {images_dir} does not exist")
                log_file = os.path.join(images_dir, log_file)
                file = (log_file, safefs.create_path(log_file), "utf-8")
            else:  # a path the user named: written as named, as criu does
                file = (log_file, os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                          | os.O_CLOEXEC, 0o666), None)
        except OSError as e:
            raise CkptError(f"cannot write the log file {log_file}: "
                            f"{e.strerror or e} ({e.filename or log_file})") from None
    chosen = _SetUp(level, file, time.time())
    with _installing:
        _pending.clear()
        if "logging" in sys.modules:
            chosen.install()
        else:
            _pending.append(chosen)


def to_file() -> bool:
    """Whether ckpt's log goes to a file (-o LOG) rather than stderr."""
    if _pending:
        return _pending[0].file is not None
    if "logging" not in sys.modules:
        return False
    import logging
    return any(isinstance(h, logging.FileHandler)
               for h in logging.getLogger("ckpt").handlers)


def fds() -> list[int]:
    """The fds ckpt's log is written to."""
    if _pending:
        file = _pending[0].file
        return [file[1] if file is not None else sys.stderr.fileno()]
    if "logging" not in sys.modules:
        return []
    import logging
    out = []
    for h in logging.getLogger("ckpt").handlers:
        stream = getattr(h, "stream", None)
        try:
            out.append(stream.fileno())  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            pass
    return out


def failure(what: str, e: BaseException, *, always: bool = False) -> None:
    """Write the failure ``e`` of ``what`` (a command, a request) to the log, as an
    error raised where ``e`` was, then at -v4 the exception behind it (its traceback,
    with its causes). Only to a log file unless ``always``: on stderr the caller's own
    line already says it."""
    if not (always or to_file()):
        return
    import logging
    import traceback
    _install_pending()
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
