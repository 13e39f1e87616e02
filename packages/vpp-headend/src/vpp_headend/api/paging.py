"""Cursor paging of the list endpoints (docs/decisions.md, "Paging").

Every list answers ``{"items": [...], "next": "<cursor>" | null}`` (history and rollups
keep their object and add ``next``). A cursor is opaque to clients: base64url of a small
versioned JSON holding the sort key of the last item returned and a digest of the list
and filters it was made for. Paging is keyset: the repository reads the rows after that
key, one more than asked for, so a page knows whether another follows without a count,
and a row inserted meanwhile neither repeats nor hides an older one. The sort key of
each list is declared next to its query (``db/*_repo.py``, ``db/dispatch_views.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeAlias, TypeVar
from uuid import UUID

import msgspec
from litestar.params import QueryParameter

from vpp_protocol.sitefile import ID_PATTERN

from ..errors import ValidationFailedError

#: Version of the cursor's JSON; a cursor of another version is refused (422).
CURSOR_VERSION = 1
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Far above any cursor made here (a key of a timestamp and a UUID is ~110 characters).
MAX_CURSOR_CHARS = 512
_INT8 = 2**63 - 1
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

K = TypeVar("K", bound=tuple[Any, ...])
T = TypeVar("T")

LimitQuery: TypeAlias = Annotated[
    int,
    QueryParameter(
        ge=1, le=MAX_LIMIT, description=f"page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"
    ),
]
CursorQuery: TypeAlias = Annotated[
    str | None,
    QueryParameter(
        max_length=MAX_CURSOR_CHARS,
        description="the `next` of the previous page (opaque); omit for the first page",
    ),
]


class Page(msgspec.Struct, kw_only=True):
    """Base of the list envelopes: ``next`` is the cursor of the following page, null on
    the last one. Each list subclasses it with a concrete ``items`` (a readable schema)."""

    next: str | None


class _Cursor(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    k: list[Any]  # the sort key of the last item returned
    f: str  # digest of the list's name and filters


@dataclass(frozen=True, slots=True)
class Pager(Generic[K]):
    """One page request: where it starts (``after``, None for the first page) and how
    many rows to ask the repository for (``fetch``: one more than ``limit``)."""

    limit: int
    after: K | None
    scope: str

    @property
    def fetch(self) -> int:
        """Rows to read: the page and one more, which says whether another page follows."""
        return self.limit + 1

    def page(self, rows: Sequence[T], key: Callable[[T], K]) -> tuple[Sequence[T], str | None]:
        """The page's rows (at most ``limit``) and the cursor of the next page (None when
        ``rows`` held no more than ``limit``)."""
        if len(rows) <= self.limit:
            return rows, None
        kept = rows[: self.limit]
        return kept, encode_cursor(self.scope, key(kept[-1]))


def pager(
    name: str,
    key_type: Any,
    *,
    limit: int,
    cursor: str | None,
    **filters: object,
) -> Pager[Any]:
    """The page request of list ``name`` for ``cursor`` made with the same ``filters``;
    422 naming ``cursor`` for one that is malformed or was made for other filters or
    another list. ``key_type`` is the list's sort key type (a tuple type)."""
    scope = _scope(name, filters)
    after = None if cursor is None else decode_cursor(cursor, scope, key_type)
    return Pager(limit=limit, after=after, scope=scope)


def encode_cursor(scope: str, key: tuple[Any, ...]) -> str:
    """The opaque cursor for ``key`` in ``scope`` (base64url, no padding)."""
    raw = msgspec.json.encode(_Cursor(v=CURSOR_VERSION, k=list(key), f=scope))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, scope: str, key_type: Any) -> Any:
    """The sort key in ``cursor`` as ``key_type``; 422 naming ``cursor`` otherwise."""
    if not _BASE64URL.fullmatch(cursor):
        raise _bad("cursor is malformed")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parsed = msgspec.json.decode(raw, type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad("cursor is malformed") from None
    if parsed.v != CURSOR_VERSION:
        raise _bad(f"cursor version {parsed.v} is not supported; start from the first page")
    if parsed.f != scope:
        raise _bad("cursor was made for another list or other filters")
    try:
        key = msgspec.convert(parsed.k, type=key_type)
    except msgspec.ValidationError:
        raise _bad("cursor is malformed") from None
    if not all(_storable(part) for part in key):
        raise _bad("cursor is malformed")
    return key


def _storable(value: object) -> bool:
    """A key part that the database accepts as it is: an id (no NUL, no control
    characters), an aware timestamp, a bigint, a UUID."""
    if isinstance(value, str):
        return ID_PATTERN.fullmatch(value) is not None
    if isinstance(value, datetime):
        return value.tzinfo is not None and value.utcoffset() is not None
    if isinstance(value, int):
        return -_INT8 - 1 <= value <= _INT8
    return isinstance(value, UUID)


def _scope(name: str, filters: dict[str, object]) -> str:
    """A short digest of a list's name and its filters (canonical JSON)."""
    canonical = msgspec.json.encode([name, sorted(msgspec.to_builtins(filters).items())])
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def _bad(detail: str) -> ValidationFailedError:
    return ValidationFailedError(detail, field="cursor")


__all__ = [
    "CURSOR_VERSION",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorQuery",
    "LimitQuery",
    "Page",
    "Pager",
    "decode_cursor",
    "encode_cursor",
    "pager",
]
