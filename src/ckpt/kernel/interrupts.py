"""SIGINT, SIGTERM, SIGHUP and SIGPIPE turned into an exception, and sections they wait for.

The ckpt command makes each of these signals raise ``Interrupted`` (once), so
that a dump or restore stopped by ``timeout``, a service manager or a closed
terminal rolls back exactly as a failed one does. Code that must not be cut in
the middle (an injected syscall, the rollback itself) runs under ``held()``:
the signals are blocked meanwhile and arrive as soon as it ends.

``record()`` is for start-up, before anything could catch the exception: a
signal is only noted, and ``install()`` raises it. This module imports only
the builtins ``_signal``, ``_thread`` and ``posix`` so that it can be loaded first and fast.
"""

from __future__ import annotations

import _signal
import _thread
import posix

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType, TracebackType
    from typing import Any

SIGINT, SIGHUP, SIGPIPE, SIGTERM = 2, 1, 13, 15
TERMINATING = (SIGINT, SIGTERM, SIGHUP, SIGPIPE)
_NAMES = {SIGINT: "SIGINT", SIGTERM: "SIGTERM", SIGHUP: "SIGHUP", SIGPIPE: "SIGPIPE"}

_received: list[int] = []
_raising = False
_again = False  # the first signal was sent again, to be raised out of the import machinery
_MAIN = _thread.get_ident()  # Python runs signal handlers in the main thread, which loads this
_holding = 0  # held() sections the main thread is in
_deferred = False  # a signal came during one (through another thread): raised at its end


class Interrupted(BaseException):
    """ckpt got a terminating signal; unwinding rolls back what it was doing."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {_NAMES.get(signum, signum)}")

    @property
    def exit_status(self) -> int:
        """What a shell reports for a command killed by this signal."""
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    global _again, _deferred
    if _received and not _again:  # the first one is handled: a second must not cut the rollback
        return
    if not _received:
        _received.append(signum)
    _again = False
    if not _raising:
        return
    if _holding:  # taken by another thread, whose mask lets it through: held off all the same
        _deferred = True
        return
    while frame is not None and frame.f_code is _handler.__code__:  # run from itself
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        # Python's import machinery runs (a module lock's weakref callback, where an
        # exception would be printed and dropped, and the dump go on): the signal is
        # sent again, by another thread, for this handler to raise it once that code
        # has returned (sent from this thread, it would run the handler at once, from
        # here); to this thread, so that a held() section still holds it off.
        _again = True
        _thread.start_new_thread(_signal.pthread_kill, (_thread.get_ident(), _received[0]))
        return
    raise Interrupted(_received[0])


def record() -> None:
    """From now on, only note each terminating signal (for ``install`` to raise)."""
    global _raising
    _raising = False
    for sig in TERMINATING:
        _signal.signal(sig, _handler)


def install() -> None:
    """From now on, each terminating signal raises ``Interrupted`` (the first one
    only); one noted since ``record`` is raised at once."""
    global _raising
    record()
    _raising = True
    if _received:
        raise Interrupted(_received[0])


def only_note() -> bool:
    """From now on a terminating signal is only noted: what it would undo is done (a
    restored tree runs). Whether signals raised until now, for ``resume``."""
    global _raising
    was, _raising = _raising, False
    return was


def resume(raising: bool) -> None:
    """Signals raise again if ``raising`` (what ``only_note`` returned); one noted
    meanwhile is raised at once."""
    global _raising
    _raising = raising
    if raising and _received:
        raise Interrupted(_received[0])


def within(error: BaseException) -> Interrupted | None:
    """The ``Interrupted`` that ``error`` wraps, if any: Python 3.11 turns an
    exception raised while a class is built (a dataclass's ``__set_name__``, in a
    module imported late) into a RuntimeError whose cause it is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def received() -> int | None:
    """The terminating signal ckpt got, if any."""
    return _received[0] if _received else None


class held:
    """Block the terminating signals for a ``with`` block; one that came meanwhile is
    handled when the block ends. In the main thread, one that another thread of ckpt
    took (its mask lets it in, and Python runs the handler in the main thread) is
    held off too, until the outermost block ends."""

    def __enter__(self) -> None:
        global _holding
        self._old = _signal.pthread_sigmask(_signal.SIG_BLOCK, TERMINATING)
        self._main = _thread.get_ident() == _MAIN
        if self._main:
            _holding += 1

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _holding, _deferred
        if self._main:
            _holding -= 1
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self._old)
        if self._main and not _holding and _deferred:
            _deferred = False
            raise Interrupted(_received[0])


def join(thread: Any) -> None:
    """``thread.join()`` (a ``threading.Thread``), a terminating signal raised only
    between waits of at most 50 ms, never inside one: Python 3.11's join, cut by the
    exception the handler raises, takes a thread that still runs for stopped (it
    releases the thread's lock on its behalf, bpo-45274), so that the next join returns
    at once. A dump cut so by SIGTERM closed its page files under the copy still
    running, which started a writer thread after the others were told to end, and
    waited for it for good."""
    while True:
        with held():
            thread.join(0.05)
            if not thread.is_alive():
                return


def fork(how: Callable[[], int] = posix.fork) -> int:
    """``os.fork`` (or ``how``) with the terminating signals held until it returns:
    one that came while Python ran its at-fork hooks (logging's lock) would be raised
    there, printed as "Exception ignored" and dropped, and the dump go on. Raised
    after the fork, in the parent, it first kills and reaps the child, which nobody
    would know of; the child, as the kernel does, leaves a held-off one to it."""
    global _deferred
    pid = -1
    try:
        with held():
            pid = how()
            if pid == 0 and _deferred:
                _deferred = False
                _received.clear()
    except Interrupted:
        if pid > 0:
            posix.kill(pid, 9)
            posix.waitpid(pid, 0)
        raise
    return pid
