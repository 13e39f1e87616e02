"""The headend's error tree, mapped once to HTTP problem JSON and to gRPC statuses.

Expected outcomes (a rejected asset claim, a split that cannot meet its target) are
return values, not errors. These are for requests that cannot be served as asked.

The HTTP answer is an RFC 9457 problem (``application/problem+json``): ``type`` is a
stable URI per kind of problem (`PROBLEM_TYPES`; ``about:blank`` where the status says
it all), ``title`` the same for every problem of a type, ``detail`` this occurrence,
``instance`` the request path (added by `vpp_headend.api.problems`), ``field`` the
offending parameter when there is one.
"""

from __future__ import annotations

import os
import socket
from typing import ClassVar

from grpclib.const import Status

#: RFC 9457: no semantics beyond the HTTP status code.
ABOUT_BLANK = "about:blank"
#: The problem type URIs whose meaning is more specific than their status code. URNs in
#: the namespace the site certificates use (``urn:vpp:site:``): stable identifiers, never
#: dereferenced (RFC 9457 §3.1.1), and no claim on a domain name.
PROBLEM_TYPES: dict[str, str] = {
    "validation": "urn:vpp:problem:validation",  # 422, `field` names the parameter
    "malformed-body": "urn:vpp:problem:malformed-body",  # 400, not UTF-8 / JSON / too deep
    "conflict": "urn:vpp:problem:conflict",  # 409, contradicts stored state
    "unavailable": "urn:vpp:problem:unavailable",  # 503, retry (Retry-After when known)
    "protocol-violation": "urn:vpp:problem:protocol-violation",  # a gateway broke the protocol
}


class HeadendError(Exception):
    """Base of every error the headend raises on purpose."""

    http_status = 500
    title = "Internal Server Error"
    grpc_status = Status.INTERNAL
    problem_type: ClassVar[str] = ABOUT_BLANK

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def problem(self) -> dict[str, object]:
        """The JSON body of the HTTP answer (the one error shape of the REST API)."""
        body: dict[str, object] = {
            "type": self.problem_type,
            "status": self.http_status,
            "title": self.title,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
        return body


class BadRequestError(HeadendError):
    """The request cannot be read at all (e.g. malformed JSON)."""

    http_status = 400
    title = "Bad Request"
    grpc_status = Status.INVALID_ARGUMENT
    problem_type = PROBLEM_TYPES["malformed-body"]


class ValidationFailedError(HeadendError):
    """A field has a value the API does not accept; ``field`` names it."""

    http_status = 422
    title = "Unprocessable Entity"
    grpc_status = Status.INVALID_ARGUMENT
    problem_type = PROBLEM_TYPES["validation"]


class NotFoundError(HeadendError):
    """The thing asked for does not exist."""

    http_status = 404
    title = "Not Found"
    grpc_status = Status.NOT_FOUND


class ConflictError(HeadendError):
    """The request contradicts stored state (e.g. an idempotency key reused for another body)."""

    http_status = 409
    title = "Conflict"
    grpc_status = Status.ALREADY_EXISTS
    problem_type = PROBLEM_TYPES["conflict"]


class UnavailableError(HeadendError):
    """A dependency (database, gRPC server) is not available right now."""

    http_status = 503
    title = "Service Unavailable"
    grpc_status = Status.UNAVAILABLE
    problem_type = PROBLEM_TYPES["unavailable"]


class ListenError(UnavailableError):
    """A port cannot be listened on (in use, not this host's address, not permitted)."""

    def __init__(self, host: str, port: int, what: str, exc: OSError) -> None:
        # socket.create_server appends "(while attempting to bind on address ...)" to
        # strerror; the address is named here already.
        plain = exc.errno is not None and exc.errno > 0 and not isinstance(exc, socket.gaierror)
        why = os.strerror(exc.errno) if plain and exc.errno else (exc.strerror or str(exc))
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"cannot listen on {where} ({what}): {why[:1].lower()}{why[1:]}")
        self.host, self.port = host, port


class ProtocolViolationError(HeadendError):
    """A gateway broke a rule of the agent protocol (wrong order, malformed message)."""

    http_status = 400
    title = "Protocol Error"
    grpc_status = Status.INVALID_ARGUMENT
    problem_type = PROBLEM_TYPES["protocol-violation"]


class FrameTooLargeError(ProtocolViolationError):
    """A gateway announced a message longer than the configured limit (its body is not read)."""


class UnauthorizedError(HeadendError):
    """A gateway's identity or claim was refused."""

    http_status = 403
    title = "Forbidden"
    grpc_status = Status.PERMISSION_DENIED


def internal_problem() -> dict[str, object]:
    """The body for an unexpected error: no detail leaks (the log has the traceback)."""
    return {
        "type": ABOUT_BLANK,
        "status": 500,
        "title": "Internal Server Error",
        "detail": "unexpected error",
    }


__all__ = [
    "ABOUT_BLANK",
    "PROBLEM_TYPES",
    "BadRequestError",
    "ConflictError",
    "FrameTooLargeError",
    "HeadendError",
    "ListenError",
    "NotFoundError",
    "ProtocolViolationError",
    "UnauthorizedError",
    "UnavailableError",
    "ValidationFailedError",
    "internal_problem",
]
