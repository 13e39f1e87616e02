"""What the ``vpp-headend`` commands share: the database and logging options, settings
from the environment, a database to run against (the configured one, or an embedded
server), and the errors a command answers in one line (`one_line`)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import psycopg
import typer
from sqlalchemy.exc import OperationalError as SAOperationalError

from vpp_protocol.logfmt import FORMATS, Format, LogSetupError

from .db.embedded import EmbeddedUnavailableError, start_embedded
from .db.migrate import database_failure, upgrade
from .db.url import DatabaseUrlError, redacted
from .errors import HeadendError
from .eventloop import LoopUnavailableError
from .logs import configure_logging, log_event
from .settings import Settings, SettingsError
from .tls import TlsFileError

log = logging.getLogger("vpp_headend.cli")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="libpq URL, e.g. postgresql://user@host:5432/vpp (env VPP_DATABASE_URL). "
        "None: embedded PostgreSQL in --data-dir.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded PostgreSQL data directory (default .vpp/pgdata)"),
]
LogLevel = Annotated[
    str, typer.Option("--log-level", envvar="VPP_LOG_LEVEL", help="debug, info, warning, error")
]
LogFormat = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="VPP_LOG_FORMAT",
        help=f"{' or '.join(FORMATS)}: key=value lines, or one JSON object per line (Loki, ELK)",
    ),
]


class CommandError(Exception):
    """A command cannot do what it was asked; the message is the one line it answers."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _one_line_errors() -> tuple[type[Exception], ...]:
    """The headend's own errors that are a one-line answer, not a traceback: each names
    what is wrong (a file, an address, a setting) in its message. Imported here, when a
    command failed, so that no command pays for ``cryptography`` it does not use."""
    from vpp_protocol.sitefile import SiteFileError

    from .certs import CertError

    return (
        CertError,
        DatabaseUrlError,
        EmbeddedUnavailableError,
        LogSetupError,
        LoopUnavailableError,
        SettingsError,
        SiteFileError,
        TlsFileError,
    )


def one_line(exc: Exception) -> tuple[str, int] | None:
    """The message and exit code a command answers ``exc`` with; None for a bug (its
    traceback shows)."""
    if isinstance(exc, CommandError):
        return str(exc), exc.code
    if isinstance(exc, HeadendError):
        return exc.detail, 2
    if isinstance(exc, _one_line_errors()):
        return str(exc), 2
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"cannot listen: {(exc.strerror or str(exc)).lower()}", 2
    if isinstance(exc, SAOperationalError | psycopg.OperationalError):
        return database_failure(None, exc).detail, 2
    return None


def logging_from(level: str, fmt: str) -> None:
    """The CLI's logging (`vpp_protocol.logfmt`) from ``--log-level`` / ``--log-format``."""
    configure_logging(level, cast(Format, fmt.lower()))


def settings_from_env(**explicit: Any) -> Settings:
    """Settings from the options given, else ``VPP_*`` variables; SettingsError names
    what is wrong (answered in one line)."""
    return Settings.from_env(os.environ, **explicit)


@contextmanager
def database(settings: Settings, *, migrate: bool) -> Iterator[Settings]:
    """Settings with a database URL: the configured one, or an embedded server's.

    A database that cannot be reached (here, or by the command inside the block) is an
    UnavailableError naming it without its password.
    """
    if settings.database_url is not None:
        url = settings.database_url
        if migrate:
            upgrade(url)
            log_event(log, "migrated", database=redacted(url))
        with _named(url):
            yield settings
        return
    embedded = start_embedded(settings.data_dir)
    log_event(log, "embedded_postgres", data_dir=str(embedded.data_dir), url=embedded.url)
    try:
        upgrade(embedded.url)
        log_event(log, "migrated", database="embedded", data_dir=str(embedded.data_dir))
        with _named(embedded.url):
            yield settings.with_(database_url=embedded.url)
    finally:
        embedded.stop()


@contextmanager
def _named(url: str) -> Iterator[None]:
    try:
        yield
    except (SAOperationalError, psycopg.OperationalError) as exc:
        raise database_failure(url, exc) from exc


__all__ = [
    "CommandError",
    "DataDir",
    "DatabaseUrl",
    "LogFormat",
    "LogLevel",
    "database",
    "logging_from",
    "one_line",
    "settings_from_env",
]
