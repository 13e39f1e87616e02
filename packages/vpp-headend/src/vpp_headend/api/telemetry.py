"""GET /telemetry/{asset_id}, /telemetry/{asset_id}/history and /telemetry/{asset_id}/rollup."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from ..errors import ValidationFailedError
from .bodies import utc
from .deps import NowDep, TelemetryDep
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
        start: Annotated[datetime | None, QueryParameter()] = None,
        end: Annotated[datetime | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_HISTORY)] = 100,
    ) -> HistoryOut:
        """Stored readings with start <= ts < end, newest first, at most ``limit``."""
        start, end = _window(start, end)
        rows = await telemetry.history(asset_id, start=start, end=end, limit=limit)
        return HistoryOut(
            asset_id=asset_id,
            start=start,
            end=end,
            limit=limit,
            count=len(rows),
            readings=[reading_out(r) for r in rows],
        )

    @get("/{asset_id:str}/rollup", responses=problem_responses(400, 401, 404, 422))
    async def rollup(
        self,
        telemetry: TelemetryDep,
        asset_id: AssetIdPath,
        start: Annotated[datetime | None, QueryParameter()] = None,
        end: Annotated[datetime | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_HISTORY)] = 100,
    ) -> RollupOut:
        """One-minute rollups (min/avg/max power, count, last SoC) with start <= minute < end,
        newest first, at most ``limit``. The current minute appears once it has closed and
        the rollup job has run (every ``rollup_interval_s``)."""
        start, end = _window(start, end)
        rows = await telemetry.rollups(asset_id, start=start, end=end, limit=limit)
        return RollupOut(
            asset_id=asset_id,
            start=start,
            end=end,
            limit=limit,
            count=len(rows),
            minutes=[minute_out(m) for m in rows],
        )


def _window(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The query window in UTC (`bodies.utc`: aware and in range, else 422 naming the
    bound); 422 naming ``start`` when it is not before ``end``."""
    start = None if start is None else utc(start, "start")
    end = None if end is None else utc(end, "end")
    if start is not None and end is not None and start >= end:
        raise ValidationFailedError("start must be before end", field="start")
    return start, end
