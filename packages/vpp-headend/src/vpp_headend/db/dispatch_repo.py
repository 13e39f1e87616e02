"""SQL of the dispatch lifecycle: dispatches, per-site deliveries, per-asset targets, events.

Lock order, everywhere: the ``dispatches`` row first (FOR UPDATE), then its deliveries
and targets, so concurrent acks, sweeps and deliveries of one dispatch cannot deadlock.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import DeliveryView, DispatchEvent, DispatchView, TargetView
from . import models as m

d, dl, t, ev = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.dispatch_events


@dataclass(frozen=True, slots=True)
class OpenDelivery:
    """A delivery still in flight, with what is needed to (re)send it."""

    dispatch_id: UUID
    site_id: str
    power_kw: float
    state: str
    sent_at: datetime | None
    target_kind: str
    target_id: str
    issued_at: datetime
    expires_at: datetime


async def by_idempotency_key(conn: AsyncConnection, key: str) -> RowMapping | None:
    """The dispatch created with this Idempotency-Key."""
    row = (await conn.execute(select(d).where(d.c.idempotency_key == key))).first()
    return row._mapping if row is not None else None


async def insert_dispatch(conn: AsyncConnection, **values: Any) -> None:
    """Insert the dispatches row."""
    await conn.execute(insert(d).values(**values))


async def insert_delivery(conn: AsyncConnection, **values: Any) -> None:
    """Insert one per-site delivery."""
    await conn.execute(insert(dl).values(**values))


async def insert_rows(conn: AsyncConnection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (same keys each) into ``table`` in one multi-row INSERT."""
    if rows:
        await conn.execute(insert(table).values(list(rows)))


def event_row(
    dispatch_id: UUID,
    at: datetime,
    state: str,
    scope: str,
    scope_id: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """One ``dispatch_events`` row, for `insert_rows`."""
    return {
        "dispatch_id": dispatch_id,
        "at": at,
        "state": state,
        "scope": scope,
        "scope_id": scope_id,
        "detail": detail,
    }


async def insert_event(
    conn: AsyncConnection,
    dispatch_id: UUID,
    at: datetime,
    state: str,
    scope: str,
    scope_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Record one transition."""
    await conn.execute(
        insert(ev).values(
            dispatch_id=dispatch_id,
            at=at,
            state=state,
            scope=scope,
            scope_id=scope_id,
            detail=detail,
        )
    )


async def lock_dispatch(conn: AsyncConnection, dispatch_id: UUID) -> RowMapping | None:
    """The dispatches row, locked for this transaction."""
    row = (
        await conn.execute(select(d).where(d.c.dispatch_id == dispatch_id).with_for_update())
    ).first()
    return row._mapping if row is not None else None


async def lock_with_deliveries(
    conn: AsyncConnection, dispatch_id: UUID
) -> tuple[RowMapping | None, dict[str, dict[str, Any]]]:
    """`lock_dispatch`, then the deliveries' states: the dispatches row (locked for this
    transaction) and, by site id, each delivery's ``site_id``, ``state``, ``sent_at`` and
    ``attempts``.

    Two statements on purpose. In one (a join with ``FOR UPDATE OF dispatches``), a
    statement that waited for the lock re-reads only the locked row when it proceeds; the
    joined deliveries would come from the snapshot taken before the wait. Two sites acking
    a group dispatch at once then each saw the other's delivery as it was before, and the
    dispatch never became ``applied``. Under READ COMMITTED the second statement sees
    everything committed before the lock was granted.
    """
    row = await lock_dispatch(conn, dispatch_id)
    if row is None:
        return None, {}
    rows = await conn.execute(
        select(dl.c.site_id, dl.c.state, dl.c.sent_at, dl.c.attempts)
        .where(dl.c.dispatch_id == dispatch_id)
        .order_by(dl.c.site_id)
    )
    dlvs = {
        r.site_id: {
            "site_id": r.site_id,
            "state": r.state,
            "sent_at": r.sent_at,
            "attempts": r.attempts,
        }
        for r in rows
    }
    return row, dlvs


async def deliveries(conn: AsyncConnection, dispatch_id: UUID) -> list[RowMapping]:
    """The deliveries of a dispatch (call after `lock_dispatch` to hold them)."""
    rows = await conn.execute(
        select(dl).where(dl.c.dispatch_id == dispatch_id).order_by(dl.c.site_id)
    )
    return [r._mapping for r in rows]


async def set_delivery(
    conn: AsyncConnection, dispatch_id: UUID, site_id: str, **values: Any
) -> None:
    """Update one delivery."""
    await conn.execute(
        update(dl).where(dl.c.dispatch_id == dispatch_id, dl.c.site_id == site_id).values(**values)
    )


async def set_dispatch(conn: AsyncConnection, dispatch_id: UUID, **values: Any) -> None:
    """Update the dispatches row."""
    await conn.execute(update(d).where(d.c.dispatch_id == dispatch_id).values(**values))


async def targets(conn: AsyncConnection, dispatch_id: UUID) -> dict[str, RowMapping]:
    """Per-asset rows of a dispatch, by asset id."""
    rows = await conn.execute(select(t).where(t.c.dispatch_id == dispatch_id))
    return {r.asset_id: r._mapping for r in rows}


async def upsert_target(conn: AsyncConnection, **values: Any) -> None:
    """Insert or replace one per-asset row (the caller decided the values)."""
    await conn.execute(_target_upsert(tuple(sorted(values))), values)


@functools.cache
def _target_upsert(keys: tuple[str, ...]) -> Any:
    """The upsert for one set of columns, built once: building ``excluded`` creates a
    column proxy per column each time (a few % of the headend's CPU under load)."""
    stmt = pg_insert(t).values({k: bindparam(k, type_=t.c[k].type) for k in keys})
    return stmt.on_conflict_do_update(
        index_elements=[t.c.dispatch_id, t.c.asset_id],
        set_={k: stmt.excluded[k] for k in keys if k not in ("dispatch_id", "asset_id")},
    )


async def open_deliveries_for_site(conn: AsyncConnection, site_id: str) -> list[OpenDelivery]:
    """Pending and sent deliveries of a site, oldest issued first."""
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
        )
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(dl.c.site_id == site_id, dl.c.state.in_(("pending", "sent")))
        .order_by(d.c.issued_at, d.c.dispatch_id)
    )
    return [OpenDelivery(**r._mapping) for r in rows]


