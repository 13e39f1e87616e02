"""Alembic environment (async): runs the migrations of vpp-headend against PostgreSQL.

The URL comes from ``sqlalchemy.url`` in the config if set, else ``VPP_DATABASE_URL``;
a plain libpq URL is fine (`vpp_headend.db.url` picks the psycopg driver).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from vpp_headend.db.url import sqlalchemy_url

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("VPP_DATABASE_URL")
    if not url:
        raise SystemExit(
            "no database URL: set VPP_DATABASE_URL or sqlalchemy.url "
            "(e.g. postgresql://postgres@127.0.0.1:5432/vpp)"
        )
    return sqlalchemy_url(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())
