"""One JSON error shape for every 4xx/5xx: ``{status, title, detail[, field]}``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.enums import ParamType
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from ..db.engine import DB_UNAVAILABLE
from ..errors import HeadendError, internal_problem
from .params import in_words

log = logging.getLogger(__name__)


def _response(
    body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        content=body,
        status_code=int(body["status"]),
        media_type="application/problem+json",
        headers=headers,
    )


def headend_error(_: Request[Any, Any, Any], exc: HeadendError) -> Response[dict[str, Any]]:
    """Our own errors carry their status, title, detail and field."""
    return _response(exc.problem())


def validation_error(
    _: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    """Litestar's parameter validation as a 422 naming the field, or a 404 when the
    field is in the path: such a path names nothing that can exist (`params`)."""
    field: str | None = None
    detail = exc.detail
    status, title = 422, "Unprocessable Entity"
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        field = extra[0].get("key")
        message = in_words(str(extra[0].get("message") or ""))
        if message:
            detail = f"{field}: {message}" if field else str(message)
        if extra[0].get("source") == ParamType.PATH:
            status, title = 404, "Not Found"
            detail = f"no such {field}: {message}"
    body: dict[str, Any] = {"status": status, "title": title, "detail": detail}
    if field:
        body["field"] = field
    return _response(body)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Routing errors (404, 405...) in the same shape."""
    status = exc.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"status": status, "title": title, "detail": exc.detail or title}
    return _response(body, dict(exc.headers) if exc.headers else None)


def database_unavailable(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    """The database is unreachable (restart, failover, pool exhausted): 503, retry soon.

    A connection that died while the pool held it busy fails one statement before the
    pool is replaced; the client's retry then goes through.
    """
    log.warning("database unavailable in %s %s: %s", request.method, request.url.path, exc)
    body = {
        "status": 503,
        "title": "Service Unavailable",
        "detail": "the database is not reachable right now; retry shortly",
    }
    return _response(body, {"Retry-After": "1"})


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything else: logged with its traceback, answered without one."""
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _response(internal_problem())


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HeadendError: headend_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    **dict.fromkeys(DB_UNAVAILABLE, database_unavailable),
    Exception: unexpected_error,
}


class ProblemOut(msgspec.Struct, omit_defaults=True):
    """Every 4xx/5xx body (``application/problem+json``)."""

    status: int
    title: str
    detail: str
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
            media_type="application/problem+json",
        )
        for code in codes
    }


#: What every route behind the auth guard may answer.
AUTH = (401,)
