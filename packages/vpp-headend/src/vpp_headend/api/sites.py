"""GET /sites/{site_id}/telemetry and /sites/{site_id}/rollup: a site's telemetry in one
call (a dashboard's site view)."""

from __future__ import annotations

from litestar import Controller, get

from ..db.telemetry_repo import MinuteKey, minute_key
from .deps import NowDep, TelemetryDep
from .paging import CursorQuery, pager
from .params import SiteIdPath
from .problems import problem_responses
from .schemas import SiteRollupOut, SiteTelemetryOut, site_minute_out, site_telemetry_out
from .telemetry import EndQuery, StartQuery, WindowLimitQuery, query_window


class SitesController(Controller):
    """A site's newest readings with their total, and its summed one-minute rollups."""

    path = "/sites"
    tags = ["telemetry"]  # noqa: RUF012

    @get(
        "/{site_id:str}/telemetry",
        summary="Newest readings of a site's assets and their total",
        description=(
            "Every registered asset of the site by asset id, each with its newest reading "
            "(the fields of GET /telemetry/{asset_id}; null when it has reported nothing "
            "yet), and the total: power_kw sums the dispatchable assets (every kind but "
            "meter; + export / discharge), because a meter measures the same flow at the "
            "grid point and adding it would count that power twice; meter_kw sums the "
            "meters (null when none has reported). assets_reporting counts the assets with "
            "a reading (meters included); newest_ts / oldest_ts span them and worst_lag_s "
            "is `at` − oldest_ts. 404 for an unknown site."
        ),
        responses=problem_responses(400, 401, 404),
    )
    async def telemetry(
        self, telemetry: TelemetryDep, now: NowDep, site_id: SiteIdPath
    ) -> SiteTelemetryOut:
        """Latest of every asset of the site and the site total, one call."""
        return site_telemetry_out(await telemetry.site_latest(site_id), now)

    @get(
        "/{site_id:str}/rollup",
        summary="One-minute history of a site",
        description=(
            "Per UTC minute with start <= minute < end, newest first: the sums over the "
            "site's dispatchable assets (meters left out) of their one-minute min / avg / "
            "max power, and how many assets had a rollup that minute. Same window rules "
            "as GET /telemetry/{asset_id}/rollup; `next` pages on to older minutes. 404 "
            "for an unknown site."
        ),
        responses=problem_responses(400, 401, 404, 422),
    )
    async def rollup(
        self,
        telemetry: TelemetryDep,
        site_id: SiteIdPath,
        start: StartQuery = None,
        end: EndQuery = None,
        limit: WindowLimitQuery = 100,
        cursor: CursorQuery = None,
    ) -> SiteRollupOut:
        """The site's summed one-minute rollups, newest first."""
        start, end = query_window(start, end)
        page = pager(
            "site_rollup",
            MinuteKey,
            limit=limit,
            cursor=cursor,
            site_id=site_id,
            start=start,
            end=end,
        )
        found = await telemetry.site_rollups(
            site_id, start=start, end=end, limit=page.fetch, after=page.after
        )
        rows, next_cursor = page.page(found, minute_key)
        return SiteRollupOut(
            site_id=site_id,
            start=start,
            end=end,
            limit=limit,
            count=len(rows),
            minutes=[site_minute_out(m) for m in rows],
            next=next_cursor,
        )
