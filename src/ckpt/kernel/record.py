"""ckpt's dataclasses: ``@dataclass`` classes of named fields, with the ``__init__``,
``__repr__``, ``__eq__`` (and, frozen, ``__hash__``) that ``dataclasses`` would write,
each written when it is first called rather than when its class is made.

The standard ``dataclasses`` writes and compiles every method of every class as its
module is imported, and imports ``re``, ``enum``, ``copy`` and ``inspect`` first: about
10 ms of each command's start-up for ckpt's ~60 classes, most of which a command never
makes or compares. Here a class is made by reading its annotations; a method is written
on its first call (through a stand-in that puts the real one in its place), compiled
through ``compiler`` (dccache.py keeps the code of every method in a file).

What is supported is what ckpt uses: fields from the class's own annotations (no
inheritance of fields, ``ClassVar`` left out), defaults, ``field(default_factory=...)``,
``frozen=True``, ``replace`` and ``asdict`` (of plain fields)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_MISSING = object()
_FIELDS = "__record_fields__"
CLASSES: list[type] = []  # every class made here, for dccache.build
METHODS = ("__init__", "__repr__", "__eq__", "__hash__")


def _compile(source: str) -> object:
    return compile(source, "<record>", "exec", dont_inherit=True)


compiler: Callable[[str], object] = _compile  # source -> code; dccache.install sets it


class FrozenInstanceError(AttributeError):
    """A field of a frozen instance assigned or deleted."""


class Field:
    """What ``field()`` returns: a default or a factory of defaults."""

    __slots__ = ("name", "default", "default_factory")

    def __init__(self, default: Any = _MISSING, default_factory: Any = _MISSING):
        self.name = ""
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING) -> Any:
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory)


def dataclass(cls: type | None = None, /, *, frozen: bool = False) -> Any:
    """``@dataclass`` or ``@dataclass(frozen=True)``."""
    def wrap(c: type) -> type:
        return _make(c, frozen)
    return wrap if cls is None else wrap(cls)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _make(cls: type, frozen: bool) -> type:
    own = cls.__dict__
    fields: list[Field] = []
    for name, annotation in own.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = own.get(name, _MISSING)
        f = value if isinstance(value, Field) else Field(value)
        f.name = name
        if isinstance(value, Field):  # the class shows the default itself, as dataclasses'
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        if fields and _has_default(fields[-1]) and not _has_default(f):
            raise TypeError(f"non-default argument {name!r} follows default argument")
        fields.append(f)
    setattr(cls, _FIELDS, (tuple(fields), frozen))
    cls.__match_args__ = tuple(f.name for f in fields)  # type: ignore[attr-defined]
    for method in ("__init__", "__repr__", "__eq__"):
        if method not in own:
            setattr(cls, method, _stand_in(cls, method))
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if not explicit_hash:
        cls.__hash__ = _stand_in(cls, "__hash__") if frozen else None  # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign,assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign,assignment]
    CLASSES.append(cls)
    return cls


def _has_default(f: Field) -> bool:
    return f.default is not _MISSING or f.default_factory is not _MISSING


def _stand_in(cls: type, method: str) -> Callable[..., Any]:
    """A method that writes the real ``method`` of ``cls``, puts it in its place and
    calls it."""
    def stand_in(self: Any, *args: Any, **kwargs: Any) -> Any:
        return write(cls, method)(self, *args, **kwargs)
    stand_in.__name__ = stand_in.__qualname__ = method
    stand_in.record_stand_in = True  # type: ignore[attr-defined]
    return stand_in


def unwritten(cls: type) -> list[str]:
    """The methods of ``cls`` still stand-ins (none written yet)."""
    return [m for m in METHODS if getattr(cls.__dict__.get(m), "record_stand_in", False)]


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def write(cls: type, method: str) -> Callable[..., Any]:
    """The real ``method`` of ``cls``, written, compiled and put on the class."""
    fields, frozen = cls.__dict__[_FIELDS]
    names = [f.name for f in fields]
    scope: dict[str, Any] = {"_MISSING": _MISSING}
    if method == "__init__":
        # frozen: the fields go straight into the instance's dict (its __setattr__
        # refuses them; dataclasses calls object.__setattr__ for each, a few times slower)
        params, body = ["self"], ["_own = self.__dict__"] if frozen else []
        for f in fields:
            value = f.name
            if f.default_factory is not _MISSING:
                scope[f"_f_{f.name}"] = f.default_factory
                params.append(f"{f.name}=_MISSING")
                value = f"_f_{f.name}() if {f.name} is _MISSING else {f.name}"
            elif f.default is not _MISSING:
                scope[f"_d_{f.name}"] = f.default
                params.append(f"{f.name}=_d_{f.name}")
            else:
                params.append(f.name)
            body.append(f"_own[{f.name!r}] = {value}" if frozen else f"self.{f.name} = {value}")
        source = f"def __init__({', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    elif method == "__repr__":
        shown = ", ".join(f"{n}={{self.{n}!r}}" for n in names)
        source = ("def __repr__(self):\n"
                  f"    return f'{{self.__class__.__qualname__}}({shown})'")
    elif method == "__eq__":
        mine = "".join(f"self.{n}," for n in names)
        theirs = "".join(f"other.{n}," for n in names)
        source = ("def __eq__(self, other):\n"
                  "    if other.__class__ is self.__class__:\n"
                  f"        return ({mine}) == ({theirs})\n"
                  "    return NotImplemented")
    elif method == "__hash__":
        source = f"def __hash__(self):\n    return hash(({''.join(f'self.{n},' for n in names)}))"
    else:
        raise ValueError(f"no method {method} is written")
    exec(compiler(source), scope)  # noqa: S102 - ckpt's own source, as dataclasses does
    fn = scope[method]
    fn.__qualname__ = f"{cls.__qualname__}.{method}"
    setattr(cls, method, fn)
    return fn  # type: ignore[no-any-return]


def fields(obj: Any) -> tuple[Field, ...]:
    return type(obj).__dict__[_FIELDS][0] if not isinstance(obj, type) \
        else obj.__dict__[_FIELDS][0]


def replace(obj: Any, **changes: Any) -> Any:
    """A copy of ``obj`` with ``changes``, as dataclasses.replace."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    unknown = set(changes) - values.keys()
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no field {sorted(unknown)[0]!r}")
    return type(obj)(**{**values, **changes})


def asdict(obj: Any) -> dict[str, Any]:
    """The fields of ``obj`` by name (values as they are: ckpt's are plain)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def is_record(cls: object) -> bool:
    return isinstance(cls, type) and _FIELDS in cls.__dict__
