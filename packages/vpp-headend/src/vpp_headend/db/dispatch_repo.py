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

from sqlalchemy import Boolean, Text, and_, bindparam, func, insert, or_, select, true, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import ARRAY

from ..domain import DeliveryView, DispatchEvent, DispatchView, TargetView
from . import models as m

d, dl, t, ev = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.dispatch_events


#: Delivery states that still wait for something: delivery (pending) or an ack.
OPEN_STATES = ("pending", "sent", "received")


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


async def create(
    conn: AsyncConnection,
    dispatch: dict[str, Any],
    deliveries: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    targets: Sequence[dict[str, Any]],
    notify: str | None,
) -> None:
    """Insert a new dispatch with its deliveries, events and targets — and ``pg_notify``
    on ``notify`` if given — in one statement (data-modifying CTEs; the foreign keys are
    checked at its end). One round trip instead of five: under load each costs a turn of
    a busy event loop."""
    params = {f"d_{k}": v for k, v in dispatch.items()}
    params |= _unnest_params("dl_", deliveries, _INSERT_COLS["dispatch_deliveries"])
    params |= _unnest_params("ev_", events, _INSERT_COLS["dispatch_events"])
    params |= _unnest_params("t_", targets, _NEW_TARGET_COLS)
    params |= {
        "notify": notify is not None,
        "channel": notify or "",
        "payload": str(dispatch["dispatch_id"]),
    }
    await conn.execute(_create_stmt(), params)


# Hot-path statements are built once with named bind parameters and executed with a
# dict: SQLAlchemy compiles each once, and no statement objects are built per call.
# (Built per call, they were most of the headend's cyclic garbage under load, ~3,500
# objects a second, and a multi-row VALUES was compiled anew each time.)

_NEW_TARGET_COLS = ("dispatch_id", "asset_id", "site_id", "allocation_kw", "state", "updated_at")
_INSERT_COLS = {
    "dispatch_deliveries": (
        "dispatch_id",
        "site_id",
        "power_kw",
        "state",
        "attempts",
        "sent_at",
        "updated_at",
    ),
    "dispatch_events": ("dispatch_id", "at", "state", "scope", "scope_id", "detail"),
}
_DISPATCH_COLS = (
    "dispatch_id",
    "target_kind",
    "target_id",
    "power_kw",
    "state",
    "idempotency_key",
    "request_fingerprint",
    "issued_at",
    "expires_at",
    "updated_at",
    "detail",
)


def _unnest_insert(table: Any, prefix: str, cols: Sequence[str]) -> Any:
    """``INSERT INTO table (cols) SELECT … FROM unnest(:<prefix><col>, …)``, in the
    arrays' order: one array parameter per column, any number of rows (zero included)."""
    arrays = [bindparam(f"{prefix}{c}", type_=ARRAY(table.c[c].type)) for c in cols]
    src = func.unnest(*arrays).table_valued(*cols, with_ordinality="ord").render_derived()
    return pg_insert(table).from_select(
        list(cols), select(*(src.c[c] for c in cols)).order_by(src.c.ord)
    )


def _unnest_params(
    prefix: str, rows: Sequence[dict[str, Any]], cols: Sequence[str]
) -> dict[str, list[Any]]:
    return {f"{prefix}{c}": [r[c] for r in rows] for c in cols}


@functools.cache
def _create_stmt() -> Any:
    ctes = [
        insert(d)
        .values({k: bindparam(f"d_{k}", type_=d.c[k].type) for k in _DISPATCH_COLS})
        .cte("new_dispatch"),
        _unnest_insert(dl, "dl_", _INSERT_COLS["dispatch_deliveries"]).cte("new_deliveries"),
        _unnest_insert(ev, "ev_", _INSERT_COLS["dispatch_events"]).cte("new_events"),
        _unnest_insert(t, "t_", _NEW_TARGET_COLS).cte("new_targets"),
    ]
    notify = func.pg_notify(bindparam("channel", type_=Text), bindparam("payload", type_=Text))
    return select(notify).where(bindparam("notify", type_=Boolean)).add_cte(*ctes)


