"""SQL of the dispatch lifecycle: dispatches, per-site deliveries, per-asset targets, events.

Lock order, everywhere: the ``dispatches`` row first (FOR UPDATE), then its deliveries
and targets, so concurrent acks, sweeps and deliveries of one dispatch cannot deadlock.
Rows come back as the typed rows of `dispatch_rows`; reads for the REST API are in
`dispatch_views`, the delivered-power measurement in `delivered_repo`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ARRAY,
    Boolean,
    Text,
    all_,
    and_,
    bindparam,
    cast,
    exists,
    false,
    func,
    insert,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from . import models as m
from ._sql import Writes, arrays, columns, unnest_insert, unnest_params
from .dispatch_rows import (
    DeliveryChange,
    DeliveryRow,
    DispatchChange,
    DispatchRow,
    EventRow,
    Locked,
    NewDispatch,
    OpenDelivery,
    TargetRow,
)

d, dl, t, ev = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.dispatch_events


#: Delivery states that still wait for something: delivery (pending) or an ack.
OPEN_STATES = ("pending", "sent", "received")

_DISPATCH_ROW_COLS = tuple(DispatchRow.__dataclass_fields__)
_DELIVERY_ROW_COLS = tuple(DeliveryRow.__dataclass_fields__)
#: Every column of a per-asset row as an ack writes it (`targets_upsert` writes whole rows).
TARGET_COLS = tuple(TargetRow.__dataclass_fields__)
_EVENT_COLS = tuple(EventRow.__dataclass_fields__)
_NEW_DELIVERY_COLS = (
    "dispatch_id",
    "site_id",
    "power_kw",
    "state",
    "attempts",
    "sent_at",
    "updated_at",
    "reason",
)
_NEW_DISPATCH_COLS = (
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
    "duration_s",
    "ends_at",
)


def _dispatch_row(r: Any) -> DispatchRow:
    return DispatchRow(*(r[c] for c in _DISPATCH_ROW_COLS))


async def by_idempotency_key(conn: AsyncConnection, key: str) -> DispatchRow | None:
    """The dispatch created with this Idempotency-Key."""
    row = (await conn.execute(select(d).where(d.c.idempotency_key == key))).first()
    return _dispatch_row(row._mapping) if row is not None else None


# Hot-path statements are built once with named bind parameters and executed with a
# dict: SQLAlchemy compiles each once, and no statement objects are built per call.
# (Built per call, they were most of the headend's cyclic garbage under load, ~3,500
# objects a second, and a multi-row VALUES was compiled anew each time.)


async def create(conn: AsyncConnection, new: NewDispatch, notify: str | None) -> None:
    """Insert a new dispatch with its deliveries, events and targets — and ``pg_notify``
    on ``notify`` if given — in one statement (data-modifying CTEs; the foreign keys are
    checked at its end). One round trip instead of five: under load each costs a turn of
    a busy event loop."""
    params = _create_params(new) | {
        "notify": notify is not None,
        "channel": notify or "",
        "payload": str(new.dispatch_id),
    }
    await conn.execute(_create_stmt(), params)


def _create_params(new: NewDispatch) -> dict[str, Any]:
    """The parameters of a new dispatch's rows (`create`, `create_if_current`)."""
    params = {f"d_{k}": getattr(new, k) for k in _NEW_DISPATCH_COLS}
    deliveries = [
        {"dispatch_id": new.dispatch_id, "attempts": x.attempts, **_fields(x)}
        for x in new.deliveries
    ]
    params |= unnest_params("dl_", deliveries, _NEW_DELIVERY_COLS)
    params |= unnest_params("ev_", [_fields(e) for e in new.events], _EVENT_COLS)
    params |= unnest_params("t_", [_fields(x) for x in new.targets], TARGET_COLS)
    return params


def _fields(row: Any) -> dict[str, Any]:
    """A dataclass row as a dict (no deep copy, unlike `dataclasses.asdict`)."""
    return dict(zip(row.__dataclass_fields__, astuple(row), strict=True))


@functools.cache
def _create_stmt() -> Any:
    ctes = [
        insert(d)
        .values({k: bindparam(f"d_{k}", type_=d.c[k].type) for k in _NEW_DISPATCH_COLS})
        .cte("new_dispatch"),
        unnest_insert(dl, "dl_", _NEW_DELIVERY_COLS).cte("new_deliveries"),
        unnest_insert(ev, "ev_", _EVENT_COLS).cte("new_events"),
        unnest_insert(t, "t_", TARGET_COLS).cte("new_targets"),
    ]
    notify = func.pg_notify(bindparam("channel", type_=Text), bindparam("payload", type_=Text))
    return select(notify).where(bindparam("notify", type_=Boolean)).add_cte(*ctes)


