"""One error shape for every 4xx/5xx: an RFC 9457 problem, ``application/problem+json``.

``{type, status, title, detail, instance[, field]}``: ``type`` is a stable URI per kind
(`vpp_headend.errors.PROBLEM_TYPES`, else ``about:blank``), ``instance`` the request path
(percent-encoded, without the query). Every error path of the REST API answers through
`_response`: the headend's own errors, Litestar's routing and validation errors (404,
405, 413, 415, 401/403 from the guard), an unreachable database, anything unexpected.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.enums import ParamType
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from ..db.engine import DB_UNAVAILABLE
from ..errors import ABOUT_BLANK, PROBLEM_TYPES, HeadendError, internal_problem
from ..logs import log_event
from .params import in_words

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# RFC 3986 pchar plus "/": what a path may hold unencoded; everything else is encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def instance(request: Request[Any, Any, Any]) -> str:
    """The request path as a URI reference (the problem's ``instance``)."""
    return quote(request.url.path, safe=_PATH_SAFE)


def _response(
    request: Request[Any, Any, Any], body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    problem = {"type": ABOUT_BLANK, **body, "instance": instance(request)}
    return Response(
        content=problem,
        status_code=int(problem["status"]),
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def headend_error(request: Request[Any, Any, Any], exc: HeadendError) -> Response[dict[str, Any]]:
    """Our own errors carry their type, status, title, detail and field."""
    return _response(request, exc.problem())


def validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    """Litestar's parameter validation as a 422 naming the field, or a 404 when the
    field is in the path: such a path names nothing that can exist (`params`)."""
    field: str | None = None
    detail = exc.detail
    status, title, kind = 422, "Unprocessable Entity", PROBLEM_TYPES["validation"]
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        field = extra[0].get("key")
        message = in_words(str(extra[0].get("message") or ""))
        if message:
            detail = f"{field}: {message}" if field else str(message)
        if extra[0].get("source") == ParamType.PATH:
            status, title, kind = 404, "Not Found", ABOUT_BLANK
            detail = f"no such {field}: {message}"
    body: dict[str, Any] = {"type": kind, "status": status, "title": title, "detail": detail}
    if field:
        body["field"] = field
    return _response(request, body)


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Routing errors (404, 405...) in the same shape."""
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"status": status, "title": title, "detail": exc.detail or title}
    return _response(request, body, dict(exc.headers) if exc.headers else None)


def database_unavailable(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    """The database is unreachable (restart, failover, pool exhausted): 503, retry soon.

    A connection that died while the pool held it busy fails one statement before the
    pool is replaced; the client's retry then goes through.
    """
    log_event(
        log,
        "database_unavailable",
        level=logging.WARNING,
        method=request.method,
        path=request.url.path,
        error=str(exc),
    )
    body = {
        "type": PROBLEM_TYPES["unavailable"],
        "status": 503,
        "title": "Service Unavailable",
        "detail": "the database is not reachable right now; retry shortly",
    }
    return _response(request, body, {"Retry-After": "1"})


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything else: logged with its traceback, answered without one."""
    log_event(
        log,
        "unhandled_error",
        level=logging.ERROR,
        method=request.method,
        path=request.url.path,
        exc_info=exc,
    )
    return _response(request, internal_problem())


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HeadendError: headend_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    **dict.fromkeys(DB_UNAVAILABLE, database_unavailable),
    Exception: unexpected_error,
}


class ProblemOut(msgspec.Struct, omit_defaults=True):
    """Every 4xx/5xx body: an RFC 9457 problem (``application/problem+json``)."""

    type: str
    status: int
    title: str
    detail: str
    instance: str
    field: str | None = None


_WHY = {
    400: "Malformed request (e.g. a body that is not JSON)",
    401: "No bearer token, or an unknown or revoked one (when REST auth is on)",
    403: "The token's role may not do this (dispatch needs operator)",
    404: "Unknown id",
    409: "Idempotency-Key reused with a different request",
    415: "A body not sent as Content-Type: application/json (UTF-8)",
    422: "Invalid parameter or body; `field` names the offender",
    503: "Not ready: database unreachable or gRPC not listening",
}


def problem_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the problem responses a route may give."""
    return {
        code: ResponseSpec(
            data_container=ProblemOut,
            description=_WHY[code],
            media_type=MEDIA_TYPE,
        )
        for code in codes
    }


#: What every route behind the auth guard may answer.
AUTH = (401,)
