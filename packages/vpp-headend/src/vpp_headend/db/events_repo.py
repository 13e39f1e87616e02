"""SQL of the live event feed (`vpp_headend.events`): what changed since the feed's last
look, read from the tables every replica writes (the database is the bus).

Each read is one statement, whatever the number of clients or sites: dispatch
transitions by primary-key range, the gateway session rows, the latest readings of the
sites someone watches (index probes), and one per-site aggregate for the fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Transitions after ``after`` plus ids skipped earlier (``gaps``: a transaction that took
# its id before a later one committed may commit after it). A dispatch's delivery sites
# come once per dispatch in the batch (its first row), and only when asked: they are
# what site filters match on, and a group dispatch has one per member.
_DISPATCH_EVENTS = text(
    """
    WITH ev AS (
        SELECT event_id, dispatch_id, at, state, scope, scope_id, detail
        FROM dispatch_events
        WHERE event_id > :after OR event_id = ANY(CAST(:gaps AS bigint[]))
        ORDER BY event_id
        LIMIT :limit
    )
    SELECT ev.event_id, ev.dispatch_id, ev.at, ev.state, ev.scope, ev.scope_id, ev.detail,
           d.target_kind, d.target_id,
           CASE WHEN CAST(:with_sites AS boolean)
                     AND row_number() OVER (PARTITION BY ev.dispatch_id
                                            ORDER BY ev.event_id) = 1
                THEN ARRAY(SELECT dl.site_id FROM dispatch_deliveries dl
                           WHERE dl.dispatch_id = ev.dispatch_id)
           END AS sites
    FROM ev JOIN dispatches d ON d.dispatch_id = ev.dispatch_id
    ORDER BY ev.event_id
    """
)
_LAST_EVENT = text("SELECT COALESCE(max(event_id), 0) FROM dispatch_events")
_GATEWAYS = text(
    """
    SELECT site_id, session_id, connected, connected_since, disconnected_at,
           disconnect_reason, replica, agent_version, assets_served
    FROM gateway_sessions
    """
)
# Every asset of the watched sites with its latest reading if it has one (the site
# index, then one primary-key probe per asset): exact, no time window to miss a late
# flush in. An asset without a row is listed too: the replica holding its gateway may
# hold a reading of it that is not flushed yet.
_SITE_LATEST = text(
    """
    SELECT a.site_id, a.asset_id, a.kind, l.seq, l.ts, l.power_kw, l.soc_pct, l.status,
           l.setpoint_kw, l.setpoint_id, l.available_min_kw, l.available_max_kw
    FROM assets a LEFT JOIN telemetry_latest l ON l.asset_id = a.asset_id
    WHERE a.site_id = ANY(CAST(:sites AS text[]))
    """
)
# One row per site with readings: what the fleet view shows of it (the sums of
# `domain.telemetry.SiteTotal`: power of the non-meter assets, assets with a reading).
_FLEET = text(
    """
    SELECT a.site_id,
           COALESCE(sum(l.power_kw) FILTER (WHERE a.kind <> 'meter'), 0.0) AS total_kw,
           max(l.ts) AS newest_ts,
           count(*) AS assets_reporting
    FROM telemetry_latest l JOIN assets a ON a.asset_id = l.asset_id
    GROUP BY a.site_id
    """
)


class DispatchEvent(NamedTuple):
    """One ``dispatch_events`` row with its dispatch's target; ``sites`` (its deliveries)
    on the first row of each dispatch in a batch read with sites, else None."""

    event_id: int
    dispatch_id: UUID
    at: datetime
    state: str
    scope: str
    scope_id: str | None
    detail: str | None
    target_kind: str
    target_id: str
    sites: list[str] | None


class GatewayRow(NamedTuple):
    """A site's ``gateway_sessions`` row, as the feed diffs and reports it."""

    site_id: str
    session_id: UUID
    connected: bool
    connected_since: datetime | None
    disconnected_at: datetime | None
    disconnect_reason: str | None
    replica: str | None
    agent_version: str | None
    assets_served: str


class AssetLatest(NamedTuple):
    """An asset of a watched site with its latest stored reading."""

    site_id: str
    asset_id: str
    kind: str
    seq: int
    ts: datetime
    power_kw: float
    soc_pct: float | None
    status: int
    setpoint_kw: float | None
    setpoint_id: str | None
    available_min_kw: float | None
    available_max_kw: float | None


class SiteAsset(NamedTuple):
    """An asset of a watched site and its latest stored reading (None: none stored yet)."""

    site_id: str
    asset_id: str
    kind: str
    stored: AssetLatest | None


class SiteSummary(NamedTuple):
    """A site as the fleet view shows it: summed power of its non-meter assets, its
    newest reading's time, and how many of its assets have a reading (meters too)."""

    site_id: str
    total_kw: float
    newest_ts: datetime
    assets_reporting: int


async def last_event_id(conn: AsyncConnection) -> int:
    """The newest transition's id (0 when there is none): where a new feed starts."""
    return int((await conn.execute(_LAST_EVENT)).scalar_one())


async def dispatch_events(
    conn: AsyncConnection,
    *,
    after: int,
    gaps: Sequence[int],
    limit: int,
    with_sites: bool,
) -> list[DispatchEvent]:
    """Transitions with ``event_id > after`` or in ``gaps``, oldest first, at most ``limit``."""
    rows = await conn.execute(
        _DISPATCH_EVENTS,
        {"after": after, "gaps": list(gaps), "limit": limit, "with_sites": with_sites},
    )
    return [DispatchEvent(*row) for row in rows]


async def gateways(conn: AsyncConnection) -> list[GatewayRow]:
    """Every site's session row (a site that never connected has none)."""
    return [GatewayRow(*row) for row in await conn.execute(_GATEWAYS)]


async def site_latest(conn: AsyncConnection, site_ids: Sequence[str]) -> list[SiteAsset]:
    """Every asset of ``site_ids``, with its latest stored reading if it has one."""
    rows = await conn.execute(_SITE_LATEST, {"sites": list(site_ids)})
    return [
        SiteAsset(row[0], row[1], row[2], None if row[3] is None else AssetLatest(*row))
        for row in rows
    ]


async def fleet(conn: AsyncConnection) -> list[SiteSummary]:
    """Every site with readings, summarised."""
    return [SiteSummary(*row) for row in await conn.execute(_FLEET)]


__all__ = [
    "AssetLatest",
    "DispatchEvent",
    "GatewayRow",
    "SiteAsset",
    "SiteSummary",
    "dispatch_events",
    "fleet",
    "gateways",
    "last_event_id",
    "site_latest",
]
