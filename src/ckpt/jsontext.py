"""JSON text as ckpt writes and reads it, through json's C encoder and scanner without
the ``json`` package: importing that compiles regular expressions for its Python
encoder and decoder (with ``re`` and ``enum``, several ms of a command's start-up).
Text the scanner does not take whole is read again by ``json.loads``, which raises
its own error for it."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

try:
    from _json import encode_basestring_ascii as _ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # a Python without json's C accelerator
    _make_encoder = _make_scanner = None

_SPACE = " \t\n\r"  # what JSON allows around a value


class _Options:
    """What json.loads gives its scanner by default."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


def _unknown(obj: object) -> Any:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True, separators=(",", ":"))``."""
    if _make_encoder is None:
        import json
        return json.dumps(obj, sort_keys=True, separators=(",", ":"))
    # markers (circular references), default, string encoder, indent, key and item
    # separators, sort_keys, skipkeys, allow_nan: as json.dumps gives them
    encode = _make_encoder({}, _unknown, _ascii, None, ":", ",", True, False, True)
    return "".join(encode(obj, 0))


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``."""
    if _make_scanner is not None:
        try:
            doc = text.decode() if isinstance(text, bytes | bytearray) else text
            start = len(doc) - len(doc.lstrip(_SPACE))
            value, end = _make_scanner(_Options)(doc, start)
            if end == len(doc.rstrip(_SPACE)):
                return value
        except (ValueError, StopIteration):  # said again, as json says it, below
            pass
    import json
    return json.loads(text)
