"""Protocol Buffers' wire format for the handful of messages criu's RPC uses:
messages decoded into dicts and encoded from them, driven by schema.py.

A small codec of our own instead of the ``protobuf`` package: importing that
costs tens of milliseconds a run (docs/rpc.md), and the RPC needs only varints,
length-delimited fields and nested messages (proto2, no packed fields).

Decoding is strict where a wrong message could mislead: a truncated varint or
field, a known field sent with another wire type, a string that is not UTF-8,
or a required field missing raise ``WireError``. Unknown fields are skipped
as Protocol Buffers says, and their numbers kept under ``UNKNOWN`` so that
the caller can say so.
"""

from __future__ import annotations

from .schema import MESSAGES, Field

TYPE_CHECKING = False  # typing is not imported, for speed
if TYPE_CHECKING:
    from typing import Any

UNKNOWN = "_unknown"  # key of the list of unknown field numbers in a decoded message

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_SCALAR_WIRE = {"int32": VARINT, "uint32": VARINT, "uint64": VARINT, "bool": VARINT,
                "enum": VARINT, "string": LEN}
_MAX_DEPTH = 8


class WireError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def _put_varint(value: int, out: bytearray) -> None:
    value &= (1 << 64) - 1  # negative int32s are sent as 64-bit two's complement
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _scalar(f: Field, raw: int) -> int | bool:
    if f.type == "bool":
        return raw != 0
    if f.type == "uint64":
        return raw & 0xFFFFFFFFFFFFFFFF
    raw &= 0xFFFFFFFF
    if f.type in ("int32", "enum") and raw & 0x80000000:
        return raw - (1 << 32)
    return raw


def decode(data: bytes, message: str) -> dict[str, Any]:
    """The fields of ``message`` encoded in ``data``, by name; repeated ones as lists."""
    out = _fields(data, message, 0)
    _check_required(out, message)
    return out


def _check_required(obj: dict[str, Any], message: str) -> None:
    for f in MESSAGES[message].values():
        if f.required and f.name not in obj:
            raise WireError(f"{message}: required field {f.name} missing")
        if f.type in MESSAGES and f.name in obj:
            for sub in obj[f.name] if f.repeated else [obj[f.name]]:
                _check_required(sub, f.type)


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A message field sent twice is the merge of both, as in protobuf."""
    for key, value in new.items():
        if isinstance(value, list) and isinstance(old.get(key), list):
            old[key] = old[key] + value
        elif isinstance(value, dict) and isinstance(old.get(key), dict):
            _merge(old[key], value)
        else:
            old[key] = value
    return old


def _fields(data: bytes, message: str, _depth: int) -> dict[str, Any]:
    if _depth > _MAX_DEPTH:
        raise WireError("messages nested too deep")
    fields = MESSAGES[message]
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"{message}: field number 0")
        f = fields.get(number)
        if wire == VARINT:
            raw, pos = _varint(data, pos)
            value: Any = raw
        elif wire == LEN:
            size, pos = _varint(data, pos)
            if size > len(data) - pos:
                raise WireError(f"{message}: field {number} runs past the end of the message")
            value = data[pos:pos + size]
            pos += size
        elif wire in (I64, I32):
            pos += 8 if wire == I64 else 4
            if pos > len(data):
                raise WireError(f"{message}: truncated fixed-size field {number}")
            value = None
        else:
            raise WireError(f"{message}: field {number} has wire type {wire}, which criu's "
                            "messages never use")
        if f is None:
            out.setdefault(UNKNOWN, []).append(number)
            continue
        want = _SCALAR_WIRE.get(f.type, LEN)
        if wire != want:
            raise WireError(f"{message}.{f.name}: wire type {wire}, expected {want}")
        if f.type == "string":
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise WireError(f"{message}.{f.name}: not UTF-8") from None
        elif f.type in MESSAGES:
            value = _fields(value, f.type, _depth + 1)
        else:
            value = _scalar(f, value)
        if f.repeated:
            out.setdefault(f.name, []).append(value)
        elif f.type in MESSAGES and f.name in out:
            _merge(out[f.name], value)
        else:
            out[f.name] = value  # the last one wins, as in protobuf
    return out


def encode(obj: dict[str, Any], message: str) -> bytes:
    """``obj`` (field name -> value, lists for repeated fields) encoded as ``message``."""
    fields = MESSAGES[message]
    by_name = {f.name: (n, f) for n, f in fields.items()}
    unknown = set(obj) - set(by_name)
    if unknown:
        raise KeyError(f"{message} has no field {sorted(unknown)[0]}")
    for f in fields.values():
        if f.required and f.name not in obj:
            raise KeyError(f"{message}: required field {f.name} missing")
    out = bytearray()
    for number, f in sorted(fields.items()):
        if f.name not in obj or obj[f.name] is None:
            continue
        values = obj[f.name] if f.repeated else [obj[f.name]]
        for v in values:
            if f.type in MESSAGES:
                body = encode(v, f.type)
            elif f.type == "string":
                body = v.encode()
            else:
                _put_varint(number << 3 | VARINT, out)
                _put_varint(int(v), out)
                continue
            _put_varint(number << 3 | LEN, out)
            _put_varint(len(body), out)
            out += body
    return bytes(out)
