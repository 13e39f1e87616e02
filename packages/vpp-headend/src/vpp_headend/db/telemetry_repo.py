"""Reads of telemetry history and its one-minute rollups.

History is written by the ingest writer's binary COPY, rollups by `vpp_headend.rollup`.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import LatestReading
from . import models as m

t = m.telemetry
r = m.telemetry_1m


class RollupMinute(NamedTuple):
    """One row of ``telemetry_1m``."""

    asset_id: str
    bucket: datetime
    n: int
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float
    last_soc_pct: float | None


async def history(
    conn: AsyncConnection,
    asset_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[LatestReading]:
    """Stored readings of an asset with start <= ts < end, newest first, at most ``limit``."""
    query = (
        select(*(t.c[name] for name in m.TELEMETRY_COLUMNS))
        .where(t.c.asset_id == asset_id)
        .order_by(t.c.ts.desc(), t.c.seq.desc())
        .limit(limit)
    )
    if start is not None:
        query = query.where(t.c.ts >= start)
    if end is not None:
        query = query.where(t.c.ts < end)
    return [LatestReading(*row) for row in await conn.execute(query)]


async def rollups(
    conn: AsyncConnection,
    asset_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[RollupMinute]:
    """Rollup minutes of an asset with start <= minute < end, newest first, at most ``limit``."""
    query = (
        select(
            r.c.asset_id,
            r.c.bucket,
            r.c.n,
            r.c.min_power_kw,
            r.c.avg_power_kw,
            r.c.max_power_kw,
            r.c.last_soc_pct,
        )
        .where(r.c.asset_id == asset_id)
        .order_by(r.c.bucket.desc())
        .limit(limit)
    )
    if start is not None:
        query = query.where(r.c.bucket >= start)
    if end is not None:
        query = query.where(r.c.bucket < end)
    return [RollupMinute(*row) for row in await conn.execute(query)]
