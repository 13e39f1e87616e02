"""One-minute rollups: fold closed minutes of ``telemetry`` into ``telemetry_1m``.

Each minute is recomputed whole from the raw rows (never merged into a stored average), so
re-running a window is idempotent and a late reading, once its minute is re-rolled, gives
exactly the row a single on-time pass would have given. Several replicas may run the job:
a transaction-level advisory lock lets one do the work while the others skip that round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .logs import log_event

log = logging.getLogger(__name__)

#: ``pg_advisory_xact_lock`` key of the rollup job (any constant unique to this database).
LOCK_KEY = 0x5650505F314D  # "VPP_1M"
#: Minutes before the newest rollup that every run rolls again, to fold in late readings.
DEFAULT_OVERLAP = timedelta(minutes=3)
#: The background job never reaches back further than this in one run (bounded cost);
#: older gaps are rebuilt with ``vpp-headend db rollup --since``.
DEFAULT_MAX_WINDOW = timedelta(hours=2)

# Minutes are UTC minutes whatever the session TimeZone is. ``n`` etc. are only rewritten
# when they change, so re-rolling an unchanged minute writes nothing. The last SoC is the
# greatest (ts, seq) among readings with one: ``max`` over [epoch, seq, soc] arrays is an
# ordinary aggregate, so the groups hash in memory; ``array_agg(... ORDER BY)`` sorted
# every group (2.7 s against 1.6 s of one core for a minute of 100,000 assets).
_ROLLUP = text(
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

# The BRIN index on telemetry (ts), one per partition (migration 0004). A block range that
# has no summary yet is read by every query on the index, whatever its times; autovacuum
# summarizes ranges only when it gets round to the table, and under heavy ingest that is
# most of the day's data. The job summarizes what filled since its last run (a cheap read
# of those pages) before it rolls, so each minute's statement reads that minute.
_TIME_INDEXES = text(
    "SELECT inhrelid::regclass::text FROM pg_inherits"
    " WHERE inhparent = to_regclass('ix_telemetry_ts_brin')"
)
_SUMMARIZE = text("SELECT brin_summarize_new_values(CAST(:index AS regclass))")
_LOCK_TIMEOUT = text("SET LOCAL lock_timeout = '50ms'")


@dataclass(frozen=True, slots=True)
class Rolled:
    """Minutes in ``start <= bucket < end`` were rolled up; ``rows`` were written."""

    start: datetime
    end: datetime
    rows: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """Another session held the rollup lock (it is doing this work), or nothing is closed."""

    reason: str


def minute_floor(value: datetime) -> datetime:
    """The start of the UTC minute holding ``value``."""
    return value.astimezone(UTC).replace(second=0, microsecond=0)


async def rollup(
    engine: AsyncEngine,
    now: datetime,
    *,
    since: datetime | None = None,
    overlap: timedelta = DEFAULT_OVERLAP,
    max_window: timedelta = DEFAULT_MAX_WINDOW,
    wait: bool = False,
    paced: bool = False,
) -> Rolled | Skipped:
    """Roll up closed minutes (those before ``now``'s minute) into ``telemetry_1m``.

    Without ``since`` the window starts ``overlap`` before the newest stored rollup,
    but never earlier than ``max_window`` before the end. With ``since`` (a manual rebuild)
    it starts at ``since``'s minute, unbounded. ``wait`` blocks on the lock instead of
    skipping when another session holds it. ``paced`` (the background job) rolls one
    minute per statement and rests between them as long as the last one ran, so the
    database's core is never taken for the whole window at once: at 10,000 gateways one
    statement over the three-minute overlap held a core for ~3 s, and with the headend and
    PostgreSQL on the same two cores every dispatch in those seconds waited.
    """
    end = minute_floor(now)
    await summarize_new_ranges(engine)
    async with engine.begin() as conn:
        if wait:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        else:
            got = await conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
            if not got.scalar_one():
                return Skipped("locked")
        if since is not None:
            start = minute_floor(since)
        else:
            start = max(await _start(conn, end - max_window, overlap), end - max_window)
        if start >= end:
            return Skipped("no closed minute")
        # A background job on the ingest's machine: one core, not a parallel plan that
        # takes every core for seconds (dispatches and COPYs waited behind it), and its
        # groups hashed in memory rather than spilled to disk.
        await conn.execute(_GENTLE)
        if not paced:
            result = await conn.execute(_ROLLUP, {"start": start, "end": end})
            return Rolled(start, end, result.rowcount)
        rows, minute = 0, start
        while minute < end:
            began = time.perf_counter()
            nxt = minute + timedelta(minutes=1)
            rows += (await conn.execute(_ROLLUP, {"start": minute, "end": nxt})).rowcount
            minute = nxt
            if minute < end:
                await asyncio.sleep(time.perf_counter() - began)
        return Rolled(start, end, rows)


async def summarize_new_ranges(engine: AsyncEngine) -> int:
    """Summarize the block ranges of ``telemetry`` filled since the last call; how many.

    Each partition's index in its own short transaction that waits at most 50 ms for the
    table's lock: a VACUUM holding it (it summarizes ranges too) is left alone — waiting
    longer would get autovacuum cancelled. Needs ownership of the table (the role that ran
    the migrations); without it the ranges wait for autovacuum, and that is logged.
    """
    done = 0
    async with engine.connect() as conn:
        indexes = [str(i) for (i,) in (await conn.execute(_TIME_INDEXES)).all()]
        await conn.commit()
        for index in indexes:
            try:
                await conn.execute(_LOCK_TIMEOUT)
                done += int((await conn.execute(_SUMMARIZE, {"index": index})).scalar_one())
                await conn.commit()
            except DBAPIError as exc:
                await conn.rollback()
                if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                    continue  # vacuum is on it
                if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                    raise
                log_event(log, "brin_summarize_refused", level=logging.WARNING, error=exc)
                break
    return done


async def _start(conn: AsyncConnection, earliest: datetime, overlap: timedelta) -> datetime:
    newest = (await conn.execute(text("SELECT max(bucket) FROM telemetry_1m"))).scalar_one()
    if newest is None:
        return earliest
    # ``overlap`` may be any duration: keep the start on a minute boundary, or the first
    # minute of the window would be rewritten from part of its readings.
    return minute_floor(newest + timedelta(minutes=1) - overlap)


async def delete_rollups_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """Delete rollup minutes older than ``cutoff``; return how many."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text("DELETE FROM telemetry_1m WHERE bucket < :cutoff"), {"cutoff": cutoff}
        )
        return result.rowcount


__all__ = [
    "DEFAULT_MAX_WINDOW",
    "DEFAULT_OVERLAP",
    "Rolled",
    "Skipped",
    "delete_rollups_before",
    "minute_floor",
    "rollup",
    "summarize_new_ranges",
]
