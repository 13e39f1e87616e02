"""The async SQLAlchemy engine (psycopg 3) for the control plane.

Two round-trip savings matter under load, where every round trip also waits for a turn
of a busy event loop:

* No pre-ping on every checkout: a connection is pinged only when it sat idle in the pool
  for ``ping_idle_s`` (after an outage, say). A connection that dies while busy fails its
  statement; SQLAlchemy then invalidates the whole pool, so one operation sees the error
  and the next gets a fresh connection.
* `reader`: the same pool in autocommit, for read-only work and for a write that is one
  statement (atomic on its own: the dispatch hot path). It costs its statements only, not
  BEGIN + statements + ROLLBACK/COMMIT. At READ COMMITTED (the default) each statement
  takes its own snapshot inside a transaction too, so nothing is less consistent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

from .url import sqlalchemy_url

_IDLE_SINCE = "vpp_idle_since"

#: What a database that is down, restarting or out of pooled connections raises: REST
#: answers 503, a Register gets gRPC UNAVAILABLE (both mean: retry later).
DB_UNAVAILABLE: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.TimeoutError,
    psycopg.OperationalError,
)


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout_s: float = 10.0,
    ping_idle_s: float = 1.0,
    on_checkout: Callable[[float], None] | None = None,
) -> AsyncEngine:
    """An engine for ``url`` (any PostgreSQL URL form; see `vpp_headend.db.url`).

    ``on_checkout`` gets the seconds each checkout took to hand over a usable connection:
    a wait while the pool is exhausted, a new connection, or an idle one's ping.
    """
    extra: dict[str, Any] = {}
    if on_checkout is not None:
        extra["poolclass"] = _timed_pool(on_checkout)
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_use_lifo=True,  # reuse the hottest connection; idle ones age (and get pinged)
        pool_timeout=pool_timeout_s,
        **extra,
    )
    _ping_when_idle(engine.sync_engine, ping_idle_s)
    return engine


def _timed_pool(on_checkout: Callable[[float], None]) -> type[AsyncAdaptedQueuePool]:
    """The engine's pool class, timing `connect` (a class, not an instance attribute: the
    engine makes a new pool of the same class when it disposes of the old one)."""

    # SQLAlchemy names a pool's logger after its class's module: this subclass would escape
    # the warning level SQLAlchemy sets on its own loggers and say "Pool disposed" at INFO.
    logging.getLogger(f"{__name__}.TimedPool").setLevel(logging.WARNING)

    class TimedPool(AsyncAdaptedQueuePool):
        def connect(self) -> PoolProxiedConnection:
            started = time.perf_counter()
            try:
                return super().connect()
            finally:
                on_checkout(time.perf_counter() - started)

    return TimedPool


def reader(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` in autocommit (same pool), for ``connect()`` blocks that only read, or
    that write in a single statement.

    Making one costs ~30 µs: services make theirs once (`Headend.reader` for the REST
    handlers) and keep it.
    """
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Pre-ping only connections idle for ``idle_s`` or more (SQLAlchemy's recipe for
    pessimistic disconnect handling: a DisconnectionError makes the pool reconnect)."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, dbapi_conn, None):
                raise exc.DisconnectionError(f"stale pooled connection: {error}") from error
            raise


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with reader(engine).connect() as conn:
        await conn.execute(text("SELECT 1"))


__all__ = ["DB_UNAVAILABLE", "make_engine", "ping", "reader"]
