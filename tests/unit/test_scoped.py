"""kernel/scoped.py: blocks without contextlib."""

from __future__ import annotations

import pytest

from ckpt.kernel.scoped import Scope, contextmanager, once


@contextmanager
def noted(log: list[str], name: str, swallow: bool = False):  # type: ignore[no-untyped-def]
    log.append(f"enter {name}")
    try:
        yield name
    except ValueError:
        log.append(f"caught {name}")
        if not swallow:
            raise
    finally:
        log.append(f"leave {name}")


def test_a_block_enters_leaves_and_passes_exceptions() -> None:
    log: list[str] = []
    with noted(log, "a") as value:
        assert value == "a"
    with pytest.raises(ValueError, match="boom"), noted(log, "b"):
        raise ValueError("boom")
    with noted(log, "c", swallow=True):
        raise ValueError("swallowed")
    with pytest.raises(KeyError), noted(log, "d"):
        raise KeyError("passes")
    assert log == ["enter a", "leave a", "enter b", "caught b", "leave b", "enter c",
                   "caught c", "leave c", "enter d", "leave d"]
    assert noted.__name__ == "noted"


def test_a_scope_leaves_the_last_first_and_raises_the_last_error() -> None:
    log: list[str] = []
    scope = Scope()
    assert scope.enter(noted(log, "a")) == "a"
    scope.enter(noted(log, "b"))
    scope.close()
    assert log == ["enter a", "enter b", "leave b", "leave a"]

    @contextmanager
    def failing():  # type: ignore[no-untyped-def]
        yield
        raise ValueError("on leaving")

    log.clear()
    scope = Scope()
    scope.enter(noted(log, "a"))
    scope.enter(failing())
    with pytest.raises(ValueError, match="on leaving"):
        scope.close()
    assert log == ["enter a", "caught a", "leave a"]  # a saw the error go by


def test_once_computes_once_per_arguments() -> None:
    calls: list[int] = []

    @once
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert (square(3), square(3), square(4)) == (9, 9, 16) and calls == [3, 4]


def test_a_callback_is_called_in_its_turn_and_the_error_goes_on() -> None:
    """``callback`` (ExitStack's): called when the scope is left, among the blocks in the
    reverse order of their coming, even when a block left after it raised."""
    log: list[str] = []
    scope = Scope()
    scope.enter(noted(log, "a"))
    scope.callback(lambda: log.append("called"))

    @contextmanager
    def failing():  # type: ignore[no-untyped-def]
        yield
        raise ValueError("on leaving")

    scope.enter(failing())
    with pytest.raises(ValueError, match="on leaving"):
        scope.close()
    assert log == ["enter a", "called", "caught a", "leave a"]
