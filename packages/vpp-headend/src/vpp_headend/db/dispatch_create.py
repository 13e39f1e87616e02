"""SQL that writes a new dispatch — the dispatch, its deliveries, events and targets —
in one statement (data-modifying CTEs): `create` in a transaction, `create_if_current`
on the hot path, guarded by its own checks. Each statement is built once and executed
with a dict (docs/decisions.md, "Hot-path SQL is built once")."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
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
)
from sqlalchemy.ext.asyncio import AsyncConnection

from . import models as m
from ._sql import unnest_insert, unnest_params
from .dispatch_repo import EVENT_COLS, TARGET_COLS, row_dict
from .dispatch_rows import NewDispatch

d, dl, t, ev = m.dispatches, m.dispatch_deliveries, m.dispatch_targets, m.dispatch_events

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
        {"dispatch_id": new.dispatch_id, "attempts": x.attempts, **row_dict(x)}
        for x in new.deliveries
    ]
    params |= unnest_params("dl_", deliveries, _NEW_DELIVERY_COLS)
    params |= unnest_params("ev_", [row_dict(e) for e in new.events], EVENT_COLS)
    params |= unnest_params("t_", [row_dict(x) for x in new.targets], TARGET_COLS)
    return params


@functools.cache
def _create_stmt() -> Any:
    ctes = [
        insert(d)
        .values({k: bindparam(f"d_{k}", type_=d.c[k].type) for k in _NEW_DISPATCH_COLS})
        .cte("new_dispatch"),
        unnest_insert(dl, "dl_", _NEW_DELIVERY_COLS).cte("new_deliveries"),
        unnest_insert(ev, "ev_", EVENT_COLS).cte("new_events"),
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
        _unnest_insert_if(ev, "ev_", EVENT_COLS, created).cte("new_events"),
        _unnest_insert_if(t, "t_", TARGET_COLS, created).cte("new_targets"),
    ]
    return select(checks.c.fenced, checks.c.known, checks.c.clear).add_cte(new_dispatch, *children)


def _unnest_insert_if(table: Any, prefix: str, cols: Sequence[str], cond: Any) -> Any:
    """`unnest_insert` of rows that are inserted only while ``cond`` holds."""
    params = [bindparam(f"{prefix}{c}", type_=ARRAY(table.c[c].type)) for c in cols]
    src = func.unnest(*params).table_valued(*cols, with_ordinality="ord").render_derived()
    rows = select(*(src.c[c] for c in cols)).where(cond).order_by(src.c.ord)
    return insert(table).from_select(list(cols), rows)


__all__ = ["HereChecks", "create", "create_if_current"]
