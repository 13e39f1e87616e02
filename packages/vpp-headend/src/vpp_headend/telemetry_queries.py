"""What the REST API (and the console) read of telemetry: an asset's newest reading, its
stored history and its one-minute rollups; a site's newest readings with their total,
its summed rollups, and every site's total (each for a registered asset or site;
`NotFoundError` otherwise)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from .db import telemetry_repo as repo
from .db.telemetry_repo import HistoryKey, MinuteKey, RollupMinute, SiteMinute
from .domain import Asset, LatestReading, SiteTelemetry, SiteTotal, site_total
from .errors import NotFoundError
from .ingest import Ingest
from .registry import Registry


class TelemetryQueries:
    """Telemetry reads over the autocommit engine, the registry and ingest's memory."""

    def __init__(self, read: AsyncEngine, registry: Registry, ingest: Ingest) -> None:
        self._read = read
        self._registry = registry
        self._ingest = ingest

    async def latest(self, asset_id: str) -> tuple[Asset, LatestReading]:
        """The asset and its newest stored reading: this process's memory first, then the
        database (another replica holds the gateway, or the reading was committed a moment
        before the writer updated memory). `NotFoundError` when none is stored yet."""
        asset = await self._registry.get_asset(asset_id)
        reading = self._ingest.held(asset_id)
        if reading is None:
            async with self._read.connect() as conn:
                reading = await repo.newest(conn, asset_id)
        if reading is None:
            raise NotFoundError(f"no telemetry stored for asset {asset_id!r} yet", field="asset_id")
        return asset, reading

    async def history(
        self,
        asset_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: HistoryKey | None = None,
    ) -> list[LatestReading]:
        """Stored readings with start <= ts < end, newest first, at most ``limit``;
        ``after``: older than that (ts, seq) only."""
        await self._registry.get_asset(asset_id)
        async with self._read.connect() as conn:
            return await repo.history(
                conn, asset_id, start=start, end=end, limit=limit, after=after
            )

    async def rollups(
        self,
        asset_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: MinuteKey | None = None,
    ) -> list[RollupMinute]:
        """Rollup minutes with start <= minute < end, newest first, at most ``limit``;
        ``after``: before that minute only."""
        await self._registry.get_asset(asset_id)
        async with self._read.connect() as conn:
            return await repo.rollups(
                conn, asset_id, start=start, end=end, limit=limit, after=after
            )

    async def site_latest(self, site_id: str) -> SiteTelemetry:
        """The site, the newest reading of each of its assets (None: none stored yet) and
        their total (`SiteTotal`: meters apart). Two statements however many assets;
        a reading this process holds in memory wins when its seq is higher (its
        gateway is here: the table is written every ``latest_flush_interval_s``).
        `NotFoundError` for an unknown site."""
        async with self._read.connect() as conn:
            found = await repo.site_latest(conn, site_id)
        if found is None:
            raise NotFoundError(f"unknown site {site_id!r}", field="site_id")
        site, stored = found
        readings = tuple((asset, self._newer(asset.asset_id, row)) for asset, row in stored)
        return SiteTelemetry(site=site, readings=readings, total=site_total(site_id, readings))

    def _newer(self, asset_id: str, stored: LatestReading | None) -> LatestReading | None:
        held = self._ingest.held(asset_id)
        if held is None:
            return stored
        return held if stored is None or held.seq >= stored.seq else stored

    async def site_totals(self) -> dict[str, SiteTotal]:
        """The total of every site that has a reading, by site id (the fleet view): one
        GROUP BY over ``telemetry_latest``, so as new as its last flush (memory is not
        consulted: a fleet is spread over replicas)."""
        async with self._read.connect() as conn:
            return await repo.site_totals(conn)

    async def site_rollups(
        self,
        site_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: MinuteKey | None = None,
    ) -> list[SiteMinute]:
        """The site's minutes with start <= minute < end, newest first, at most ``limit``:
        its dispatchable assets' rollups summed; ``after``: before that minute only.
        `NotFoundError` for an unknown site."""
        await self._registry.get_site(site_id)
        async with self._read.connect() as conn:
            return await repo.site_rollups(
                conn, site_id, start=start, end=end, limit=limit, after=after
            )


__all__ = ["TelemetryQueries"]
