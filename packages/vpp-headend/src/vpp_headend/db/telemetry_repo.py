"""Reads of telemetry history (writes are the ingest writer's binary COPY)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import LatestReading
from . import models as m

t = m.telemetry


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
        select(
            t.c.asset_id,
            t.c.seq,
            t.c.ts,
            t.c.received_at,
            t.c.power_kw,
            t.c.soc_pct,
            t.c.status,
            t.c.setpoint_kw,
            t.c.setpoint_id,
        )
        .where(t.c.asset_id == asset_id)
        .order_by(t.c.ts.desc(), t.c.seq.desc())
        .limit(limit)
    )
    if start is not None:
        query = query.where(t.c.ts >= start)
    if end is not None:
        query = query.where(t.c.ts < end)
    return [LatestReading(*row) for row in await conn.execute(query)]
