"""SQL of the one-minute rollup job: the fold of ``telemetry`` minutes into
``telemetry_1m``, its advisory lock, the BRIN summaries it keeps current, and pruning."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

#: ``pg_advisory_xact_lock`` key of the rollup job (any constant unique to this database).
LOCK_KEY = 0x5650505F314D  # "VPP_1M"

#: The fold of ``:start <= ts < :end`` into minutes. Minutes are UTC minutes whatever the
#: session TimeZone is. ``n`` etc. are only rewritten when they change, so re-rolling an
#: unchanged minute writes nothing. The last SoC is the greatest (ts, seq) among readings
#: with one: ``max`` over [epoch, seq, soc] arrays is an ordinary aggregate, so the groups
#: hash in memory (``array_agg(... ORDER BY)`` would sort every group).
ROLLUP = text(
    """
    INSERT INTO telemetry_1m
        (asset_id, bucket, n, min_power_kw, avg_power_kw, max_power_kw, last_soc_pct)
    SELECT asset_id,
           date_trunc('minute', ts, 'UTC'),
           count(*),
           min(power_kw),
           avg(power_kw),
           max(power_kw),
           (max(ARRAY[extract(epoch FROM ts)::float8, seq::float8, soc_pct])
               FILTER (WHERE soc_pct IS NOT NULL))[3]
    FROM telemetry
    WHERE ts >= :start AND ts < :end
    GROUP BY asset_id, date_trunc('minute', ts, 'UTC')
    ON CONFLICT (asset_id, bucket) DO UPDATE SET
        n = EXCLUDED.n,
        min_power_kw = EXCLUDED.min_power_kw,
        avg_power_kw = EXCLUDED.avg_power_kw,
        max_power_kw = EXCLUDED.max_power_kw,
        last_soc_pct = EXCLUDED.last_soc_pct
    WHERE (telemetry_1m.n, telemetry_1m.min_power_kw, telemetry_1m.avg_power_kw,
           telemetry_1m.max_power_kw, telemetry_1m.last_soc_pct)
          IS DISTINCT FROM
          (EXCLUDED.n, EXCLUDED.min_power_kw, EXCLUDED.avg_power_kw,
           EXCLUDED.max_power_kw, EXCLUDED.last_soc_pct)
    """
)

_GENTLE = text(
    "SELECT set_config('max_parallel_workers_per_gather', '0', true),"
    " set_config('work_mem', '64MB', true)"
)
# The BRIN index on telemetry (ts), one per partition (migration 0004).
_TIME_INDEXES = text(
    "SELECT inhrelid::regclass::text FROM pg_inherits"
    " WHERE inhparent = to_regclass('ix_telemetry_ts_brin')"
)
_SUMMARIZE = text("SELECT brin_summarize_new_values(CAST(:index AS regclass))")
_LOCK_TIMEOUT = text("SET LOCAL lock_timeout = '50ms'")
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:k)")
_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_NEWEST = text("SELECT max(bucket) FROM telemetry_1m")
_DELETE_BEFORE = text("DELETE FROM telemetry_1m WHERE bucket < :cutoff")


async def lock(conn: AsyncConnection) -> None:
    """Take the job's lock for ``conn``'s transaction, waiting for it."""
    await conn.execute(_LOCK, {"k": LOCK_KEY})


async def try_lock(conn: AsyncConnection) -> bool:
    """Take the job's lock for ``conn``'s transaction; False when another session holds it."""
    return bool((await conn.execute(_TRY_LOCK, {"k": LOCK_KEY})).scalar_one())


async def newest_minute(conn: AsyncConnection) -> datetime | None:
    """The newest stored rollup minute (None: none yet)."""
    newest: datetime | None = (await conn.execute(_NEWEST)).scalar_one()
    return newest


async def be_gentle(conn: AsyncConnection) -> None:
    """For the rest of ``conn``'s transaction: one core, not a parallel plan that takes
    every core for seconds (dispatches and COPYs waited behind it), and groups hashed in
    memory rather than spilled to disk."""
    await conn.execute(_GENTLE)


async def roll(conn: AsyncConnection, start: datetime, end: datetime) -> int:
    """Roll up the minutes in ``start <= bucket < end``; how many rows were written."""
    return (await conn.execute(ROLLUP, {"start": start, "end": end})).rowcount


async def time_indexes(conn: AsyncConnection) -> list[str]:
    """The partitions' BRIN indexes on ``ts``, read in a transaction of their own."""
    indexes = [str(i) for (i,) in (await conn.execute(_TIME_INDEXES)).all()]
    await conn.commit()
    return indexes


async def summarize(conn: AsyncConnection, index: str) -> int:
    """Summarize the new block ranges of one index in a transaction of its own that waits
    at most 50 ms for the table's lock; how many. A `DBAPIError` is raised after rollback
    (``LockNotAvailable``: a VACUUM holds the table)."""
    try:
        await conn.execute(_LOCK_TIMEOUT)
        done = int((await conn.execute(_SUMMARIZE, {"index": index})).scalar_one())
        await conn.commit()
    except DBAPIError:
        await conn.rollback()
        raise
    return done


async def delete_before(conn: AsyncConnection, cutoff: datetime) -> int:
    """Delete rollup minutes older than ``cutoff``; how many."""
    return (await conn.execute(_DELETE_BEFORE, {"cutoff": cutoff})).rowcount


__all__ = [
    "LOCK_KEY",
    "ROLLUP",
    "be_gentle",
    "delete_before",
    "lock",
    "newest_minute",
    "roll",
    "summarize",
    "time_indexes",
    "try_lock",
]