def event_row(
    dispatch_id: UUID,
    at: datetime,
    state: str,
    scope: str,
    scope_id: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """One ``dispatch_events`` row, for `events_insert`."""
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


_LOCK = (
    select(d)
    .where(d.c.dispatch_id == bindparam("dispatch_id", type_=d.c.dispatch_id.type))
    .with_for_update()
)


async def lock_dispatch(conn: AsyncConnection, dispatch_id: UUID) -> RowMapping | None:
    """The dispatches row, locked for this transaction."""
    row = (await conn.execute(_LOCK, {"dispatch_id": dispatch_id})).first()
    return row._mapping if row is not None else None


@dataclass(frozen=True, slots=True)
class Locked:
    """A dispatch locked for this transaction, with its deliveries and targets as read
    after the lock was granted."""

    row: RowMapping
    deliveries: dict[str, dict[str, Any]]  # by site id: site_id, state, sent_at, attempts
    targets: dict[str, dict[str, Any]]  # by asset id: every dispatch_targets column


_LOCK_DL_COLS = ("site_id", "state", "sent_at", "attempts")


@functools.cache
def _after_lock_query() -> Any:
    dla = _arrays(dl, "dl_", _LOCK_DL_COLS, (dl.c.site_id,))
    ta = _arrays(t, "t_", _T_COLS, (t.c.asset_id,))
    return (
        select(dla, ta)
        .select_from(d.join(dla, true()).join(ta, true()))
        .where(d.c.dispatch_id == bindparam("dispatch_id", type_=d.c.dispatch_id.type))
    )


async def lock_with_deliveries(conn: AsyncConnection, dispatch_id: UUID) -> Locked | None:
    """`lock_dispatch`, then its deliveries and targets; None for an unknown dispatch.

    Two statements on purpose. In one (a join with ``FOR UPDATE OF dispatches``), a
    statement that waited for the lock re-reads only the locked row when it proceeds; the
    joined deliveries would come from the snapshot taken before the wait. Two sites acking
    a group dispatch at once then each saw the other's delivery as it was before, and the
    dispatch never became ``applied``. Under READ COMMITTED the second statement (the
    deliveries and the targets together) sees everything committed before the lock was
    granted.
    """
    row = await lock_dispatch(conn, dispatch_id)
    if row is None:
        return None
    after = (await conn.execute(_after_lock_query(), {"dispatch_id": dispatch_id})).one()
    m = after._mapping
    dlvs = {
        x[0]: dict(zip(_LOCK_DL_COLS, x, strict=True)) for x in _columns(m, "dl_", _LOCK_DL_COLS)
    }
    targets = {x[0]: dict(zip(_T_COLS, x, strict=True)) for x in _columns(m, "t_", _T_COLS)}
    return Locked(row, dlvs, targets)


class Writes:
    """Writes decided in Python, sent together as one statement (data-modifying CTEs) —
    one round trip however many. Each is a prebuilt statement and its parameters (names
    unique per statement); they must not touch the same row twice: they all see the
    statement's one snapshot."""

    def __init__(self) -> None:
        self._stmts: list[Any] = []
        self._params: dict[str, Any] = {}

    def add(self, write: tuple[Any, dict[str, Any]]) -> None:
        stmt, params = write
        if stmt in self._stmts:
            raise ValueError("one Writes takes each statement once")
        self._stmts.append(stmt)
        self._params |= params

    def __bool__(self) -> bool:
        return bool(self._stmts)

    async def run(self, conn: AsyncConnection) -> None:
        stmts, params = tuple(self._stmts), self._params
        self._stmts, self._params = [], {}
        if len(stmts) == 1:
            await conn.execute(stmts[0], params)
        elif stmts:
            await conn.execute(_together(stmts), params)


@functools.cache
def _together(stmts: tuple[Any, ...]) -> Any:
    return select(true()).add_cte(*(x.cte(f"w{i}") for i, x in enumerate(stmts)))


@functools.cache
def _delivery_update(keys: tuple[str, ...]) -> Any:
    return (
        update(dl)
        .where(
            dl.c.dispatch_id == bindparam("dlu_dispatch_id", type_=dl.c.dispatch_id.type),
            dl.c.site_id == bindparam("dlu_site_id", type_=Text),
        )
        .values({k: bindparam(f"dlu_{k}", type_=dl.c[k].type) for k in keys})
    )


def delivery_update(dispatch_id: UUID, site_id: str, **values: Any) -> tuple[Any, dict[str, Any]]:
    """UPDATE of one delivery (for `Writes`, or `set_delivery`)."""
    params = {f"dlu_{k}": v for k, v in values.items()}
    params |= {"dlu_dispatch_id": dispatch_id, "dlu_site_id": site_id}
    return _delivery_update(tuple(sorted(values))), params


@functools.cache
def _dispatch_update(keys: tuple[str, ...]) -> Any:
    return (
        update(d)
        .where(d.c.dispatch_id == bindparam("du_dispatch_id", type_=d.c.dispatch_id.type))
        .values({k: bindparam(f"du_{k}", type_=d.c[k].type) for k in keys})
    )


def dispatch_update(dispatch_id: UUID, **values: Any) -> tuple[Any, dict[str, Any]]:
    """UPDATE of the dispatches row (for `Writes`, or `set_dispatch`)."""
    params = {f"du_{k}": v for k, v in values.items()} | {"du_dispatch_id": dispatch_id}
    return _dispatch_update(tuple(sorted(values))), params


_EVENTS_INSERT = _unnest_insert(ev, "evi_", _INSERT_COLS["dispatch_events"])


def events_insert(rows: Sequence[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """One INSERT of ``dispatch_events`` rows (for `Writes`)."""
    return _EVENTS_INSERT, _unnest_params("evi_", rows, _INSERT_COLS["dispatch_events"])


@functools.cache
def _targets_upsert() -> Any:
    stmt = _unnest_insert(t, "tu_", TARGET_COLS)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.dispatch_id, t.c.asset_id],
        set_={c: stmt.excluded[c] for c in TARGET_COLS if c not in ("dispatch_id", "asset_id")},
    )


def targets_upsert(rows: Sequence[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """Insert or replace whole per-asset rows (every column of `TARGET_COLS`; for
    `Writes`). Each asset at most once."""
    return _targets_upsert(), _unnest_params("tu_", rows, TARGET_COLS)


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
    await conn.execute(*delivery_update(dispatch_id, site_id, **values))


async def set_dispatch(conn: AsyncConnection, dispatch_id: UUID, **values: Any) -> None:
    """Update the dispatches row."""
    await conn.execute(*dispatch_update(dispatch_id, **values))


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
        )
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(dl.c.site_id == site_id, dl.c.state.in_(OPEN_STATES))
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


def _arrays(table: Any, prefix: str, cols: Sequence[str], order: Sequence[Any]) -> Any:
    """A LATERAL subquery: each column of ``table``'s rows for the outer dispatch as one
    array (in ``order``); NULL when there are none."""
    return (
        select(
            *(
                func.array_agg(aggregate_order_by(table.c[c], *order)).label(f"{prefix}{c}")
                for c in cols
            )
        )
        .where(table.c.dispatch_id == d.c.dispatch_id)
        .lateral(f"{prefix}agg")
    )


_DL_COLS = ("site_id", "power_kw", "state", "sent_at", "updated_at", "reason")
_T_COLS = (
    "asset_id",
    "site_id",
    "allocation_kw",
    "state",
    "applied_kw",
    "clamped",
    "reason",
    "updated_at",
)
_EV_COLS = ("at", "state", "scope", "scope_id", "detail")
#: Every column of a per-asset row (`targets_upsert` writes whole rows).
TARGET_COLS = ("dispatch_id", *_T_COLS)


@functools.cache
def _view_query(full: bool) -> Any:
    """Dispatches with their deliveries (and, if ``full``, targets and events) as arrays:
    one statement, one round trip, however many dispatches (a GET under load waits a
    turn of a busy event loop per round trip)."""
    dla = _arrays(dl, "dl_", _DL_COLS, (dl.c.site_id,))
    parts: list[Any] = [d, dla]
    joined = d.join(dla, true())
    if full:
        ta = _arrays(t, "t_", _T_COLS, (t.c.asset_id,))
        eva = _arrays(ev, "ev_", _EV_COLS, (ev.c.event_id,))
        parts += [ta, eva]
        joined = joined.join(ta, true()).join(eva, true())
    return select(*parts).select_from(joined)


def _columns(r: RowMapping, prefix: str, cols: Sequence[str]) -> Any:
    """The rows of one LATERAL's arrays, as tuples (none when the arrays are NULL)."""
    arrays = [r[f"{prefix}{c}"] for c in cols]
    return zip(*arrays, strict=True) if arrays[0] is not None else ()


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
        deliveries=tuple(DeliveryView(*x) for x in _columns(r, "dl_", _DL_COLS)),
        targets=tuple(TargetView(*x) for x in _columns(r, "t_", _T_COLS)) if full else (),
        events=tuple(DispatchEvent(*x) for x in _columns(r, "ev_", _EV_COLS)) if full else (),
    )


async def view(
    conn: AsyncConnection, dispatch_id: UUID, *, full: bool = True
) -> DispatchView | None:
    """A dispatch with its deliveries, targets and events (one statement)."""
    row = (await conn.execute(_view_query(full).where(d.c.dispatch_id == dispatch_id))).first()
    return _to_view(row._mapping, full) if row is not None else None


async def search(
    conn: AsyncConnection,
    *,
    asset_id: str | None,
    site_id: str | None,
    state: str | None,
    limit: int,
) -> list[DispatchView]:
    """Dispatches, newest first, filtered by asset (target or allocation), site and state;
    with their deliveries (one statement)."""
    query = _view_query(False).order_by(d.c.issued_at.desc(), d.c.dispatch_id.desc()).limit(limit)
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


async def count_by_state(conn: AsyncConnection) -> dict[str, int]:
    """Number of dispatches per state."""
    rows = await conn.execute(select(d.c.state, func.count()).group_by(d.c.state))
    return {state: int(n) for state, n in rows}
