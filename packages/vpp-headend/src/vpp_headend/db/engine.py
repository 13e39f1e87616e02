"""The async SQLAlchemy engine (psycopg 3) for the control plane."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .url import sqlalchemy_url


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine for ``url`` (any PostgreSQL URL form; see `vpp_headend.db.url`)."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
    )


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


__all__ = ["make_engine", "ping"]
