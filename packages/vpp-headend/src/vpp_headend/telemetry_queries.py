"""What the REST API reads of telemetry: an asset's newest reading, its stored history and
its one-minute rollups (each for a registered asset; `NotFoundError` otherwise)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from .db import telemetry_repo as repo
from .db.telemetry_repo import RollupMinute
from .domain import Asset, LatestReading
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
        self, asset_id: str, *, start: datetime | None, end: datetime | None, limit: int
    ) -> list[LatestReading]:
        """Stored readings with start <= ts < end, newest first, at most ``limit``."""
        await self._registry.get_asset(asset_id)
        async with self._read.connect() as conn:
            return await repo.history(conn, asset_id, start=start, end=end, limit=limit)

    async def rollups(
        self, asset_id: str, *, start: datetime | None, end: datetime | None, limit: int
    ) -> list[RollupMinute]:
        """Rollup minutes with start <= minute < end, newest first, at most ``limit``."""
        await self._registry.get_asset(asset_id)
        async with self._read.connect() as conn:
            return await repo.rollups(conn, asset_id, start=start, end=end, limit=limit)


__all__ = ["TelemetryQueries"]
