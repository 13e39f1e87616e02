"""SQL of an existing dispatch: its lock, and the writes of its lifecycle (deliveries,
the dispatch row, per-asset targets, events) as statements for `Writes`.

Lock order, everywhere: the ``dispatches`` row first (FOR UPDATE), then its deliveries
and targets, so concurrent acks, sweeps and deliveries of one dispatch cannot deadlock.
Rows come back as the typed rows of `dispatch_rows`. A new dispatch is written by
`dispatch_create`; the reads that route deliveries are in `dispatch_routing`, those for
the REST API in `dispatch_views`, the delivered-power measurement in `delivered_repo`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import astuple
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Text, bindparam, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import models as m
from ._sql import arrays, columns, unnest_insert, unnest_params
from .dispatch_rows import (
    DeliveryChange,
    DeliveryRow,
    DispatchChange,
    DispatchRow,
    EventRow,
    Locked,
    TargetRow,
)

d, dl, t, ev = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.dispatch_events

_DISPATCH_ROW_COLS = tuple(DispatchRow.__dataclass_fields__)
_DELIVERY_ROW_COLS = tuple(DeliveryRow.__dataclass_fields__)
#: Every column of a per-asset row as an ack writes it (`targets_upsert` writes whole rows).
TARGET_COLS = tuple(TargetRow.__dataclass_fields__)
EVENT_COLS = tuple(EventRow.__dataclass_fields__)


def row_dict(row: Any) -> dict[str, Any]:
    """A dataclass row as a dict (no deep copy, unlike `dataclasses.asdict`)."""
    return dict(zip(row.__dataclass_fields__, astuple(row), strict=True))


def _dispatch_row(r: Any) -> DispatchRow:
    return DispatchRow(*(r[c] for c in _DISPATCH_ROW_COLS))


async def by_idempotency_key(conn: AsyncConnection, key: str) -> DispatchRow | None:
    """The dispatch created with this Idempotency-Key."""
    row = (await conn.execute(select(d).where(d.c.idempotency_key == key))).first()
    return _dispatch_row(row._mapping) if row is not None else None


# Hot-path statements are built once with named bind parameters and executed with a
# dict, so SQLAlchemy compiles each once (docs/decisions.md, "Hot-path SQL is built once").

_LOCK = (
    select(d)
    .where(d.c.dispatch_id == bindparam("dispatch_id", type_=d.c.dispatch_id.type))
    .with_for_update()
)


async def _lock_dispatch(conn: AsyncConnection, dispatch_id: UUID) -> DispatchRow | None:
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
    """`_lock_dispatch`, then its deliveries and targets; None for an unknown dispatch.

    Two statements on purpose (docs/decisions.md, "Round trips"): a join with ``FOR
    UPDATE OF dispatches`` that waited for the lock re-reads only the locked row, its
    joined rows are from before the wait; a second statement (READ COMMITTED) sees all
    that committed before the lock was granted.
    """
    row = await _lock_dispatch(conn, dispatch_id)
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
    """UPDATE of one delivery to ``change`` (for `Writes`)."""
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


_EVENTS_INSERT = unnest_insert(ev, "evi_", EVENT_COLS)


def events_insert(rows: Sequence[EventRow]) -> tuple[Any, dict[str, Any]]:
    """One INSERT of ``dispatch_events`` rows (for `Writes`)."""
    return _EVENTS_INSERT, unnest_params("evi_", [row_dict(e) for e in rows], EVENT_COLS)


@functools.cache
def _targets_upsert() -> Any:
    stmt = unnest_insert(t, "tu_", TARGET_COLS)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.dispatch_id, t.c.asset_id],
        set_={c: stmt.excluded[c] for c in TARGET_COLS if c not in ("dispatch_id", "asset_id")},
    )


def targets_upsert(rows: Sequence[TargetRow]) -> tuple[Any, dict[str, Any]]:
    """Insert or replace whole per-asset rows (for `Writes`). Each asset at most once."""
    return _targets_upsert(), unnest_params("tu_", [row_dict(x) for x in rows], TARGET_COLS)


__all__ = [
    "EVENT_COLS",
    "TARGET_COLS",
    "by_idempotency_key",
    "delivery_update",
    "dispatch_update",
    "events_insert",
    "lock_with_deliveries",
    "resent_update",
    "row_dict",
    "targets_upsert",
]
