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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import rollup_repo as repo
from .db.rollup_repo import LOCK_KEY
from .logs import log_event

log = logging.getLogger(__name__)

#: Minutes before the newest rollup that every run rolls again, to fold in late readings.
DEFAULT_OVERLAP = timedelta(minutes=3)
#: The background job never reaches back further than this in one run (bounded cost);
#: older gaps are rebuilt with ``vpp-headend db rollup --since``.
DEFAULT_MAX_WINDOW = timedelta(hours=2)


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
    database's core is never taken for the whole window at once (docs/scaling.md).
    """
    end = minute_floor(now)
    await summarize_new_ranges(engine)
    async with engine.begin() as conn:
        if wait:
            await repo.lock(conn)
        elif not await repo.try_lock(conn):
            return Skipped("locked")
        if since is not None:
            start = minute_floor(since)
        else:
            start = max(await _start(conn, end - max_window, overlap), end - max_window)
        if start >= end:
            return Skipped("no closed minute")
        # A background job on the ingest's machine: gentle on the cores and the disk.
        await repo.be_gentle(conn)
        if not paced:
            return Rolled(start, end, await repo.roll(conn, start, end))
        rows, minute = 0, start
        while minute < end:
            began = time.perf_counter()
            nxt = minute + timedelta(minutes=1)
            rows += await repo.roll(conn, minute, nxt)
            minute = nxt
            if minute < end:
                await asyncio.sleep(time.perf_counter() - began)
        return Rolled(start, end, rows)


async def summarize_new_ranges(engine: AsyncEngine) -> int:
    """Summarize the block ranges of ``telemetry`` filled since the last call; how many.

    A block range of the BRIN index on ``ts`` that has no summary yet is read by every
    query on the index, whatever its times, and autovacuum summarizes only when it gets
    round to the table: summarized before each roll, each minute's statement reads that
    minute.
    Each partition's index in its own short transaction that waits at most 50 ms for the
    table's lock: a VACUUM holding it (it summarizes ranges too) is left alone — waiting
    longer would get autovacuum cancelled. Needs ownership of the table (the role that ran
    the migrations); without it the ranges wait for autovacuum, and that is logged.
    """
    done = 0
    async with engine.connect() as conn:
        for index in await repo.time_indexes(conn):
            try:
                done += await repo.summarize(conn, index)
            except DBAPIError as exc:
                if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                    continue  # vacuum is on it
                if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                    raise
                log_event(log, "brin_summarize_refused", level=logging.WARNING, error=exc)
                break
    return done


async def _start(conn: AsyncConnection, earliest: datetime, overlap: timedelta) -> datetime:
    newest = await repo.newest_minute(conn)
    if newest is None:
        return earliest
    # ``overlap`` may be any duration: keep the start on a minute boundary, or the first
    # minute of the window would be rewritten from part of its readings.
    return minute_floor(newest + timedelta(minutes=1) - overlap)


async def delete_rollups_before(engine: AsyncEngine, cutoff: datetime) -> int:
    """Delete rollup minutes older than ``cutoff``; return how many."""
    async with engine.begin() as conn:
        return await repo.delete_before(conn, cutoff)


__all__ = [
    "DEFAULT_MAX_WINDOW",
    "DEFAULT_OVERLAP",
    "LOCK_KEY",
    "Rolled",
    "Skipped",
    "delete_rollups_before",
    "minute_floor",
    "rollup",
    "summarize_new_ranges",
]
