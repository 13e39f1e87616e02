"""SQL of cancels and releases (DESIGN.md §3b): the operator's cancel on the dispatch,
the deliveries whose release is on its way (``cancelling``), and when a Release went out.

Same lock order as `dispatch_repo`: a caller holds the ``dispatches`` row (FOR UPDATE)
before it writes any of these.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Text, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from . import models as m
from .dispatch_rows import Releasing

d, dl = m.dispatches, m.dispatch_deliveries

#: A delivery whose release was asked and not yet acknowledged.
RELEASING = "cancelling"


async def releasing_for_site(conn: AsyncConnection, site_id: str) -> list[Releasing]:
    """The site's deliveries waiting for their release, oldest issued first (served by
    ``ix_dispatch_deliveries_site_state``)."""
    rows = await conn.execute(
        select(dl.c.dispatch_id, dl.c.site_id, dl.c.release_sent_at, d.c.issued_at)
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(dl.c.site_id == site_id, dl.c.state == RELEASING)
        .order_by(d.c.issued_at, d.c.dispatch_id)
    )
    return [Releasing(**r._mapping) for r in rows]


async def releasing_of(conn: AsyncConnection, dispatch_id: UUID) -> list[tuple[str, str, str]]:
    """(site_id, target_kind, target_id) of a dispatch's deliveries waiting for release."""
    rows = await conn.execute(
        select(dl.c.site_id, d.c.target_kind, d.c.target_id)
        .select_from(dl.join(d, d.c.dispatch_id == dl.c.dispatch_id))
        .where(dl.c.dispatch_id == dispatch_id, dl.c.state == RELEASING)
    )
    return [(r.site_id, r.target_kind, r.target_id) for r in rows]


@functools.cache
def _cancel_stmt() -> Any:
    return (
        update(d)
        .where(d.c.dispatch_id == bindparam("cx_dispatch_id", type_=d.c.dispatch_id.type))
        .values(
            cancel_requested_at=bindparam("cx_at", type_=d.c.cancel_requested_at.type),
            cancel_reason=bindparam("cx_reason", type_=Text),
        )
    )


def cancel_update(
    dispatch_id: UUID, at: datetime, reason: str | None
) -> tuple[Any, dict[str, Any]]:
    """The operator's cancel on the ``dispatches`` row (for `Writes`)."""
    return _cancel_stmt(), {"cx_dispatch_id": dispatch_id, "cx_at": at, "cx_reason": reason}


@functools.cache
def _release_sent_stmt() -> Any:
    at = bindparam("rs_at", type_=dl.c.release_sent_at.type)
    return (
        update(dl)
        .where(
            dl.c.dispatch_id == bindparam("rs_dispatch_id", type_=dl.c.dispatch_id.type),
            dl.c.site_id == bindparam("rs_site_id", type_=Text),
        )
        .values(release_sent_at=at, updated_at=at)
    )


def release_sent_update(
    dispatch_id: UUID, site_id: str, at: datetime
) -> tuple[Any, dict[str, Any]]:
    """A Release for this delivery went out at ``at`` (for `Writes`)."""
    return _release_sent_stmt(), {"rs_dispatch_id": dispatch_id, "rs_site_id": site_id, "rs_at": at}


__all__ = [
    "RELEASING",
    "cancel_update",
    "release_sent_update",
    "releasing_for_site",
    "releasing_of",
]
