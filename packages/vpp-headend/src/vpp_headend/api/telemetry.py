"""GET /telemetry/{asset_id}, /telemetry/{asset_id}/history and /telemetry/{asset_id}/rollup."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeAlias

from litestar import Controller, get
from litestar.params import QueryParameter

from ..db.telemetry_repo import HistoryKey, MinuteKey, history_key, minute_key
from ..errors import ValidationFailedError
from .bodies import utc
from .deps import NowDep, TelemetryDep
from .paging import CursorQuery, pager
from .params import AssetIdPath
from .problems import problem_responses
from .schemas import (
    HistoryOut,
    RollupOut,
    TelemetryOut,
    minute_out,
    reading_out,
    telemetry_out,
)

MAX_HISTORY = 10_000

#: The window and page size of the history and rollup reads (an asset's or a site's).
StartQuery: TypeAlias = Annotated[
    datetime | None, QueryParameter(description="only from this time on (inclusive)")
]
EndQuery: TypeAlias = Annotated[
    datetime | None, QueryParameter(description="only before this time (exclusive)")
]
WindowLimitQuery: TypeAlias = Annotated[
    int, QueryParameter(ge=1, le=MAX_HISTORY, description=f"page size, 1 to {MAX_HISTORY}")
]


class TelemetryController(Controller):
    """Latest values and stored history of an asset."""

    path = "/telemetry"
    tags = ["telemetry"]  # noqa: RUF012

    @get("/{asset_id:str}", responses=problem_responses(400, 401, 404))
    async def latest(
        self, telemetry: TelemetryDep, now: NowDep, asset_id: AssetIdPath
    ) -> TelemetryOut:
        """The newest stored reading with its lag (now − ts); 404 if none yet."""
        asset, reading = await telemetry.latest(asset_id)
        return telemetry_out(reading, asset.site_id, now)

    @get("/{asset_id:str}/history", responses=problem_responses(400, 401, 404, 422))
    async def history(
        self,
        telemetry: TelemetryDep,
        asset_id: AssetIdPath,
        start: StartQuery = None,
        end: EndQuery = None,
        limit: WindowLimitQuery = 100,
        cursor: CursorQuery = None,
    ) -> HistoryOut:
        """Stored readings with start <= ts < end, newest first, at most ``limit``;
        ``next`` pages on to older ones."""
        start, end = query_window(start, end)
        page = pager(
            "history",
            HistoryKey,
            limit=limit,
            cursor=cursor,
            asset_id=asset_id,
            start=start,
            end=end,
        )
        found = await telemetry.history(
            asset_id, start=start, end=end, limit=page.fetch, after=page.after
        )
        rows, next_cursor = page.page(found, history_key)
        return HistoryOut(
            asset_id=asset_id,
            start=start,
            end=end,
            limit=limit,
            count=len(rows),
            readings=[reading_out(r) for r in rows],
            next=next_cursor,
        )

    @get("/{asset_id:str}/rollup", responses=problem_responses(400, 401, 404, 422))
    async def rollup(
        self,
        telemetry: TelemetryDep,
        asset_id: AssetIdPath,
        start: StartQuery = None,
        end: EndQuery = None,
        limit: WindowLimitQuery = 100,
        cursor: CursorQuery = None,
    ) -> RollupOut:
        """One-minute rollups (min/avg/max power, count, last SoC) with start <= minute < end,
        newest first, at most ``limit``; ``next`` pages on to older ones. The current
        minute appears once it has closed and the rollup job has run (every
        ``rollup_interval_s``)."""
        start, end = query_window(start, end)
        page = pager(
            "rollup", MinuteKey, limit=limit, cursor=cursor, asset_id=asset_id, start=start, end=end
        )
        found = await telemetry.rollups(
            asset_id, start=start, end=end, limit=page.fetch, after=page.after
        )
        rows, next_cursor = page.page(found, minute_key)
        return RollupOut(
            asset_id=asset_id,
            start=start,
            end=end,
            limit=limit,
            count=len(rows),
            minutes=[minute_out(m) for m in rows],
            next=next_cursor,
        )


def query_window(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The query window in UTC (`bodies.utc`: aware and in range, else 422 naming the
    bound); 422 naming ``start`` when it is not before ``end``."""
    start = None if start is None else utc(start, "start")
    end = None if end is None else utc(end, "end")
    if start is not None and end is not None and start >= end:
        raise ValidationFailedError("start must be before end", field="start")
    return start, end
