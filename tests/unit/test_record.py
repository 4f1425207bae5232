"""kernel/record.py: ckpt's dataclasses, their methods written on first use."""

from __future__ import annotations

import pytest

from ckpt.kernel.record import FrozenInstanceError, asdict, dataclass, field, replace


@dataclass
class Point:
    """Two fields, one with a default, one with a factory."""

    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Key:
    """Frozen: hashable, not assignable."""

    a: int
    b: str = "b"


@dataclass
class Own:
    """A method of its own is kept."""

    v: int

    def __repr__(self) -> str:
        return "mine"


def test_init_defaults_factory_repr_eq() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 2, [])
    assert Point(1).tags is not p.tags  # a new list each time
    assert repr(Point(3, 4, ["t"])) == "Point(x=3, y=4, tags=['t'])"
    assert Point(1, tags=[]) == Point(1) and Point(1) != Point(2)
    assert Point(1) != (1, 2, [])
    assert Point.y == 2 and not hasattr(Point, "tags")  # as dataclasses leaves them
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        hash(Point(1))


def test_frozen_is_hashable_and_refuses_assignment() -> None:
    k = Key(1)
    assert {k: 1}[Key(1, "b")] == 1 and hash(k) == hash(Key(1))
    with pytest.raises(FrozenInstanceError):
        k.a = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del k.b  # type: ignore[misc]


def test_replace_asdict_and_methods_of_its_own() -> None:
    assert replace(Key(1), b="c") == Key(1, "c")
    with pytest.raises(TypeError):
        replace(Key(1), z=1)
    assert asdict(Point(1, 5)) == {"x": 1, "y": 5, "tags": []}
    assert repr(Own(1)) == "mine" and Own(1) == Own(1)


def test_a_default_before_a_field_without_is_refused() -> None:
    with pytest.raises(TypeError):
        @dataclass
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]
