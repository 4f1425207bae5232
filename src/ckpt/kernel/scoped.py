"""Blocks that hold something for their duration, without ``contextlib``: importing it
imports ``functools`` and ``collections`` (about 2 ms of each command's start-up).
``contextmanager`` makes a generator function a context manager as contextlib's
does; ``Scope`` holds context managers entered one by one and leaves them in the
reverse order (contextlib's ``ExitStack``, for what ckpt uses of it); ``once``
keeps a function's results (``functools.cache``)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import TracebackType
    from typing import Any


class _Block:
    """The context manager of one call of a generator function: ``__enter__`` runs it
    to its ``yield``, ``__exit__`` on to its end, or throws the block's exception in."""

    __slots__ = ("_gen",)

    def __init__(self, gen: Generator[Any, None, None]):
        self._gen = gen

    def __enter__(self) -> Any:
        try:
            return next(self._gen)
        except StopIteration:
            raise RuntimeError("generator didn't yield") from None

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if kind is None:
            try:
                next(self._gen)
            except StopIteration:
                return False
            raise RuntimeError("generator didn't stop")
        if value is None:
            value = kind()
        try:
            self._gen.throw(value)
        except StopIteration as e:
            return e is not value  # the generator swallowed it: the block goes on
        except BaseException as e:
            if e is value:  # passed through: raised from the block as it was
                e.__traceback__ = tb
                return False
            raise
        raise RuntimeError("generator didn't stop after throw()")


def contextmanager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``@contextmanager`` over a generator function that yields once."""
    def block(*args: Any, **kwargs: Any) -> _Block:
        return _Block(fn(*args, **kwargs))
    block.__name__, block.__qualname__, block.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    block.__wrapped__ = fn  # type: ignore[attr-defined]
    return block


class _Callback:
    """A function called on leaving, whatever the block raised (which goes on)."""

    def __init__(self, fn: Callable[[], object]):
        self.fn = fn

    def __exit__(self, *exc: object) -> bool:
        self.fn()
        return False


class Scope:
    """Context managers entered one by one (``enter``) and left together, the last
    first (``close``): an exception one raises goes to those left after it, the last
    one raised out of ``close``."""

    def __init__(self) -> None:
        self._held: list[Any] = []

    def enter(self, manager: Any) -> Any:
        value = manager.__enter__()
        self._held.append(manager)
        return value

    def callback(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` when the scope is left, in its turn (``ExitStack.callback``)."""
        self._held.append(_Callback(fn))

    def close(self) -> None:
        error: BaseException | None = None
        while self._held:
            manager = self._held.pop()
            try:
                if error is None:
                    manager.__exit__(None, None, None)
                elif manager.__exit__(type(error), error, error.__traceback__):
                    error = None
            except BaseException as e:
                error = e
        if error is not None:
            raise error


def once(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` computed once for each set of (hashable, positional) arguments."""
    results: dict[tuple[Any, ...], Any] = {}

    def cached(*args: Any) -> Any:
        if args not in results:
            results[args] = fn(*args)
        return results[args]
    cached.__name__, cached.__qualname__, cached.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    cached.__wrapped__ = fn  # type: ignore[attr-defined]
    return cached
