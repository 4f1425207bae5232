"""The schemas of the JSON images: what each field may hold, checked before a restore
uses any of it.

Images are untrusted input. Each module that writes part of an image declares the
schema of what it writes next to the code that writes it, one line per field,
with the field types below (``Obj(start=ADDR, guards=Opt(List(...)))``);
``check`` walks a decoded image against its schema and raises ``ImageError``
naming the file and the field (``.../mm-12.json: vmas[3].end: ...``). Objects are
strict: a field the schema does not know is refused, so a field added to an image
is one line in the schema of the module that writes it. The walk costs nothing
until something is wrong: the path of a bad field is built on the way out.
"""

from __future__ import annotations

import binascii

from .errors import ImageError
from .kernel.lazyre import LazyPattern

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

PATH_MAX = 4096
U64_MAX = (1 << 64) - 1


class Bad(Exception):
    """A value that does not fit its schema; ``path`` is filled in on the way out."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        self.path: list[str] = []

    def where(self) -> str:
        out = ""
        for part in reversed(self.path):
            out += part if part.startswith("[") or not out else "." + part
        return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Field:
    """A field type: ``check`` raises ``Bad`` for a value it does not allow."""

    def check(self, value: Any) -> None:
        raise NotImplementedError


class Int(Field):
    """An integer in [lo, hi] (never a bool), optionally a multiple of ``align``."""

    def __init__(self, lo: int = -(1 << 63), hi: int = U64_MAX, align: int = 1):
        self.lo, self.hi, self.align = lo, hi, align

    def check(self, value: Any) -> None:
        if type(value) is not int:
            raise Bad(f"not an integer: {_show(value)}")
        if not self.lo <= value <= self.hi:
            raise Bad(f"{value} is out of range [{self.lo}, {self.hi}]")
        if value % self.align:
            raise Bad(f"{value:#x} is not a multiple of {self.align:#x}")


class _Bool(Field):
    def check(self, value: Any) -> None:
        if type(value) is not bool:
            raise Bad(f"not true or false: {_show(value)}")


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# Patterns of fields every restore reads (file names, ids), each with a test that says
# the same without a regular expression: compiling one costs about 0.3 ms.
_PLAIN_PATTERNS: dict[str, Callable[[str], bool]] = {
    "[0-9]+": _digits,
    r"pages-[0-9]+\.img": lambda v: v.startswith("pages-") and v.endswith(".img")
    and _digits(v[6:-4]),
    r"[A-Za-z0-9][A-Za-z0-9_.-]*": lambda v: v[:1].isalnum() and set(v) <= _NAME_CHARS,
}


class Str(Field):
    """A string of at most ``max`` characters, without NUL; ``pattern``: a regular
    expression it must match whole; ``choices``: the only values allowed."""

    def __init__(self, max: int = PATH_MAX, pattern: str | None = None,
                 choices: Iterable[str] | None = None):
        self.max = max
        self.form = pattern
        self.pattern: Callable[[str], object] | None = None
        if pattern is not None:
            regex = LazyPattern(pattern)  # compiled when first used
            self.pattern = _PLAIN_PATTERNS.get(pattern) or (lambda v: regex.fullmatch(v))
        self.choices = frozenset(choices) if choices is not None else None

    def check(self, value: Any) -> None:
        if type(value) is not str:
            raise Bad(f"not a string: {_show(value)}")
        if len(value) > self.max:
            raise Bad(f"longer than {self.max} characters")
        if "\0" in value:
            raise Bad("holds a NUL character")
        if self.choices is not None and value not in self.choices:
            raise Bad(f"{_show(value)} is not one of {', '.join(sorted(self.choices))}")
        if self.pattern is not None and not self.pattern(value):
            raise Bad(f"{_show(value)} is not of the form {self.form}")


class Path(Str):
    """A path as the kernel showed it (/proc links, maps): absolute unless ``relative``,
    at most PATH_MAX bytes, no NUL, and no ``.`` or ``..`` component nor empty one (the
    kernel never shows those, and a restore must not be led elsewhere by them)."""

    def __init__(self, relative: bool = False):
        super().__init__(PATH_MAX)
        self.relative = relative

    def check(self, value: Any) -> None:
        super().check(value)
        if not self.relative and not value.startswith("/"):
            raise Bad(f"{_show(value)} is not an absolute path")
        parts = value.split("/")
        inner = parts[1:] if value.startswith("/") else parts
        if value != "/" and any(p in ("", ".", "..") for p in inner):
            raise Bad(f"{_show(value)} has an empty, '.' or '..' component")


class Hex(Field):
    """Bytes as hex, at most ``max`` bytes."""

    def __init__(self, max: int = 1 << 20):
        self.max = max

    def check(self, value: Any) -> None:
        if type(value) is not str:
            raise Bad(f"not a hex string: {_show(value)}")
        if len(value) > 2 * self.max:
            raise Bad(f"more than {self.max} bytes")
        try:
            bytes.fromhex(value)
        except ValueError:
            raise Bad(f"not hex: {_show(value)}") from None


class B64(Field):
    """Bytes as base64, at most ``max`` bytes."""

    def __init__(self, max: int = 1 << 20):
        self.max = max

    def check(self, value: Any) -> None:
        if type(value) is not str:
            raise Bad(f"not a base64 string: {_show(value)}")
        if len(value) > 4 * (self.max + 2) // 3 + 4:
            raise Bad(f"more than {self.max} bytes")
        try:
            size = len(binascii.a2b_base64(value, strict_mode=True))
        except (binascii.Error, ValueError):
            raise Bad(f"not base64: {_show(value)}") from None
        if size > self.max:
            raise Bad(f"more than {self.max} bytes")


class Enum(Field):
    """One of a few values."""

    def __init__(self, *values: Any):
        self.values = values

    def check(self, value: Any) -> None:
        if not any(type(value) is type(v) and value == v for v in self.values):
            raise Bad(f"{_show(value)} is not one of {', '.join(map(repr, self.values))}")


class Null(Field):
    """None, or a value of ``inner``."""

    def __init__(self, inner: Field):
        self.inner = inner

    def check(self, value: Any) -> None:
        if value is not None:
            self.inner.check(value)


class Deferred(Field):
    """The field ``made()`` returns, made on first use: the schema of a module that is
    imported only when its part of an image is there (start-up)."""

    def __init__(self, made: Callable[[], Field]):
        self.made = made
        self.field: Field | None = None

    def check(self, value: Any) -> None:
        if self.field is None:
            self.field = self.made()
        self.field.check(value)


class Either(Field):
    """A value of any of ``alternatives`` (the error is the last one's)."""

    def __init__(self, *alternatives: Field):
        self.alternatives = alternatives

    def check(self, value: Any) -> None:
        for alt in self.alternatives[:-1]:
            try:
                alt.check(value)
                return
            except Bad:
                continue
        self.alternatives[-1].check(value)


class List(Field):
    """A list of values of ``item``, between ``min`` and ``max`` long."""

    def __init__(self, item: Field, max: int = 1 << 24, min: int = 0):
        self.item, self.max, self.min = item, max, min

    def check(self, value: Any) -> None:
        if type(value) is not list:
            raise Bad(f"not a list: {_show(value)}")
        if not self.min <= len(value) <= self.max:
            raise Bad(f"{len(value)} entries, not between {self.min} and {self.max}")
        check_item = self.item.check
        for i, v in enumerate(value):
            try:
                check_item(v)
            except Bad as e:
                e.path.append(f"[{i}]")
                raise


class Tup(Field):
    """A list of exactly one value of each of ``items``, in order."""

    def __init__(self, *items: Field):
        self.items = items

    def check(self, value: Any) -> None:
        if type(value) is not list or len(value) != len(self.items):
            raise Bad(f"not a list of {len(self.items)}: {_show(value)}")
        for i, (item, v) in enumerate(zip(self.items, value, strict=True)):
            try:
                item.check(v)
            except Bad as e:
                e.path.append(f"[{i}]")
                raise


class Opt:
    """Marks a field of an ``Obj`` that may be absent."""

    def __init__(self, field: Field):
        self.field = field


class Obj(Field):
    """A JSON object with exactly these fields (``Opt`` ones may be absent); any other
    field is refused. ``Obj(a=INT, b=Opt(STR))`` or ``Obj({"odd-name": INT})``."""

    def __init__(self, fields: dict[str, Field | Opt] | None = None, **more: Field | Opt):
        every = {**(fields or {}), **more}
        self.fields: dict[str, Field] = {}
        self.required: frozenset[str] = frozenset(
            k for k, f in every.items() if not isinstance(f, Opt))
        for k, f in every.items():
            self.fields[k] = f.field if isinstance(f, Opt) else f

    def extend(self, fields: dict[str, Field | Opt] | None = None, **more: Field | Opt
               ) -> Obj:
        """This object's fields and more (or some replaced)."""
        every: dict[str, Field | Opt] = {
            k: f if k in self.required else Opt(f) for k, f in self.fields.items()}
        return Obj({**every, **(fields or {}), **more})

    def check(self, value: Any) -> None:
        if type(value) is not dict:
            raise Bad(f"not an object: {_show(value)}")
        missing = self.required - value.keys()
        if missing:
            raise Bad(f"missing field {sorted(missing)[0]!r}")
        fields = self.fields
        for k, v in value.items():
            f = fields.get(k)
            if f is None:
                raise Bad(f"unknown field {_show(k)}")
            try:
                f.check(v)
            except Bad as e:
                e.path.append(k)
                raise


class Map(Field):
    """A JSON object used as a map: keys of ``key``, values of ``value``."""

    def __init__(self, value: Field, key: Str | None = None, max: int = 1 << 24):
        self.value, self.key, self.max = value, key or Str(), max

    def check(self, value: Any) -> None:
        if type(value) is not dict:
            raise Bad(f"not an object: {_show(value)}")
        if len(value) > self.max:
            raise Bad(f"more than {self.max} entries")
        for k, v in value.items():
            try:
                self.key.check(k)
            except Bad as e:
                raise Bad(f"key {_show(k)}: {e.message}") from None
            try:
                self.value.check(v)
            except Bad as e:
                e.path.append(k)
                raise


class Json(Field):
    """Any JSON value, nested at most ``depth`` deep (what ckpt only passes along)."""

    def __init__(self, depth: int = 8):
        self.depth = depth

    def check(self, value: Any, depth: int = 0) -> None:
        if depth > self.depth:
            raise Bad(f"nested more than {self.depth} deep")
        if isinstance(value, dict):
            for v in value.values():
                self.check(v, depth + 1)
        elif isinstance(value, list):
            for v in value:
                self.check(v, depth + 1)
        elif isinstance(value, str) and "\0" in value:
            raise Bad("holds a NUL character")


class Check(Field):
    """A field checked by a function that raises ``Bad`` (what the types above cannot
    say: a relation between two fields)."""

    def __init__(self, inner: Field, test: Callable[[Any], None]):
        self.inner, self.test = inner, test

    def check(self, value: Any) -> None:
        self.inner.check(value)
        self.test(value)


# The usual ones.
BOOL = _Bool()
INT = Int()
U8 = Int(0, 0xFF)
U16 = Int(0, 0xFFFF)
U32 = Int(0, 0xFFFFFFFF)
S32 = Int(-(1 << 31), (1 << 31) - 1)
U64 = Int(0, U64_MAX)
S64 = Int(-(1 << 63), (1 << 63) - 1)
NAT = Int(0, (1 << 63) - 1)  # a size, an offset, a count
PID = Int(1, 1 << 22)  # PID_MAX_LIMIT
PID0 = Int(0, 1 << 22)  # a PID or 0 for none
UID = U32
SIGNAL = Int(1, 64)
STR = Str()
PATH = Path()
NAME = Str(255)


def check(value: Any, schema: Field, where: str) -> None:
    """Raise ``ImageError`` "WHERE: FIELD: what is wrong" unless ``value`` fits ``schema``."""
    try:
        schema.check(value)
    except Bad as e:
        field = e.where()
        raise ImageError(f"{where}: {field + ': ' if field else ''}{e.message}") from None
    except RecursionError:
        raise ImageError(f"{where}: nested too deep") from None


def refuse(where: str, field: str, message: str) -> ImageError:
    """The error for what the schema allows but the image's other parts contradict."""
    return ImageError(f"{where}: {field}: {message}")
