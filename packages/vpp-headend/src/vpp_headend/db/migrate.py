"""Schema migrations with the Alembic scripts shipped inside this package.

`upgrade` is blocking (Alembic's env.py runs its own event loop): call it before the
server's loop starts, or through ``asyncio.to_thread``. Alembic's "Running upgrade a -> b"
lines are kept at INFO; what it says each time it looks at a database is DEBUG.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from vpp_protocol.logfmt import quiet

from ..errors import UnavailableError
from .url import libpq_url, redacted

quiet("alembic.runtime.migration", "Context impl", "Will assume")

#: The Alembic script directory inside the installed package.
SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged scripts and at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    # ConfigParser interpolation: a literal % must be doubled.
    cfg.set_main_option("sqlalchemy.url", libpq_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (blocking); UnavailableError naming
    the database (without its password) when it cannot be reached or the server gives up
    (a lock timeout, a restart)."""
    try:
        command.upgrade(alembic_config(url), revision)
    except (SAOperationalError, psycopg.OperationalError) as exc:
        raise database_failure(url, exc, "migrating") from exc


def database_failure(url: str | None, exc: Exception, doing: str = "using") -> UnavailableError:
    """An OperationalError (psycopg's, or SQLAlchemy's wrapping one) as one line naming
    the database (``url`` without its password): "not reachable" when the connection
    failed, else what failed."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    why = " ".join(str(orig).split()) or type(orig).__name__
    name = f"database {redacted(url)}" if url else "the database"
    connecting = isinstance(exc, DBAPIError) and exc.statement is None
    if connecting or why.startswith("connection failed"):
        return UnavailableError(f"{name} is not reachable: {why}")
    return UnavailableError(f"{doing} {name} failed: {why}")


def head_revision() -> str | None:
    """The newest revision the packaged scripts know."""
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


__all__ = [
    "SCRIPT_LOCATION",
    "alembic_config",
    "current_revision",
    "database_failure",
    "head_revision",
    "upgrade",
]
