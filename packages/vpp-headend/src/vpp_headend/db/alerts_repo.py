"""SQL of the console's alerts page: assets of connected sites whose newest reading is too
old (an offline site's assets are its gateway's alert, not one each)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class LaggingAsset(NamedTuple):
    """An asset whose newest stored reading is older than its site allows."""

    asset_id: str
    site_id: str
    ts: datetime
    interval_s: float


# A reading is late once older than `factor` telemetry intervals of its site (the site
# file's default interval where the site has none stored) plus `slack_s` (how far the
# stored latest values may trail the stream). One pass over telemetry_latest
# (one row per asset), newest lag first.
_LAGGING = text(
    "SELECT l.asset_id, a.site_id, l.ts, COALESCE(s.telemetry_interval_s, :default_s) AS iv"
    " FROM telemetry_latest l JOIN assets a USING (asset_id) JOIN sites s USING (site_id)"
    " JOIN gateway_sessions g ON g.site_id = a.site_id AND g.connected"
    " WHERE l.ts < :now - make_interval(secs => :slack + :factor"
    " * COALESCE(s.telemetry_interval_s, :default_s))"
    " ORDER BY l.ts LIMIT :limit"
)


async def lagging_assets(
    conn: AsyncConnection,
    *,
    now: datetime,
    factor: float,
    default_interval_s: float,
    slack_s: float,
    limit: int,
) -> list[LaggingAsset]:
    """Assets whose newest reading is older than ``factor`` × their site's interval plus
    ``slack_s``, oldest first."""
    params = {
        "now": now,
        "factor": factor,
        "default_s": default_interval_s,
        "slack": slack_s,
        "limit": limit,
    }
    rows = await conn.execute(_LAGGING, params)
    return [LaggingAsset(r[0], r[1], r[2], float(r[3])) for r in rows]


__all__ = ["LaggingAsset", "lagging_assets"]
