"""What the ``vpp-headend`` commands share: the database options, settings from the
environment, and a database to run against (the configured one, or an embedded server)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from .db.embedded import EmbeddedUnavailableError, start_embedded
from .db.migrate import upgrade
from .db.url import redacted
from .logs import log_event
from .settings import Settings, SettingsError

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
LogLevel = Annotated[str, typer.Option("--log-level", envvar="VPP_LOG_LEVEL")]


def settings_from_env(**explicit: Any) -> Settings:
    try:
        return Settings.from_env(os.environ, **explicit)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def database(settings: Settings, *, migrate: bool) -> Iterator[Settings]:
    """Settings with a database URL: the configured one, or an embedded server's."""
    if settings.database_url is not None:
        if migrate:
            upgrade(settings.database_url)
            log_event(log, "migrated", database=redacted(settings.database_url))
        yield settings
        return
    try:
        embedded = start_embedded(settings.data_dir)
    except EmbeddedUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    log_event(log, "embedded_postgres", data_dir=str(embedded.data_dir), url=embedded.url)
    try:
        upgrade(embedded.url)
        log_event(log, "migrated", database="embedded", data_dir=str(embedded.data_dir))
        yield settings.with_(database_url=embedded.url)
    finally:
        embedded.stop()


__all__ = ["DataDir", "DatabaseUrl", "LogLevel", "database", "settings_from_env"]