async def pending_same_key(
    conn: AsyncConnection, target_kind: str, target_id: str, site_id: str, newer_than: UUID
) -> list[UUID]:
    """Pending deliveries to ``site_id`` of older dispatches with the same target."""
    rows = await conn.execute(
        select(dl.c.dispatch_id)
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(
            dl.c.site_id == site_id,
            dl.c.state == "pending",
            d.c.target_kind == target_kind,
            d.c.target_id == target_id,
            d.c.dispatch_id != newer_than,
        )
    )
    return [r.dispatch_id for r in rows]


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
    """Dispatches with a delivery pending past expiry, or sent and unacked past the grace."""
    rows = await conn.execute(
        select(dl.c.dispatch_id)
        .distinct()
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(
            dl.c.state.in_(("pending", "sent")),
            or_(
                and_(dl.c.state == "pending", d.c.expires_at <= now),
                and_(dl.c.state == "sent", d.c.expires_at <= sent_cutoff),
            ),
        )
        .limit(1000)
    )
    return [r.dispatch_id for r in rows]


async def view(
    conn: AsyncConnection, dispatch_id: UUID, *, full: bool = True
) -> DispatchView | None:
    """A dispatch with its deliveries, targets and events."""
    row = (await conn.execute(select(d).where(d.c.dispatch_id == dispatch_id))).first()
    if row is None:
        return None
    return (await views(conn, [row._mapping], full=full))[0]


async def views(
    conn: AsyncConnection, rows: Sequence[RowMapping], *, full: bool = True
) -> list[DispatchView]:
    """Views of several dispatches rows (deliveries always; targets and events if ``full``)."""
    ids = [r["dispatch_id"] for r in rows]
    by_id_dl: dict[UUID, list[DeliveryView]] = {i: [] for i in ids}
    for r in await conn.execute(select(dl).where(dl.c.dispatch_id.in_(ids)).order_by(dl.c.site_id)):
        by_id_dl[r.dispatch_id].append(
            DeliveryView(r.site_id, r.power_kw, r.state, r.sent_at, r.updated_at, r.reason)
        )
    by_id_t: dict[UUID, list[TargetView]] = {i: [] for i in ids}
    by_id_ev: dict[UUID, list[DispatchEvent]] = {i: [] for i in ids}
    if full:
        for r in await conn.execute(
            select(t).where(t.c.dispatch_id.in_(ids)).order_by(t.c.asset_id)
        ):
            by_id_t[r.dispatch_id].append(
                TargetView(
                    r.asset_id,
                    r.site_id,
                    r.allocation_kw,
                    r.state,
                    r.applied_kw,
                    r.clamped,
                    r.reason,
                    r.updated_at,
                )
            )
        for r in await conn.execute(
            select(ev).where(ev.c.dispatch_id.in_(ids)).order_by(ev.c.event_id)
        ):
            by_id_ev[r.dispatch_id].append(
                DispatchEvent(r.at, r.state, r.scope, r.scope_id, r.detail)
            )
    return [
        DispatchView(
            dispatch_id=r["dispatch_id"],
            target_kind=r["target_kind"],
            target_id=r["target_id"],
            power_kw=r["power_kw"],
            state=r["state"],
            issued_at=r["issued_at"],
            expires_at=r["expires_at"],
            updated_at=r["updated_at"],
            detail=r["detail"],
            deliveries=tuple(by_id_dl[r["dispatch_id"]]),
            targets=tuple(by_id_t[r["dispatch_id"]]),
            events=tuple(by_id_ev[r["dispatch_id"]]),
        )
        for r in rows
    ]


async def search(
    conn: AsyncConnection,
    *,
    asset_id: str | None,
    site_id: str | None,
    state: str | None,
    limit: int,
) -> list[DispatchView]:
    """Dispatches, newest first, filtered by asset (target or allocation), site and state."""
    query = select(d).order_by(d.c.issued_at.desc(), d.c.dispatch_id.desc()).limit(limit)
    if asset_id is not None:
        query = query.where(
            d.c.dispatch_id.in_(select(t.c.dispatch_id).where(t.c.asset_id == asset_id))
        )
    if site_id is not None:
        query = query.where(
            d.c.dispatch_id.in_(select(dl.c.dispatch_id).where(dl.c.site_id == site_id))
        )
    if state is not None:
        query = query.where(d.c.state == state)
    rows = [r._mapping for r in await conn.execute(query)]
    return await views(conn, rows, full=False)


async def count_by_state(conn: AsyncConnection) -> dict[str, int]:
    """Number of dispatches per state."""
    rows = await conn.execute(select(d.c.state, func.count()).group_by(d.c.state))
    return {state: int(n) for state, n in rows}
