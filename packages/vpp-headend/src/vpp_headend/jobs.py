"""The headend's periodic jobs: telemetry partitions ahead of time, and the minute rollup.

Each job is a task owned by `PeriodicJobs`; a failed run is logged and retried at the next
one, so a database blip never stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from .clock import Clock
from .db.partitions import ensure_partitions
from .logs import log_event
from .rollup import Rolled, rollup
from .settings import Settings

log = logging.getLogger(__name__)


async def create_partitions(engine: AsyncEngine, clock: Clock, days_ahead: int) -> None:
    """Create the telemetry partitions from yesterday to ``days_ahead``; log new ones."""
    created = await ensure_partitions(engine, clock().date(), days_ahead)
    if created:
        log_event(log, "partitions_created", names=created)


class PeriodicJobs:
    """Owns the partition and rollup tasks between `start` and `stop`."""

    def __init__(self, engine: AsyncEngine, settings: Settings, clock: Clock) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        s = self._settings
        self._tasks = [
            asyncio.create_task(
                self._every(s.partition_check_interval_s, "partitions_failed", self._partitions),
                name="partitions",
            ),
            asyncio.create_task(
                self._every(s.rollup_interval_s, "rollup_failed", self._rollup), name="rollups"
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _every(
        self, interval_s: float, failed: str, run: Callable[[], Awaitable[None]]
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await run()
            except Exception as exc:  # retried at the next run; the headend carries on
                log_event(log, failed, level=logging.WARNING, error=exc)

    async def _partitions(self) -> None:
        await create_partitions(self._engine, self._clock, self._settings.partition_days_ahead)

    async def _rollup(self) -> None:
        """Roll closed minutes into ``telemetry_1m`` (rollup.py), paced."""
        overlap = timedelta(seconds=self._settings.rollup_overlap_s)
        done = await rollup(self._engine, self._clock(), overlap=overlap, paced=True)
        if isinstance(done, Rolled) and done.rows:
            log_event(log, "rollup", level=logging.DEBUG, rows=done.rows)


__all__ = ["PeriodicJobs", "create_partitions"]
