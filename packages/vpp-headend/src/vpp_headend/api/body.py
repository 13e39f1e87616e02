"""Request bodies: every body is declared JSON (else 415) and is read with bounded nesting.

A browser on another origin can POST ``text/plain`` or a form without a preflight;
requiring ``application/json`` keeps such requests from acting on the API.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

from ..errors import BadRequestError

#: Route handler ``opt`` key: True for the console's HTML form posts, which are
#: ``application/x-www-form-urlencoded`` and checked for a same-origin request instead.
FORM_OPT = "form"
#: Deeper bodies are refused before parsing (the decoder recurses once per level).
MAX_DEPTH = 32
_UNSAFE = frozenset({"POST", "PUT", "PATCH"})
_UTF8 = frozenset({"utf-8", "utf8"})
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def require_json(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: a request that carries a body, or goes to a route that takes one,
    declares ``application/json`` (an optional charset must be UTF-8); 415 otherwise."""
    if connection.scope.get("method") not in _UNSAFE:
        return
    if handler.opt.get(FORM_OPT):  # the console's forms: same-origin checked (web/session.py)
        return
    headers = connection.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    takes_body = isinstance(handler, HTTPRouteHandler) and handler.parsed_data_field is not None
    if (has_body or takes_body) and not is_json(headers.get("content-type")):
        raise ClientException(
            "the body must be sent as Content-Type: application/json (UTF-8)", status_code=415
        )


def is_json(content_type: str | None) -> bool:
    """``application/json``, any case, with at most a UTF-8 charset among its parameters."""
    media, *params = (content_type or "").split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            return False
    return True


def decode_json(raw: bytes) -> object:
    """The JSON value of a body (``None`` when empty); 400 when it is not UTF-8 JSON or
    nests deeper than `MAX_DEPTH`. NaN and Infinity are read as numbers so the caller
    can name the field they are in."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"body is not UTF-8: {exc}") from None
    if not text.strip():
        return None
    _check_depth(text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None


def _check_depth(text: str) -> None:
    """Peel innermost ``[]`` / ``{}`` pairs (strings removed first) at most `MAX_DEPTH`
    times; anything left nests too deep or is unbalanced. Each pass is one regex, so a
    hostile body costs linear time, never recursion."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    for _ in range(MAX_DEPTH):
        if not brackets:
            return
        peeled = _INNERMOST.sub("", brackets)
        if peeled == brackets:
            raise BadRequestError("body is not valid JSON: unbalanced brackets")
        brackets = peeled
    if brackets:
        raise BadRequestError(f"body nests deeper than {MAX_DEPTH} levels")


__all__ = ["FORM_OPT", "MAX_DEPTH", "decode_json", "is_json", "require_json"]
