"""The headend's error tree, mapped once to HTTP problem JSON and to gRPC statuses.

Expected outcomes (a rejected asset claim, a split that cannot meet its target) are
return values, not errors. These are for requests that cannot be served as asked.
"""

from __future__ import annotations

from grpclib.const import Status


class HeadendError(Exception):
    """Base of every error the headend raises on purpose."""

    http_status = 500
    title = "Internal Server Error"
    grpc_status = Status.INTERNAL

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def problem(self) -> dict[str, object]:
        """The JSON body of the HTTP answer (the one error shape of the REST API)."""
        body: dict[str, object] = {
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


class ValidationFailedError(HeadendError):
    """A field has a value the API does not accept; ``field`` names it."""

    http_status = 422
    title = "Unprocessable Entity"
    grpc_status = Status.INVALID_ARGUMENT


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


class UnavailableError(HeadendError):
    """A dependency (database, gRPC server) is not available right now."""

    http_status = 503
    title = "Service Unavailable"
    grpc_status = Status.UNAVAILABLE


class ProtocolViolationError(HeadendError):
    """A gateway broke a rule of the agent protocol (wrong order, malformed message)."""

    http_status = 400
    title = "Protocol Error"
    grpc_status = Status.INVALID_ARGUMENT


class FrameTooLargeError(ProtocolViolationError):
    """A gateway announced a message longer than the configured limit (its body is not read)."""


class UnauthorizedError(HeadendError):
    """A gateway's identity or claim was refused."""

    http_status = 403
    title = "Forbidden"
    grpc_status = Status.PERMISSION_DENIED


def internal_problem() -> dict[str, object]:
    """The body for an unexpected error: no detail leaks (the log has the traceback)."""
    return {"status": 500, "title": "Internal Server Error", "detail": "unexpected error"}


__all__ = [
    "BadRequestError",
    "ConflictError",
    "FrameTooLargeError",
    "HeadendError",
    "NotFoundError",
    "ProtocolViolationError",
    "UnauthorizedError",
    "UnavailableError",
    "ValidationFailedError",
    "internal_problem",
]
