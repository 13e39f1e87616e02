"""Reads of dispatches for the REST API: one statement per request, however many rows
(deliveries, targets and events come back as arrays from LATERAL subqueries)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

from sqlalchemy import select, true, tuple_
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import DeliveryView, DispatchEvent, DispatchView, TargetView
from . import models as m
from ._sql import arrays, columns

d, dl, t, ev = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.dispatch_events

# Column order is the views' field order: rows are built positionally.
_DL_COLS = tuple(DeliveryView.__dataclass_fields__)
_T_COLS = tuple(TargetView.__dataclass_fields__)
_EV_COLS = ("at", "state", "scope", "scope_id", "detail")
# Dispatch columns beyond the identity and state: outcome, time in force, cancel.
_EXTRA_COLS = (
    "allocated_kw",
    "shortfall_kw",
    "delivered_kw",
    "applied_at",
    "measured_at",
    "duration_s",
    "ends_at",
    "cancel_requested_at",
    "cancel_reason",
)


@functools.cache
def _view_query(full: bool) -> Any:
    """Dispatches with their deliveries (and, if ``full``, targets and events) as arrays:
    one statement, one round trip, however many dispatches (a GET under load waits a
    turn of a busy event loop per round trip)."""
    dla = arrays(d, dl, "dl_", _DL_COLS, (dl.c.site_id,))
    parts: list[Any] = [d, dla]
    joined = d.join(dla, true())
    if full:
        ta = arrays(d, t, "t_", _T_COLS, (t.c.asset_id,))
        eva = arrays(d, ev, "ev_", _EV_COLS, (ev.c.event_id,))
        parts += [ta, eva]
        joined = joined.join(ta, true()).join(eva, true())
    return select(*parts).select_from(joined)


def _to_view(r: RowMapping, full: bool) -> DispatchView:
    return DispatchView(
        dispatch_id=r["dispatch_id"],
        target_kind=r["target_kind"],
        target_id=r["target_id"],
        power_kw=r["power_kw"],
        state=r["state"],
        issued_at=r["issued_at"],
        expires_at=r["expires_at"],
        updated_at=r["updated_at"],
        detail=r["detail"],
        deliveries=tuple(DeliveryView(*x) for x in columns(r, "dl_", _DL_COLS)),
        targets=tuple(TargetView(*x) for x in columns(r, "t_", _T_COLS)) if full else (),
        events=tuple(DispatchEvent(*x) for x in columns(r, "ev_", _EV_COLS)) if full else (),
        **{c: r[c] for c in _EXTRA_COLS},
    )


async def view(
    conn: AsyncConnection, dispatch_id: UUID, *, full: bool = True
) -> DispatchView | None:
    """A dispatch with its deliveries, targets and events (one statement)."""
    row = (await conn.execute(_view_query(full).where(d.c.dispatch_id == dispatch_id))).first()
    return _to_view(row._mapping, full) if row is not None else None


#: Sort key of GET /dispatches, newest first: (issued_at, dispatch_id).
DispatchKey: TypeAlias = tuple[datetime, UUID]


def dispatch_key(v: DispatchView) -> DispatchKey:
    return (v.issued_at, v.dispatch_id)


async def search(
    conn: AsyncConnection,
    *,
    asset_id: str | None,
    site_id: str | None,
    state: str | None,
    limit: int,
    after: DispatchKey | None = None,
) -> list[DispatchView]:
    """Dispatches, newest first, filtered by asset (target or allocation), site and state;
    with their deliveries (one statement). ``after``: only those older than that key
    (the next page)."""
    query = _view_query(False).order_by(d.c.issued_at.desc(), d.c.dispatch_id.desc()).limit(limit)
    if after is not None:
        # The plain bound lets the planner walk ix_dispatches_issued from the cursor on.
        query = query.where(
            d.c.issued_at <= after[0], tuple_(d.c.issued_at, d.c.dispatch_id) < tuple_(*after)
        )
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
    return [_to_view(r._mapping, False) for r in await conn.execute(query)]


__all__ = ["DispatchKey", "dispatch_key", "search", "view"]
