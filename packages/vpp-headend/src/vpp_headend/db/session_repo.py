"""SQL of gateway sessions (``gateway_sessions``, one row per site): connect records and
their epochs, last_seen, disconnects, and the records GET /gateways lists."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, TypeAlias
from uuid import UUID

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import GatewayView
from . import models as m

g = m.gateway_sessions

# last_seen of many sessions in one statement; returns the sessions that still own their
# site's row (the others were taken over).
_TOUCH = text(
    """
    UPDATE gateway_sessions g SET last_seen = v.last_seen
    FROM unnest(CAST(:sites AS text[]), CAST(:sessions AS uuid[]),
                CAST(:seen AS timestamptz[])) AS v(site_id, session_id, last_seen)
    WHERE g.site_id = v.site_id AND g.session_id = v.session_id
    RETURNING g.session_id
    """
)
# Disconnects, many at once: a network blip drops thousands of streams in a second, and
# one transaction each ran the pool dry (docs/scaling.md).
_GONE = text(
    """
    UPDATE gateway_sessions g
    SET connected = false, disconnected_at = v.at, disconnect_reason = v.reason,
        last_seen = v.last_seen
    FROM unnest(CAST(:sites AS text[]), CAST(:sessions AS uuid[]), CAST(:at AS timestamptz[]),
                CAST(:reasons AS text[]), CAST(:seen AS timestamptz[]))
         AS v(site_id, session_id, at, reason, last_seen)
    WHERE g.site_id = v.site_id AND g.session_id = v.session_id
    """
)


class Seen(NamedTuple):
    """A session's newest ``last_seen``."""

    site_id: str
    session_id: UUID
    last_seen: datetime


class Gone(NamedTuple):
    """A session's disconnect: when, why, and when it was last heard."""

    site_id: str
    session_id: UUID
    at: datetime
    reason: str
    last_seen: datetime


class SessionRecord(NamedTuple):
    """A registered site and its session row (all None when it never connected)."""

    site_id: str
    connected: bool | None
    connected_since: datetime | None
    last_seen: datetime | None
    assets_served: tuple[str, ...]
    remote: str | None
    agent_version: str | None
    epoch: int | None
    session_id: UUID | None
    disconnect_reason: str | None
    replica: str | None
    disconnected_at: datetime | None


async def close_left_open(conn: AsyncConnection, replica: str, at: datetime) -> None:
    """Mark the sessions ``replica`` left connected (it crashed) as disconnected."""
    await conn.execute(
        update(g)
        .where(g.c.replica == replica, g.c.connected)
        .values(connected=False, disconnected_at=at, disconnect_reason="headend_restart")
    )


async def record_connect(
    conn: AsyncConnection,
    *,
    site_id: str,
    session_id: UUID,
    at: datetime,
    remote: str,
    agent_version: str,
    replica: str,
    assets_served: Iterable[str],
) -> int:
    """Make ``session_id`` the site's session; its epoch (one above the last). The upsert
    takes the site's row lock until ``conn``'s transaction ends."""
    values = {
        "session_id": session_id,
        "connected": True,
        "connected_since": at,
        "last_seen": at,
        "disconnected_at": None,
        "disconnect_reason": None,
        "remote": remote,
        "agent_version": agent_version,
        "replica": replica,
        "assets_served": ",".join(sorted(assets_served)),
    }
    stmt = insert(g).values(site_id=site_id, epoch=1, **values)
    upsert = stmt.on_conflict_do_update(
        index_elements=[g.c.site_id], set_={**values, "epoch": g.c.epoch + 1}
    ).returning(g.c.epoch)
    return int((await conn.execute(upsert)).scalar_one())


async def touch(conn: AsyncConnection, seen: Sequence[Seen]) -> set[UUID]:
    """Store each session's ``last_seen`` where it still owns its site's row; the
    sessions that do."""
    result = await conn.execute(
        _TOUCH,
        {
            "sites": [s.site_id for s in seen],
            "sessions": [s.session_id for s in seen],
            "seen": [s.last_seen for s in seen],
        },
    )
    return {row[0] for row in result}


async def record_disconnects(conn: AsyncConnection, gone: Sequence[Gone]) -> None:
    """Record the disconnects of sessions that still own their site's row."""
    await conn.execute(
        _GONE,
        {
            "sites": [x.site_id for x in gone],
            "sessions": [x.session_id for x in gone],
            "at": [x.at for x in gone],
            "reasons": [x.reason for x in gone],
            "seen": [x.last_seen for x in gone],
        },
    )


async def owners(conn: AsyncConnection, site_ids: Sequence[str]) -> dict[str, UUID]:
    """The session that owns each site's row (a site without one is left out)."""
    rows = await conn.execute(select(g.c.site_id, g.c.session_id).where(g.c.site_id.in_(site_ids)))
    return {r.site_id: r.session_id for r in rows}


#: Sort key of GET /gateways: the site id (as `registry_repo.SiteKey`).
GatewayKey: TypeAlias = tuple[str]


def gateway_key(view: GatewayView) -> GatewayKey:
    return (view.site_id,)


async def records(
    conn: AsyncConnection,
    *,
    after: GatewayKey | None = None,
    limit: int | None = None,
    site_id: str | None = None,
) -> list[SessionRecord]:
    """Registered sites with their session rows, by site id: every one, or those after
    ``after``, at most ``limit``; only ``site_id``'s when given."""
    query = (
        select(
            m.sites.c.site_id,
            *(g.c[name] for name in SessionRecord._fields if name != "site_id"),
        )
        .select_from(m.sites.outerjoin(g, g.c.site_id == m.sites.c.site_id))
        .order_by(m.sites.c.site_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(m.sites.c.site_id > after[0])
    if site_id is not None:
        query = query.where(m.sites.c.site_id == site_id)
    # The columns are in SessionRecord's field order: rows become records by position
    # (a mapping per row cost a third of the fleet page's time at 10,000 sites).
    at = _SERVED_AT
    out: list[SessionRecord] = []
    for row in await conn.execute(query):
        served = row[at]
        out.append(
            SessionRecord._make(
                (*row[:at], tuple(served.split(",")) if served else (), *row[at + 1 :])
            )
        )
    return out


#: Where ``assets_served`` (stored comma-separated) is in a `SessionRecord`.
_SERVED_AT = SessionRecord._fields.index("assets_served")


__all__ = [
    "GatewayKey",
    "Gone",
    "Seen",
    "SessionRecord",
    "close_left_open",
    "gateway_key",
    "owners",
    "record_connect",
    "record_disconnects",
    "records",
    "touch",
]
