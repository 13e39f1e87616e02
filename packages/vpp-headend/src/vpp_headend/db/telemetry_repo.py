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
from sqlalchemy import func, select, text, true, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..domain import NOT_DISPATCHABLE_KINDS, Asset, Envelope, LatestReading, Site, SiteTotal
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

# Every site's newest readings summed, in `SiteTotal` field order (`site_totals`).
_SITE_TOTALS = text(
    """
    SELECT a.site_id,
           COALESCE(sum(l.power_kw) FILTER (WHERE NOT a.kind = ANY(k.measure_only)), 0),
           sum(l.power_kw) FILTER (WHERE a.kind = ANY(k.measure_only)),
           count(*), max(l.ts), min(l.ts), max(l.received_at)
    FROM telemetry_latest l
    JOIN assets a ON a.asset_id = l.asset_id
    CROSS JOIN (SELECT CAST(:not_dispatchable AS text[]) AS measure_only) k
    GROUP BY a.site_id
    """
)
# A site's row and its groups (its assets come with their readings, `site_latest`).
_SITE = text(
    """
    SELECT s.site_id, s.telemetry_interval_s, s.legacy,
           ARRAY(SELECT gm.group_id FROM group_members gm
                 WHERE gm.site_id = s.site_id ORDER BY gm.group_id) AS groups
    FROM sites s
    WHERE s.site_id = :s
    """
)
#: Columns of an `Asset`, in its field order.
_ASSET_COLUMNS = tuple(Asset.__dataclass_fields__)


class RollupMinute(NamedTuple):
    """One row of ``telemetry_1m``."""

    asset_id: str
    bucket: datetime
    n: int
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float
    last_soc_pct: float | None


class SiteMinute(NamedTuple):
    """One minute of a site: its dispatchable assets' ``telemetry_1m`` rows summed."""

    bucket: datetime
    assets: int  # how many assets have a row that minute
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float


#: Sort key of an asset's history, newest first: (ts, seq).
HistoryKey: TypeAlias = tuple[datetime, int]
#: Sort key of rollup minutes (an asset's or a site's), newest first.
MinuteKey: TypeAlias = tuple[datetime]


def history_key(r: LatestReading) -> HistoryKey:
    return (r.ts, r.seq)


def minute_key(m: RollupMinute | SiteMinute) -> MinuteKey:
    return (m.bucket,)


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
    after: HistoryKey | None = None,
) -> list[LatestReading]:
    """Stored readings of an asset with start <= ts < end, newest first, at most ``limit``;
    ``after``: only those older than that key (the next page)."""
    t = m.telemetry
    query = (
        select(*(t.c[name] for name in TELEMETRY_COLUMNS))
        .where(t.c.asset_id == asset_id)
        .order_by(t.c.ts.desc(), t.c.seq.desc())
        .limit(limit)
    )
    if after is not None:
        # The plain bound is what (asset_id, ts) and the partitions' ranges can use.
        query = query.where(t.c.ts <= after[0], tuple_(t.c.ts, t.c.seq) < tuple_(*after))
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
    after: MinuteKey | None = None,
) -> list[RollupMinute]:
    """Rollup minutes of an asset with start <= minute < end, newest first, at most
    ``limit``; ``after``: only those before that minute (the next page)."""
    r = m.telemetry_1m
    query = (
        select(*(r.c[name] for name in RollupMinute._fields))
        .where(r.c.asset_id == asset_id, *_minute_bounds(r.c.bucket, start, end, after))
        .order_by(r.c.bucket.desc())
        .limit(limit)
    )
    return [RollupMinute(*row) for row in await conn.execute(query)]


