"""Decoding with one error type: whatever bytes arrive, callers catch `DecodeError` only."""

from __future__ import annotations

import struct
from typing import TypeVar

import betterproto2

M = TypeVar("M", bound=betterproto2.Message)

# What betterproto2's pure-Python parser raises on malformed input: truncated
# varints (EOFError), bad lengths (IndexError), bad UTF-8 (UnicodeDecodeError is a
# ValueError), fixed-width fields cut short (struct.error), wire types that do not
# match the schema (TypeError/KeyError/AttributeError), nesting too deep (RecursionError).
_PARSE_ERRORS = (
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    TypeError,
    KeyError,
    AttributeError,
    OverflowError,
    RecursionError,
)


class DecodeError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


def decode(cls: type[M], data: bytes) -> M:
    """Parse ``data`` as ``cls``; raise `DecodeError` (and nothing else) on bad input."""
    try:
        return cls.parse(data)
    except _PARSE_ERRORS as exc:
        raise DecodeError(f"cannot decode {cls.__name__}: {exc}") from exc
