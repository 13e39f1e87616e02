"""Decoding with one error type: whatever bytes arrive, callers catch `DecodeError` only.

betterproto2's pure-Python parser reads a length-delimited field that runs past the end
of its buffer as a shorter value instead of failing, and takes a known field with the
wrong wire type as whatever it happens to parse to. A truncated or corrupted frame could
then decode as a plausible but wrong message (a setpoint with a cut-off id, a reading
with half its fields). `decode` first walks the wire structure against the schema and
refuses such input, as google's parser does.
"""

from __future__ import annotations

import dataclasses
import struct
from functools import cache
from typing import TypeVar

import betterproto2

M = TypeVar("M", bound=betterproto2.Message)

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_OF = {
    **dict.fromkeys(
        (
            betterproto2.TYPE_BOOL,
            betterproto2.TYPE_ENUM,
            betterproto2.TYPE_INT32,
            betterproto2.TYPE_INT64,
            betterproto2.TYPE_UINT32,
            betterproto2.TYPE_UINT64,
            betterproto2.TYPE_SINT32,
            betterproto2.TYPE_SINT64,
        ),
        _VARINT,
    ),
    **dict.fromkeys(
        (betterproto2.TYPE_DOUBLE, betterproto2.TYPE_FIXED64, betterproto2.TYPE_SFIXED64), _FIXED64
    ),
    **dict.fromkeys(
        (betterproto2.TYPE_FLOAT, betterproto2.TYPE_FIXED32, betterproto2.TYPE_SFIXED32), _FIXED32
    ),
    **dict.fromkeys(
        (
            betterproto2.TYPE_STRING,
            betterproto2.TYPE_BYTES,
            betterproto2.TYPE_MESSAGE,
            betterproto2.TYPE_MAP,
        ),
        _LEN,
    ),
}
_MAX_DEPTH = 32

# What betterproto2's parser raises on input that passed the structural walk but is still
# malformed: bad UTF-8 (UnicodeDecodeError is a ValueError), out-of-range values.
_PARSE_ERRORS = (ValueError, EOFError, IndexError, struct.error, TypeError, KeyError, OverflowError)


class DecodeError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


class _WireError(Exception):
    """Structural problem found by `_check`; `decode` turns it into a DecodeError."""


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldSpec:
    wire_type: int
    repeated_scalar: bool  # packed encoding (wire type 2) is also valid
    nested: type[betterproto2.Message] | None


@cache
def _schema(cls: type[betterproto2.Message]) -> dict[int, _FieldSpec]:
    meta = cls._betterproto  # type: ignore[arg-type]  # classproperty typing
    out: dict[int, _FieldSpec] = {}
    for name, fmeta in meta.meta_by_field_name.items():
        nested: type[betterproto2.Message] | None = None
        if fmeta.proto_type in (betterproto2.TYPE_MESSAGE, betterproto2.TYPE_MAP):
            nested = fmeta.unwrap() if fmeta.unwrap else meta.cls_by_field[name]
        wire = _WIRE_OF[fmeta.proto_type]
        out[fmeta.number] = _FieldSpec(wire, bool(fmeta.repeated) and wire != _LEN, nested)
    return out


def _varint(data: bytes, pos: int, end: int) -> int:
    """Position after the varint starting at ``pos``; raise if it runs past ``end``."""
    for i in range(pos, min(end, pos + 10)):
        if data[i] < 0x80:
            return i + 1
    raise _WireError(f"truncated or overlong varint at byte {pos}")


def _check(cls: type[betterproto2.Message], data: bytes, pos: int, end: int, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _WireError(f"messages nested deeper than {_MAX_DEPTH}")
    schema = _schema(cls)
    while pos < end:
        after_key = _varint(data, pos, end)
        key = _leb128(data[pos:after_key])
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError(f"field number 0 at byte {pos}")
        pos = after_key
        if wire == _VARINT:
            pos = _varint(data, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
        elif wire == _LEN:
            after_len = _varint(data, pos, end)
            length = _leb128(data[pos:after_len])
            pos = after_len + length
            if pos > end:
                raise _WireError(
                    f"field {number} of {cls.__name__} runs past the end of its message"
                )
            spec = schema.get(number)
            if spec is not None and spec.nested is not None:
                _check(spec.nested, data, after_len, pos, depth + 1)
        else:
            raise _WireError(f"invalid wire type {wire} for field {number} of {cls.__name__}")
        if pos > end:
            raise _WireError(f"field {number} of {cls.__name__} runs past the end of its message")
        spec = schema.get(number)
        if (
            spec is not None
            and wire != spec.wire_type
            and not (spec.repeated_scalar and wire == _LEN)
        ):
            raise _WireError(
                f"field {number} of {cls.__name__} has wire type {wire}, expected {spec.wire_type}"
            )


def _leb128(raw: bytes) -> int:
    value = 0
    for shift, byte in enumerate(raw):
        value |= (byte & 0x7F) << (7 * shift)
    return value


def decode(cls: type[M], data: bytes) -> M:
    """Parse ``data`` as ``cls``; raise `DecodeError` (and nothing else) on bad input."""
    try:
        _check(cls, data, 0, len(data), 0)
        return cls.parse(data)
    except _WireError as exc:
        raise DecodeError(f"cannot decode {cls.__name__}: {exc}") from None
    except _PARSE_ERRORS as exc:
        raise DecodeError(f"cannot decode {cls.__name__}: {exc}") from exc
