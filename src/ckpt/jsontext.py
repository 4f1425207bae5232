"""JSON text as ckpt writes it, compact with keys sorted, by json's C encoder without
the ``json`` package: importing that compiles regular expressions for its Python
encoder and its decoder (with ``re`` and ``enum``, several ms of a command's start-up).
Reading JSON (``loads``) imports ``json``."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

try:
    from _json import encode_basestring_ascii as _ascii
    from _json import make_encoder as _make_encoder
except ImportError:  # a Python without json's C accelerator
    _make_encoder = None


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
    import json
    return json.loads(text)
