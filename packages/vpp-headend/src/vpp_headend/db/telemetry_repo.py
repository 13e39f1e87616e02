"""SQL of telemetry: the row shape, the history COPY, the latest-value upsert, the stored
watermarks, and the reads of history, latest values, envelopes and one-minute rollups.

`Row` is the one place the column order is written; the COPY column list and types are
derived from it. Rollups are written by the rollup job (`vpp_headend.db.rollup_repo`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, NamedTuple, TypeAlias, get_args

import psycopg
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..domain import Envelope, LatestReading
from . import models as m
from .engine import DB_UNAVAILABLE


class _Col(NamedTuple):
    name: str
    copy_type: str  # its binary COPY type


#: One telemetry row (a plain tuple: built once per reading on the hot path).
Row: TypeAlias = tuple[
    Annotated[str, _Col("asset_id", "text")],
    Annotated[int, _Col("seq", "int8")],
    Annotated[datetime, _Col("ts", "timestamptz")],
    Annotated[datetime, _Col("received_at", "timestamptz")],
    Annotated[float, _Col("power_kw", "float8")],
    Annotated[float | None, _Col("soc_pct", "float8")],
    Annotated[int, _Col("status", "int2")],
    Annotated[float | None, _Col("setpoint_kw", "float8")],
    Annotated[str | None, _Col("setpoint_id", "text")],
    Annotated[float | None, _Col("available_min_kw", "float8")],
    Annotated[float | None, _Col("available_max_kw", "float8")],
    Annotated[float | None, _Col("min_stable_kw", "float8")],
    Annotated[datetime | None, _Col("setpoint_ends_at", "timestamptz")],
]
_SHAPE: tuple[_Col, ...] = tuple(arg.__metadata__[0] for arg in get_args(Row))
#: Column names of a `Row`, in its order.
TELEMETRY_COLUMNS: tuple[str, ...] = tuple(c.name for c in _SHAPE)
#: Binary COPY type of each of `TELEMETRY_COLUMNS`.
TELEMETRY_COPY_TYPES: tuple[str, ...] = tuple(c.copy_type for c in _SHAPE)
#: Where a `Row` (or a list holding one's fields) holds these.
ROW_ASSET_ID = TELEMETRY_COLUMNS.index("asset_id")
ROW_SEQ = TELEMETRY_COLUMNS.index("seq")
ROW_TS = TELEMETRY_COLUMNS.index("ts")
ROW_ENVELOPE = slice(
    TELEMETRY_COLUMNS.index("available_min_kw"), TELEMETRY_COLUMNS.index("min_stable_kw") + 1
)

_COLUMNS = ", ".join(TELEMETRY_COLUMNS)
_COPY_TYPES = list(TELEMETRY_COPY_TYPES)
COPY_TELEMETRY = f"COPY telemetry ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
# Latest values go through a session-local staging table: binary COPY in, one upsert out.
# Binding one array per column (unnest) spent the flush in psycopg's per-element array
# dumper, on the event loop (docs/scaling.md).
_LATEST_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS telemetry_latest_stage "
    "(LIKE telemetry_latest) ON COMMIT DELETE ROWS"
)
_COPY_LATEST = f"COPY telemetry_latest_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_UPSERT_LATEST = f"""
    INSERT INTO telemetry_latest AS l ({_COLUMNS})
    SELECT {_COLUMNS} FROM telemetry_latest_stage
    ON CONFLICT (asset_id) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in TELEMETRY_COLUMNS[1:])}
    WHERE l.seq < EXCLUDED.seq
    """
# SQLSTATE classes that blame the rows written: data exception (a NUL in text, a number out
# of range), integrity (NOT NULL, CHECK), program limit (a value too large). Any other
# server error refuses every row alike (undefined column, permission, ...): keep the rows.
_ROW_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
# Highest stored seq per asset. telemetry_latest can lag history after a crash (it is
# flushed in batches), so history newer than the latest row is checked too; that range
# is small and served by the (asset_id, ts) index.
_WATERMARKS = text(
    """
    SELECT a.asset_id,
           GREATEST(l.seq, (SELECT max(t.seq) FROM telemetry t
                            WHERE t.asset_id = a.asset_id
                              AND t.ts >= COALESCE(l.ts - interval '1 hour', '-infinity')))
    FROM unnest(CAST(:ids AS text[])) AS a(asset_id)
    LEFT JOIN telemetry_latest l ON l.asset_id = a.asset_id
    """
)
# telemetry_latest is flushed in batches, so the newest history row is read too (one
# index probe per partition on (asset_id, ts)).
_NEWEST = text(
    f"""
    SELECT {_COLUMNS} FROM (
        SELECT {_COLUMNS} FROM telemetry_latest WHERE asset_id = :a
        UNION ALL
        (SELECT {_COLUMNS} FROM telemetry WHERE asset_id = :a ORDER BY ts DESC, seq DESC LIMIT 1)
    ) newest
    ORDER BY seq DESC
    LIMIT 1
    """
)
# One primary-key probe per asset on telemetry_latest, no history read (DESIGN.md §3a).
_ENVELOPES = text(
    """
    SELECT asset_id, available_min_kw, available_max_kw, min_stable_kw, ts
    FROM telemetry_latest
    WHERE asset_id = ANY(CAST(:ids AS text[])) AND ts >= :since
      AND (available_min_kw IS NOT NULL OR available_max_kw IS NOT NULL
           OR min_stable_kw IS NOT NULL)
    """
)


class RollupMinute(NamedTuple):
    """One row of ``telemetry_1m``."""

    asset_id: str
    bucket: datetime
    n: int
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float
    last_soc_pct: float | None


def reading(values: Sequence[Any]) -> LatestReading:
    """A `Row`'s fields (or a stored row's, in `TELEMETRY_COLUMNS` order) as a reading."""
    return LatestReading(**dict(zip(TELEMETRY_COLUMNS, values, strict=True)))


# -- writes --------------------------------------------------------------------------------


async def copy_rows(
    cur: psycopg.AsyncCursor[object], statement: str, rows: Sequence[Sequence[Any]]
) -> None:
    """Binary COPY of `Row`-shaped rows (the columns of `TELEMETRY_COLUMNS`).

    Rows are formatted synchronously (psycopg's C formatter) and sent in one write:
    ``await copy.write_row`` per row yields every ~32 KB, a whole loop turn each on a busy
    loop (docs/scaling.md). The formatter keeps the tail of the last rows and sends it
    (with the trailer) when the block ends, in order.
    """
    async with cur.copy(statement) as copy:
        copy.set_types(_COPY_TYPES)
        write_row = copy.formatter.write_row
        parts = [chunk for row in rows if (chunk := write_row(row))]
        if parts:
            await copy.write(b"".join(parts))


async def write_history(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """COPY ``rows`` into ``telemetry`` and commit, on ``conn``'s psycopg connection."""
    pg = await _driver(conn)
    async with pg.cursor() as cur:
        await copy_rows(cur, COPY_TELEMETRY, rows)
    await pg.commit()


async def rolled_back(conn: AsyncConnection) -> bool:
    """Roll back the raw connection's failed transaction; False when that failed too."""
    try:
        await (await _driver(conn)).rollback()
    except Exception:
        return False
    return True


def refused_rows(exc: Exception) -> bool:
    """True when ``exc`` may be the rows' fault (writing them again cannot help)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, (*DB_UNAVAILABLE, OSError, psycopg.InterfaceError)):
        return False
    if isinstance(cause, psycopg.Error) and cause.sqlstate is not None:
        return cause.sqlstate[:2] in _ROW_SQLSTATE_CLASSES
    # Raised before the server saw the row: psycopg cannot format a value (OverflowError,
    # DataError), or anything else a row can cause.
    return True


async def upsert_latest(engine: AsyncEngine, rows: Sequence[Sequence[Any]]) -> None:
    """Store ``rows`` in ``telemetry_latest`` in one transaction; a stored row with a
    higher seq (another replica's) is kept."""
    async with engine.connect() as conn:
        pg = await _driver(conn)
        async with pg.cursor() as cur:
            await cur.execute(_LATEST_STAGE)
            await copy_rows(cur, _COPY_LATEST, rows)
            await cur.execute(_UPSERT_LATEST)
        await pg.commit()


async def _driver(conn: AsyncConnection) -> psycopg.AsyncConnection[object]:
    """The psycopg connection under a SQLAlchemy one (COPY is not in SQLAlchemy)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


# -- reads ---------------------------------------------------------------------------------


async def stored_watermarks(conn: AsyncConnection, asset_ids: Sequence[str]) -> dict[str, int]:
    """Highest stored seq of each of ``asset_ids`` (0 when none is stored)."""
    rows = (await conn.execute(_WATERMARKS, {"ids": list(asset_ids)})).all()
    return {asset_id: int(wm or 0) for asset_id, wm in rows}


async def newest(conn: AsyncConnection, asset_id: str) -> LatestReading | None:
    """The newest stored reading of an asset (``telemetry_latest`` or history)."""
    found = (await conn.execute(_NEWEST, {"a": asset_id})).first()
    return None if found is None else reading(found)


async def fresh_envelopes(
    conn: AsyncConnection, asset_ids: Iterable[str], since: datetime
) -> dict[str, Envelope]:
    """Envelopes in ``telemetry_latest`` of readings taken at ``since`` or later, by asset
    (an asset left out has none)."""
    found = await conn.execute(_ENVELOPES, {"ids": list(asset_ids), "since": since})
    return {a: Envelope(lo, hi, stable, ts) for a, lo, hi, stable, ts in found}


async def history(
    conn: AsyncConnection,
    asset_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[LatestReading]:
    """Stored readings of an asset with start <= ts < end, newest first, at most ``limit``."""
    t = m.telemetry
    query = (
        select(*(t.c[name] for name in TELEMETRY_COLUMNS))
        .where(t.c.asset_id == asset_id)
        .order_by(t.c.ts.desc(), t.c.seq.desc())
        .limit(limit)
    )
    if start is not None:
        query = query.where(t.c.ts >= start)
    if end is not None:
        query = query.where(t.c.ts < end)
    return [reading(row) for row in await conn.execute(query)]


async def rollups(
    conn: AsyncConnection,
    asset_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[RollupMinute]:
    """Rollup minutes of an asset with start <= minute < end, newest first, at most ``limit``."""
    r = m.telemetry_1m
    query = (
        select(*(r.c[name] for name in RollupMinute._fields))
        .where(r.c.asset_id == asset_id)
        .order_by(r.c.bucket.desc())
        .limit(limit)
    )
    if start is not None:
        query = query.where(r.c.bucket >= start)
    if end is not None:
        query = query.where(r.c.bucket < end)
    return [RollupMinute(*row) for row in await conn.execute(query)]


__all__ = [
    "COPY_TELEMETRY",
    "ROW_ASSET_ID",
    "ROW_ENVELOPE",
    "ROW_SEQ",
    "ROW_TS",
    "TELEMETRY_COLUMNS",
    "TELEMETRY_COPY_TYPES",
    "RollupMinute",
    "Row",
    "copy_rows",
    "fresh_envelopes",
    "history",
    "newest",
    "reading",
    "refused_rows",
    "rolled_back",
    "stored_watermarks",
    "upsert_latest",
    "write_history",
]