async def site_rollups(
    conn: AsyncConnection,
    site_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    after: MinuteKey | None = None,
) -> list[SiteMinute]:
    """A site's minutes with start <= minute < end, newest first, at most ``limit``: the
    sums of its dispatchable assets' rollups (meters left out, as in `site_totals`).

    Each asset has at most one row a minute, so the newest ``limit`` minutes of the site
    are among the newest ``limit`` rows of each asset: one bounded index scan per asset
    (LATERAL), then the sums, whatever the table's size.
    """
    a, r = m.assets, m.telemetry_1m
    newest = (
        select(r.c.bucket, r.c.min_power_kw, r.c.avg_power_kw, r.c.max_power_kw)
        .where(r.c.asset_id == a.c.asset_id, *_minute_bounds(r.c.bucket, start, end, after))
        .order_by(r.c.bucket.desc())
        .limit(limit)
        .lateral("newest")
    )
    query = (
        select(
            newest.c.bucket,
            func.count(),
            func.sum(newest.c.min_power_kw),
            func.sum(newest.c.avg_power_kw),
            func.sum(newest.c.max_power_kw),
        )
        .select_from(a.join(newest, true()))
        .where(a.c.site_id == site_id, a.c.kind.not_in(NOT_DISPATCHABLE_KINDS))
        .group_by(newest.c.bucket)
        .order_by(newest.c.bucket.desc())
        .limit(limit)
    )
    return [SiteMinute(*row) for row in await conn.execute(query)]


def _minute_bounds(
    bucket: Any, start: datetime | None, end: datetime | None, after: MinuteKey | None
) -> list[Any]:
    bounds = []
    if start is not None:
        bounds.append(bucket >= start)
    if end is not None:
        bounds.append(bucket < end)
    if after is not None:
        bounds.append(bucket < after[0])
    return bounds


async def site_latest(
    conn: AsyncConnection, site_id: str
) -> tuple[Site, list[tuple[Asset, LatestReading | None]]] | None:
    """A site with its groups and assets, and each asset's row of ``telemetry_latest``
    (None when it has none), by asset id; None for an unknown site. Two statements
    however many assets (that table has no site column: assets joins it)."""
    found = (await conn.execute(_SITE, {"s": site_id})).first()
    if found is None:
        return None
    a, latest = m.assets, m.telemetry_latest
    query = (
        select(
            *(a.c[name] for name in _ASSET_COLUMNS),
            *(latest.c[name].label(f"l_{name}") for name in TELEMETRY_COLUMNS),
        )
        .select_from(a.outerjoin(latest, latest.c.asset_id == a.c.asset_id))
        .where(a.c.site_id == site_id)
        .order_by(a.c.asset_id)
    )
    width = len(_ASSET_COLUMNS)
    readings: list[tuple[Asset, LatestReading | None]] = []
    for row in await conn.execute(query):
        stored = row[width:]
        readings.append((Asset(*row[:width]), None if stored[0] is None else reading(stored)))
    site = Site(
        site_id=found.site_id,
        assets=tuple(asset for asset, _ in readings),
        groups=tuple(found.groups),
        telemetry_interval_s=found.telemetry_interval_s,
        legacy=found.legacy,
    )
    return site, readings


async def site_totals(conn: AsyncConnection) -> dict[str, SiteTotal]:
    """The total of every site with a row in ``telemetry_latest``, by site id: one
    GROUP BY over that table joined to assets (a hash join of two small tables)."""
    found = await conn.execute(_SITE_TOTALS, {"not_dispatchable": list(NOT_DISPATCHABLE_KINDS)})
    return {row[0]: SiteTotal(*row) for row in found}


__all__ = [
    "COPY_TELEMETRY",
    "ROW_ASSET_ID",
    "ROW_ENVELOPE",
    "ROW_SEQ",
    "ROW_TS",
    "TELEMETRY_COLUMNS",
    "TELEMETRY_COPY_TYPES",
    "HistoryKey",
    "MinuteKey",
    "RollupMinute",
    "Row",
    "SiteMinute",
    "copy_rows",
    "fresh_envelopes",
    "history",
    "history_key",
    "minute_key",
    "newest",
    "reading",
    "refused_rows",
    "rolled_back",
    "rollups",
    "site_latest",
    "site_rollups",
    "site_totals",
    "stored_watermarks",
    "upsert_latest",
    "write_history",
]
