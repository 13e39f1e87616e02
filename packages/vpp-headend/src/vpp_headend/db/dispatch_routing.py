"""Reads that route a dispatch's deliveries — which sessions are current, which
deliveries are open or pending — and find the sweeper's work. The ``gateway_sessions``
reads that fence a send share-lock the row (a takeover on another replica waits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import models as m
from .dispatch_rows import OpenDelivery

d, dl = m.dispatches, m.dispatch_deliveries

#: Delivery states that still wait for something: delivery (pending) or an ack.
OPEN_STATES = ("pending", "sent", "received")


async def open_deliveries_for_site(conn: AsyncConnection, site_id: str) -> list[OpenDelivery]:
    """Open deliveries of a site (pending, sent, received), oldest issued first."""
    rows = await conn.execute(
        select(
            dl.c.dispatch_id,
            dl.c.site_id,
            dl.c.power_kw,
            dl.c.state,
            dl.c.sent_at,
            d.c.target_kind,
            d.c.target_id,
            d.c.issued_at,
            d.c.expires_at,
            d.c.duration_s,
            d.c.ends_at,
        )
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(dl.c.site_id == site_id, dl.c.state.in_(OPEN_STATES))
        .order_by(d.c.issued_at, d.c.dispatch_id)
    )
    return [OpenDelivery(**r._mapping) for r in rows]


async def pending_same_key_sites(
    conn: AsyncConnection,
    target_kind: str,
    target_id: str,
    site_ids: Sequence[str],
    newer_than: UUID,
) -> list[tuple[UUID, str]]:
    """(dispatch_id, site_id) of pending deliveries to any of ``site_ids`` of older
    dispatches with the same target (one query for all sites of a new dispatch)."""
    rows = await conn.execute(
        select(dl.c.dispatch_id, dl.c.site_id)
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(
            dl.c.site_id.in_(list(site_ids)),
            dl.c.state == "pending",
            d.c.target_kind == target_kind,
            d.c.target_id == target_id,
            d.c.dispatch_id != newer_than,
        )
        .order_by(dl.c.site_id, dl.c.dispatch_id)
    )
    return [(r.dispatch_id, r.site_id) for r in rows]


async def current_sessions(conn: AsyncConnection, sessions: dict[str, UUID]) -> set[str]:
    """The sites (of ``sessions``: site id -> session id) whose newest session is the
    given one; share-locks their ``gateway_sessions`` rows like `session_is_current`."""
    if not sessions:
        return set()
    g = m.gateway_sessions
    rows = await conn.execute(
        select(g.c.site_id, g.c.session_id)
        .where(g.c.site_id.in_(list(sessions)))
        .order_by(g.c.site_id)
        .with_for_update(read=True)
    )
    return {r.site_id for r in rows if sessions.get(r.site_id) == r.session_id}


async def connected_sites(conn: AsyncConnection, site_ids: Sequence[str]) -> set[str]:
    """Sites whose gateway is connected to some replica (``gateway_sessions``)."""
    g = m.gateway_sessions
    rows = await conn.execute(
        select(g.c.site_id).where(g.c.site_id.in_(list(site_ids)), g.c.connected)
    )
    return {r.site_id for r in rows}


async def session_is_current(conn: AsyncConnection, site_id: str, session_id: UUID) -> bool:
    """True when ``session_id`` is the site's newest session; share-locks the row so a
    takeover cannot commit in between (the epoch fence between replicas)."""
    g = m.gateway_sessions
    row = (
        await conn.execute(
            select(g.c.session_id).where(g.c.site_id == site_id).with_for_update(read=True)
        )
    ).first()
    return row is not None and row.session_id == session_id


async def pending_deliveries(
    conn: AsyncConnection, dispatch_id: UUID
) -> list[tuple[str, str, str]]:
    """(site_id, target_kind, target_id) of the pending deliveries of a dispatch."""
    rows = await conn.execute(
        select(dl.c.site_id, d.c.target_kind, d.c.target_id)
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(dl.c.dispatch_id == dispatch_id, dl.c.state == "pending")
    )
    return [(r.site_id, r.target_kind, r.target_id) for r in rows]


async def expirable(conn: AsyncConnection, now: datetime, sent_cutoff: datetime) -> list[UUID]:
    """Dispatches with a delivery pending past expiry, or sent or received (no final ack)
    with ``expires_at`` at or before ``sent_cutoff`` (now − the ack grace)."""
    rows = await conn.execute(
        select(dl.c.dispatch_id)
        .distinct()
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(
            dl.c.state.in_(OPEN_STATES),
            or_(
                and_(dl.c.state == "pending", d.c.expires_at <= now),
                and_(dl.c.state.in_(("sent", "received")), d.c.expires_at <= sent_cutoff),
            ),
        )
        .limit(1000)
    )
    return [r.dispatch_id for r in rows]


__all__ = [
    "OPEN_STATES",
    "connected_sites",
    "current_sessions",
    "expirable",
    "open_deliveries_for_site",
    "pending_deliveries",
    "pending_same_key_sites",
    "session_is_current",
]