@dataclass(frozen=True, slots=True)
class HereChecks:
    """What `create_if_current` found, in its statement's one snapshot."""

    fenced: bool  # the session is the site's current one (its row share-locked to commit)
    known: bool  # an asset target is registered to that site and takes setpoints
    clear: bool  # no older dispatch for the same target is pending at that site

    @property
    def met(self) -> bool:
        return self.fenced and self.known and self.clear


async def create_if_current(
    conn: AsyncConnection,
    new: NewDispatch,
    *,
    site_id: str,
    session_id: UUID,
    not_dispatchable: Sequence[str],
) -> HereChecks:
    """Insert ``new`` — a dispatch for one asset or site, its one delivery ``sent`` on
    ``session_id`` — in one statement, but only where its checks (`HereChecks`) hold at
    that statement's snapshot; otherwise write nothing. Run in autocommit, the statement
    is its own transaction: one round trip where BEGIN, the supersede check, the fence,
    the insert and COMMIT took five.

    The fence is as in a transaction: the site's ``gateway_sessions`` row is share-locked
    (a takeover's UPDATE waits for this commit, or this statement reads the newer row).
    An older pending dispatch for the target is not superseded here: the caller does
    that in a transaction through the state machine (`dispatch.create.insert`). A site
    needs no registry check: a ``gateway_sessions`` row references its ``sites`` row.
    """
    params = _create_params(new) | {
        "c_site_id": site_id,
        "c_session_id": session_id,
        "c_is_asset": new.target_kind == "asset",
        "c_not_dispatchable": list(not_dispatchable),
    }
    row = (await conn.execute(_create_if_stmt(), params)).one()
    return HereChecks(bool(row.fenced), bool(row.known), bool(row.clear))


@functools.cache
def _create_if_stmt() -> Any:
    g, a = m.gateway_sessions, m.assets
    site = bindparam("c_site_id", type_=Text)
    target_kind = bindparam("d_target_kind", type_=d.c.target_kind.type)
    target_id = bindparam("d_target_id", type_=d.c.target_id.type)
    current = (
        select(g.c.session_id).where(g.c.site_id == site).with_for_update(read=True)
    ).scalar_subquery()
    fenced = func.coalesce(current == bindparam("c_session_id", type_=g.c.session_id.type), false())
    asset_here = exists().where(
        a.c.asset_id == target_id,
        a.c.site_id == site,
        a.c.kind != all_(bindparam("c_not_dispatchable", type_=ARRAY(Text))),
    )
    older_pending = exists().where(
        dl.c.dispatch_id == d.c.dispatch_id,
        dl.c.site_id == site,
        dl.c.state == "pending",
        d.c.target_kind == target_kind,
        d.c.target_id == target_id,
    )
    checks = select(
        fenced.label("fenced"),
        or_(not_(bindparam("c_is_asset", type_=Boolean)), asset_here).label("known"),
        not_(older_pending).label("clear"),
    ).cte("checks")
    met = select(and_(checks.c.fenced, checks.c.known, checks.c.clear)).scalar_subquery()
    # Cast: in INSERT … SELECT a parameter takes no type from its column (a NULL would
    # be text).
    row = [cast(bindparam(f"d_{k}", type_=d.c[k].type), d.c[k].type) for k in _NEW_DISPATCH_COLS]
    new_dispatch = (
        insert(d)
        .from_select(list(_NEW_DISPATCH_COLS), select(*row).where(met))
        .returning(d.c.dispatch_id)
        .cte("new_dispatch")
    )
    created = exists(select(new_dispatch.c.dispatch_id))
    children = [
        _unnest_insert_if(dl, "dl_", _NEW_DELIVERY_COLS, created).cte("new_deliveries"),
        _unnest_insert_if(ev, "ev_", _EVENT_COLS, created).cte("new_events"),
        _unnest_insert_if(t, "t_", TARGET_COLS, created).cte("new_targets"),
    ]
    return select(checks.c.fenced, checks.c.known, checks.c.clear).add_cte(new_dispatch, *children)


def _unnest_insert_if(table: Any, prefix: str, cols: Sequence[str], cond: Any) -> Any:
    """`unnest_insert` of rows that are inserted only while ``cond`` holds."""
    params = [bindparam(f"{prefix}{c}", type_=ARRAY(table.c[c].type)) for c in cols]
    src = func.unnest(*params).table_valued(*cols, with_ordinality="ord").render_derived()
    rows = select(*(src.c[c] for c in cols)).where(cond).order_by(src.c.ord)
    return insert(table).from_select(list(cols), rows)


async def insert_event(conn: AsyncConnection, event: EventRow) -> None:
    """Record one transition."""
    await conn.execute(insert(ev).values(_fields(event)))


_LOCK = (
    select(d)
    .where(d.c.dispatch_id == bindparam("dispatch_id", type_=d.c.dispatch_id.type))
    .with_for_update()
)


