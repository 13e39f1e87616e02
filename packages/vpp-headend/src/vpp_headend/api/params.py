"""The id parameters of the REST API, validated (and documented) once.

A path id that breaks `vpp_protocol.sitefile.ID_PATTERN` names nothing that can exist:
404 (see `problems.validation_error`); a query id that breaks it is a 422 naming it.
Either way it never reaches the database (PostgreSQL refuses NUL in text).
"""

from __future__ import annotations

from typing import Annotated, TypeAlias

from litestar.params import PathParameter, QueryParameter

from vpp_protocol.sitefile import ID_PATTERN

#: ``ID_PATTERN`` as a searched regex (msgspec and JSON Schema search, Python's ``$``
#: also matches before a final newline: the lookahead shuts that out).
ID_REGEX = f"^{ID_PATTERN.pattern}$(?!\\n)"
_ID_RULE = "1 to 64 of A-Z a-z 0-9 . _ -"
_MISMATCH = f"Expected `str` matching regex {ID_REGEX!r}"

AssetIdPath: TypeAlias = Annotated[
    str, PathParameter(pattern=ID_REGEX, description=f"an asset id ({_ID_RULE})")
]
SiteIdPath: TypeAlias = Annotated[
    str, PathParameter(pattern=ID_REGEX, description=f"a site id ({_ID_RULE})")
]
AssetIdQuery: TypeAlias = Annotated[
    str | None, QueryParameter(pattern=ID_REGEX, description=f"only this asset ({_ID_RULE})")
]
SiteIdQuery: TypeAlias = Annotated[
    str | None, QueryParameter(pattern=ID_REGEX, description=f"only this site ({_ID_RULE})")
]


def in_words(message: str) -> str:
    """A validation message with msgspec's id regex said in words."""
    return message.replace(_MISMATCH, f"must be {_ID_RULE}")


__all__ = ["ID_REGEX", "AssetIdPath", "AssetIdQuery", "SiteIdPath", "SiteIdQuery", "in_words"]
