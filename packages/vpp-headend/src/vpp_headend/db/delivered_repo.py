"""SQL of the delivered-power measurement: which applied dispatches are due, the mean
power of each targeted asset in the window after its site applied (cut short where the
site released it first: a duration shorter than the window), and the result."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import Double, Text, and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import ARRAY

from . import models as m
from .dispatch_rows import Measured

d, dl, t, tm = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.telemetry


async def due(conn: AsyncConnection, applied_before: datetime, limit: int = 500) -> list[UUID]:
    """Dispatches that settled (``applied_at`` is set when a dispatch first becomes
    applied or partially applied, whatever came after: completed, cancelled, released)
    at or before ``applied_before`` and not yet measured, oldest first (the partial
    index ``ix_dispatches_unmeasured`` serves it)."""
    rows = await conn.execute(
        select(d.c.dispatch_id)
        .where(
            d.c.applied_at.is_not(None),
            d.c.measured_at.is_(None),
            d.c.applied_at <= applied_before,
        )
        .order_by(d.c.applied_at)
        .limit(limit)
    )
    return [r.dispatch_id for r in rows]


async def claim(conn: AsyncConnection, dispatch_id: UUID) -> float | None:
    """Lock a still unmeasured dispatch for this transaction; its requested power, or
    None when another replica has it or measured it already."""
    row = (
        await conn.execute(
            select(d.c.power_kw)
            .where(d.c.dispatch_id == dispatch_id, d.c.measured_at.is_(None))
            .with_for_update(skip_locked=True)
        )
    ).first()
    return None if row is None else float(row.power_kw)


async def window_means(
    conn: AsyncConnection, dispatch_id: UUID, window: timedelta
) -> dict[str, float | None]:
    """Per asset of a delivery of the dispatch that was applied: the mean ``power_kw`` of
    its readings with ``applied_at < ts <= min(applied_at + window, released_at)`` (None:
    no reading). ``released_at`` is the gateway's time of release, on the same clock as
    the readings' ``ts``."""
    end = func.least(dl.c.applied_at + bindparam("window", window), dl.c.released_at)
    in_window = and_(
        tm.c.asset_id == t.c.asset_id,
        tm.c.ts > dl.c.applied_at,
        tm.c.ts <= end,
    )
    query = (
        select(t.c.asset_id, func.avg(tm.c.power_kw).label("mean"))
        .select_from(
            t.join(
                dl, and_(dl.c.dispatch_id == t.c.dispatch_id, dl.c.site_id == t.c.site_id)
            ).outerjoin(tm, in_window)
        )
        .where(t.c.dispatch_id == dispatch_id, dl.c.applied_at.is_not(None))
        .group_by(t.c.asset_id)
        .order_by(t.c.asset_id)
    )
    rows = await conn.execute(query)
    return {r.asset_id: (None if r.mean is None else float(r.mean)) for r in rows}


async def store(conn: AsyncConnection, measured: Measured) -> None:
    """Write the per-asset and per-dispatch delivered power and mark it measured (two
    statements however many assets)."""
    known = {a: kw for a, kw in measured.per_asset.items() if kw is not None}
    if known:
        src = (
            func.unnest(
                bindparam("asset_ids", list(known), type_=ARRAY(Text)),
                bindparam("kws", list(known.values()), type_=ARRAY(Double)),
            )
            .table_valued("asset_id", "kw")
            .render_derived()
        )
        await conn.execute(
            update(t)
            .where(t.c.dispatch_id == measured.dispatch_id, t.c.asset_id == src.c.asset_id)
            .values(delivered_kw=src.c.kw)
        )
    await conn.execute(
        update(d)
        .where(d.c.dispatch_id == measured.dispatch_id)
        .values(delivered_kw=measured.delivered_kw, measured_at=measured.measured_at)
    )


__all__ = ["claim", "due", "store", "window_means"]