async def lock_dispatch(conn: AsyncConnection, dispatch_id: UUID) -> DispatchRow | None:
    """The dispatches row, locked for this transaction."""
    row = (await conn.execute(_LOCK, {"dispatch_id": dispatch_id})).first()
    return _dispatch_row(row._mapping) if row is not None else None


_LOCK_T_COLS = tuple(c for c in TARGET_COLS if c != "dispatch_id")


@functools.cache
def _after_lock_query() -> Any:
    dla = arrays(d, dl, "dl_", _DELIVERY_ROW_COLS, (dl.c.site_id,))
    ta = arrays(d, t, "t_", _LOCK_T_COLS, (t.c.asset_id,))
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
    mapping = after._mapping
    dlvs = {x[0]: DeliveryRow(*x) for x in columns(mapping, "dl_", _DELIVERY_ROW_COLS)}
    targets = {x[0]: TargetRow(dispatch_id, *x) for x in columns(mapping, "t_", _LOCK_T_COLS)}
    return Locked(row, dlvs, targets)


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


def delivery_update(dispatch_id: UUID, change: DeliveryChange) -> tuple[Any, dict[str, Any]]:
    """UPDATE of one delivery to ``change`` (for `Writes`, or `set_delivery`)."""
    values: dict[str, Any] = {
        "state": change.state,
        "updated_at": change.updated_at,
        "reason": change.reason,
    }
    if change.sent is not None:
        values["sent_at"], values["attempts"] = change.sent
    if change.taken is not None:
        values["allocated_kw"] = change.taken.allocated_kw
        values["shortfall_kw"] = change.taken.shortfall_kw
    if change.applied_at is not None:
        values["applied_at"] = change.applied_at
    if change.release_requested_at is not None:
        values["release_requested_at"] = change.release_requested_at
    if change.released is not None:
        values["released_at"] = change.released.at
        values["release_cause"] = change.released.cause
    if change.in_force_until is not None:
        values["in_force_until"] = change.in_force_until
    return _delivery_values(dispatch_id, change.site_id, values)


def resent_update(
    dispatch_id: UUID, site_id: str, sent_at: datetime, attempts: int
) -> tuple[Any, dict[str, Any]]:
    """A re-delivery: the state stays, sent_at and attempts move on."""
    values = {"sent_at": sent_at, "attempts": attempts, "updated_at": sent_at}
    return _delivery_values(dispatch_id, site_id, values)


def _delivery_values(
    dispatch_id: UUID, site_id: str, values: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
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


def dispatch_update(dispatch_id: UUID, change: DispatchChange) -> tuple[Any, dict[str, Any]]:
    """UPDATE of the dispatches row to ``change`` (for `Writes`)."""
    values: dict[str, Any] = {"state": change.state, "updated_at": change.updated_at}
    if change.taken is not None:
        values["allocated_kw"] = change.taken.allocated_kw
        values["shortfall_kw"] = change.taken.shortfall_kw
    if change.applied_at is not None:
        values["applied_at"] = change.applied_at
    params = {f"du_{k}": v for k, v in values.items()} | {"du_dispatch_id": dispatch_id}
    return _dispatch_update(tuple(sorted(values))), params


_EVENTS_INSERT = unnest_insert(ev, "evi_", _EVENT_COLS)


def events_insert(rows: Sequence[EventRow]) -> tuple[Any, dict[str, Any]]:
    """One INSERT of ``dispatch_events`` rows (for `Writes`)."""
    return _EVENTS_INSERT, unnest_params("evi_", [_fields(e) for e in rows], _EVENT_COLS)


@functools.cache
def _targets_upsert() -> Any:
    stmt = unnest_insert(t, "tu_", TARGET_COLS)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.dispatch_id, t.c.asset_id],
        set_={c: stmt.excluded[c] for c in TARGET_COLS if c not in ("dispatch_id", "asset_id")},
    )


def targets_upsert(rows: Sequence[TargetRow]) -> tuple[Any, dict[str, Any]]:
    """Insert or replace whole per-asset rows (for `Writes`). Each asset at most once."""
    return _targets_upsert(), unnest_params("tu_", [_fields(x) for x in rows], TARGET_COLS)


async def set_delivery(conn: AsyncConnection, dispatch_id: UUID, change: DeliveryChange) -> None:
    """Update one delivery."""
    await conn.execute(*delivery_update(dispatch_id, change))


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
    "TARGET_COLS",
    "HereChecks",
    "Writes",
    "by_idempotency_key",
    "connected_sites",
    "create",
    "create_if_current",
    "current_sessions",
    "delivery_update",
    "dispatch_update",
    "events_insert",
    "expirable",
    "insert_event",
    "lock_dispatch",
    "lock_with_deliveries",
    "open_deliveries_for_site",
    "pending_deliveries",
    "pending_same_key_sites",
    "resent_update",
    "session_is_current",
    "set_delivery",
    "targets_upsert",
]
